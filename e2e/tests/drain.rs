//! Drain against real replicas and real OpenSSH sessions: a draining replica fails readiness but
//! not liveness, refuses new relays with 503 + Retry-After (wgctl retries elsewhere), lets
//! owned sessions finish, and at its deadline closes the rest with a recoverable error.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::process::Stdio;
use std::time::{Duration, Instant};

use wardengate::session::SessionStatus;
use wardengate::wire::{ErrorCode, LiveState, SystemStatus};
use wardengate_e2e::{Deps, Fleet, proxy_command as proxy};
use wardengate_testkit::process::run;
use wardengate_testkit::sshd::HOST_ALIAS;

const OWN_TIMEOUT: Duration = Duration::from_secs(20);

/// `wgctl --addr <replica i> -o json system drain --timeout T`, which must succeed.
fn drain(fleet: &Fleet, i: usize, timeout: &str) -> std::process::Output {
    let addr = fleet.replica_addr(i);
    let out = fleet
        .wgctl(&[
            "--addr",
            &addr,
            "-o",
            "json",
            "system",
            "drain",
            "--timeout",
            timeout,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drain_lets_owned_sessions_finish_and_sends_new_ones_elsewhere() {
    let deps = Deps::start().unwrap();
    let (sshd, fleet) = (&deps.sshd, deps.fleet(2, &[]).await.unwrap());

    // No sessions: the drain returns at once.
    let t = Instant::now();
    let out = drain(&fleet, 1, "30s");
    eprintln!("drain with no sessions took {:?}", t.elapsed());
    let status: SystemStatus = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((status.replica.as_str(), status.draining), ("r1", true));
    // Draining: readiness fails, liveness does not.
    let r1 = fleet.client_for(1);
    let (code, ready) = r1.readyz().await.unwrap();
    assert_eq!(code, 503, "{ready:?}");
    assert!(!ready.ready);
    let drain_check = ready.checks.unwrap().drain;
    assert_eq!(
        (drain_check.ok, drain_check.error.as_deref()),
        (false, Some("draining"))
    );
    let (code, live) = r1.healthz().await.unwrap();
    assert_eq!((code, live.status), (200, LiveState::Ok));
    // A new relay on the draining replica: 503 with Retry-After.
    let auth = r1.create_session(HOST_ALIAS).await.unwrap();
    match r1.open_relay(&auth.id).await.unwrap_err() {
        wardengate::client::ClientError::Api {
            status,
            code,
            retry_after,
            ..
        } => {
            assert_eq!(
                (status, code, retry_after),
                (503, ErrorCode::Draining, Some(1))
            );
        }
        other => panic!("{other}"),
    }
    // Through the load balancer (which still routes to r1: /healthz passes), sessions keep working.
    for i in 0..4 {
        let mut ssh = sshd.ssh_via(&proxy(), &format!("echo lb-{i}")).unwrap();
        ssh.envs(fleet.wgctl_env());
        assert_eq!(
            run(&mut ssh, Duration::from_secs(60)).unwrap(),
            format!("lb-{i}")
        );
    }

    // A session owned by r0 that ends by itself before the deadline completes untouched; the
    // drain returns only after it ended.
    let mut long = sshd.ssh_via(&proxy(), "sleep 3; echo finished").unwrap();
    long.envs(fleet.wgctl_env_for(0)).stdout(Stdio::piped());
    let long = long.spawn().unwrap();
    fleet.wait_owned_sessions(0, 1, OWN_TIMEOUT).unwrap();
    let t = Instant::now();
    drain(&fleet, 0, "60s");
    let took = t.elapsed();
    let long = long.wait_with_output().unwrap();
    assert!(long.status.success());
    assert_eq!(String::from_utf8_lossy(&long.stdout).trim(), "finished");
    assert!(
        took < Duration::from_secs(30),
        "drain waited {took:?} for a 3 s session"
    );
    eprintln!("drain with one 3 s session took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drain_deadline_closes_remaining_sessions_recoverably() {
    let deps = Deps::start().unwrap();
    let (sshd, fleet) = (&deps.sshd, deps.fleet(2, &[]).await.unwrap());
    let mut long = sshd.ssh_via(&proxy(), "sleep 60; echo never").unwrap();
    long.envs(fleet.wgctl_env_for(0))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let long = long.spawn().unwrap();
    fleet.wait_owned_sessions(0, 1, OWN_TIMEOUT).unwrap();
    let t = Instant::now();
    drain(&fleet, 0, "2s");
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "drain took {:?}",
        t.elapsed()
    );
    let long = long.wait_with_output().unwrap();
    assert!(!long.status.success());
    let err = String::from_utf8_lossy(&long.stderr);
    assert!(
        err.contains("replica drained") && err.contains("4003"),
        "ssh/wgctl said: {err}"
    );
    let sessions = fleet.client(&fleet.lb_addr()).sessions(None).await.unwrap();
    assert_eq!(
        sessions[0].end_reason,
        Some(wardengate::session::EndReason::Drained),
        "{:?}",
        sessions[0]
    );
    assert_eq!(sessions[0].status, SessionStatus::Ended);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_drains_before_the_process_exits() {
    let deps = Deps::start().unwrap();
    let (sshd, mut fleet) = (&deps.sshd, deps.fleet(2, &[]).await.unwrap());
    let mut long = sshd.ssh_via(&proxy(), "sleep 3; echo finished").unwrap();
    long.envs(fleet.wgctl_env_for(0)).stdout(Stdio::piped());
    let long = long.spawn().unwrap();
    fleet.wait_owned_sessions(0, 1, OWN_TIMEOUT).unwrap();
    let t = Instant::now();
    fleet.signal(0, nix::sys::signal::Signal::SIGTERM);
    // Still alive and serving while it drains: readiness fails, the session goes on.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        fleet.is_running(0),
        "replica exited before its session ended"
    );
    let (code, ready) = fleet.client_for(0).readyz().await.unwrap();
    assert_eq!((code, ready.ready), (503, false), "{ready:?}");
    let long = long.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&long.stdout).trim(), "finished");
    let (_, _) = Fleet::eventually("r0 to exit after draining", Duration::from_secs(20), || {
        let running = fleet.is_running(0);
        async move { (!running).then_some(()) }
    })
    .await
    .unwrap();
    assert!(
        t.elapsed() >= Duration::from_secs(2),
        "exited after {:?}, before the session ended",
        t.elapsed()
    );
}

/// The preStop path: `wgctl system drain --local` through the replica's admin socket needs no
/// address, token or CA (it works whatever certificate the replica serves), and drains exactly
/// like the API: it waits for the owned session, then returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_drain_through_the_admin_socket_needs_no_token_or_tls() {
    let deps = Deps::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("admin.sock");
    let socket_arg = socket.display().to_string();
    let fleet = deps
        .fleet(1, &["--admin-socket", &socket_arg])
        .await
        .unwrap();
    {
        use std::os::unix::fs::{FileTypeExt, PermissionsExt};
        let meta = std::fs::metadata(&socket).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(
            meta.permissions().mode() & 0o777,
            0o600,
            "socket open to others"
        );
    }
    let mut ssh = deps
        .sshd
        .ssh_via(&proxy(), "sleep 3; echo finished")
        .unwrap();
    ssh.envs(fleet.wgctl_env())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let session = ssh.spawn().unwrap();
    fleet.wait_owned_sessions(0, 1, OWN_TIMEOUT).unwrap();
    // No WG_ADDR, token or CA: only the socket.
    let local = |args: &[&str]| {
        let mut c = std::process::Command::new(wardengate_e2e::bin("wgctl"));
        c.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("WG_ADMIN_SOCKET", &socket_arg);
        c
    };
    let started = Instant::now();
    let out = local(&[
        "-o",
        "json",
        "system",
        "drain",
        "--local",
        "--timeout",
        "60s",
    ])
    .output()
    .unwrap();
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: SystemStatus = serde_json::from_slice(&out.stdout).unwrap();
    assert!(status.draining);
    assert_eq!(status.owned_sessions, 0);
    let ssh_out = session.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&ssh_out.stdout).trim(), "finished");
    assert!(
        took > Duration::from_secs(1),
        "returned before the session ended: {took:?}"
    );
    // Readiness follows the drain; status over the socket says so too.
    let (code, ready) = fleet.client_for(0).readyz().await.unwrap();
    assert_eq!(code, 503);
    assert_eq!(
        ready.checks.unwrap().drain.error.as_deref(),
        Some("draining")
    );
    let s = run(
        &mut local(&["-o", "json", "system", "status", "--local"]),
        Duration::from_secs(10),
    )
    .unwrap();
    let status: SystemStatus = serde_json::from_str(&s).unwrap();
    assert!(status.draining, "{s}");
    // A missing socket is a clear error, not a hang.
    let missing = local(&[
        "system",
        "drain",
        "--local",
        "--socket",
        "/nonexistent/admin.sock",
    ])
    .output()
    .unwrap();
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/admin.sock"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
}
