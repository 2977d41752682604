//! Split brain: one replica cut off from Postgres while its peer is not disconnects its sessions
//! with a recoverable error and fails /healthz within two 5 s cycles; a Postgres outage that
//! hits every replica fails /readyz but not /healthz (no fleet-wide restart loop).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::process::Stdio;
use std::time::{Duration, Instant};

use wardengate::client::ClientError;
use wardengate::session::SessionStatus;
use wardengate::wire::LiveState;
use wardengate_e2e::{Deps, Fleet, proxy_command};
use wardengate_testkit::proxy::TcpProxy;

/// The status of a `/healthz` or `/readyz` answer (both carry a document whatever the status).
fn status_of<T>(r: Result<(u16, T), ClientError>) -> u16 {
    match r {
        Ok((status, _)) => status,
        Err(ClientError::Api { status, .. }) => status,
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn isolated_replica_fails_liveness_but_a_fleet_wide_outage_does_not() {
    let deps = Deps::start().unwrap();
    let links = [
        TcpProxy::start(deps.pg.port()).unwrap(),
        TcpProxy::start(deps.pg.port()).unwrap(),
    ];
    let ports = [links[0].port(), links[1].port()];
    let fleet = deps
        .fleet_each(
            2,
            &|i| format!("postgres://postgres@127.0.0.1:{}/postgres", ports[i]),
            &["--isolation-grace", "2s"],
        )
        .await
        .unwrap();
    let (r0, r1) = (fleet.client_for(0), fleet.client_for(1));

    let mut ssh = deps.sshd.ssh_via(&proxy_command(), "sleep 60").unwrap();
    ssh.envs(fleet.wgctl_env_for(0))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let ssh = ssh.spawn().unwrap();
    fleet
        .wait_owned_sessions(0, 1, Duration::from_secs(20))
        .unwrap();

    // Partition r0 from Postgres; r1 keeps its link.
    let cut = Instant::now();
    links[0].cut();
    let (_, took) = Fleet::eventually("r0 /healthz to fail", Duration::from_secs(10), || {
        let r0 = r0.clone();
        async move { (status_of(r0.healthz().await) == 503).then_some(()) }
    })
    .await
    .unwrap();
    eprintln!("isolation to /healthz failing: {took:?} (grace 2 s, checker every 500 ms)");
    let (_, live) = r0.healthz().await.unwrap();
    assert_eq!(live.status, LiveState::Isolated, "{live:?}");
    assert!(live.reason.is_some(), "{live:?}");
    assert_eq!(status_of(r1.healthz().await), 200);
    assert_eq!(status_of(r1.readyz().await), 200);
    let out = ssh.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("4004") && err.contains("isolated"),
        "client saw: {err}"
    );
    assert!(cut.elapsed() < Duration::from_secs(10));

    // Healed: liveness returns, and the end of the session is recorded once Postgres is back.
    links[0].restore();
    Fleet::eventually("r0 /healthz to recover", Duration::from_secs(15), || {
        let r0 = r0.clone();
        async move { (status_of(r0.healthz().await) == 200).then_some(()) }
    })
    .await
    .unwrap();
    let (row, _) = Fleet::eventually(
        "the session end to be recorded",
        Duration::from_secs(15),
        || {
            let r1 = r1.clone();
            async move {
                let s = r1.sessions(None).await.ok()?;
                s.into_iter()
                    .next()
                    .filter(|s| s.status == SessionStatus::Ended)
            }
        },
    )
    .await
    .unwrap();
    assert_eq!(
        row.end_reason,
        Some(wardengate::session::EndReason::ReplicaIsolated),
        "{row:?}"
    );

    // Postgres gone for everyone: readiness fails everywhere, liveness holds.
    links[0].cut();
    links[1].cut();
    Fleet::eventually("both /readyz to fail", Duration::from_secs(10), || {
        let (a, b) = (r0.clone(), r1.clone());
        async move {
            (status_of(a.readyz().await) == 503 && status_of(b.readyz().await) == 503).then_some(())
        }
    })
    .await
    .unwrap();
    // Observe well past the grace (2 s) and two heartbeat ages: liveness never fails.
    let watch_until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < watch_until {
        assert_eq!(
            status_of(r0.healthz().await),
            200,
            "fleet-wide outage failed r0 liveness"
        );
        assert_eq!(
            status_of(r1.healthz().await),
            200,
            "fleet-wide outage failed r1 liveness"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
