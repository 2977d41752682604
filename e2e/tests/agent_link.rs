//! The agent link (issue 15, first slice) against real processes: three control-plane replicas
//! behind HAProxy (TCP, the agent ports), and `wardengate serve --role gateway` dialling them.
//!
//! - a gateway joins with a one-time token and appears in `wgctl gateways list` with heartbeats;
//! - killing the replica holding its link: it re-links to another within a measured bound;
//! - expired and reused join tokens, and a certificate from a foreign CA, are refused with
//!   clear errors;
//! - a revoked gateway's link is cut and every new link refused.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wardengate::agent::AgentCa;
use wardengate::agent::ca::new_key_and_csr;
use wardengate::agent::proto::agent_client::AgentClient;
use wardengate::agent::proto::{JoinRequest, Up};
use wardengate::wire::{CreatedJoinToken, GatewayView};
use wardengate_e2e::{Deps, Fleet};
use wardengate_testkit::haproxy::{Backend, HaProxy, HealthCheck, LB_TIMING};
use wardengate_testkit::net::free_port;
use wardengate_testkit::process::Service;
use wardengate_testkit::sandbox::Sandbox;
use wardengate_testkit::user::RunAs;

const REGION: &str = "eu-west";

/// `wgctl -o json ARGS` against replica `at` (the load balancer may still route to a killed
/// replica until its health checks fail).
fn wgctl_json(fleet: &Fleet, at: usize, args: &[&str]) -> Vec<u8> {
    let addr = fleet.replica_addr(at);
    let mut all = vec!["--addr", &addr, "-o", "json"];
    all.extend_from_slice(args);
    let out = fleet.wgctl(&all).output().unwrap();
    assert!(
        out.status.success(),
        "wgctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn join_token(fleet: &Fleet) -> CreatedJoinToken {
    serde_json::from_slice(&wgctl_json(
        fleet,
        0,
        &["gateways", "join-token", "--region", REGION, "--ttl", "1h"],
    ))
    .unwrap()
}

fn gateways(fleet: &Fleet, at: usize) -> Vec<GatewayView> {
    serde_json::from_slice(&wgctl_json(fleet, at, &["gateways", "list"])).unwrap()
}

/// A metric of the gateway process, from its plain-HTTP `--metrics-listen`.
async fn gateway_metric(g: &Gateway, name: &str) -> Option<f64> {
    let text = reqwest::get(format!("http://{}/metrics", g.metrics))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A `--role gateway` process dialling `control_plane` (given a database and Redis, which a
/// remote gateway ignores: it needs neither).
struct Gateway {
    service: Service,
    state_dir: PathBuf,
    metrics: String,
}

fn start_gateway(
    deps: &Deps,
    fleet: &Fleet,
    sandbox: &Sandbox,
    name: &str,
    control_plane: &str,
    token: Option<&str>,
) -> Gateway {
    let dir = sandbox.path().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let state_dir = dir.join("state");
    let cert = fleet.cert_path().display().to_string();
    let key = cert.replace("cert.pem", "key.pem");
    let keys = fleet.internal_key_file().display().to_string();
    let metrics = format!("127.0.0.1:{}", free_port().unwrap());
    let mut args: Vec<String> = [
        "serve",
        "--role",
        "gateway",
        "--listen",
        &format!("127.0.0.1:{}", free_port().unwrap()),
        "--agent-listen",
        &format!("127.0.0.1:{}", free_port().unwrap()),
        "--database-url",
        &deps.pg.url(),
        "--redis-url",
        &deps.redis.url(),
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--internal-key-file",
        &keys,
        "--replica-id",
        name,
        "--health-interval",
        "500ms",
        "--control-plane",
        control_plane,
        "--control-plane-ca",
        &cert,
        "--region",
        REGION,
        "--agent-state-dir",
        &state_dir.display().to_string(),
        "--metrics-listen",
        &metrics,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(t) = token {
        let f = dir.join("join-token");
        std::fs::write(&f, t).unwrap();
        args.extend(["--join-token-file".to_string(), f.display().to_string()]);
    }
    let mut cmd = Command::new(wardengate_e2e::bin("wardengate"));
    cmd.args(&args)
        .env("WG_LOG_FORMAT", "json")
        .env("RUST_LOG", "info");
    Gateway {
        service: Service::spawn(sandbox, name, cmd, &RunAs::current()).unwrap(),
        state_dir,
        metrics,
    }
}

fn log(g: &Gateway) -> String {
    std::fs::read_to_string(g.service.log_path()).unwrap_or_default()
}

/// Polls the gateway's log until it contains `needle`.
async fn log_shows(g: &Gateway, needle: &str, timeout: Duration) -> Duration {
    let (_, took) = Fleet::eventually(&format!("`{needle}` in the gateway log"), timeout, || {
        let found = log(g).contains(needle);
        async move { found.then_some(()) }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", log(g)));
    took
}

/// A tonic client to the agent port with `identity` (cert, key PEM), trusting the fleet's cert.
async fn agent_client(
    fleet: &Fleet,
    port: u16,
    identity: Option<(&str, &str)>,
) -> Result<AgentClient<tonic::transport::Channel>, tonic::transport::Error> {
    let ca = std::fs::read_to_string(fleet.cert_path()).unwrap();
    let mut tls = tonic::transport::ClientTlsConfig::new()
        .domain_name("127.0.0.1")
        .ca_certificate(tonic::transport::Certificate::from_pem(ca));
    if let Some((c, k)) = identity {
        tls = tls.identity(tonic::transport::Identity::from_pem(c, k));
    }
    let ch = tonic::transport::Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await?;
    Ok(AgentClient::new(ch))
}

async fn join_directly(fleet: &Fleet, port: u16, token: &str) -> Result<String, tonic::Status> {
    let (_key, csr_pem) = new_key_and_csr().unwrap();
    let mut c = agent_client(fleet, port, None).await.unwrap();
    c.join(JoinRequest {
        token: token.into(),
        region: REGION.into(),
        csr_pem,
    })
    .await
    .map(|r| r.into_inner().gateway_id)
}

/// Opens a link with `identity` and returns the first thing the control plane answers.
async fn link_directly(fleet: &Fleet, port: u16, identity: (&str, &str)) -> String {
    let mut c = match agent_client(fleet, port, Some(identity)).await {
        Ok(c) => c,
        Err(e) => return format!("connect: {e:?}"),
    };
    let up = tokio_stream_once(Up { msg: None });
    match c.link(up).await {
        Err(s) => format!("refused: {:?}: {}", s.code(), chain(&s)),
        Ok(r) => match r.into_inner().message().await {
            Ok(m) => format!("linked: {m:?}"),
            Err(s) => format!("refused: {:?}: {}", s.code(), chain(&s)),
        },
    }
}

/// An error with its sources (a TLS refusal is in the transport error's source).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn tokio_stream_once(up: Up) -> impl futures_stream::Stream<Item = Up> + Send + 'static {
    futures_stream::iter(vec![up]).chain(futures_stream::pending())
}

mod futures_stream {
    pub use futures::stream::{Stream, StreamExt, iter, pending};
}
use futures_stream::StreamExt as _;

fn read_state(dir: &Path) -> (String, String) {
    (
        std::fs::read_to_string(dir.join("cert.pem")).unwrap(),
        std::fs::read_to_string(dir.join("key.pem")).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gateways_join_link_fail_over_and_are_refused_when_they_should_be() {
    let deps = Deps::start().unwrap();
    let sandbox = Arc::new(Sandbox::new("agent-link").unwrap());
    let ca_file = sandbox.path().join("agent-ca.pem");
    std::fs::write(&ca_file, AgentCa::generate("e2e agent CA").unwrap()).unwrap();
    let ca_arg = ca_file.display().to_string();
    let mut fleet = deps.fleet(3, &["--agent-ca-file", &ca_arg]).await.unwrap();
    // The agent ports behind their own TCP load balancer, as a cloud LB would expose 8444.
    let backends: Vec<Backend> = (0..3)
        .map(|i| Backend::new(format!("agent-r{i}"), fleet.agent_port(i)))
        .collect();
    let lb = HaProxy::start(sandbox.clone(), &backends, &HealthCheck::Tcp, LB_TIMING).unwrap();
    let control_plane = format!("https://127.0.0.1:{}", lb.port());

    // 1. Join, then heartbeats show up in `gateways list`.
    let token = join_token(&fleet);
    let t = Instant::now();
    let gw = start_gateway(
        &deps,
        &fleet,
        &sandbox,
        "gw0",
        &control_plane,
        Some(&token.token),
    );
    let (listed, _) = Fleet::eventually(
        "the gateway connected in gateways list",
        Duration::from_secs(60),
        || {
            let gs = gateways(&fleet, 0);
            async move { gs.into_iter().find(|g| g.connected) }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", log(&gw)));
    eprintln!("join to listed as connected: {:?}", t.elapsed());
    assert_eq!(listed.region, REGION);
    assert_eq!(listed.version, env!("CARGO_PKG_VERSION"));
    assert!(listed.address.starts_with("127.0.0.1:"), "{listed:?}");
    assert_eq!(listed.sessions, 0);
    let first_beat = listed.last_heartbeat_at.unwrap();
    let (_, _) = Fleet::eventually("a later heartbeat", Duration::from_secs(10), || {
        let gs = gateways(&fleet, 0);
        async move {
            gs.into_iter()
                .find(|g| g.last_heartbeat_at.is_some_and(|t| t > first_beat))
        }
    })
    .await
    .unwrap();
    Fleet::eventually(
        "wg_agent_link_up 1 on the gateway",
        Duration::from_secs(10),
        || {
            let g = &gw;
            async move { (gateway_metric(g, "wg_agent_link_up").await == Some(1.0)).then_some(()) }
        },
    )
    .await
    .unwrap();
    assert_eq!(
        gateway_metric(&gw, "wg_agent_offline_seconds").await,
        Some(0.0)
    );
    let (cert, key) = read_state(&gw.state_dir);
    assert!(cert.contains("BEGIN CERTIFICATE") && key.contains("PRIVATE KEY"));
    let linked: f64 = (0..3)
        .map(|i| {
            let f = &fleet;
            async move { f.metric(i, "wg_agent_gateways").await.unwrap_or(0.0) }
        })
        .collect::<futures::future::JoinAll<_>>()
        .await
        .into_iter()
        .sum();
    assert_eq!(linked, 1.0, "exactly one replica holds the link");

    // 2. The token was one-time: reusing it is refused, by name.
    let reused = join_directly(&fleet, lb.port(), &token.token)
        .await
        .unwrap_err();
    assert_eq!(reused.code(), tonic::Code::PermissionDenied);
    assert!(reused.message().contains("already used"), "{reused:?}");
    // A pool's token (`--uses N`) admits N joins, each a gateway of its own, and no more.
    let pool: CreatedJoinToken = serde_json::from_slice(&wgctl_json(
        &fleet,
        0,
        &[
            "gateways",
            "join-token",
            "--region",
            REGION,
            "--ttl",
            "1h",
            "--uses",
            "2",
        ],
    ))
    .unwrap();
    assert_eq!(pool.uses, 2);
    let first = join_directly(&fleet, lb.port(), &pool.token).await.unwrap();
    let second = join_directly(&fleet, lb.port(), &pool.token).await.unwrap();
    assert_ne!(first, second, "each join is a gateway of its own");
    let third = join_directly(&fleet, lb.port(), &pool.token)
        .await
        .unwrap_err();
    assert_eq!(third.code(), tonic::Code::PermissionDenied);
    assert!(third.message().contains("already used"), "{third:?}");
    let too_many = fleet
        .wgctl(&[
            "--addr",
            &fleet.replica_addr(0),
            "gateways",
            "join-token",
            "--region",
            REGION,
            "--uses",
            "1001",
        ])
        .output()
        .unwrap();
    assert!(!too_many.status.success());
    assert!(
        String::from_utf8_lossy(&too_many.stderr).contains("uses 1001 is outside 1..=1000"),
        "{}",
        String::from_utf8_lossy(&too_many.stderr)
    );
    // An expired token too (expiry moved into the past: the minimum TTL is a minute).
    let expired = join_token(&fleet);
    deps.pg
        .sql(&format!(
            "UPDATE gateway_join_tokens SET expires_at = 1 WHERE id = '{}'",
            expired.id
        ))
        .unwrap();
    let refused = join_directly(&fleet, lb.port(), &expired.token)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert!(refused.message().contains("expired"), "{refused:?}");
    let unknown = join_directly(&fleet, lb.port(), "wg_not-a-token")
        .await
        .unwrap_err();
    assert!(
        unknown.message().contains("unknown join token"),
        "{unknown:?}"
    );
    // A link without a certificate is refused.
    let mut anon = agent_client(&fleet, lb.port(), None).await.unwrap();
    let s = anon
        .link(tokio_stream_once(Up { msg: None }))
        .await
        .unwrap_err();
    assert_eq!(s.code(), tonic::Code::Unauthenticated, "{s:?}");

    // 3. A certificate from a foreign CA (same gateway id, even) is refused at the handshake.
    let foreign = AgentCa::from_pem(&AgentCa::generate("foreign CA").unwrap()).unwrap();
    let (fkey, fcsr) = new_key_and_csr().unwrap();
    let (fcert, _) = foreign
        .sign(&listed.id, &fcsr, Duration::from_secs(3600))
        .unwrap();
    let answer = link_directly(&fleet, lb.port(), (&fcert, &fkey)).await;
    eprintln!("foreign certificate: {answer}");
    assert!(!answer.starts_with("linked"), "{answer}");
    // TLS 1.3 finishes the client's side of the handshake before the server checks the
    // client's certificate: the server's alert (unknown CA) races the client's first request,
    // so the client sees the alert, the connection closed under it, or (when the close lands
    // before hyper's HTTP/2 connection is ready) the request cancelled. Each is a transport
    // error; none carries a gRPC status, which an application-level refusal would.
    assert!(
        answer.contains("UnknownCA")
            || answer.contains("certificate")
            || answer.contains("connection closed")
            || answer.contains("transport error"),
        "{answer}"
    );
    assert!(
        !answer.contains("Unauthenticated") && !answer.contains("PermissionDenied"),
        "the foreign certificate must be refused by TLS, not by the service: {answer}"
    );
    // The real certificate links (the refusal above is about the CA, not the id).
    let ok = link_directly(&fleet, lb.port(), (&cert, &key)).await;
    assert!(ok.starts_with("linked"), "{ok}");

    // 4. Kill the replica holding the gateway's link: it re-links to another one.
    let (holder, _) = Fleet::eventually("the link holder", Duration::from_secs(10), || {
        let gs = gateways(&fleet, 0);
        let id = listed.id.clone();
        async move {
            gs.into_iter()
                .find(|g| g.id == id)
                .and_then(|g| g.linked_by)
        }
    })
    .await
    .unwrap();
    let i: usize = holder.trim_start_matches('r').parse().unwrap();
    let beats_before = log(&gw).matches("agent_linked").count();
    let killed = Instant::now();
    fleet.kill9(i);
    let _relinked = Fleet::eventually("the gateway linked again", Duration::from_secs(30), || {
        let n = log(&gw).matches("agent_linked").count();
        async move { (n > beats_before).then_some(()) }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", log(&gw)));
    let relink = killed.elapsed();
    let live = (i + 1) % 3;
    let (now_holder, listed_after) = Fleet::eventually(
        "gateways list to name the new holder",
        Duration::from_secs(10),
        || {
            let gs = gateways(&fleet, live);
            let holder = holder.clone();
            async move {
                gs.into_iter()
                    .find(|g| g.connected && g.linked_by.as_deref().is_some_and(|h| h != holder))
                    .and_then(|g| g.linked_by)
            }
        },
    )
    .await
    .unwrap();
    let listed_again = killed.elapsed();
    eprintln!(
        "MEASURED re-link after kill -9 of {holder}: {relink:?} (gateway log), {listed_again:?} \
         until `gateways list` shows it connected via {now_holder} ({listed_after:?} polling)"
    );
    assert!(relink < Duration::from_secs(10), "re-link took {relink:?}");

    // 5. Commands down the link, queued at one replica and delivered by the holder: terminate
    // reaches the gateway (which ends the session if it carries it, and refuses its grant
    // otherwise: `remote_gateways.rs` checks that end to end), drain its one drain path.
    let session_id = format!(
        "never-started-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let sent = Instant::now();
    let out = fleet
        .wgctl(&[
            "--addr",
            &fleet.replica_addr(live),
            "gateways",
            "terminate",
            &listed.id,
            &session_id,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let took = log_shows(&gw, &session_id, Duration::from_secs(10)).await;
    eprintln!(
        "MEASURED terminate queued to received by the gateway: {:?} ({took:?} polling)",
        sent.elapsed()
    );
    assert!(
        log(&gw).contains("\"command\":\"terminate\""),
        "{}",
        log(&gw)
    );
    assert_eq!(gateway_metric(&gw, "wg_draining").await, Some(0.0));
    let out = fleet
        .wgctl(&[
            "--addr",
            &fleet.replica_addr(live),
            "gateways",
            "drain",
            &listed.id,
            "--timeout",
            "5s",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Fleet::eventually("the gateway draining", Duration::from_secs(10), || {
        let g = &gw;
        async move { (gateway_metric(g, "wg_draining").await == Some(1.0)).then_some(()) }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", log(&gw)));

    // 6. Revoke: the link is cut within a heartbeat or two, and every new one refused.
    let revoked: GatewayView = serde_json::from_slice(&wgctl_json(
        &fleet,
        live,
        &["gateways", "revoke", &listed.id],
    ))
    .unwrap();
    assert!(revoked.revoked_at.is_some());
    let t = Instant::now();
    let cut = log_shows(&gw, "was revoked", Duration::from_secs(10)).await;
    eprintln!(
        "MEASURED revoke to link cut: {:?} ({cut:?} polling)",
        t.elapsed()
    );
    let answer = link_directly(&fleet, lb.port(), (&cert, &key)).await;
    assert!(
        answer.contains("PermissionDenied") && answer.contains("revoked"),
        "{answer}"
    );
    let (g, _) = Fleet::eventually(
        "the revoked gateway listed as not connected",
        Duration::from_secs(15),
        || {
            let gs = gateways(&fleet, live);
            let id = listed.id.clone();
            async move { gs.into_iter().find(|g| g.id == id && !g.connected) }
        },
    )
    .await
    .unwrap();
    assert!(g.revoked_at.is_some(), "{g:?}");
    assert_eq!(gateway_metric(&gw, "wg_agent_link_up").await, Some(0.0));
    let (offline, _) = Fleet::eventually(
        "wg_agent_offline_seconds to grow",
        Duration::from_secs(10),
        || {
            let g = &gw;
            async move {
                gateway_metric(g, "wg_agent_offline_seconds")
                    .await
                    .filter(|s| *s >= 1.0)
            }
        },
    )
    .await
    .unwrap();
    eprintln!("offline for {offline}s after revocation");
    drop(gw);
}
