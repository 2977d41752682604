//! `wardengate-operator run`: leader election gating the controllers, and the probe server.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use kube::Client;
use tokio::sync::watch;

use crate::controller::{self, Context};
use crate::leader::{Elector, LeaseConfig};
use crate::metrics::Metrics;

/// Settings of a running operator.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Watch only this namespace (with a namespaced Role), or all (with a ClusterRole).
    pub namespace: Option<String>,
    /// Maximum reconciles in parallel.
    pub concurrency: u16,
    /// Leader election.
    pub lease: LeaseConfig,
}

/// Runs the operator until `stop` turns true: campaigns for the Lease and runs the controllers
/// only while leader (they stop at once when leadership is lost). Returns after releasing the
/// Lease. `api_ok` tracks whether the API answered the last election round (`/readyz`).
pub async fn run(
    client: Client,
    cfg: RunConfig,
    metrics: Metrics,
    api_ok: Arc<AtomicBool>,
    mut stop: watch::Receiver<bool>,
) {
    let (tx, mut leader) = watch::channel(false);
    let elector = Elector::new(client.clone(), cfg.lease.clone());
    let mut elector_stop = stop.clone();
    let contact = api_ok.clone();
    let election = tokio::spawn(async move {
        elector
            .run(
                tx,
                async move {
                    let _ = elector_stop.wait_for(|s| *s).await;
                },
                move |ok| contact.store(ok, Ordering::Relaxed),
            )
            .await;
    });
    loop {
        tokio::select! {
            r = leader.wait_for(|l| *l) => if r.is_err() { break },
            _ = stop.wait_for(|s| *s) => break,
        }
        metrics.leader.set(1);
        metrics.leader_transitions.inc();
        tracing::info!(identity = %cfg.lease.identity, "leading: starting controllers");
        let ctx = Arc::new(Context::new(
            client.clone(),
            &cfg.lease.identity,
            metrics.clone(),
        ));
        let controllers =
            controller::run(client.clone(), cfg.namespace.clone(), cfg.concurrency, ctx);
        let stopping = tokio::select! {
            _ = controllers => false,
            _ = leader.wait_for(|l| !*l) => false,
            _ = stop.wait_for(|s| *s) => true,
        };
        metrics.leader.set(0);
        tracing::info!(identity = %cfg.lease.identity, "not leading: controllers stopped");
        if stopping {
            break;
        }
    }
    let _ = election.await;
}

#[derive(Clone)]
struct Probes {
    metrics: Metrics,
    api_ok: Arc<AtomicBool>,
}

/// The probe router: `/healthz` (the process serves), `/readyz` (the API answered the last
/// election round; leaders and standbys alike), `/metrics`.
pub fn probe_router(metrics: Metrics, api_ok: Arc<AtomicBool>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(p): State<Probes>| async move {
                if p.api_ok.load(Ordering::Relaxed) {
                    (StatusCode::OK, "ok")
                } else {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the Kubernetes API did not answer",
                    )
                }
            }),
        )
        .route(
            "/metrics",
            get(|State(p): State<Probes>| async move { p.metrics.render() }),
        )
        .with_state(Probes { metrics, api_ok })
}
