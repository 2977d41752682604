//! Approvals end to end: a target that requires approval, a user's `wgctl connect` that waits,
//! an approver who sees the request (list and the live `approvals watch` stream fed by the
//! leased fan-out job) and decides; a pending request that outlives the replica that created it;
//! a denial that `wgctl connect` reports with exit code 3.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use wardengate::session::SessionStatus;
use wardengate::wire::{CreatedToken, Event, SessionView};
use wardengate_e2e::{Deps, Fleet, proxy_command};
use wardengate_testkit::process::run;
use wardengate_testkit::wait_until;

const GATED: &str = "gated";

fn token(fleet: &Fleet, role: &str) -> String {
    let out = run(
        &mut fleet.wgctl(&[
            "-o", "json", "tokens", "create", "--role", role, "--name", role,
        ]),
        Duration::from_secs(30),
    )
    .unwrap();
    let created: CreatedToken = serde_json::from_str(&out).unwrap();
    assert_eq!(created.role.as_str(), role);
    created.token
}

fn with_token(mut cmd: std::process::Command, token: &str) -> std::process::Command {
    cmd.env("WG_TOKEN", token);
    cmd
}

fn pending(fleet: &Fleet, approver: &str) -> Vec<SessionView> {
    let out = run(
        &mut with_token(fleet.wgctl(&["-o", "json", "approvals", "list"]), approver),
        Duration::from_secs(30),
    )
    .unwrap();
    serde_json::from_str(&out).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gated_session_waits_for_an_approver_and_the_watch_stream_shows_it() {
    let deps = Deps::start().unwrap();
    let mut fleet = deps.fleet(2, &[]).await.unwrap();
    let port = deps.sshd.port().to_string();
    run(
        &mut fleet.wgctl(&[
            "targets",
            "add",
            GATED,
            "--host",
            "127.0.0.1",
            "--port",
            &port,
            "--require-approval",
        ]),
        Duration::from_secs(30),
    )
    .unwrap();
    let user = token(&fleet, "user");
    let approver = token(&fleet, "approver");

    // The approver follows events through the load balancer, from the first one on (so it
    // does not matter when its stream connects).
    let mut watch = with_token(
        fleet.wgctl(&[
            "-o",
            "json",
            "approvals",
            "watch",
            "--count",
            "3",
            "--since",
            "0",
        ]),
        &approver,
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let watch_out = watch.stdout.take().unwrap();
    let events = std::thread::spawn(move || {
        BufReader::new(watch_out)
            .lines()
            .map(|l| serde_json::from_str::<Event>(&l.unwrap()).unwrap())
            .collect::<Vec<_>>()
    });
    // The user connects: wgctl waits for the decision.
    // The ssh host alias stays; the proxy command names the gated target.
    let proxy = proxy_command().replace("%h", GATED);
    let mut ssh = deps.sshd.ssh_via(&proxy, "echo approved-session").unwrap();
    ssh.envs(fleet.wgctl_env())
        .env("WG_TOKEN", &user)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let ssh = ssh.spawn().unwrap();
    wait_until("the request to be pending", Duration::from_secs(30), || {
        pending(&fleet, &approver).len() == 1
    })
    .unwrap();
    let id = pending(&fleet, &approver)[0].id.clone();
    eprintln!("pending: {id}");

    // The requester cannot approve its own request.
    let own = with_token(fleet.wgctl(&["approvals", "approve", &id]), &user)
        .output()
        .unwrap();
    assert_eq!(
        own.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&own.stderr)
    );

    let out = run(
        &mut with_token(
            fleet.wgctl(&["approvals", "approve", &id, "--reason", "change 42"]),
            &approver,
        ),
        Duration::from_secs(30),
    )
    .unwrap();
    assert!(out.contains("approved"), "{out}");
    let ssh = ssh.wait_with_output().unwrap();
    assert!(
        ssh.status.success(),
        "{}",
        String::from_utf8_lossy(&ssh.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&ssh.stdout).trim(),
        "approved-session"
    );

    // Deciding twice is refused.
    let again = with_token(fleet.wgctl(&["approvals", "deny", &id]), &approver)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    eprintln!("approved and connected; waiting for the watcher's three events");
    let ended = wait_until(
        "the watcher to see three events",
        Duration::from_secs(20),
        || watch.try_wait().unwrap().is_some(),
    );
    if ended.is_err() {
        let _ = watch.kill();
    }
    let events = events.join().unwrap();
    assert!(ended.is_ok(), "the watcher saw only {events:#?}");
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        ["approval.requested", "approval.approved", "session.started"],
        "{events:#?}"
    );
    assert!(events.iter().all(|e| e.subject == id));
    let ids: Vec<i64> = events.iter().map(|e| e.id).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ordered, no duplicates: {ids:?}"
    );

    // A denial ends the waiting connect with exit code 3 and the reason.
    let mut ssh = deps.sshd.ssh_via(&proxy, "echo never").unwrap();
    ssh.envs(fleet.wgctl_env())
        .env("WG_TOKEN", &user)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let ssh = ssh.spawn().unwrap();
    wait_until("a second request", Duration::from_secs(30), || {
        pending(&fleet, &approver).len() == 1
    })
    .unwrap();
    let id2 = pending(&fleet, &approver)[0].id.clone();
    run(
        &mut with_token(
            fleet.wgctl(&["approvals", "deny", &id2, "--reason", "not now"]),
            &approver,
        ),
        Duration::from_secs(30),
    )
    .unwrap();
    let ssh = ssh.wait_with_output().unwrap();
    assert!(!ssh.status.success());
    assert!(
        String::from_utf8_lossy(&ssh.stderr).contains("denied"),
        "{}",
        String::from_utf8_lossy(&ssh.stderr)
    );

    // A pending request outlives the replica that created it.
    let r0 = wardengate::client::Client::new(
        &fleet.replica_addr(0),
        Some(&std::fs::read_to_string(fleet.wgctl_env()[1].1.clone()).unwrap()),
        Some(user.clone()),
    )
    .unwrap();
    let created = r0.create_session(GATED).await.unwrap();
    assert_eq!(created.status, SessionStatus::Pending);
    let id3 = created.id;
    fleet.kill9(0);
    assert_eq!(pending(&fleet, &approver)[0].id, id3);
    run(
        &mut with_token(fleet.wgctl(&["approvals", "approve", &id3]), &approver),
        Duration::from_secs(30),
    )
    .unwrap();
    let r1 = wardengate::client::Client::new(
        &fleet.replica_addr(1),
        Some(&std::fs::read_to_string(fleet.wgctl_env()[1].1.clone()).unwrap()),
        Some(user),
    )
    .unwrap();
    let relay = r1.open_relay(&id3).await;
    assert!(
        relay.is_ok(),
        "the approved session connects through the surviving replica: {:?}",
        relay.err()
    );
}

/// Whoever can write to Redis but does not hold the internal key cannot show approvers a
/// forged event (a fake `approval.requested`, a fake `session.ended`): stream entries whose seal
/// does not verify are dropped; real events before and after them still arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_events_written_into_redis_never_reach_approvers() {
    let deps = Deps::start().unwrap();
    let fleet = deps.fleet(1, &[]).await.unwrap();
    let admin = fleet.client_for(0);
    admin
        .add_target(&wardengate::wire::NewTarget {
            name: GATED.into(),
            host: "127.0.0.1".into(),
            port: deps.sshd.port(),
            require_approval: true,
            region: None,
            ..Default::default()
        })
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let follower = {
        let admin = admin.clone();
        tokio::spawn(async move {
            admin
                .events("/v1/events", None, |e| tx.send(e).is_ok())
                .await
        })
    };
    // A first real request proves the stream is attached (it follows from its end).
    let first = admin.create_session(GATED).await.unwrap();
    let seen = next_request(&mut rx).await;
    assert!(seen.iter().any(|e| e.data.contains(&first.id)), "{seen:?}");

    // Forgeries: unsealed event JSON, and a sealed-looking entry with a made-up MAC.
    let raw = r#"{"id":999999,"at":1,"kind":"approval.requested","subject":"forged-1","detail":"{\"session\":\"forged-1\"}"}"#;
    let fake_seal = serde_json::json!({
        "event": raw.replace("forged-1", "forged-2"),
        "kid": "e2e1",
        "mac": "AAAA",
    })
    .to_string();
    for doc in [raw.to_string(), fake_seal] {
        deps.redis
            .cli(&["XADD", "wg:events", "*", "e", &doc])
            .unwrap();
    }
    let second = admin.create_session(GATED).await.unwrap();
    let seen = next_request(&mut rx).await;
    assert!(
        seen.iter().all(|e| !e.data.contains("forged")),
        "a forged event reached the approver: {seen:?}"
    );
    assert!(seen.iter().any(|e| e.data.contains(&second.id)), "{seen:?}");
    follower.abort();
}

/// Events up to and including the next `approval.requested`, within 30 s.
async fn next_request(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<wardengate::client::SseEvent>,
) -> Vec<wardengate::client::SseEvent> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    loop {
        let e = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("no event within 30 s")
            .expect("the stream ended");
        let done = e.event == "approval.requested";
        seen.push(e);
        if done {
            return seen;
        }
    }
}
