//! Remote gateways (issue 15, second slice) against real processes: three control-plane
//! replicas behind HAProxy, one `wardengate serve --role gateway --control-plane …` with no
//! Postgres, Redis or internal key, reaching the agent load balancer through a TCP proxy this
//! test cuts, and real `ssh -o ProxyCommand='wgctl connect %h'` to a regional target.
//!
//! - the target carries a region; the control plane refuses to relay it itself, authorises it
//!   with an Ed25519 grant for the connected gateway, and `wgctl connect` follows by itself;
//!   a forged grant is refused by the gateway;
//! - link cut within `--offline-grace`: the live SSH session continues, new sessions are
//!   refused with retryable errors (at the control plane and at the gateway); events of the
//!   offline period reach the control plane's history exactly once after the link returns,
//!   and a replayed event is acknowledged but not recorded again;
//! - link cut beyond the grace: the session closes with the recoverable code 4004 and is
//!   recorded as `replica_isolated` once the link returns;
//! - `DELETE /v1/sessions/{id}` and a token's revocation end the session on the gateway
//!   (measured);
//! - a terminate whose command was lost in flight (claimed, link cut) still ends the session
//!   once the link returns: the heartbeat lists the relay and the control plane answers it;
//! - events queued offline survive a restart (`kill -9`), and the relay the crash cut is
//!   reported as `replica_lost`, each recorded once;
//! - a gateway killed for good: its session is ended by the control plane's cleanup job once
//!   the gateway's reported bound plus `--replica-lost-after` passed (measured); its late
//!   report changes nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wardengate::agent::AgentCa;
use wardengate::agent::proto::agent_client::AgentClient;
use wardengate::agent::proto::{SessionEvent, Up, down, up};
use wardengate::client::ClientError;
use wardengate::session::{EndReason, SessionStatus};
use wardengate::token::Role;
use wardengate::wire::{
    CreatedJoinToken, ErrorCode, GatewayView, NewToken, SessionView, TargetView,
};
use wardengate_e2e::{Deps, Fleet};
use wardengate_testkit::haproxy::{Backend, HaProxy, HealthCheck, LB_TIMING};
use wardengate_testkit::net::free_port;
use wardengate_testkit::process::Service;
use wardengate_testkit::proxy::TcpProxy;
use wardengate_testkit::sandbox::Sandbox;
use wardengate_testkit::sshd::HOST_ALIAS;
use wardengate_testkit::user::RunAs;

const REGION: &str = "eu-west";
/// Short, so the test can outlast it.
const GRACE: Duration = Duration::from_secs(8);
/// The restarted gateway's grace: shorter still, so the control plane's own bound for a
/// gateway that never returns is short too.
const SHORT_GRACE: Duration = Duration::from_secs(2);

struct Gateway {
    service: Service,
    log: PathBuf,
    state_dir: PathBuf,
    metrics: String,
}

impl Gateway {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn metric(&self, name: &str) -> Option<f64> {
        let text = reqwest::get(format!("http://{}/metrics", self.metrics))
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

    async fn wait_metric(&self, name: &str, ok: impl Fn(f64) -> bool, timeout: Duration) -> f64 {
        let ok = &ok;
        let (v, _) = Fleet::eventually(&format!("gateway metric {name}"), timeout, || async move {
            self.metric(name).await.filter(|v| ok(*v))
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", self.log()));
        v
    }
}

/// Starts the remote gateway as process `name` (its log's name), with offline grace `grace`;
/// every start shares one state directory, so a restart is the same gateway.
fn start_gateway(
    fleet: &Fleet,
    sandbox: &Sandbox,
    control_plane: &str,
    token: &str,
    name: &str,
    grace: Duration,
) -> Gateway {
    let dir = sandbox.path().join("remote-gw");
    std::fs::create_dir_all(&dir).unwrap();
    let token_file = dir.join("join-token");
    std::fs::write(&token_file, token).unwrap();
    let cert = fleet.cert_path().display().to_string();
    let key = cert.replace("cert.pem", "key.pem");
    let state_dir = dir.join("state");
    let metrics = format!("127.0.0.1:{}", free_port().unwrap());
    let grace = format!("{}ms", grace.as_millis());
    let args: Vec<String> = [
        "serve",
        "--role",
        "gateway",
        "--listen",
        &format!("127.0.0.1:{}", free_port().unwrap()),
        "--agent-listen",
        &format!("127.0.0.1:{}", free_port().unwrap()),
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--replica-id",
        "remote-gw",
        "--health-interval",
        "500ms",
        "--control-plane",
        control_plane,
        "--control-plane-ca",
        &cert,
        "--region",
        REGION,
        "--join-token-file",
        &token_file.display().to_string(),
        "--agent-state-dir",
        &state_dir.display().to_string(),
        "--metrics-listen",
        &metrics,
        "--offline-grace",
        &grace,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // No --database-url, --redis-url or --internal-key-file: a remote gateway has none.
    let mut cmd = Command::new(wardengate_e2e::bin("wardengate"));
    cmd.args(&args)
        .env("WG_LOG_FORMAT", "json")
        .env("RUST_LOG", "info");
    let service = Service::spawn(sandbox, name, cmd, &RunAs::current()).unwrap();
    Gateway {
        log: service.log_path().to_path_buf(),
        service,
        state_dir,
        metrics,
    }
}

fn wgctl_ok(fleet: &Fleet, args: &[&str]) -> String {
    let out = fleet.wgctl(args).output().unwrap();
    assert!(
        out.status.success(),
        "wgctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn sql(deps: &Deps, q: &str) -> String {
    deps.pg.sql(q).unwrap().trim().to_string()
}

/// How many `kind` events the control plane's history holds for session `id`.
fn history(deps: &Deps, id: &str, kind: &str) -> i64 {
    sql(
        deps,
        &format!("SELECT count(*) FROM events WHERE subject = '{id}' AND kind = '{kind}'"),
    )
    .parse()
    .unwrap()
}

/// `ssh` to the regional target through a stock `ProxyCommand='wgctl connect %h'`.
fn ssh(deps: &Deps, fleet: &Fleet, remote: &str, env: &[(String, String)]) -> Child {
    let mut c = deps
        .sshd
        .ssh_via(&wardengate_e2e::proxy_command(), remote)
        .unwrap();
    c.envs(fleet.wgctl_env())
        .envs(env.iter().cloned())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c.spawn().unwrap()
}

/// Waits for the newest session to be active (its `started` event recorded) and returns it.
async fn active_session(fleet: &Fleet, gw: &Gateway) -> SessionView {
    let (s, _) = Fleet::eventually(
        "the regional session active in the control plane",
        Duration::from_secs(30),
        || async move {
            let s = fleet.client_for(0).sessions(Some(1)).await.ok()?;
            s.into_iter()
                .next()
                .filter(|s| s.status == SessionStatus::Active)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", gw.log()));
    s
}

async fn ended(fleet: &Fleet, id: &str, timeout: Duration) -> SessionView {
    let (s, _) = Fleet::eventually("the session recorded as ended", timeout, || async move {
        fleet
            .client_for(1)
            .session(id)
            .await
            .ok()
            .filter(|s| s.status == SessionStatus::Ended)
    })
    .await
    .unwrap();
    s
}

fn wait_exit(child: Child, timeout: Duration) -> (std::process::Output, Duration) {
    let t = Instant::now();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(out) => (out.unwrap(), t.elapsed()),
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!("ssh still running after {timeout:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn regional_sessions_outlive_a_cut_link_for_the_grace_and_obey_the_control_plane() {
    let deps = Deps::start().unwrap();
    let sandbox = Arc::new(Sandbox::new("remote-gateways").unwrap());
    let ca_file = sandbox.path().join("agent-ca.pem");
    std::fs::write(&ca_file, AgentCa::generate("e2e agent CA").unwrap()).unwrap();
    let ca_arg = ca_file.display().to_string();
    // A short margin past a silent gateway's own bound before its sessions are ended here.
    let fleet = deps
        .fleet(
            3,
            &["--agent-ca-file", &ca_arg, "--replica-lost-after", "3s"],
        )
        .await
        .unwrap();
    let backends: Vec<Backend> = (0..3)
        .map(|i| Backend::new(format!("agent-r{i}"), fleet.agent_port(i)))
        .collect();
    let lb = HaProxy::start(sandbox.clone(), &backends, &HealthCheck::Tcp, LB_TIMING).unwrap();
    // The gateway's only way to the control plane: the link the test cuts.
    let link = TcpProxy::start(lb.port()).unwrap();
    let control_plane = format!("https://127.0.0.1:{}", link.port());
    let admin = fleet.client_for(0);
    let (fleet, admin) = (&fleet, &admin);

    let token: CreatedJoinToken = serde_json::from_str(&wgctl_ok(
        fleet,
        &[
            "-o",
            "json",
            "gateways",
            "join-token",
            "--region",
            REGION,
            "--ttl",
            "1h",
        ],
    ))
    .unwrap();
    let mut gw = start_gateway(
        fleet,
        &sandbox,
        &control_plane,
        &token.token,
        "remote-gw",
        GRACE,
    );
    let (listed, _) = Fleet::eventually(
        "the remote gateway connected",
        Duration::from_secs(60),
        || async move {
            let gs: Vec<GatewayView> =
                serde_json::from_str(&wgctl_ok(fleet, &["-o", "json", "gateways", "list"])).ok()?;
            gs.into_iter().find(|g| g.connected)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", gw.log()));
    let gateway_id = listed.id.clone();

    // 1. The fleet's ssh target becomes regional (same name: `ssh … %h` is unchanged).
    wgctl_ok(fleet, &["targets", "remove", HOST_ALIAS]);
    let port = deps.sshd.port().to_string();
    let added = wgctl_ok(
        fleet,
        &[
            "targets",
            "add",
            HOST_ALIAS,
            "--host",
            "127.0.0.1",
            "--port",
            &port,
            "--region",
            REGION,
        ],
    );
    assert!(added.contains(REGION), "{added}");
    let targets: Vec<TargetView> =
        serde_json::from_str(&wgctl_ok(fleet, &["-o", "json", "targets", "list"])).unwrap();
    let t = targets.iter().find(|t| t.name == HOST_ALIAS).unwrap();
    assert_eq!(t.region.as_deref(), Some(REGION));
    assert!(wgctl_ok(fleet, &["targets", "list"]).contains(REGION));
    // The control plane never relays a regional target itself.
    match admin.open_target_relay(HOST_ALIAS).await {
        Err(ClientError::Api { status, code, .. }) => {
            assert_eq!((status, code), (409, ErrorCode::RegionalTarget));
        }
        Ok(_) => panic!("the control plane relayed a regional target"),
        Err(e) => panic!("{e}"),
    }

    // 2. Real ssh through the remote gateway, wgctl following the returned address.
    let out = wait_exit(
        ssh(&deps, fleet, "echo through-the-region", &[]),
        Duration::from_secs(60),
    )
    .0;
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        gw.log()
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "through-the-region"
    );
    let first = fleet
        .client_for(0)
        .sessions(Some(1))
        .await
        .unwrap()
        .remove(0);
    let first = ended(fleet, &first.id, Duration::from_secs(20)).await;
    assert_eq!(
        first.replica.as_deref(),
        Some(gateway_id.as_str()),
        "{first:?}"
    );
    assert!(first.bytes_up > 0 && first.bytes_down > 0, "{first:?}");
    assert!(first.started_at.is_some(), "{first:?}");
    assert_eq!(history(&deps, &first.id, "session.started"), 1);
    assert_eq!(history(&deps, &first.id, "session.ended"), 1);

    // 3. The grant is the gateway's only credential: a forged one is refused.
    let auth = admin.create_session(HOST_ALIAS).await.unwrap();
    let (gw_addr, grant) = (auth.gateway.clone().unwrap(), auth.grant.clone().unwrap());
    assert_eq!(gw_addr, format!("https://{}", listed.address));
    let gw_client = admin.at(&gw_addr).unwrap();
    let mut forged: Vec<char> = grant.chars().collect();
    let last = forged.len() - 2;
    forged[last] = if forged[last] == 'A' { 'B' } else { 'A' };
    let forged: String = forged.into_iter().collect();
    match gw_client.open_granted_relay(&auth.id, &forged).await {
        Err(ClientError::Api { status, code, .. }) => {
            assert_eq!((status, code), (403, ErrorCode::InvalidGrant));
        }
        Ok(_) => panic!("a forged grant was relayed"),
        Err(e) => panic!("{e}"),
    }

    // 4. Cut the link within the grace: the live session carries on; new ones are refused.
    let long = ssh(&deps, fleet, "sleep 3; echo survived", &[]);
    let live = active_session(fleet, &gw).await;
    let cut = Instant::now();
    link.cut();
    gw.wait_metric("wg_agent_link_up", |v| v == 0.0, Duration::from_secs(10))
        .await;
    match gw_client.open_granted_relay(&auth.id, &grant).await {
        Err(e @ ClientError::Api { .. }) => {
            assert!(e.is_retryable(), "{e}");
            assert!(
                matches!(
                    &e,
                    ClientError::Api {
                        status: 503,
                        code: ErrorCode::GatewayOffline,
                        ..
                    }
                ),
                "{e}"
            );
        }
        Ok(_) => panic!("an offline gateway accepted a new session"),
        Err(e) => panic!("{e}"),
    }
    let (refusal, _) = Fleet::eventually(
        "the control plane to refuse new regional sessions",
        Duration::from_secs(15),
        || async move {
            match admin.create_session(HOST_ALIAS).await {
                Err(e @ ClientError::Api { status: 503, .. }) => Some(e),
                _ => None,
            }
        },
    )
    .await
    .unwrap();
    assert!(
        matches!(
            &refusal,
            ClientError::Api {
                code: ErrorCode::NoRegionalGateway,
                ..
            }
        ),
        "{refusal}"
    );
    assert!(refusal.is_retryable());
    let (out, _) = wait_exit(long, Duration::from_secs(30));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "survived");
    // Its end happened offline: queued at the gateway, not yet in the history.
    gw.wait_metric(
        "wg_agent_events_queued",
        |v| v >= 1.0,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(history(&deps, &live.id, "session.ended"), 0);
    assert!(
        cut.elapsed() < GRACE,
        "the offline part took {:?}",
        cut.elapsed()
    );
    let restored = Instant::now();
    link.restore();
    gw.wait_metric("wg_agent_link_up", |v| v == 1.0, Duration::from_secs(30))
        .await;
    let relink = restored.elapsed();
    let offline_end = ended(fleet, &live.id, Duration::from_secs(20)).await;
    assert!(
        matches!(
            offline_end.end_reason,
            Some(EndReason::ClientClosed | EndReason::TargetClosed)
        ),
        "{offline_end:?}"
    );
    gw.wait_metric(
        "wg_agent_events_queued",
        |v| v == 0.0,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(history(&deps, &live.id, "session.started"), 1);
    assert_eq!(history(&deps, &live.id, "session.ended"), 1);
    eprintln!("MEASURED re-link after the link was restored: {relink:?}");

    // 5. A replayed event (what a reconnect resends when an ack was lost) is acknowledged and
    // not recorded again. Sent over a second link with the gateway's own certificate.
    let (cert, key) = (
        std::fs::read_to_string(gw.state_dir.join("cert.pem")).unwrap(),
        std::fs::read_to_string(gw.state_dir.join("key.pem")).unwrap(),
    );
    let applied: u64 = sql(
        &deps,
        &format!("SELECT events_seq FROM gateways WHERE id = '{gateway_id}'"),
    )
    .parse()
    .unwrap();
    assert!(applied >= 4, "events applied: {applied}");
    let ack = replay(fleet, lb.port(), (&cert, &key), &first.id, applied).await;
    assert_eq!(ack, applied);
    let again = fleet.client_for(2).session(&first.id).await.unwrap();
    assert_eq!(
        (again.bytes_up, again.end_reason),
        (first.bytes_up, first.end_reason)
    );
    assert_eq!(history(&deps, &first.id, "session.ended"), 1);

    // 6. Cut beyond the grace: the session closes with the recoverable code, and is recorded
    // so once the link returns.
    let long = ssh(&deps, fleet, "sleep 120; echo never", &[]);
    let beyond = active_session(fleet, &gw).await;
    let cut = Instant::now();
    link.cut();
    let (out, _) = wait_exit(long, GRACE + Duration::from_secs(30));
    let closed_after = cut.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("4004"), "{stderr}");
    assert!(
        closed_after >= GRACE - Duration::from_secs(1),
        "closed {closed_after:?} after the cut, grace {GRACE:?}"
    );
    link.restore();
    let lost = ended(fleet, &beyond.id, Duration::from_secs(30)).await;
    assert_eq!(
        lost.end_reason,
        Some(EndReason::ReplicaIsolated),
        "{lost:?}"
    );
    assert_eq!(history(&deps, &beyond.id, "session.ended"), 1);
    eprintln!("MEASURED session end after a cut beyond the grace ({GRACE:?}): {closed_after:?}");
    gw.wait_metric("wg_agent_link_up", |v| v == 1.0, Duration::from_secs(30))
        .await;

    // 7. Terminate at the control plane: the remote gateway ends the session.
    let long = ssh(&deps, fleet, "sleep 120; echo never", &[]);
    let victim = active_session(fleet, &gw).await;
    let sent = Instant::now();
    admin.terminate(&victim.id).await.unwrap();
    let (out, took) = wait_exit(long, Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("4002") || stderr.contains("terminated"),
        "{stderr}"
    );
    let done = ended(fleet, &victim.id, Duration::from_secs(20)).await;
    assert_eq!(done.end_reason, Some(EndReason::Terminated), "{done:?}");
    eprintln!(
        "MEASURED terminate at the control plane to ssh ended on the remote gateway: {took:?} \
         (recorded ended {:?} after the request)",
        sent.elapsed()
    );

    // 8. Revoking the session's token ends it on the remote gateway too.
    let user = admin
        .create_token(&NewToken {
            role: Role::User,
            name: Some("remote-user".into()),
            ttl_seconds: None,
        })
        .await
        .unwrap();
    let user_file = sandbox.path().join("user-token");
    std::fs::write(&user_file, &user.token).unwrap();
    let env = vec![("WG_TOKEN_FILE".to_string(), user_file.display().to_string())];
    let long = ssh(&deps, fleet, "sleep 120; echo never", &env);
    let owned = active_session(fleet, &gw).await;
    assert_eq!(owned.token_id, user.id);
    let sent = Instant::now();
    admin.revoke_token(&user.id).await.unwrap();
    let (out, took) = wait_exit(long, Duration::from_secs(30));
    assert!(!out.status.success());
    let done = ended(fleet, &owned.id, Duration::from_secs(20)).await;
    assert_eq!(done.end_reason, Some(EndReason::Terminated), "{done:?}");
    eprintln!(
        "MEASURED token revocation to ssh ended on the remote gateway: {took:?} ({:?})",
        sent.elapsed()
    );

    // 9. A terminate lost on its way: the link is cut, the session is terminated here, and its
    // queued command is claimed as a replica claims one just before sending it down a link that
    // dies with it. The first heartbeat after the link returns lists the relay, and the control
    // plane answers with the terminate it still owes (before the grace could end it: 4002).
    let long = ssh(&deps, fleet, "sleep 120; echo never", &[]);
    let victim = active_session(fleet, &gw).await;
    let cut = Instant::now();
    link.cut();
    gw.wait_metric("wg_agent_link_up", |v| v == 0.0, Duration::from_secs(10))
        .await;
    admin.terminate(&victim.id).await.unwrap();
    let lost = sql(
        &deps,
        &format!(
            "WITH c AS (UPDATE gateway_commands SET delivered_at = 1, delivered_by = 'lost' \
             WHERE gateway_id = '{gateway_id}' AND delivered_at IS NULL RETURNING session_id) \
             SELECT string_agg(session_id, ',') FROM c"
        ),
    );
    assert_eq!(lost, victim.id, "the terminate was not waiting to be sent");
    let restored = Instant::now();
    link.restore();
    let (out, _) = wait_exit(long, Duration::from_secs(30));
    let (healed, offline_for) = (restored.elapsed(), cut.elapsed());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("4002") || stderr.contains("terminated"),
        "not ended by the terminate ({offline_for:?} after the cut): {stderr}"
    );
    let done = ended(fleet, &victim.id, Duration::from_secs(20)).await;
    assert_eq!(done.end_reason, Some(EndReason::Terminated), "{done:?}");
    assert_eq!(history(&deps, &victim.id, "session.ended"), 1);
    eprintln!(
        "MEASURED a terminate lost in flight: link restored to ssh ended on the remote gateway \
         {healed:?} (cut for {:?})",
        offline_for - healed
    );

    // 10. Events queued offline survive a restart, and a crash's open relays are reported: with
    // the link cut, one session ends (its end queued in the events file) while another is still
    // open when the gateway is killed (-9); the gateway starts again from its state directory,
    // still cut off, then the link returns: the offline end is recorded once, and the relay the
    // crash cut as `replica_lost`, once.
    let short = ssh(&deps, fleet, "sleep 3; echo done-offline", &[]);
    let quiet = active_session(fleet, &gw).await;
    let long = ssh(&deps, fleet, "sleep 120; echo never", &[]);
    let open = active_session_besides(fleet, &gw, &quiet.id).await;
    link.cut();
    gw.wait_metric("wg_agent_link_up", |v| v == 0.0, Duration::from_secs(10))
        .await;
    let (out, _) = wait_exit(short, Duration::from_secs(30));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    gw.wait_metric(
        "wg_agent_events_queued",
        |v| v >= 1.0,
        Duration::from_secs(10),
    )
    .await;
    gw.service.kill9();
    let (out, _) = wait_exit(long, Duration::from_secs(30));
    assert!(!out.status.success());
    gw = start_gateway(
        fleet,
        &sandbox,
        &control_plane,
        &token.token,
        "remote-gw-2",
        SHORT_GRACE,
    );
    // Offline from its start: the restored end and the crash's are both waiting.
    gw.wait_metric(
        "wg_agent_events_queued",
        |v| v >= 2.0,
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(history(&deps, &quiet.id, "session.ended"), 0);
    let restored = Instant::now();
    link.restore();
    let quiet_end = ended(fleet, &quiet.id, Duration::from_secs(30)).await;
    let open_end = ended(fleet, &open.id, Duration::from_secs(30)).await;
    let delivered = restored.elapsed();
    assert!(
        matches!(
            quiet_end.end_reason,
            Some(EndReason::ClientClosed | EndReason::TargetClosed)
        ),
        "{quiet_end:?}"
    );
    assert_eq!(
        open_end.end_reason,
        Some(EndReason::ReplicaLost),
        "{open_end:?}"
    );
    gw.wait_metric(
        "wg_agent_events_queued",
        |v| v == 0.0,
        Duration::from_secs(10),
    )
    .await;
    for id in [&quiet.id, &open.id] {
        assert_eq!(history(&deps, id, "session.started"), 1);
        assert_eq!(history(&deps, id, "session.ended"), 1);
    }
    assert!(gw.log().contains("agent_session_lost_in_restart"));
    eprintln!(
        "MEASURED restarted gateway, link restored to its offline and crash events recorded: \
         {delivered:?}"
    );

    // 11. A gateway that dies and does not come back in time: once it has been silent for
    // longer than its heartbeats said its sessions outlive a lost link (offline grace plus
    // loss detection) plus --replica-lost-after, the cleanup job ends them as `replica_lost`;
    // `gateways list` shows it offline past its grace; when it does return and reports the
    // session ended, nothing changes.
    gw.wait_metric("wg_agent_link_up", |v| v == 1.0, Duration::from_secs(30))
        .await;
    let long = ssh(&deps, fleet, "sleep 120; echo never", &[]);
    let orphan = active_session_besides(fleet, &gw, &open.id).await;
    let bound_ms: u64 = sql(
        &deps,
        &format!("SELECT lost_after_ms FROM gateways WHERE id = '{gateway_id}'"),
    )
    .parse()
    .unwrap();
    // Its grace, a heartbeat interval, the keepalive interval (1 s at least) and its timeout.
    assert_eq!(
        Duration::from_millis(bound_ms),
        SHORT_GRACE + Duration::from_millis(500 + 1_000 + 5_000)
    );
    let killed = Instant::now();
    gw.service.kill9();
    let _ = wait_exit(long, Duration::from_secs(30));
    let bound = Duration::from_millis(bound_ms) + Duration::from_secs(3);
    let gone = ended(fleet, &orphan.id, bound + Duration::from_secs(20)).await;
    let took = killed.elapsed();
    assert_eq!(gone.end_reason, Some(EndReason::ReplicaLost), "{gone:?}");
    assert!(
        took >= bound - Duration::from_secs(1),
        "ended after {took:?}"
    );
    assert_eq!(history(&deps, &orphan.id, "session.ended"), 1);
    let listed = wgctl_ok(fleet, &["gateways", "list"]);
    assert!(listed.contains("past its offline grace"), "{listed}");
    eprintln!(
        "MEASURED gateway killed (-9) to its session ended by the control plane: {took:?} \
         (its bound {bound:?} plus the cleanup job's 2 s period)"
    );
    let seq = events_seq(&deps, &gateway_id);
    gw = start_gateway(
        fleet,
        &sandbox,
        &control_plane,
        &token.token,
        "remote-gw-3",
        SHORT_GRACE,
    );
    let gw = &gw;
    Fleet::eventually(
        "the returned gateway's report of the relay it lost",
        Duration::from_secs(30),
        || {
            let deps = &deps;
            let gateway_id = &gateway_id;
            async move { (events_seq(deps, gateway_id) > seq).then_some(()) }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", gw.log()));
    let after = fleet.client_for(2).session(&orphan.id).await.unwrap();
    assert_eq!(
        (after.end_reason, after.ended_at, after.bytes_up),
        (gone.end_reason, gone.ended_at, gone.bytes_up)
    );
    assert_eq!(history(&deps, &orphan.id, "session.ended"), 1);
}

/// The last session-event sequence number the control plane applied for gateway `id`.
fn events_seq(deps: &Deps, id: &str) -> u64 {
    sql(
        deps,
        &format!("SELECT events_seq FROM gateways WHERE id = '{id}'"),
    )
    .parse()
    .unwrap()
}

/// Waits for the newest session to be active and other than `seen`, and returns it.
async fn active_session_besides(fleet: &Fleet, gw: &Gateway, seen: &str) -> SessionView {
    let (s, _) = Fleet::eventually(
        "a new regional session active in the control plane",
        Duration::from_secs(30),
        || async move {
            let s = fleet.client_for(0).sessions(Some(1)).await.ok()?;
            s.into_iter()
                .next()
                .filter(|s| s.status == SessionStatus::Active && s.id != seen)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", gw.log()));
    s
}

/// Opens a link as the gateway and sends an `ended` event for `session` again under sequence
/// number `seq` (already applied); returns the acknowledged sequence number.
async fn replay(fleet: &Fleet, port: u16, identity: (&str, &str), session: &str, seq: u64) -> u64 {
    let ca = std::fs::read_to_string(fleet.cert_path()).unwrap();
    let tls = tonic::transport::ClientTlsConfig::new()
        .domain_name("127.0.0.1")
        .ca_certificate(tonic::transport::Certificate::from_pem(ca))
        .identity(tonic::transport::Identity::from_pem(identity.0, identity.1));
    let ch = tonic::transport::Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let ev = Up {
        msg: Some(up::Msg::Event(SessionEvent {
            seq,
            session_id: session.into(),
            kind: "ended".into(),
            bytes_up: 1,
            bytes_down: 1,
            reason: "terminated".into(),
            ..Default::default()
        })),
    };
    let ups = futures::stream::iter(vec![ev]).chain(futures::stream::pending());
    let mut downs = AgentClient::new(ch).link(ups).await.unwrap().into_inner();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(10), downs.message()).await {
            Ok(Ok(Some(m))) => {
                if let Some(down::Msg::Ack(a)) = m.msg {
                    return a.seq;
                }
            }
            other => panic!("no acknowledgement: {other:?}"),
        }
    }
    panic!("no acknowledgement within 10 s");
}

use futures::StreamExt as _;
