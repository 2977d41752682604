//! The `WardengateCluster` reconcile: dereference → validate (pure) → build (pure) and plan
//! (pure) → apply → status (pure, from the applied set).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use wardengate_crds::WardengateCluster;

use super::backoff::ObjectKey;
use super::events::{publish, report};
use super::plan::{observed_progress, plan_rollout};
use super::status_write::{now, write_status};
use super::{
    Context, Error, FLEET_ACTIVE_RESYNC, FLEET_RESYNC, MISSING_SECRET_RETRY, apply, observe,
    patroni, pods, undecodable,
};
use crate::build::{self, SecretMaterial};
use crate::fleet;
use crate::labels::names;
use crate::material;
use crate::rollout;
use crate::status::{self, reasons};
use crate::validate;

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

/// Records the outcome of one reconcile of `key` in the metrics, and forgets its backoff on
/// success.
pub(crate) fn record(
    ctx: &Context,
    key: &ObjectKey,
    started: Instant,
    result: &Result<Action, Error>,
) {
    let outcome = if result.is_ok() { "ok" } else { "error" };
    ctx.metrics.observe_reconcile(outcome, started.elapsed());
    if result.is_ok() {
        ctx.backoff.forget(key);
    }
}

/// One reconcile of one cluster.
pub async fn reconcile(c: Arc<WardengateCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile_inner(&c, &ctx).await;
    record(&ctx, &ObjectKey::of(&*c), started, &result);
    result
}

/// One reconcile of one cluster as the watch delivers it: one that does not deserialize is
/// stalled, never skipped.
pub async fn reconcile_guarded(
    c: Arc<DeserializeGuard<WardengateCluster>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let started = Instant::now();
    let result = match &c.0 {
        Ok(cluster) => reconcile_inner(cluster, &ctx).await,
        Err(invalid) => undecodable::stall(&ctx, &c, invalid, status::stalled).await,
    };
    record(&ctx, &ObjectKey::of(&*c), started, &result);
    result
}

async fn reconcile_inner(c: &WardengateCluster, ctx: &Context) -> Result<Action, Error> {
    let key = ObjectKey::of(c);
    if c.metadata.deletion_timestamp.is_some() {
        // Owner references hand the owned objects to the garbage collector.
        return Ok(Action::await_change());
    }
    let generation = c.metadata.generation.unwrap_or(0);
    let uid = c
        .uid()
        .ok_or_else(|| Error::Metadata(key.to_string(), "uid"))?;
    let ns = c
        .namespace()
        .ok_or_else(|| Error::Metadata(key.to_string(), "namespace"))?;
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
    let internal = existing(&names::internal_secret(&v.name))
        .map(material::with_recording_key)
        .map(material::with_observer_token)
        .unwrap_or_else(material::internal);
    let ssh = match existing(&names::ssh_secret(&v.name)) {
        Some(d) => d,
        None => material::ssh_keys()?,
    };
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

    // Dereference the fleet: each serving or draining pod's status (reads only; a pod that does
    // not answer is reported, not fatal).
    let reach = pods::reach(
        &ctx.client,
        &v,
        v.spec.tls.secret_name.is_none().then_some(&tls),
        &internal,
    )
    .await;
    let fleet = pods::observe(&ctx.client, &v, &reach).await?;

    // Build (pure) and plan the rollout (pure).
    let desired = build::cluster_objects(
        &v,
        c.controller_owner_ref(&()),
        &SecretMaterial {
            internal,
            tls,
            ssh,
            credentials: observed.credentials.clone(),
        },
    );
    let wanted = desired.wanted();
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
        tracing::warn!(cluster = %key, %why, "rollout held: Patroni reports no healthy primary");
        rollout::hold_changes(&mut plan, &wanted, &observed_progress(&observed), why);
    }
    // Degraded fleet gate: no zone starts while most serving pods report a dependency failing.
    if !plan.done
        && let Some((dep, failing, of)) = fleet::degraded(&fleet)
    {
        let why = format!("{dep} is unreachable from {failing} of {of} pods that answered");
        tracing::warn!(cluster = %key, %why, "rollout stopped: degraded fleet");
        rollout::hold_for_dependency(&mut plan, &wanted, &observed_progress(&observed), why);
    }

    // Apply.
    let outcome = apply::apply(&ctx.client, &ns, &desired, &observed, &plan.hold).await?;
    report(ctx, c, &outcome).await;
    if let Some(zone) = &plan.stopped_at {
        tracing::warn!(cluster = %key, zone, "rollout stopped: progress deadline exceeded");
    }

    // Scale-in removes idle replicas first: deletion costs follow session buckets.
    pods::patch_deletion_costs(&ctx.client, &ns, &fleet::deletion_cost_patches(&fleet)).await?;

    // Status, from what apply returned and the fleet.
    let s = status::cluster(
        &v,
        generation,
        &outcome.applied,
        &plan,
        &fleet,
        c.status.as_ref(),
        &now,
    );
    let active = fleet::active(&fleet, s.phase.as_deref() == Some("Ready"));
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
    // Session counts change without any event: look again soon while something moves, and at
    // a steady pace otherwise (reads only; status is written only on bucket changes).
    Ok(Action::requeue(if active {
        FLEET_ACTIVE_RESYNC
    } else {
        FLEET_RESYNC
    }))
}

/// Backoff after a failed reconcile.
pub fn error_policy(
    c: Arc<DeserializeGuard<WardengateCluster>>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    let key = ObjectKey::of(&*c);
    let wait = ctx.backoff.fail(&key);
    tracing::warn!(cluster = %key, error = %error, retry_in = ?wait, "reconcile failed");
    Action::requeue(wait)
}
