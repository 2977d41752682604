//! The `GatewayPool` controller: the same pipeline as the cluster's. Its one extra read is the
//! cluster the pool serves, whose reported version caps the pool's.

use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use wardengate_crds::{GatewayPool, WardengateCluster};

use super::backoff::ObjectKey;
use super::cluster::record;
use super::events::{publish, report};
use super::plan::plan_rollout;
use super::status_write::{now, write_status};
use super::{Context, Error, RESYNC, apply, observe, undecodable};
use crate::build::pool_objects;
use crate::status::{self, reasons};
use crate::validate::{self, pool_version, validate_pool};

async fn blocked(
    ctx: &Context,
    p: &GatewayPool,
    stalled: bool,
    reason: &str,
    message: String,
    now: &Time,
) -> Result<(), kube::Error> {
    let generation = p.metadata.generation.unwrap_or(0);
    let s = status::pool_blocked(
        generation,
        stalled,
        reason,
        message.clone(),
        p.status.as_ref(),
        now,
    );
    if write_status(ctx, p, p.status.as_ref(), &s).await? && stalled {
        publish(ctx, p, EventType::Warning, reason, "Validate", message).await;
    }
    Ok(())
}

/// One reconcile of one pool.
pub async fn reconcile(p: Arc<GatewayPool>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile_inner(&p, &ctx).await;
    record(&ctx, &ObjectKey::of(&*p), started, &result);
    result
}

/// One reconcile of one pool as the watch delivers it: one that does not deserialize is
/// stalled, never skipped.
pub async fn reconcile_guarded(
    p: Arc<DeserializeGuard<GatewayPool>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let started = Instant::now();
    let result = match &p.0 {
        Ok(pool) => reconcile_inner(pool, &ctx).await,
        Err(invalid) => {
            undecodable::stall(&ctx, &p, invalid, |g, reason, m, prev, now| {
                status::pool_blocked(g, true, reason, m, prev, now)
            })
            .await
        }
    };
    record(&ctx, &ObjectKey::of(&*p), started, &result);
    result
}

async fn reconcile_inner(p: &GatewayPool, ctx: &Context) -> Result<Action, Error> {
    if p.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let key = ObjectKey::of(p);
    let now = now();
    let generation = p.metadata.generation.unwrap_or(0);
    let uid = p
        .uid()
        .ok_or_else(|| Error::Metadata(key.to_string(), "uid"))?;
    let ns = p
        .namespace()
        .ok_or_else(|| Error::Metadata(key.to_string(), "namespace"))?;
    let vp = match validate_pool(p) {
        Ok(v) => v,
        Err(e) => {
            ctx.metrics.invalid.inc();
            blocked(ctx, p, true, reasons::INVALID, e.to_string(), &now).await?;
            return Ok(Action::await_change());
        }
    };
    // Dereference the cluster; its changes reach this pool through a watch.
    // Through the guard: an undecodable cluster blocks this pool instead of failing it.
    let clusters: Api<DeserializeGuard<WardengateCluster>> =
        Api::namespaced(ctx.client.clone(), &ns);
    let Some(DeserializeGuard(cluster)) = clusters.get_opt(&vp.cluster).await? else {
        let m = format!(
            "spec.clusterRef.name: WardengateCluster {ns}/{} not found",
            vp.cluster
        );
        blocked(ctx, p, true, reasons::CLUSTER_NOT_FOUND, m, &now).await?;
        return Ok(Action::await_change());
    };
    let cluster = match cluster {
        Ok(c) => c,
        Err(invalid) => {
            let why =
                undecodable::describe::<WardengateCluster>(ctx, &ns, &vp.cluster, &invalid).await?;
            let m = format!(
                "WardengateCluster {ns}/{} does not decode: {why}",
                vp.cluster
            );
            blocked(ctx, p, true, reasons::CLUSTER_NOT_FOUND, m, &now).await?;
            return Ok(Action::await_change());
        }
    };
    let vc = match validate::validate(&cluster) {
        Ok(v) => v,
        Err(e) => {
            let m = format!("WardengateCluster {ns}/{} is invalid: {e}", vp.cluster);
            blocked(ctx, p, true, reasons::CLUSTER_NOT_FOUND, m, &now).await?;
            return Ok(Action::await_change());
        }
    };
    let reported = cluster.status.as_ref().and_then(|s| s.version.clone());
    let Some(version) = pool_version(vp.spec.version.as_deref(), reported.as_deref()) else {
        let m = format!(
            "waiting for WardengateCluster {ns}/{} to report a version",
            vp.cluster
        );
        blocked(ctx, p, false, reasons::WAITING_FOR_CLUSTER, m, &now).await?;
        return Ok(Action::await_change());
    };
    let observed = observe::observe_pool(&ctx.client, &ns, &vp.name, &uid).await?;
    let desired = pool_objects(&vp, &vc, &version, p.controller_owner_ref(&()));
    let plan = plan_rollout(&desired.wanted(), &observed, vp.spec.rollout.paused);
    let outcome = apply::apply(&ctx.client, &ns, &desired, &observed, &plan.hold).await?;
    report(ctx, p, &outcome).await;
    let s = status::pool(
        &vp,
        &version,
        generation,
        &outcome.applied,
        &plan,
        p.status.as_ref(),
        &now,
    );
    write_status(ctx, p, p.status.as_ref(), &s).await?;
    Ok(Action::requeue(RESYNC))
}

/// Backoff after a failed reconcile.
pub fn error_policy(
    p: Arc<DeserializeGuard<GatewayPool>>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    let key = ObjectKey::of(&*p);
    let wait = ctx.backoff.fail(&key);
    tracing::warn!(pool = %key, error = %error, retry_in = ?wait, "reconcile failed");
    Action::requeue(wait)
}
