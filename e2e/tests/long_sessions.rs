//! Sessions of any length, and bulk traffic both ways at once: a relay keeps its session's live
//! state valid for as long as it carries it (re-signed on every renewal), a terminate still
//! reaches it within a poll, and `wgctl` never deadlocks when the target writes while it reads.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wardengate::wire::SessionView;
use wardengate_e2e::{Deps, Fleet, bin, echo_server, proxy_command};
use wardengate_testkit::process::run;

/// Idle, then traffic both ways, then idle again, through a stock `ssh` and `wgctl connect`.
/// Returns what the remote command printed (`<bytes received>` then the zeros it sent).
async fn idle_traffic_idle(deps: &Deps, fleet: &Fleet, idle_secs: u64, bytes: usize) -> Vec<u8> {
    let remote = format!(
        "sleep {idle_secs}; head -c {bytes} | wc -c; head -c {bytes} /dev/zero; sleep {idle_secs}; echo done"
    );
    let mut ssh = deps.sshd.ssh_via(&proxy_command(), &remote).unwrap();
    ssh.envs(fleet.wgctl_env());
    let mut child = tokio::process::Command::from(ssh)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let upload = tokio::spawn(async move {
        stdin.write_all(&vec![7u8; bytes]).await.unwrap();
        drop(stdin);
    });
    let out = tokio::time::timeout(
        Duration::from_secs(idle_secs * 2 + 120),
        child.wait_with_output(),
    )
    .await
    .expect("session did not finish")
    .unwrap();
    upload.await.unwrap();
    assert!(
        out.status.success(),
        "ssh failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn check_output(out: &[u8], bytes: usize) {
    let head = format!("{bytes}\n");
    assert!(
        out.starts_with(head.as_bytes()),
        "upload not received whole: {:?}",
        String::from_utf8_lossy(&out[..out.len().min(40)])
    );
    let zeros = &out[head.len()..out.len() - "done\n".len()];
    assert_eq!(zeros.len(), bytes, "download not received whole");
    assert!(zeros.iter().all(|b| *b == 0));
    assert!(out.ends_with(b"done\n"));
}

async fn ended_session(fleet: &Fleet) -> SessionView {
    let rows = fleet.client_for(0).sessions(Some(1)).await.unwrap();
    assert_eq!(rows.len(), 1, "limit=1: {rows:?}");
    rows.into_iter().next().unwrap()
}

/// With every default (live session TTL 60 s, lease TTL 5 s, replica-lost 15 s, isolation grace
/// 10 s), a session outlives the longest of them by more than 2x: 65 s idle, 8 MiB each way,
/// 65 s idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_session_outlives_every_internal_ttl_with_the_defaults() {
    let deps = Deps::start().unwrap();
    let fleet = deps.fleet(1, &[]).await.unwrap();
    let started = Instant::now();
    let out = idle_traffic_idle(&deps, &fleet, 65, 8 << 20).await;
    let held = started.elapsed();
    check_output(&out, 8 << 20);
    assert!(held > Duration::from_secs(120), "held only {held:?}");
    let row = ended_session(&fleet).await;
    assert!(
        matches!(
            row.end_reason,
            Some(
                wardengate::session::EndReason::ClientClosed
                    | wardengate::session::EndReason::TargetClosed
            )
        ),
        "{row:?}"
    );
    eprintln!("session held {held:?} and ended normally");
}

/// With the live session TTL cut to 2 s (renewed every 500 ms, the fleet's health interval), a
/// session survives more than 20 renewals, and a terminate still ends it within a poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn short_ttls_renew_twenty_times_and_terminate_stays_prompt() {
    let deps = Deps::start().unwrap();
    let fleet = deps.fleet(2, &["--live-session-ttl", "2s"]).await.unwrap();
    // 6 s idle + traffic + 6 s idle = more than 24 renewals of a 2 s grant.
    let out = idle_traffic_idle(&deps, &fleet, 6, 1 << 20).await;
    check_output(&out, 1 << 20);
    // A normal end, never a lapsed grant: which side the relay sees close first is a race
    // (ssh kills its ProxyCommand as sshd closes the connection).
    let reason = ended_session(&fleet).await.end_reason;
    assert!(
        matches!(
            reason,
            Some(
                wardengate::session::EndReason::ClientClosed
                    | wardengate::session::EndReason::TargetClosed
            )
        ),
        "{reason:?}"
    );

    // Terminate a live session after 5 s (10 renewals): the relay closes within a poll or two.
    let mut ssh = deps.sshd.ssh_via(&proxy_command(), "sleep 600").unwrap();
    ssh.envs(fleet.wgctl_env());
    let mut child = tokio::process::Command::from(ssh)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let id = fleet
        .wait_active_session(Duration::from_secs(30))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await; // let it renew ~10 times
    assert!(
        child.try_wait().unwrap().is_none(),
        "session ended on its own"
    );
    let killed = Instant::now();
    run(
        &mut fleet.wgctl(&["sessions", "kill", &id]),
        Duration::from_secs(30),
    )
    .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("terminated session still running")
        .unwrap();
    let took = killed.elapsed();
    assert!(!status.success());
    assert!(took < Duration::from_secs(3), "terminate took {took:?}");
    let row = fleet.client_for(1).session(&id).await.unwrap();
    assert_eq!(
        row.end_reason,
        Some(wardengate::session::EndReason::Terminated),
        "{row:?}"
    );
    eprintln!("terminate reached the relay in {took:?}");
}

/// Writes `bytes` of a pattern to `w` while reading `bytes` back from `r`, checking every byte.
async fn echo_both_ways(
    mut w: impl tokio::io::AsyncWrite + Unpin + Send + 'static,
    mut r: impl tokio::io::AsyncRead + Unpin,
    bytes: usize,
) {
    let pattern = |i: usize| (i % 251) as u8;
    let writer = tokio::spawn(async move {
        let mut sent = 0;
        while sent < bytes {
            let n = (1usize << 20).min(bytes - sent);
            let start = sent % 251;
            let piece: Vec<u8> = (start..start + n).map(pattern).collect();
            w.write_all(&piece).await.unwrap();
            sent += n;
        }
        w.shutdown().await.unwrap();
    });
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0usize;
    while got < bytes {
        let n = tokio::time::timeout(Duration::from_secs(30), r.read(&mut buf))
            .await
            .expect("no echo for 30 s: the pump is stuck")
            .unwrap();
        assert!(n > 0, "stream ended after {got} of {bytes} bytes");
        for (k, b) in buf[..n].iter().enumerate() {
            assert_eq!(*b, pattern(got + k), "byte {} differs", got + k);
        }
        got += n;
    }
    writer.await.unwrap();
}

/// 256 MiB each way at once through an echo target, through `wgctl tunnel` and `wgctl connect`,
/// twice each: with a pump that waits on a send while it could be reading, every buffer fills
/// and the transfer stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bulk_traffic_both_ways_never_deadlocks() {
    const BYTES: usize = 256 << 20;
    let deps = Deps::start().unwrap();
    let fleet = deps.fleet(1, &[]).await.unwrap();
    let echo = echo_server().await;
    let add = run(
        &mut fleet.wgctl(&[
            "targets",
            "add",
            "echo",
            "--host",
            "127.0.0.1",
            "--port",
            &echo.to_string(),
        ]),
        Duration::from_secs(30),
    )
    .unwrap();
    assert!(add.contains("added"), "{add}");

    // wgctl tunnel: one process serving a local port.
    let mut tunnel = tokio::process::Command::new(bin("wgctl"))
        .args(["-o", "json", "tunnel", "echo", "--listen", "127.0.0.1:0"])
        .envs(fleet.wgctl_env())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut stdout = tokio::io::BufReader::new(tunnel.stdout.take().unwrap());
    tokio::time::timeout(
        Duration::from_secs(30),
        tokio::io::AsyncBufReadExt::read_line(&mut stdout, &mut line),
    )
    .await
    .unwrap()
    .unwrap();
    let listen: Value = serde_json::from_str(&line).unwrap();
    let addr = listen["listen"].as_str().unwrap().to_string();
    for round in 0..2 {
        let started = Instant::now();
        let s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let (r, w) = s.into_split();
        echo_both_ways(w, r, BYTES).await;
        eprintln!(
            "tunnel round {round}: 256 MiB each way in {:?}",
            started.elapsed()
        );
    }

    // wgctl connect: stdin/stdout.
    for round in 0..2 {
        let started = Instant::now();
        let mut child = tokio::process::Command::new(bin("wgctl"))
            .args(["connect", "echo"])
            .envs(fleet.wgctl_env())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let (w, r) = (child.stdin.take().unwrap(), child.stdout.take().unwrap());
        echo_both_ways(w, r, BYTES).await;
        let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(status.success(), "wgctl connect: {status}");
        eprintln!(
            "connect round {round}: 256 MiB each way in {:?}",
            started.elapsed()
        );
    }
}
