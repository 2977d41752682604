//! Kubernetes health semantics through dependency outages, as the HA guide states them: a
//! replica started while Postgres is down listens at once (`/healthz` 200) and becomes ready
//! when Postgres appears instead of crash-looping; a brief Postgres hiccup does not fail
//! readiness; Redis gone drops live sessions with a recoverable error, refuses new ones with 503
//! and `Retry-After`, keeps history, and everything works again when Redis returns.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::process::Stdio;
use std::time::{Duration, Instant};

use wardengate::client::ClientError;
use wardengate::session::SessionStatus;
use wardengate::wire::{ErrorCode, LiveState};
use wardengate_e2e::{Deps, Fleet, proxy_command};
use wardengate_testkit::process::run;
use wardengate_testkit::proxy::TcpProxy;
use wardengate_testkit::sshd::HOST_ALIAS;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_started_during_a_postgres_outage_listens_at_once_and_becomes_ready() {
    let deps = Deps::start().unwrap();
    let link = TcpProxy::start(deps.pg.port()).unwrap();
    let port = link.port();
    let mut fleet = deps
        .fleet_each(
            1,
            &|_| format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            &[],
        )
        .await
        .unwrap();
    fleet.kill9(0);
    link.cut();
    let spawned = Instant::now();
    fleet.start_replica(0).unwrap();
    let c = fleet.client_for(0);
    let (_, took) = Fleet::eventually("/healthz to answer 200", Duration::from_secs(10), || {
        let c = c.clone();
        async move { c.healthz().await.ok().filter(|(code, _)| *code == 200) }
    })
    .await
    .unwrap();
    eprintln!("/healthz 200 {took:?} after spawn, Postgres down");
    let (_, live) = c.healthz().await.unwrap();
    assert_eq!(live.status, LiveState::Starting, "{live:?}");
    assert!(spawned.elapsed() < Duration::from_secs(5));
    // Not ready, saying why; the API answers 503 with Retry-After; the process keeps running.
    let waiting_until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < waiting_until {
        let (code, body) = c.readyz().await.unwrap();
        assert_eq!(code, 503, "{body:?}");
        assert!(!body.ready);
        assert!(
            body.starting
                .as_deref()
                .is_some_and(|s| s.contains("waiting for postgres")),
            "{body:?}"
        );
        assert!(fleet.is_running(0), "the replica exited during the outage");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    match c.targets().await {
        Err(ClientError::Api {
            status: 503,
            retry_after: Some(_),
            code: ErrorCode::Starting,
            ..
        }) => {}
        other => panic!("expected 503 with Retry-After while starting, got {other:?}"),
    }
    link.restore();
    let ready = fleet.wait_ready(0, Duration::from_secs(30)).await.unwrap();
    eprintln!("ready {ready:?} after Postgres came back");
    let targets = c.targets().await.unwrap();
    assert!(targets.iter().any(|t| t.name == HOST_ALIAS));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_three_second_postgres_outage_does_not_fail_readiness() {
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
            &[],
        )
        .await
        .unwrap();
    let clients = [fleet.client_for(0), fleet.client_for(1)];
    for l in &links {
        l.cut();
    }
    let cut = Instant::now();
    let mut saw_failing = false;
    while cut.elapsed() < Duration::from_secs(5) {
        if cut.elapsed() > Duration::from_secs(3) {
            for l in &links {
                l.restore();
            }
        }
        for c in &clients {
            let (code, body) = c.readyz().await.unwrap();
            assert_eq!(
                code,
                200,
                "readiness failed {:?} into a short outage: {body:?}",
                cut.elapsed()
            );
            assert!(body.ready, "{body:?}");
            saw_failing |= body
                .checks
                .is_some_and(|c| c.postgres.failing_for_ms.is_some());
            assert_eq!(c.healthz().await.unwrap().0, 200);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(saw_failing, "the checker never noticed the outage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_gone_drops_sessions_recoverably_refuses_new_ones_and_recovers() {
    let mut deps = Deps::start().unwrap();
    let fleet = deps.fleet(2, &[]).await.unwrap();
    let mut ssh = deps.sshd.ssh_via(&proxy_command(), "sleep 120").unwrap();
    ssh.envs(fleet.wgctl_env())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let live = ssh.spawn().unwrap();
    let id = fleet
        .wait_active_session(Duration::from_secs(30))
        .await
        .unwrap();

    deps.redis.kill9();
    let gone = Instant::now();
    let out = tokio::task::spawn_blocking(move || live.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let dropped = gone.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("4005"), "client saw: {err}");
    assert!(
        dropped < Duration::from_secs(15),
        "dropped after {dropped:?}"
    );
    eprintln!("live session dropped {dropped:?} after Redis went away");

    // New sessions: refused with 503 and Retry-After, through any replica.
    for i in 0..2 {
        match fleet.client_for(i).create_session(HOST_ALIAS).await {
            Err(ClientError::Api {
                status: 503,
                retry_after: Some(_),
                code,
                ..
            }) => assert_eq!(code, ErrorCode::SessionStateUnavailable),
            other => panic!("expected 503 + Retry-After without Redis, got {other:?}"),
        }
    }
    // History is kept: the dropped session's end is in Postgres.
    let row = fleet.client_for(1).session(&id).await.unwrap();
    assert_eq!(row.status, SessionStatus::Ended, "{row:?}");
    assert_eq!(
        row.end_reason,
        Some(wardengate::session::EndReason::SessionStateLost),
        "{row:?}"
    );

    deps.redis.restart().unwrap();
    let back = Instant::now();
    let env = fleet.wgctl_env();
    let sshd = &deps.sshd;
    wardengate_testkit::wait_until(
        "a new session after Redis returns",
        Duration::from_secs(30),
        || {
            let mut ssh = sshd.ssh_via(&proxy_command(), "echo back").unwrap();
            ssh.envs(env.clone());
            run(&mut ssh, Duration::from_secs(20)).is_ok_and(|o| o == "back")
        },
    )
    .unwrap();
    eprintln!(
        "sessions work again {:?} after Redis returned",
        back.elapsed()
    );
}
