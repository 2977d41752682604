//! The operator against a real cluster (kind, k3d or any other), for users who have one. Gated:
//! runs only with `WG_REAL_CLUSTER=1` and a kubeconfig whose current context it may write to
//! (it creates and deletes the namespace `wardengate-e2e-<random>`). CI machines have no cluster,
//! so there it reports itself skipped.
//!
//! ```text
//! kind create cluster
//! kubectl apply -k config/crd
//! WG_REAL_CLUSTER=1 cargo test -p wardengate-operator --test real_cluster -- --nocapture
//! ```
//!
//! With `WG_E2E_IMAGE=registry/wardengate` (an image the cluster can pull, tag = `version`) it also
//! waits for `Ready=True`; without it, it checks every owned object and the `Reconciling` status.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Secret, Service};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;
use wardengate_crds::WardengateCluster;
use wardengate_operator::leader::LeaseConfig;
use wardengate_operator::metrics::Metrics;
use wardengate_operator::run::{RunConfig, run};

async fn wait<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_reconciles_a_cluster_on_a_real_apiserver() {
    if std::env::var("WG_REAL_CLUSTER").as_deref() != Ok("1") {
        eprintln!("skipped: set WG_REAL_CLUSTER=1 with a kubeconfig to run the real-cluster suite");
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = kube::Client::try_default()
        .await
        .expect("a kubeconfig or in-cluster config");
    let ns = format!("wardengate-e2e-{}", std::process::id());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
        )
        .await
        .unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "wardengate-db"},
                "stringData": {"url": "postgres://wardengate:pw@postgres:5432/wardengate"}}))
            .unwrap(),
        )
        .await
        .unwrap();
    let image = std::env::var("WG_E2E_IMAGE").ok();
    let mut spec = json!({"version": "0.1.0", "replicas": 2,
        "postgres": {"external": {"urlSecretRef": {"name": "wardengate-db", "key": "url"}}},
        "redis": {"mode": "standalone", "hosts": ["redis:6379"]}});
    if let Some(i) = &image {
        spec["image"] = json!(i);
    }
    let clusters: Api<WardengateCluster> = Api::namespaced(client.clone(), &ns);
    clusters
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"apiVersion": "wardengate.io/v1alpha1",
            "kind": "WardengateCluster", "metadata": {"name": "wg"}, "spec": spec}))
            .unwrap(),
        )
        .await
        .expect("the CRDs are installed (kubectl apply -k config/crd)");

    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let cfg = RunConfig {
        namespace: Some(ns.clone()),
        concurrency: 2,
        lease: LeaseConfig::new(&ns, "wardengate-operator", "e2e"),
    };
    let op = tokio::spawn(run(
        client.clone(),
        cfg,
        Metrics::new(),
        Arc::new(AtomicBool::new(false)),
        stop_rx,
    ));

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    wait("owned objects", Duration::from_secs(60), || async {
        deployments.get_opt("wg-cp").await.unwrap().is_some()
            && services.get_opt("wg").await.unwrap().is_some()
            && secrets.get_opt("wg-internal").await.unwrap().is_some()
            && secrets.get_opt("wg-tls").await.unwrap().is_some()
    })
    .await;
    wait("status", Duration::from_secs(60), || async {
        let c = clusters.get("wg").await.unwrap();
        c.status.is_some_and(|s| {
            s.observed_generation == c.metadata.generation && !s.conditions.is_empty()
        })
    })
    .await;
    // Drift: a deleted Service comes back.
    services
        .delete("wg", &DeleteParams::default())
        .await
        .unwrap();
    wait("the Service back", Duration::from_secs(60), || async {
        services
            .get_opt("wg")
            .await
            .unwrap()
            .is_some_and(|s| s.metadata.deletion_timestamp.is_none())
    })
    .await;
    if image.is_some() {
        wait("Ready=True", Duration::from_secs(600), || async {
            let c = clusters.get("wg").await.unwrap();
            c.status.is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            })
        })
        .await;
    }
    stop.send(true).unwrap();
    op.await.unwrap();
    namespaces
        .delete(&ns, &DeleteParams::default())
        .await
        .unwrap();
}
