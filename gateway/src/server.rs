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
    /// The listener failed.
    #[error("serving on {addr}: {source}")]
    Listen {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
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
    pub live: Live,
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
    /// Isolation grace.
    pub isolation_grace: Duration,
    /// Admin token to ensure at start.
    pub admin_token: Option<String>,
    /// How long a SIGTERM drain waits for owned sessions before closing them.
    pub drain_timeout: Duration,
    /// Heartbeat age after which a replica's sessions end as `replica_lost`.
    pub replica_lost_after: Duration,
}

/// Connects Redis for `serve`, retrying a Cluster whose nodes are not up yet.
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
/// backing off from 200 ms to 5 s: start-up waits for dependencies instead of crash-looping.
async fn retry_while_unavailable<
    T,
    E: std::fmt::Display,
    Fut: std::future::Future<Output = Result<T, E>>,
>(
    what: &str,
    mut op: impl FnMut() -> Fut,
    unavailable: impl Fn(&E) -> bool,
) -> Result<T, E> {
    let mut delay = Duration::from_millis(200);
    loop {
        match op().await {
            Err(e) if unavailable(&e) => {
                tracing::warn!(dependency = what, error = %e, retry_in = ?delay, "not reachable yet");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            other => return other,
        }
    }
}

/// Migrates (retrying while the database is unreachable), then serves until `shutdown`
/// resolves; then drains (readiness fails, new relays are refused, owned sessions get
/// `drain_timeout` to end before being closed recoverably) and only then stops serving.
pub async fn run(
    parts: Parts,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let tls = RustlsConfig::from_config(Arc::new(crate::tls::server_config(&parts.tls)?));
    retry_while_unavailable(
        "postgres (migrations wait)",
        || parts.store.migrate(),
        |e| matches!(e, crate::store::StoreError::Unavailable(_)),
    )
    .await?;
    if let Some(t) = &parts.admin_token {
        parts
            .store
            .ensure_admin_token(&crate::token::hash(t))
            .await?;
    }
    let replica = Replica::new(parts.replica_id.clone(), parts.role);
    let health = HealthState::new(parts.isolation_grace);
    let checker = Checker {
        store: parts.store.clone(),
        live: parts.live.clone(),
        metrics: parts.metrics.clone(),
        state: health.clone(),
        interval: parts.health_interval,
        replica_state: replica.clone(),
    };
    checker.cycle().await;
    let checker_task = tokio::spawn(checker.run());
    let jobs_task = replica.role.has_api().then(|| {
        let jobs = crate::jobs::Jobs {
            store: parts.store.clone(),
            live: parts.live.clone(),
            replica: replica.clone(),
            metrics: parts.metrics.clone(),
            lease_ttl: Duration::from_secs(5),
            every: Duration::from_secs(2),
            lost_after: parts.replica_lost_after,
            recordings: parts.recordings.clone(),
            keyring: parts.keyring.clone(),
            seal_after: parts.recording_seal_after,
            max_hold: crate::jobs::MAX_HOLD,
        };
        let (cleanup, fanout, manifests) = (jobs.clone(), jobs.clone(), jobs);
        tokio::spawn(async move {
            let sign = async {
                if manifests.recordings.is_some() {
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
    });
    // Uploads left over from an earlier run first, then a retry loop for failed uploads.
    if let Some(rec) = parts.recordings.clone() {
        tokio::spawn(async move {
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
        });
    }
    let state = Arc::new(AppState {
        replica,
        store: parts.store,
        live: parts.live,
        keyring: parts.keyring,
        metrics: parts.metrics,
        health,
        dial_timeout: Duration::from_secs(10),
        relay_poll: parts.health_interval.max(Duration::from_millis(500)),
        recordings: parts.recordings.clone(),
    });
    let handle = Handle::new();
    let h = handle.clone();
    let (replica, metrics, drain_timeout) = (
        state.replica.clone(),
        state.metrics.clone(),
        parts.drain_timeout,
    );
    let flush = state.recordings.clone();
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!(event = "shutdown_requested", drain_timeout = ?drain_timeout, "draining before shutdown");
        let deadline = replica.begin_drain(drain_timeout);
        metrics.draining.set(1);
        let outcome = replica.wait_drained(deadline).await;
        if let Some(rec) = &flush {
            // Finished sessions' recordings go up now if they can; the rest stay spooled for
            // the next start.
            let _ = tokio::time::timeout(Duration::from_secs(10), rec.resume_spool(false)).await;
        }
        tracing::info!(event = "shutting_down", outcome = ?outcome);
        h.graceful_shutdown(Some(Duration::from_secs(10)));
    });
    tracing::info!(event = "serving", listen = %parts.listen, replica = %state.replica.id, role = ?state.replica.role);
    // TCP_NODELAY on accepted connections: without it a handshake's small writes wait for
    // delayed ACKs (about 40 ms per session setup on Linux).
    let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(tls)
        .acceptor(axum_server::accept::NoDelayAcceptor::new());
    let result = axum_server::bind(parts.listen)
        .acceptor(acceptor)
        .handle(handle)
        .serve(router(state).into_make_service())
        .await
        .map_err(|source| ServeError::Listen {
            addr: parts.listen,
            source,
        });
    checker_task.abort();
    if let Some(t) = jobs_task {
        t.abort();
    }
    result
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
