//! The edges of a replica. Inbound, as a load balancer sees it: the real client's address
//! through the PROXY protocol (and only from the balancer), WebSocket pings that keep idle
//! sessions alive past a balancer's idle limit, the optional relay idle timeout, and clients
//! that vanish. Outbound: targets may not point at cloud metadata or the replica's own
//! dependencies. Real replicas behind real HAProxy, real OpenSSH through `wgctl connect`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::net::IpAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wardengate::client::ClientError;
use wardengate::session::{EndReason, SessionStatus};
use wardengate::wire::{ErrorCode, NewTarget, SessionView};
use wardengate_e2e::{Deps, Fleet, proxy_command};
use wardengate_testkit::haproxy::LbOptions;
use wardengate_testkit::process::run;
use wardengate_testkit::sshd::HOST_ALIAS;

/// A second loopback address, so a client is told apart from the balancer (127.0.0.1).
const CLIENT_IP: &str = "127.0.0.3";

fn client_ip() -> IpAddr {
    CLIENT_IP.parse().unwrap()
}

fn from_ip(addr: &Option<String>) -> Option<&str> {
    addr.as_deref()
        .and_then(|a| a.rsplit_once(':'))
        .map(|(ip, _)| ip)
}

/// Whether a raw connection from `from` that opens with a PROXY header is closed by the
/// replica at `port` within two seconds (at most after a TLS alert), rather than left waiting
/// for TLS.
async fn forged_header_is_closed(from: IpAddr, port: u16) -> bool {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind((from, 0).into()).unwrap();
    let mut s = socket.connect(([127, 0, 0, 1], port).into()).await.unwrap();
    s.write_all(b"PROXY TCP4 203.0.113.7 127.0.0.1 51234 8443\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut got))
        .await
        .is_ok()
}

async fn wait_ended(fleet: &Fleet, id: &str, within: Duration) -> SessionView {
    let (view, _) = Fleet::eventually("the session to end", within, || async {
        fleet
            .client_for(0)
            .session(id)
            .await
            .ok()
            .filter(|v| v.status == SessionStatus::Ended)
    })
    .await
    .unwrap();
    view
}

/// Behind a balancer that sends PROXY v2, sessions record the real client (here 127.0.0.3, not
/// the balancer's 127.0.0.1), for the API request and for the relay; the balancer's health
/// checks and direct probes without a header still work; a header from any other peer closes
/// the connection and is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_real_client_address_is_recorded_through_a_proxy_protocol_balancer() {
    let deps = Deps::start().unwrap();
    let lb = LbOptions {
        send_proxy_v2: true,
        ..LbOptions::default()
    };
    let fleet = deps
        .fleet_lb(1, &["--proxy-protocol-from", "127.0.0.1/32"], &lb)
        .await
        .unwrap();
    let via_lb = fleet
        .client(&fleet.lb_addr())
        .bind_local(client_ip())
        .unwrap();

    let asked = via_lb.create_session(HOST_ALIAS).await.unwrap();
    let view = via_lb.session(&asked.id).await.unwrap();
    assert_eq!(from_ip(&view.requested_from), Some(CLIENT_IP), "{view:?}");

    let (ws, id) = via_lb.open_target_relay(HOST_ALIAS).await.unwrap();
    let view = fleet.client_for(0).session(&id).await.unwrap();
    assert_eq!(from_ip(&view.connected_from), Some(CLIENT_IP), "{view:?}");
    assert_eq!(view.connected_by.as_deref(), Some(view.token_id.as_str()));
    drop(ws);

    // A probe straight from a trusted address, without a header: served, recorded as itself.
    let direct = fleet
        .client_for(0)
        .create_session(HOST_ALIAS)
        .await
        .unwrap();
    let view = fleet.client_for(0).session(&direct.id).await.unwrap();
    assert_eq!(from_ip(&view.requested_from), Some("127.0.0.1"));

    // A client that reaches the replica directly may not choose its address.
    assert!(
        forged_header_is_closed(client_ip(), fleet.replicas[0].port).await,
        "a PROXY header from an untrusted peer was not refused"
    );
    let refused = fleet
        .metric_labeled(
            0,
            "wg_connections_refused_total",
            "reason=\"proxy_protocol\"",
        )
        .await
        .unwrap_or_default();
    assert!(refused >= 1.0, "refusal not counted: {refused}");
}

/// Without `--proxy-protocol-from`, the TCP peer is the recorded address and a PROXY header,
/// even from the balancer's address, closes the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_the_flag_the_peer_is_recorded_and_headers_are_refused() {
    let deps = Deps::start().unwrap();
    let fleet = deps.fleet(1, &[]).await.unwrap();
    let direct = fleet.client_for(0).bind_local(client_ip()).unwrap();
    let asked = direct.create_session(HOST_ALIAS).await.unwrap();
    let view = direct.session(&asked.id).await.unwrap();
    assert_eq!(from_ip(&view.requested_from), Some(CLIENT_IP), "{view:?}");
    // Through the balancer that sends no header, the balancer is all the replica can see.
    let via_lb = fleet
        .client(&fleet.lb_addr())
        .bind_local(client_ip())
        .unwrap();
    let asked = via_lb.create_session(HOST_ALIAS).await.unwrap();
    let view = via_lb.session(&asked.id).await.unwrap();
    assert_eq!(from_ip(&view.requested_from), Some("127.0.0.1"), "{view:?}");
    for from in ["127.0.0.1", CLIENT_IP] {
        assert!(
            forged_header_is_closed(from.parse().unwrap(), fleet.replicas[0].port).await,
            "a PROXY header from {from} was accepted without the flag"
        );
    }
}

/// `ssh` idle for 5 s through a balancer that cuts connections idle for 2 s: the replica's
/// pings keep the session alive; with pings off the same session is cut (the balancer's
/// limit is real, so the first half can fail).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pings_keep_an_idle_ssh_session_alive_past_a_balancer_idle_limit() {
    let deps = Deps::start().unwrap();
    let lb = LbOptions {
        idle_timeout: Some(Duration::from_secs(2)),
        ..LbOptions::default()
    };
    let idle_ssh = |fleet: &Fleet| {
        let mut ssh = deps
            .sshd
            .ssh_via(&proxy_command(), "sleep 5; echo still-here")
            .unwrap();
        ssh.envs(fleet.wgctl_env());
        run(&mut ssh, Duration::from_secs(60))
    };
    let pinging = deps
        .fleet_lb(1, &["--relay-ping-interval", "500ms"], &lb)
        .await
        .unwrap();
    assert_eq!(idle_ssh(&pinging).unwrap().trim(), "still-here");
    drop(pinging);

    // Same Postgres, so the target is registered already.
    let silent = Fleet::start_with_lb(
        1,
        &|_| deps.pg.url(),
        &deps.redis.url(),
        &["--relay-ping-interval", "off"],
        &lb,
    )
    .await
    .unwrap();
    let cut = idle_ssh(&silent);
    assert!(
        cut.as_ref().map_or(true, |o| o.trim() != "still-here"),
        "without pings the balancer did not cut the idle session: {cut:?}"
    );
}

/// With `--relay-idle-timeout 2s`, an ssh session that moves no data for 2 s ends as
/// `idle_timeout`; one that prints every 500 ms for 3 s (longer than the timeout) completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_relay_idle_timeout_ends_quiet_sessions_only() {
    let deps = Deps::start().unwrap();
    let fleet = deps
        .fleet(1, &["--relay-idle-timeout", "2s"])
        .await
        .unwrap();
    let ssh = |remote: &str| {
        let mut ssh = deps.sshd.ssh_via(&proxy_command(), remote).unwrap();
        ssh.envs(fleet.wgctl_env());
        run(&mut ssh, Duration::from_secs(60))
    };
    let busy = ssh("for i in 1 2 3 4 5 6; do echo $i; sleep 0.5; done").unwrap();
    assert_eq!(busy.lines().count(), 6, "{busy}");

    let started = Instant::now();
    let quiet = ssh("sleep 8; echo never");
    assert!(quiet.is_err(), "a quiet session outlived the idle timeout");
    assert!(started.elapsed() < Duration::from_secs(8));
    let sessions = fleet.client_for(0).sessions(Some(10)).await.unwrap();
    let ended = sessions
        .iter()
        .find(|s| s.end_reason == Some(EndReason::IdleTimeout));
    assert!(
        ended.is_some(),
        "no session ended as idle_timeout: {sessions:#?}"
    );
}

/// A client whose connection stays open but answers nothing (a laptop that went to sleep
/// behind a NAT that still holds the flow) is found by the pings and its session ended as
/// `client_unresponsive`, instead of holding a relay, a target connection and a live grant.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unresponsive_client_is_found_and_its_session_ended() {
    let deps = Deps::start().unwrap();
    let fleet = deps
        .fleet(1, &["--relay-ping-interval", "300ms"])
        .await
        .unwrap();
    let (ws, id) = fleet
        .client_for(0)
        .open_target_relay(HOST_ALIAS)
        .await
        .unwrap();
    // Never read: no pong ever goes back.
    let view = wait_ended(&fleet, &id, Duration::from_secs(15)).await;
    assert_eq!(
        view.end_reason,
        Some(EndReason::ClientUnresponsive),
        "{view:?}"
    );
    drop(ws);
}

/// An admin token (or a mistake) cannot aim the gateway at the cloud metadata service or at
/// the replica's own Postgres, Redis or listener: refused when added (403
/// `target_not_allowed`, naming the rule) and, for a name that resolves there, at the dial.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn targets_may_not_point_at_metadata_or_the_gateways_own_dependencies() {
    let deps = Deps::start().unwrap();
    let fleet = deps.fleet(1, &[]).await.unwrap();
    let admin = fleet.client_for(0);
    let add = |name: &str, host: &str, port: u16| {
        let admin = admin.clone();
        let t = NewTarget {
            name: name.into(),
            host: host.into(),
            port,
            require_approval: false,
            region: None,
            ..Default::default()
        };
        async move { admin.add_target(&t).await }
    };
    for (name, host, port, says) in [
        ("metadata", "169.254.169.254", 80, "169.254.0.0/16"),
        ("ecs-creds", "169.254.170.2", 80, "169.254.0.0/16"),
        ("own-pg", "127.0.0.1", deps.pg.port(), "own Postgres"),
        ("own-redis", "127.0.0.1", deps.redis.port(), "own Redis"),
        (
            "own-api",
            "127.0.0.1",
            fleet.replicas[0].port,
            "own listener",
        ),
    ] {
        match add(name, host, port).await {
            Err(ClientError::Api {
                status: 403,
                code: ErrorCode::TargetNotAllowed,
                message,
                ..
            }) => assert!(message.contains(says), "{name}: {message}"),
            other => panic!("{name} ({host}:{port}) was not refused: {other:?}"),
        }
    }
    // A name is only known at the dial: `localhost` passes the first check and is refused
    // when the relay resolves it to the replica's own Redis.
    add("sneaky", "localhost", deps.redis.port()).await.unwrap();
    match admin.open_target_relay("sneaky").await {
        Err(ClientError::Api {
            code: ErrorCode::TargetNotAllowed,
            message,
            ..
        }) => assert!(message.contains("own Redis"), "{message}"),
        other => panic!(
            "the dial to the replica's Redis was not refused: {:?}",
            other.map(|(_, id)| id)
        ),
    }
    // Ordinary targets on the same host still work.
    let (ws, _) = admin.open_target_relay(HOST_ALIAS).await.unwrap();
    drop(ws);
}
