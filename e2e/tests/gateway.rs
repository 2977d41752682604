//! Three `wardengate serve` replicas behind HAProxy (TCP mode, no affinity) sharing Postgres and
//! Redis; stock OpenSSH clients through `wgctl connect`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use wardengate::client::pump;
use wardengate::session::{EndReason, SessionStatus};
use wardengate::token::Role;
use wardengate::wire::{ErrorCode, NewTarget, NewToken};
use wardengate_e2e::{Deps, Fleet, proxy_command};
use wardengate_testkit::process::run;
use wardengate_testkit::sshd::HOST_ALIAS;
use wardengate_testkit::{Postgres, RedisServer};

const SSH_TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_behind_haproxy_serve_ssh_and_scp() {
    // Deps::fleet has the admin add the sshd target through the load balancer.
    let deps = Deps::start().unwrap();
    let sshd = &deps.sshd;
    let mut fleet = deps.fleet(3, &[]).await.unwrap();

    // No sticky sessions: authorise through r0, relay through r1.
    let auth = fleet
        .client_for(0)
        .create_session(HOST_ALIAS)
        .await
        .unwrap();
    assert_eq!(auth.status, SessionStatus::Authorized);
    let id = auth.id;
    let ws = fleet.client_for(1).open_relay(&id).await.unwrap();
    let mut banner = Vec::new();
    // Send nothing (immediate half-close): sshd still greets before it hangs up.
    pump(ws, tokio::io::empty(), &mut banner).await.unwrap();
    assert!(
        String::from_utf8_lossy(&banner).starts_with("SSH-2.0-OpenSSH"),
        "{banner:?}"
    );
    let row = fleet.client_for(2).session(&id).await.unwrap();
    assert_eq!(row.replica.as_deref(), Some("r1"));
    assert_eq!(row.status, SessionStatus::Ended);
    // The same authorisation cannot be used twice.
    let again = fleet.client_for(2).open_relay(&id).await.unwrap_err();
    assert!(!again.is_retryable(), "{again}");

    // A stock OpenSSH client runs a command through `wgctl connect`.
    let mut ssh = sshd
        .ssh_via(&proxy_command(), "echo hello from $USER")
        .unwrap();
    ssh.envs(fleet.wgctl_env());
    assert_eq!(
        run(&mut ssh, SSH_TIMEOUT).unwrap(),
        format!("hello from {}", sshd.user())
    );

    // scp of 20 MiB through the relay, checksum verified on the far side.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("payload.bin");
    let data: Vec<u8> = (0..20 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&file, &data).unwrap();
    let local_sum = run(
        std::process::Command::new("sha256sum").arg(&file),
        SSH_TIMEOUT,
    )
    .unwrap();
    let local_sum = local_sum.split_whitespace().next().unwrap().to_string();

    let t = Instant::now();
    let mut scp = sshd
        .scp_via(&proxy_command(), &file, "relayed.bin")
        .unwrap();
    scp.envs(fleet.wgctl_env());
    run(&mut scp, SSH_TIMEOUT).unwrap();
    let relayed = t.elapsed();
    let t = Instant::now();
    run(
        &mut sshd.scp_direct(&file, "direct.bin").unwrap(),
        SSH_TIMEOUT,
    )
    .unwrap();
    let direct = t.elapsed();
    let mut sum = sshd
        .ssh_via(&proxy_command(), "sha256sum relayed.bin")
        .unwrap();
    sum.envs(fleet.wgctl_env());
    let remote_sum = run(&mut sum, SSH_TIMEOUT).unwrap();
    assert_eq!(remote_sum.split_whitespace().next().unwrap(), local_sum);
    let mib_s = |d: Duration| 20.0 / d.as_secs_f64();
    eprintln!(
        "scp 20 MiB: through gateway {relayed:?} ({:.1} MiB/s), direct {direct:?} ({:.1} MiB/s)",
        mib_s(relayed),
        mib_s(direct)
    );

    // History in Postgres: bytes each way, replica and reason for every session.
    let sessions = fleet.client(&fleet.lb_addr()).sessions(None).await.unwrap();
    assert_eq!(sessions.len(), 4);
    for s in &sessions {
        assert_eq!(s.status, SessionStatus::Ended, "{s:?}");
        assert!(
            s.replica.as_deref().is_some_and(|r| r.starts_with('r')),
            "{s:?}"
        );
        assert!(s.bytes_down > 0, "{s:?}");
        assert!(s.end_reason.is_some(), "{s:?}");
    }
    assert!(
        sessions.iter().any(|s| s.bytes_up > 20 * 1024 * 1024),
        "scp upload not counted"
    );
    let replicas: std::collections::HashSet<&str> = sessions
        .iter()
        .filter_map(|s| s.replica.as_deref())
        .collect();
    assert!(
        replicas.len() >= 2,
        "round robin should spread relays: {replicas:?}"
    );

    // A replica killed between sessions: the next sessions still succeed through the balancer
    // (wgctl retries, HAProxy redispatches, then its health check drops the dead replica).
    fleet.kill9(2);
    for i in 0..4 {
        let mut ssh = sshd
            .ssh_via(&proxy_command(), &format!("echo after-kill-{i}"))
            .unwrap();
        ssh.envs(fleet.wgctl_env());
        assert_eq!(
            run(&mut ssh, SSH_TIMEOUT).unwrap(),
            format!("after-kill-{i}")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_errors_are_json_with_stable_codes() {
    let pg = Postgres::start().unwrap();
    let redis = RedisServer::start().unwrap();
    let fleet = Fleet::start(1, &pg.url(), &redis.url(), &[]).await.unwrap();
    let admin = fleet.client_for(0);
    let code = |e: wardengate::client::ClientError| match e {
        wardengate::client::ClientError::Api { status, code, .. } => (status, code),
        other => panic!("{other}"),
    };
    // Unknown target → 404.
    let e = admin.create_session("nope").await.unwrap_err();
    assert_eq!(code(e), (404, ErrorCode::TargetNotFound));
    // Bad token → 401.
    let anon = wardengate::client::Client::new(
        &fleet.replica_addr(0),
        Some(&std::fs::read_to_string(fleet.wgctl_env()[1].1.clone()).unwrap()),
        Some("wg_not-a-real-token".into()),
    )
    .unwrap();
    assert_eq!(
        code(anon.targets().await.unwrap_err()),
        (401, ErrorCode::Unauthorized)
    );
    // A user token may not add targets → 403; malformed body → 400.
    let created = admin
        .create_token(&NewToken {
            role: Role::User,
            name: None,
            ttl_seconds: None,
        })
        .await
        .unwrap();
    assert_eq!(
        (created.role, created.name.as_str()),
        (Role::User, "user-token")
    );
    let user = wardengate::client::Client::new(
        &fleet.replica_addr(0),
        Some(&std::fs::read_to_string(fleet.wgctl_env()[1].1.clone()).unwrap()),
        Some(created.token),
    )
    .unwrap();
    let e = user
        .add_target(&NewTarget {
            name: "x".into(),
            host: "h".into(),
            port: 1,
            require_approval: false,
            region: None,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(code(e), (403, ErrorCode::Forbidden));
    // A body the typed client cannot produce (no host), so sent as raw JSON.
    let e = admin
        .call::<Value, Value>(
            Method::POST,
            "/v1/targets",
            Some(&json!({"name": "x", "port": 1})),
        )
        .await
        .unwrap_err();
    assert_eq!(code(e), (400, ErrorCode::InvalidBody));
    // A target that does not listen → 502 target_unreachable, wgctl exit code 69.
    let closed = admin
        .add_target(&NewTarget {
            name: "closed".into(),
            host: "127.0.0.1".into(),
            port: 1,
            require_approval: false,
            region: None,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!((closed.port, closed.require_approval), (1, false));
    let out = fleet.wgctl(&["connect", "closed"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(69),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("target_unreachable"));
    // wgctl authorised and dialled in one request: the attempt is in the history, ended.
    let history = admin.sessions(None).await.unwrap();
    let attempt = history
        .iter()
        .find(|s| s.target_name == "closed")
        .expect("the failed attempt is recorded");
    assert_eq!(attempt.status, SessionStatus::Ended, "{attempt:?}");
    assert_eq!(
        attempt.end_reason,
        Some(EndReason::TargetUnreachable),
        "{attempt:?}"
    );
    // A target that needs an approver cannot be connected in one request.
    admin
        .add_target(&NewTarget {
            name: "guarded".into(),
            host: "127.0.0.1".into(),
            port: 1,
            require_approval: true,
            region: None,
            ..Default::default()
        })
        .await
        .unwrap();
    let e = admin.open_target_relay("guarded").await.unwrap_err();
    assert_eq!(code(e), (409, ErrorCode::ApprovalRequired));
}

/// The relay's replica is gone before the target connection was made: the retry that
/// `wgctl connect` runs (`with_retries` around `open_relay`) succeeds through another replica on
/// the same authorisation, without a new login.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn relay_retries_through_another_replica_on_the_same_authorisation() {
    let deps = Deps::start().unwrap();
    let mut fleet = deps.fleet(2, &[]).await.unwrap();
    let id = fleet
        .client_for(0)
        .create_session(HOST_ALIAS)
        .await
        .unwrap()
        .id;
    fleet.kill9(1);
    let (dead, live) = (fleet.client_for(1), fleet.client_for(0));
    let mut tries = 0;
    let ws = wardengate::client::with_retries(
        Duration::from_secs(10),
        |_| {},
        || {
            tries += 1;
            let c = if tries == 1 {
                dead.clone()
            } else {
                live.clone()
            };
            let id = id.clone();
            async move { c.open_relay(&id).await }
        },
    )
    .await
    .unwrap();
    assert_eq!(tries, 2, "the dead replica's failure must be retried");
    let mut banner = Vec::new();
    pump(ws, tokio::io::empty(), &mut banner).await.unwrap();
    assert!(String::from_utf8_lossy(&banner).starts_with("SSH-2.0-"));
    let row = live.session(&id).await.unwrap();
    assert_eq!(
        (row.replica.as_deref(), row.status),
        (Some("r0"), SessionStatus::Ended)
    );
}

/// `wgctl sessions kill` ends a live session wherever its relay runs: durable in Postgres, seen
/// by the relay through the signed grant, and the client told it was terminated.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_a_live_session_closes_its_relay() {
    let deps = Deps::start().unwrap();
    let fleet = deps.fleet(2, &[]).await.unwrap();
    let mut ssh = deps
        .sshd
        .ssh_via(&proxy_command(), "sleep 60; echo never")
        .unwrap();
    ssh.envs(fleet.wgctl_env())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let ssh = ssh.spawn().unwrap();
    let lb = fleet.client(&fleet.lb_addr());
    let (id, _) = Fleet::eventually("the session to be active", Duration::from_secs(20), || {
        let lb = lb.clone();
        async move {
            let s = lb.sessions(None).await.ok()?;
            s.first()
                .filter(|s| s.status == SessionStatus::Active)
                .map(|s| s.id.clone())
        }
    })
    .await
    .unwrap();
    let killed = Instant::now();
    let out = run(
        &mut fleet.wgctl(&["-o", "json", "sessions", "kill", &id]),
        Duration::from_secs(30),
    )
    .unwrap();
    let killed_view: wardengate::wire::SessionView = serde_json::from_str(&out).unwrap();
    assert_eq!(killed_view.status, SessionStatus::Terminating);
    let ssh = ssh.wait_with_output().unwrap();
    assert!(!ssh.status.success());
    assert!(
        killed.elapsed() < Duration::from_secs(10),
        "relay took {:?} to close",
        killed.elapsed()
    );
    let err = String::from_utf8_lossy(&ssh.stderr);
    assert!(
        err.contains("terminated") && err.contains("4002"),
        "client saw: {err}"
    );
    let (row, _) = Fleet::eventually("the end to be recorded", Duration::from_secs(10), || {
        let lb = lb.clone();
        let id = id.clone();
        async move {
            let r = lb.session(&id).await.ok()?;
            (r.status == SessionStatus::Ended).then_some(r)
        }
    })
    .await
    .unwrap();
    assert_eq!(row.end_reason, Some(EndReason::Terminated));
}

/// Replicas cache successful token lookups for `TOKEN_CACHE_TTL`: a token marked revoked in
/// Postgres (no API revokes yet; the column exists) stops working within that bound on a
/// replica that has just used it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_stops_working_within_the_token_cache_ttl() {
    let pg = Postgres::start().unwrap();
    let redis = RedisServer::start().unwrap();
    let fleet = Fleet::start(1, &pg.url(), &redis.url(), &[]).await.unwrap();
    let admin = fleet.client_for(0);
    let created: Value = admin
        .call(
            Method::POST,
            "/v1/tokens",
            Some(&json!({"role": "user", "name": "soon-revoked"})),
        )
        .await
        .unwrap();
    let ca = std::fs::read_to_string(fleet.wgctl_env()[1].1.clone()).unwrap();
    let user = wardengate::client::Client::new(
        &fleet.replica_addr(0),
        Some(&ca),
        Some(created["token"].as_str().unwrap().to_string()),
    )
    .unwrap();
    // Used twice: the second call is served from the cache.
    for _ in 0..2 {
        let _: Value = user.get("/v1/targets").await.unwrap();
    }
    pg.sql("UPDATE tokens SET revoked_at = 1 WHERE name = 'soon-revoked'")
        .unwrap();
    let revoked = Instant::now();
    Fleet::eventually(
        "the revoked token to be refused",
        Duration::from_secs(10),
        || async {
            match user.get::<Value>("/v1/targets").await {
                Err(wardengate::client::ClientError::Api { status: 401, .. }) => Some(()),
                _ => None,
            }
        },
    )
    .await
    .unwrap();
    let bound = wardengate::api::TOKEN_CACHE_TTL + Duration::from_millis(500);
    assert!(
        revoked.elapsed() <= bound,
        "revoked token worked for {:?}, more than the cache bound {bound:?}",
        revoked.elapsed()
    );
    // The admin token, never revoked, still works.
    let _: Value = admin.get("/v1/targets").await.unwrap();
}
