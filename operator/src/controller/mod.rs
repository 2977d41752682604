//! The `WardengateCluster` controller: dereference → validate (pure) → build (pure) → apply →
//! status. Side effects live in [`observe`] and [`apply`] and in the status and event writes
//! below; everything between them is pure and tested without a client.

pub mod apply;
pub mod observe;
pub mod patroni;
pub mod pool;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use wardengate_crds::{GatewayPool, WardengateCluster};

use crate::build::{self, Owned, SecretMaterial};
use crate::labels::{MANAGER, names};
use crate::material;
use crate::metrics::Metrics;
use crate::rollout::{self, Progress, Wanted};
use crate::status::{self, Applied, reasons};
use crate::validate;

/// How long to wait before looking again at a cluster whose referenced Secret is missing (the
/// operator does not watch Secrets it does not own).
pub const MISSING_SECRET_RETRY: Duration = Duration::from_secs(30);
/// Periodic resync of a healthy cluster (reads only, unless something drifted unnoticed).
pub const RESYNC: Duration = Duration::from_secs(300);

/// Why a reconcile failed; all of these are retried with exponential backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or failed a request.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// TLS material could not be generated.
    #[error(transparent)]
    Material(#[from] material::MaterialError),
    /// The object has no namespace or uid (never true for objects from the API).
    #[error("{0} lacks metadata.{1}")]
    Metadata(String, &'static str),
}

/// Exponential backoff per object: 1 s, 2 s, 4 s … capped, reset by a successful reconcile.
#[derive(Debug)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    /// A backoff from `base` doubling up to `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Records a failure of `key` and returns how long to wait.
    pub fn fail(&self, key: &str) -> Duration {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = f.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        let factor = 2u32.saturating_pow(n.saturating_sub(1).min(20));
        self.base.saturating_mul(factor).min(self.max)
    }

    /// Forgets the failures of `key`.
    pub fn succeed(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }
}

/// Shared state of the controller.
pub struct Context {
    /// API client.
    pub client: Client,
    /// Event recorder.
    pub recorder: Recorder,
    /// Operator metrics.
    pub metrics: Metrics,
    /// Per-object error backoff.
    pub backoff: Backoff,
}

impl Context {
    /// A context for `client`, reporting events as `identity`.
    pub fn new(client: Client, identity: &str, metrics: Metrics) -> Self {
        let reporter = Reporter {
            controller: MANAGER.to_string(),
            instance: Some(identity.to_string()),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(300)),
        }
    }
}

fn key(c: &WardengateCluster) -> String {
    format!("{}/{}", c.namespace().unwrap_or_default(), c.name_any())
}

/// Records an Event about `obj`. Events are for humans: failing to record one is logged and
/// never fails the reconcile.
pub(crate) async fn publish<K>(
    ctx: &Context,
    obj: &K,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) where
    K: Resource<DynamicType = ()>,
{
    let ev = Event {
        type_,
        reason: reason.to_string(),
        note: Some(note),
        action: action.to_string(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &obj.object_ref(&())).await {
        tracing::warn!(kind = %K::kind(&()), name = %obj.name_any(), error = %e, "could not record an event");
    }
}

/// Server-side-applies `status` to `obj`'s status subresource unless it equals `current`.
/// Returns whether it wrote.
pub(crate) async fn write_status<K, S>(
    ctx: &Context,
    obj: &K,
    current: Option<&S>,
    status: &S,
) -> Result<bool, kube::Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    S: PartialEq + serde::Serialize,
{
    if current == Some(status) {
        return Ok(false);
    }
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        &obj.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(true)
}

/// Records `Stalled=True` with `reason` (and a Warning event the first time).
async fn stall(
    ctx: &Context,
    c: &WardengateCluster,
    generation: i64,
    reason: &str,
    action: &str,
    msg: String,
    now: &Time,
) -> Result<(), kube::Error> {
    let s = status::stalled(generation, reason, msg.clone(), c.status.as_ref(), now);
    if write_status(ctx, c, c.status.as_ref(), &s).await? {
        publish(ctx, c, EventType::Warning, reason, action, msg).await;
    }
    Ok(())
}

/// What the planner needs of each observed Deployment.
pub(crate) fn observed_progress(observed: &observe::Observed) -> BTreeMap<String, Progress> {
    observed
        .deployments
        .iter()
        .map(|(n, d)| (n.clone(), Progress::of(d)))
        .collect()
}

/// The rollout planner's next step for `wanted` given the observed Deployments.
pub(crate) fn plan_rollout(
    wanted: &[Wanted],
    observed: &observe::Observed,
    paused: bool,
) -> rollout::Plan {
    rollout::plan(wanted, &observed_progress(observed), paused)
}

/// The wanted Deployments as apply left them: what status is computed from.
pub(crate) fn applied(wanted: &[Wanted], outcome: &apply::Outcome) -> Applied {
    Applied {
        deployments: wanted
            .iter()
            .filter_map(|w| outcome.deployments.get(&w.name).cloned())
            .collect(),
    }
}

/// Counts and reports (as Events) what an apply step wrote and deleted.
pub(crate) async fn report<K>(ctx: &Context, obj: &K, outcome: &apply::Outcome)
where
    K: Resource<DynamicType = ()>,
{
    if !outcome.applied.is_empty() {
        ctx.metrics.applied.inc_by(outcome.applied.len() as u64);
        let note = format!("applied {}", outcome.applied.join(", "));
        publish(ctx, obj, EventType::Normal, "Applied", "Apply", note).await;
    }
    if !outcome.deleted.is_empty() {
        ctx.metrics.deleted.inc_by(outcome.deleted.len() as u64);
        let note = format!("deleted {}", outcome.deleted.join(", "));
        publish(ctx, obj, EventType::Normal, "Pruned", "Delete", note).await;
    }
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// One reconcile of one cluster.
pub async fn reconcile(c: Arc<WardengateCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile_inner(&c, &ctx).await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(_) => "error",
    };
    ctx.metrics.observe_reconcile(outcome, started.elapsed());
    if result.is_ok() {
        ctx.backoff.succeed(&key(&c));
    }
    result
}

async fn reconcile_inner(c: &WardengateCluster, ctx: &Context) -> Result<Action, Error> {
    if c.metadata.deletion_timestamp.is_some() {
        // Owner references hand the owned objects to the garbage collector.
        return Ok(Action::await_change());
    }
    let generation = c.metadata.generation.unwrap_or(0);
    let uid = c.uid().ok_or_else(|| Error::Metadata(key(c), "uid"))?;
    let ns = c
        .namespace()
        .ok_or_else(|| Error::Metadata(key(c), "namespace"))?;
    let now = now();

    // Validate (pure). An invalid spec waits for a change: no requeue, no hot loop.
    let v = match validate::validate(c) {
        Ok(v) => v,
        Err(invalid) => {
            let msg = invalid.to_string();
            stall(ctx, c, generation, reasons::INVALID, "Validate", msg, &now).await?;
            ctx.metrics.invalid.inc();
            return Ok(Action::await_change());
        }
    };

    // Dereference.
    let observed = observe::observe(&ctx.client, &v, &uid).await?;
    if !observed.missing.is_empty() {
        let msg = observed.missing.join("; ");
        stall(
            ctx,
            c,
            generation,
            reasons::SECRET_NOT_FOUND,
            "Dereference",
            msg,
            &now,
        )
        .await?;
        return Ok(Action::requeue(MISSING_SECRET_RETRY));
    }

    // Secret material: reuse what exists, generate only what is missing.
    let existing = |name: &str| {
        observed
            .secrets
            .get(name)
            .and_then(|s| s.data.clone())
            .filter(|d| !d.is_empty())
    };
    let internal = existing(&names::internal_secret(&v.name)).unwrap_or_else(material::internal);
    let tls = if v.spec.tls.secret_name.is_some() {
        BTreeMap::new()
    } else {
        match existing(&names::tls_secret(&v.name)) {
            Some(d) => d,
            None => material::tls(
                &v.name,
                &material::serving_names(&names::service(&v.name), &v.namespace),
            )?,
        }
    };

    // Build (pure) and plan the rollout (pure).
    let desired = build::cluster_objects(
        &v,
        c.controller_owner_ref(&()),
        &SecretMaterial {
            internal,
            tls,
            credentials: observed.credentials.clone(),
        },
    );
    // Deployments render in placement order, so the zones zip with them.
    let wanted: Vec<Wanted> = desired
        .iter()
        .filter_map(|o| match o {
            Owned::Deployment(d) => Some(d),
            _ => None,
        })
        .zip(&v.placements)
        .map(|(d, (zone, _))| Wanted {
            name: d.name_any(),
            zone: zone.clone(),
            template_hash: rollout::template_hash(d),
        })
        .collect();
    let mut plan = plan_rollout(&wanted, &observed, v.spec.rollout.paused);
    // Patroni gate: only asked when a rollout would replace running pods.
    if let Some(url) = v
        .spec
        .postgres
        .patroni
        .as_ref()
        .and_then(|p| p.rest_health_url.as_deref())
        && rollout::replaces_pods(&wanted, &observed_progress(&observed), &plan)
        && let Err(why) = patroni::primary_healthy(url).await
    {
        tracing::warn!(cluster = %key(c), %why, "rollout held: Patroni reports no healthy primary");
        rollout::hold_changes(&mut plan, &wanted, &observed_progress(&observed), why);
    }

    // Apply.
    let outcome = apply::apply(&ctx.client, &ns, &desired, &observed, &plan.hold).await?;
    report(ctx, c, &outcome).await;
    if let Some(zone) = &plan.stopped_at {
        tracing::warn!(cluster = %key(c), zone, "rollout stopped: progress deadline exceeded");
    }

    // Status, from what apply returned.
    let applied = applied(&wanted, &outcome);
    let s = status::cluster(&v, generation, &applied, &plan, c.status.as_ref(), &now);
    let became_ready = s.phase.as_deref() == Some("Ready")
        && c.status.as_ref().and_then(|p| p.phase.as_deref()) != Some("Ready");
    write_status(ctx, c, c.status.as_ref(), &s).await?;
    if became_ready {
        publish(
            ctx,
            c,
            EventType::Normal,
            "Ready",
            "Rollout",
            format!("all replicas ready at version {}", v.spec.version),
        )
        .await;
    }
    Ok(Action::requeue(RESYNC))
}

/// Backoff after a failed reconcile.
pub fn error_policy(c: Arc<WardengateCluster>, error: &Error, ctx: Arc<Context>) -> Action {
    let wait = ctx.backoff.fail(&key(&c));
    tracing::warn!(cluster = %key(&c), error = %error, retry_in = ?wait, "reconcile failed");
    Action::requeue(wait)
}

/// Runs both controllers (clusters and pools) until the returned future is dropped. `namespace` restricts it to one
/// namespace; `concurrency` bounds parallel reconciles.
pub async fn run(client: Client, namespace: Option<String>, concurrency: u16, ctx: Arc<Context>) {
    fn api<K>(client: &Client, ns: &Option<String>) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    {
        match ns {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let owned =
        watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={MANAGER}"));
    let clusters = Controller::new(
        api::<WardengateCluster>(&client, &namespace),
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
    .with_config(ControllerConfig::default().concurrency(concurrency))
    .run(reconcile, error_policy, ctx.clone())
    .for_each(|r| async move {
        match r {
            Ok((obj, _)) => tracing::debug!(cluster = %obj.name, "reconciled"),
            Err(e) => tracing::debug!(error = %e, "reconcile error"),
        }
    });
    let pools = Controller::new(
        api::<GatewayPool>(&client, &namespace),
        watcher::Config::default(),
    );
    let pool_store = pools.store();
    let pools = pools
        .owns(api::<Deployment>(&client, &namespace), owned.clone())
        .owns(api::<Service>(&client, &namespace), owned.clone())
        .owns(api::<PodDisruptionBudget>(&client, &namespace), owned)
        // A cluster's version or spec change reaches the pools that serve it.
        .watches(
            api::<WardengateCluster>(&client, &namespace),
            watcher::Config::default(),
            move |c| {
                let ns = c.namespace();
                let name = c.name_any();
                pool_store
                    .state()
                    .into_iter()
                    .filter(|p| {
                        p.namespace() == ns
                            && p.spec.cluster_ref.as_ref().is_some_and(|r| r.name == name)
                    })
                    .map(|p| ObjectRef::from_obj(&*p))
                    .collect::<Vec<_>>()
            },
        )
        .with_config(ControllerConfig::default().concurrency(concurrency))
        .run(pool::reconcile, pool::error_policy, ctx)
        .for_each(|r| async move {
            match r {
                Ok((obj, _)) => tracing::debug!(pool = %obj.name, "reconciled"),
                Err(e) => tracing::debug!(error = %e, "reconcile error"),
            }
        });
    futures::join!(clusters, pools);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_resets() {
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(10));
        let waits: Vec<u64> = (0..6).map(|_| b.fail("a").as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 10, 10]);
        assert_eq!(b.fail("other").as_secs(), 1, "per object");
        b.succeed("a");
        assert_eq!(b.fail("a").as_secs(), 1);
    }
}
