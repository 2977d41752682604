//! Wiring of both controllers (clusters and pools): what each watches, through
//! [`DeserializeGuard`] so one undecodable custom resource neither breaks a watch nor is skipped,
//! and what happens to objects that vanish (their backoff entries are forgotten).

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::core::DeserializeGuard;
use kube::runtime::controller::{self, Action, Config as ControllerConfig, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use wardengate_crds::{GatewayPool, WardengateCluster};

use super::backoff::ObjectKey;
use super::{Context, Error, cluster, pool};
use crate::labels::MANAGER;

/// What one controller's stream reports after each scheduled reconcile.
type Reported<K> = Result<(ObjectRef<K>, Action), controller::Error<Error, watcher::Error>>;

/// Logs one controller result; a reconcile scheduled for an object that no longer exists (its
/// retry or resync came due after it was deleted) forgets its backoff entry.
fn settle<K>(ctx: &Context, what: &'static str, r: Reported<K>)
where
    K: Resource<DynamicType = ()>,
{
    match r {
        Ok((obj, _)) => tracing::debug!(kind = what, name = %obj.name, "reconciled"),
        Err(controller::Error::ObjectNotFound(gone)) => {
            let key = ObjectKey::of_ref(&gone);
            tracing::debug!(object = %key, "gone: its backoff is forgotten");
            ctx.backoff.forget(&key);
        }
        Err(e) => tracing::debug!(kind = what, error = %e, "reconcile error"),
    }
}

fn api<K>(client: &Client, ns: &Option<String>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Runs both controllers (clusters and pools) until the returned future is dropped.
/// `namespace` restricts them to one namespace; `concurrency` bounds parallel reconciles.
pub async fn run(client: Client, namespace: Option<String>, concurrency: u16, ctx: Arc<Context>) {
    let owned =
        watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={MANAGER}"));
    let cluster_ctx = ctx.clone();
    let clusters = Controller::new(
        api::<DeserializeGuard<WardengateCluster>>(&client, &namespace),
        watcher::Config::default(),
    )
    .owns(api::<Deployment>(&client, &namespace), owned.clone())
    .owns(api::<Service>(&client, &namespace), owned.clone())
    .owns(api::<ConfigMap>(&client, &namespace), owned.clone())
    .owns(api::<Secret>(&client, &namespace), owned.clone())
    .owns(api::<ServiceAccount>(&client, &namespace), owned.clone())
    .owns(
        api::<PodDisruptionBudget>(&client, &namespace),
        owned.clone(),
    )
    .owns(api::<NetworkPolicy>(&client, &namespace), owned.clone())
    .with_config(ControllerConfig::default().concurrency(concurrency))
    .run(
        cluster::reconcile_guarded,
        cluster::error_policy,
        ctx.clone(),
    )
    .for_each(move |r| {
        settle(&cluster_ctx, "WardengateCluster", r);
        futures::future::ready(())
    });
    let pools = Controller::new(
        api::<DeserializeGuard<GatewayPool>>(&client, &namespace),
        watcher::Config::default(),
    );
    let pool_store = pools.store();
    let pool_ctx = ctx.clone();
    let pools = pools
        .owns(api::<Deployment>(&client, &namespace), owned.clone())
        .owns(api::<Service>(&client, &namespace), owned.clone())
        .owns(api::<ServiceAccount>(&client, &namespace), owned.clone())
        .owns(
            api::<PodDisruptionBudget>(&client, &namespace),
            owned.clone(),
        )
        .owns(api::<NetworkPolicy>(&client, &namespace), owned)
        // A cluster's version or spec change reaches the pools that serve it. Clusters come
        // through the guard too: an undecodable one must not stop this watch.
        .watches(
            api::<DeserializeGuard<WardengateCluster>>(&client, &namespace),
            watcher::Config::default(),
            move |c| {
                let ns = c.namespace();
                let name = c.name_any();
                pool_store
                    .state()
                    .into_iter()
                    .filter(|p| {
                        p.namespace() == ns
                            && p.0
                                .as_ref()
                                .ok()
                                .and_then(|p| p.spec.cluster_ref.as_ref())
                                .is_some_and(|r| r.name == name)
                    })
                    .map(|p| ObjectRef::from_obj(&*p))
                    .collect::<Vec<_>>()
            },
        )
        .with_config(ControllerConfig::default().concurrency(concurrency))
        .run(pool::reconcile_guarded, pool::error_policy, ctx)
        .for_each(move |r| {
            settle(&pool_ctx, "GatewayPool", r);
            futures::future::ready(())
        });
    futures::join!(clusters, pools);
}
