//! Assembles a replica (store, live state, health checker, router) and serves it over HTTPS
//! until shutdown. `wardengate serve` and `wardengate dev` differ only in the parts they pass.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum_server::Handle;
use axum_server::tls_rustls::RustlsConfig;

use crate::api::{AppState, router};
use crate::health::{Checker, HealthState};
use crate::live::{Live, RedisLive};
use crate::metrics::Metrics;
use crate::replica::{Replica, Role};
use crate::signing::Keyring;
use crate::store::Store;
use crate::tls::{PemPair, TlsError};

/// Start-up failures.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Bad TLS material.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The store could not be set up.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// Redis could not be set up.
    #[error(transparent)]
    Live(#[from] crate::live::LiveError),
    /// The local admin socket could not be set up.
    #[error("admin socket {path}: {source}")]
    AdminSocket {
        /// Socket path.
        path: std::path::PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The listener failed.
    #[error("serving on {addr}: {source}")]
    Listen {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
}

/// How a replica gets its live store: ready-made (the in-process store of `dev`), or by
/// connecting to Redis after the listener is up, so health endpoints answer while Redis is
/// still out of reach.
#[derive(Debug)]
pub enum LiveSource {
    /// Already usable.
    Ready(Live),
    /// Connect (retrying while unreachable) once serving.
    Redis(crate::redis_url::RedisTarget),
}

/// The parts a replica is made of.
#[derive(Debug)]
pub struct Parts {
    /// Recording storage, when sessions are recorded.
    pub recordings: Option<crate::recording::Recordings>,
    /// Grace before an unfinished recording is signed as incomplete.
    pub recording_seal_after: Duration,
    /// Replica id.
    pub replica_id: String,
    /// Role.
    pub role: Role,
    /// Durable store (migrated by [`run`]).
    pub store: Store,
    /// Live state.
    pub live: LiveSource,
    /// Signing keys.
    pub keyring: Keyring,
    /// Metrics (shared with the Redis layer).
    pub metrics: Metrics,
    /// Server certificate.
    pub tls: PemPair,
    /// HTTPS address.
    pub listen: SocketAddr,
    /// Health-check cycle.
    pub health_interval: Duration,
    /// Isolation grace (also how long a dependency may fail before readiness does).
    pub isolation_grace: Duration,
    /// Admin token to ensure at start.
    pub admin_token: Option<String>,
    /// Observer token file (status and metrics only), if any.
    pub observer_token_file: Option<std::path::PathBuf>,
    /// How long a SIGTERM drain waits for owned sessions before closing them.
    pub drain_timeout: Duration,
    /// Heartbeat age after which a replica's sessions end as `replica_lost`.
    pub replica_lost_after: Duration,
    /// How long a live session's state stays valid without its relay renewing it.
    pub live_session_ttl: Duration,
    /// Local admin socket (drain and status without a token), if any.
    pub admin_socket: Option<std::path::PathBuf>,
    /// Plain-HTTP listener serving only `/metrics` without a token, if any.
    pub metrics_listen: Option<SocketAddr>,
    /// Connection and request bounds of the listener.
    pub limits: crate::limits::Limits,
    /// Which addresses targets may point at.
    pub target_policy: crate::target_policy::TargetPolicy,
    /// Told once the full API serves (dev prints its instructions then).
    pub ready: Option<tokio::sync::oneshot::Sender<()>>,
    /// The agent link: the listener (control plane) and/or the dial-out (gateway).
    pub agent: AgentParts,
    /// The terminating SSH front end, when configured.
    pub ssh: Option<crate::ssh::SshParts>,
}

/// The agent-link parts of a replica (issue 15).
#[derive(Debug, Default)]
pub struct AgentParts {
    /// Agent gRPC listen address (served when `ca` is set and the role serves the API).
    pub listen: Option<SocketAddr>,
    /// The agent CA shared by the control-plane replicas.
    pub ca: Option<Arc<crate::agent::AgentCa>>,
    /// Lifetime of signed gateway certificates.
    pub cert_ttl: Duration,
}

/// Connects Redis for `serve`, retrying while it is unreachable (and a Cluster whose nodes are
/// not up yet).
pub async fn connect_redis(
    target: crate::redis_url::RedisTarget,
    metrics: Metrics,
) -> Result<Live, ServeError> {
    retry_while_unavailable(
        "redis",
        || RedisLive::connect(target.clone(), metrics.clone()),
        |e| matches!(e, crate::live::LiveError::Unavailable(_)),
    )
    .await
    .map(Live::Redis)
    .map_err(Into::into)
}

/// Runs `op` until it succeeds or fails with an error `unavailable` does not call transient,
/// with the start-up backoff of [`crate::retry::forever`]: start-up waits for dependencies
/// instead of crash-looping.
async fn retry_while_unavailable<
    T,
    E: std::fmt::Display,
    Fut: std::future::Future<Output = Result<T, E>>,
>(
    what: &str,
    op: impl FnMut() -> Fut,
    unavailable: impl Fn(&E) -> bool,
) -> Result<T, E> {
    use backon::Retryable;
    op.retry(crate::retry::forever())
        .when(unavailable)
        .notify(|e, delay| {
            tracing::warn!(dependency = what, error = %e, retry_in = ?delay, "not reachable yet");
        })
        .await
}

/// Serves HTTPS at once — `/healthz` answers 200 and `/readyz` 503 naming what start-up waits
/// for, every other request 503 with `Retry-After` — while Redis is connected and migrations
/// run (both retried while unreachable, so a replica started during an outage waits instead of
/// crash-looping); then serves the full API until `shutdown` resolves; then drains (readiness
/// fails, new relays are refused, owned sessions get `drain_timeout` to end before being closed
/// recoverably) and only then stops serving.
pub async fn run(
    parts: Parts,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let tls = RustlsConfig::from_config(Arc::new(crate::tls::server_config(&parts.tls)?));
    let replica = Replica::new(parts.replica_id.clone(), parts.role, parts.metrics.clone());
    let health = HealthState::new(parts.isolation_grace);
    let phase = crate::api::StartPhase::new("waiting for redis");
    let app = crate::api::Starting::new(phase.clone());
    let handle = Handle::new();
    // The local admin socket works from the first moment: a preStop drain may come early.
    let admin_task = match &parts.admin_socket {
        Some(path) => Some(crate::admin_socket::serve(path, replica.clone())?),
        None => None,
    };
    let metrics_task = match parts.metrics_listen {
        Some(addr) => Some(serve_metrics(addr, parts.metrics.clone(), replica.clone()).await?),
        None => None,
    };
    // Bound now, so a taken SSH port fails the replica at start; served once the API is.
    let (ssh_listener, ssh_keys) = match &parts.ssh {
        Some(p) => {
            let l = crate::ssh::bind(p.listen)
                .await
                .map_err(|source| ServeError::Listen {
                    addr: p.listen,
                    source,
                })?;
            tracing::info!(event = "ssh_listen", listen = %p.listen, usage = %crate::ssh::describe(p.listen));
            let limits = crate::ssh::SshLimits {
                acceptor: crate::limits::CappedAcceptor::new(
                    parts.limits.max_connections,
                    parts
                        .metrics
                        .connections_refused
                        .with_label_values(&["ssh_max_connections"]),
                ),
                login_grace: p.login_grace,
            };
            (Some((l, limits)), Some(Arc::new(p.keys.clone())))
        }
        None => (None, None),
    };
    let ssh_port = parts.ssh.as_ref().map(|p| p.listen.port()).unwrap_or(0);
    let (startup_failed_tx, startup_failed) = tokio::sync::oneshot::channel::<ServeError>();
    let flush = parts.recordings.clone();
    let ready = {
        let (replica, health, app, metrics) = (
            replica.clone(),
            health.clone(),
            app.clone(),
            parts.metrics.clone(),
        );
        let (request_timeout, relay_keepalive, limits) = (
            parts.limits.request_timeout,
            parts.limits.relay,
            parts.limits.clone(),
        );
        let Parts {
            recordings,
            recording_seal_after,
            store,
            live,
            keyring,
            health_interval,
            admin_token,
            observer_token_file,
            replica_lost_after,
            live_session_ttl,
            ready,
            target_policy,
            agent,
            tls: agent_tls,
            ..
        } = parts;
        tokio::spawn(async move {
            let started = async {
                let live = match live {
                    LiveSource::Ready(l) => l,
                    LiveSource::Redis(target) => connect_redis(target, metrics.clone()).await?,
                };
                phase.set("waiting for postgres (migrations)");
                retry_while_unavailable(
                    "postgres (migrations wait)",
                    || store.migrate(),
                    |e| matches!(e, crate::store::StoreError::Unavailable(_)),
                )
                .await?;
                if let Some(t) = &admin_token {
                    let hashed = crate::token::hash(t);
                    retry_while_unavailable(
                        "postgres (admin token)",
                        || store.ensure_admin_token(&hashed),
                        |e| matches!(e, crate::store::StoreError::Unavailable(_)),
                    )
                    .await?;
                    retry_while_unavailable(
                        "postgres (bootstrap token rotation)",
                        || crate::api::rotate_bootstrap_token(&store, &hashed),
                        |e| matches!(e, crate::store::StoreError::Unavailable(_)),
                    )
                    .await?;
                }
                Ok::<_, ServeError>(live)
            };
            let live = match started.await {
                Ok(live) => live,
                Err(e) => {
                    let _ = startup_failed_tx.send(e);
                    return None;
                }
            };
            let checker = Checker {
                store: store.clone(),
                live: live.clone(),
                metrics: metrics.clone(),
                state: health.clone(),
                interval: health_interval,
                replica_state: replica.clone(),
            };
            checker.cycle().await;
            let checker_task = tokio::spawn(checker.run());
            let sessions = crate::session::Sessions::new(
                store.clone(),
                live.clone(),
                keyring.clone(),
                metrics.clone(),
                crate::session::SessionsConfig {
                    replica: replica.id.clone(),
                    live_session_ttl,
                    poll: health_interval.max(Duration::from_millis(500)),
                    max_failed_renewals: 3,
                    session_rate_per_token: limits.session_rate_per_token,
                    max_sessions_per_token: limits.max_sessions_per_token,
                    max_relays: limits.max_relays,
                },
            );
            let jobs_task = replica.role.has_api().then(|| {
                spawn_jobs(crate::jobs::Jobs {
                    sessions: sessions.clone(),
                    store: store.clone(),
                    live: live.clone(),
                    replica: replica.clone(),
                    metrics: metrics.clone(),
                    lease_ttl: Duration::from_secs(5),
                    every: Duration::from_secs(2),
                    lost_after: replica_lost_after,
                    recordings: recordings.clone(),
                    keyring: keyring.clone(),
                    seal_after: recording_seal_after,
                    max_hold: crate::jobs::MAX_HOLD,
                })
            });
            if let Some(rec) = recordings.clone() {
                tokio::spawn(resume_uploads(rec));
            }
            let agent_task = spawn_agent(
                agent,
                agent_tls,
                &replica,
                &store,
                &sessions,
                &keyring,
                &metrics,
                health_interval,
            );
            let guard = crate::api::Guard::new(&limits, metrics.rate_limited.clone());
            // The browser terminal's backend is the SSH front end, which needs the state it
            // is part of: built cyclically, held weakly.
            let ssh_on = ssh_keys.is_some();
            let state = Arc::new_cyclic(|me| AppState {
                replica: replica.clone(),
                store,
                live,
                keyring,
                metrics,
                health,
                dial_timeout: Duration::from_secs(10),
                sessions,
                recordings,
                request_timeout,
                tokens: Default::default(),
                relay_keepalive,
                target_policy: Arc::new(target_policy),
                guard,
                observer: crate::api::observer::ObserverTokens::new(observer_token_file),
                terminals: if ssh_on {
                    crate::console::Terminals::with(Arc::new(crate::ssh::SshTerminals::new(
                        me.clone(),
                    )))
                } else {
                    crate::console::Terminals::none()
                },
                ssh: ssh_keys.clone(),
                ssh_port,
            });
            let ssh_task = match (ssh_listener, ssh_keys) {
                (Some((l, limits)), Some(k)) => {
                    Some(crate::ssh::spawn(state.clone(), k, l, limits))
                }
                _ => None,
            };
            app.ready(router(state));
            tracing::info!(event = "ready_to_serve", replica = %replica.id);
            if let Some(tx) = ready {
                let _ = tx.send(());
            }
            Some((checker_task, jobs_task, agent_task, ssh_task))
        })
    };
    let h = handle.clone();
    let (drain_replica, drain_timeout) = (replica.clone(), parts.drain_timeout);
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!(event = "shutdown_requested", drain_timeout = ?drain_timeout, "draining before shutdown");
        let outcome = drain_replica.drain(drain_timeout).await;
        if let Some(rec) = &flush {
            // Finished sessions' recordings go up now if they can; the rest stay spooled for
            // the next start.
            let _ = tokio::time::timeout(Duration::from_secs(10), rec.resume_spool(false)).await;
        }
        tracing::info!(event = "shutting_down", outcome = %outcome);
        h.graceful_shutdown(Some(Duration::from_secs(10)));
    });
    tracing::info!(event = "serving", listen = %parts.listen, replica = %replica.id, role = ?replica.role);
    let limits = parts.limits;
    if limits.proxy_protocol.is_on() {
        tracing::info!(event = "proxy_protocol", from = %limits.proxy_protocol, "accepting PROXY protocol headers from these peers");
    }
    let refused = &parts.metrics.connections_refused;
    let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(tls)
        .handshake_timeout(limits.header_read_timeout)
        .acceptor(crate::client_addr::ClientAddrAcceptor::new(
            crate::limits::CappedAcceptor::new(
                limits.max_connections,
                refused.with_label_values(&["max_connections"]),
            ),
            limits.proxy_protocol.clone(),
            limits.header_read_timeout,
            refused.with_label_values(&["proxy_protocol"]),
        ));
    let mut server = axum_server::bind(parts.listen)
        .acceptor(acceptor)
        .handle(handle.clone())
        .first_request_timeout(limits.header_read_timeout);
    server
        .http_builder()
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    server
        .http_builder()
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .keep_alive_interval(crate::limits::HTTP2_KEEPALIVE)
        .keep_alive_timeout(crate::limits::HTTP2_KEEPALIVE);
    let serving = server.serve(app.into_make_service());
    let result = tokio::select! {
        r = serving => r.map_err(|source| ServeError::Listen {
            addr: parts.listen,
            source,
        }),
        Ok(e) = startup_failed => {
            handle.shutdown();
            Err(e)
        }
    };
    if let Some(t) = admin_task {
        t.abort();
    }
    if let Some(t) = metrics_task {
        t.abort();
    }
    ready.abort();
    if let Ok(Some((checker_task, jobs_task, agent_task, ssh_task))) = ready.await {
        checker_task.abort();
        if let Some(t) = ssh_task {
            t.abort();
        }
        if let Some(t) = agent_task {
            t.abort();
        }
        if let Some(t) = jobs_task {
            t.abort();
        }
    }
    result
}

/// Serves `GET /metrics` (and nothing else) over plain HTTP on `addr`, without a token, from
/// the first moment: for a Prometheus that scrapes a metrics port (keep it off the public
/// network) instead of 8443 with a token.
pub(crate) async fn serve_metrics(
    addr: SocketAddr,
    metrics: Metrics,
    replica: Arc<Replica>,
) -> Result<tokio::task::JoinHandle<()>, ServeError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Listen { addr, source })?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let (m, r) = (metrics.clone(), replica.clone());
            async move { crate::api::render_metrics(&m, &r) }
        }),
    );
    tracing::info!(event = "metrics_listen", listen = %addr);
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(listen = %addr, error = %e, "metrics listener stopped");
        }
    }))
}

/// Starts the control plane's end of the agent link: the listener, on a replica that serves
/// the API and has an agent CA. (A remote gateway runs [`crate::agent::remote::run`] instead.)
#[allow(clippy::too_many_arguments)]
fn spawn_agent(
    agent: AgentParts,
    tls: PemPair,
    replica: &Arc<Replica>,
    store: &Store,
    sessions: &crate::session::Sessions,
    keyring: &Keyring,
    metrics: &Metrics,
    interval: Duration,
) -> Option<tokio::task::JoinHandle<()>> {
    let (Some(addr), Some(ca)) = (agent.listen, agent.ca) else {
        if replica.role.has_api() {
            tracing::info!(
                event = "agent_listener_off",
                "no --agent-ca-file: remote gateways cannot link"
            );
        }
        return None;
    };
    if !replica.role.has_api() {
        return None;
    }
    let svc = crate::agent::AgentService {
        store: store.clone(),
        ca,
        replica: replica.id.clone(),
        cert_ttl: agent.cert_ttl,
        // Three missed heartbeats (gateways send one every health interval).
        silent_after: (interval * 3).max(Duration::from_secs(3)),
        metrics: metrics.clone(),
        sessions: sessions.clone(),
        grants: Arc::new(crate::agent::grant::GrantSigner::from_keyring(keyring)),
    };
    Some(tokio::spawn(async move {
        if let Err(e) =
            crate::agent::server::serve(addr, &tls, svc, futures::future::pending()).await
        {
            tracing::error!(event = "agent_listener_failed", error = %e);
        }
    }))
}

/// The leased background jobs of a replica that serves the API.
fn spawn_jobs(jobs: crate::jobs::Jobs) -> tokio::task::JoinHandle<()> {
    let (cleanup, fanout, manifests) = (jobs.clone(), jobs.clone(), jobs);
    tokio::spawn(async move {
        let sign = async {
            // Only replicas holding the recording private key sign (relay-only pools never do).
            if manifests.recordings.as_ref().is_some_and(|r| r.can_sign()) {
                manifests
                    .run(crate::jobs::MANIFESTS, Duration::from_secs(1))
                    .await;
            }
        };
        tokio::join!(
            cleanup.run(crate::jobs::CLEANUP, Duration::from_secs(2)),
            fanout.run(crate::jobs::FANOUT, Duration::from_millis(250)),
            sign,
        );
    })
}

/// Uploads left over from an earlier run first, then retries failed uploads every 3 s.
async fn resume_uploads(rec: crate::recording::Recordings) {
    let mut at_startup = true;
    loop {
        match rec.resume_spool(at_startup).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(event = "recordings_resumed", objects = n, at_startup),
            Err(e) => tracing::warn!(error = %e, "recording spool upload failed; retrying"),
        }
        at_startup = false;
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => futures::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = futures::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
