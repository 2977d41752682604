//! The `GatewayPool` controller: the same pipeline as the cluster's. Its one extra read is the
//! cluster a `clusterRef` pool serves, whose reported version caps the pool's; a remote
//! (`controlPlane`) pool reads its Secrets instead, and its version is capped by the control
//! plane's as its `status.controlPlaneVersion` says (written by its user or a probe, never by
//! the operator).

use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use wardengate_crds::{GatewayPool, GatewayPoolStatus, WardengateCluster};

use super::backoff::ObjectKey;
use super::cluster::record;
use super::events::{publish, report};
use super::plan::plan_rollout;
use super::status_write::{now, write_status};
use super::{Context, Error, MISSING_SECRET_RETRY, RESYNC, apply, observe, undecodable};
use crate::build::{pool_objects, remote_pool_objects};
use crate::status::{self, reasons};
use crate::validate::{self, ValidPool, pool_version, validate_pool};

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
    if write(ctx, p, &s).await? && stalled {
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

/// What a pool's target allows: the version to render, why it is not `spec.version` (if it is
/// held), and the objects.
struct Rendered {
    version: String,
    held: Option<String>,
    desired: crate::build::Desired,
}

/// Why `version` (what [`pool_version`] allowed) is not the `asked` one, naming where the
/// control plane's version came from.
fn held(asked: Option<&str>, version: &str, reported: &str, source: &str) -> Option<String> {
    let asked = asked?;
    (asked != version).then(|| {
        format!(
            "spec.version {asked} is newer than the control plane's {reported} ({source}), or \
             not comparable with it: gateways stay at {version} and never run newer than their \
             control plane; the rollout continues once it reports {asked} or newer"
        )
    })
}

/// Whether a remote pool's Secrets exist with their keys (the pods would not start otherwise);
/// the findings name the field.
async fn missing_secrets(
    ctx: &Context,
    ns: &str,
    r: &crate::validate::ValidRemote,
) -> Result<Vec<String>, kube::Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let mut wanted = vec![
        (
            "spec.controlPlane.joinTokenSecretRef",
            r.join_token.name.clone(),
            r.join_token.key.clone(),
        ),
        (
            "spec.tls.secretName",
            r.tls_secret.clone(),
            "tls.crt".into(),
        ),
        (
            "spec.tls.secretName",
            r.tls_secret.clone(),
            "tls.key".into(),
        ),
    ];
    if let Some(ca) = &r.ca {
        wanted.push((
            "spec.controlPlane.caSecretRef",
            ca.name.clone(),
            ca.key.clone(),
        ));
    }
    // One read per Secret, however many of its keys are needed.
    let mut by_name: Vec<(String, Vec<(&str, String)>)> = Vec::new();
    for (field, name, key) in wanted {
        match by_name.iter_mut().find(|(n, _)| *n == name) {
            Some((_, keys)) => keys.push((field, key)),
            None => by_name.push((name, vec![(field, key)])),
        }
    }
    let mut missing = Vec::new();
    for (name, keys) in by_name {
        let secret = secrets.get_opt(&name).await?;
        for (field, key) in keys {
            match &secret {
                None => missing.push(format!("{field}: Secret {ns}/{name} not found")),
                Some(s) if !s.data.as_ref().is_some_and(|d| d.contains_key(&key)) => {
                    missing.push(format!("{field}: Secret {ns}/{name} has no key `{key}`"))
                }
                Some(_) => {}
            }
        }
    }
    missing.dedup();
    Ok(missing)
}

/// The status the operator writes: everything but `controlPlaneVersion`, which belongs to the
/// pool's user (or probe) and is never part of the operator's apply.
fn own(s: Option<&GatewayPoolStatus>) -> Option<GatewayPoolStatus> {
    s.cloned().map(|mut s| {
        s.control_plane_version = None;
        s
    })
}

async fn write(ctx: &Context, p: &GatewayPool, s: &GatewayPoolStatus) -> Result<bool, kube::Error> {
    let current = own(p.status.as_ref());
    let mut s = s.clone();
    s.control_plane_version = None;
    write_status(ctx, p, current.as_ref(), &s).await
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
    let rendered = match &vp.remote {
        Some(r) => {
            let missing = missing_secrets(ctx, &ns, r).await?;
            if !missing.is_empty() {
                let m = missing.join("; ");
                blocked(ctx, p, true, reasons::SECRET_NOT_FOUND, m, &now).await?;
                return Ok(Action::requeue(MISSING_SECRET_RETRY));
            }
            let reported = p
                .status
                .as_ref()
                .and_then(|s| s.control_plane_version.clone())
                .filter(|v| !v.trim().is_empty());
            let Some(reported) = reported else {
                let m = format!(
                    "waiting for status.controlPlaneVersion: the version the control plane at {} \
                     runs, so gateways never run newer (kubectl patch gatewaypool {} -n {ns} \
                     --subresource=status --type=merge -p '{{\"status\":{{\"controlPlaneVersion\":\"X.Y.Z\"}}}}')",
                    r.url, vp.name
                );
                blocked(ctx, p, false, reasons::WAITING_FOR_CONTROL_PLANE, m, &now).await?;
                return Ok(Action::await_change());
            };
            let version =
                pool_version(Some(&r.version), Some(&reported)).unwrap_or_else(|| reported.clone());
            Rendered {
                held: held(
                    Some(&r.version),
                    &version,
                    &reported,
                    "status.controlPlaneVersion",
                ),
                desired: remote_pool_objects(&vp, r, &version, p.controller_owner_ref(&())),
                version,
            }
        }
        None => match for_cluster(ctx, p, &vp, &ns, &now).await? {
            Some(r) => r,
            None => return Ok(Action::await_change()),
        },
    };
    let observed = observe::observe_pool(&ctx.client, &ns, &vp.name, &uid).await?;
    let desired = rendered.desired;
    let plan = plan_rollout(&desired.wanted(), &observed, vp.spec.rollout.paused);
    let outcome = apply::apply(&ctx.client, &ns, &desired, &observed, &plan.hold).await?;
    report(ctx, p, &outcome).await;
    let s = status::pool(
        &vp,
        &rendered.version,
        rendered.held.as_deref(),
        generation,
        &outcome.applied,
        &plan,
        p.status.as_ref(),
        &now,
    );
    write(ctx, p, &s).await?;
    Ok(Action::requeue(RESYNC))
}

/// The objects of a `clusterRef` pool, from its cluster (the one extra read); `None` when the
/// pool is blocked on it (its status already says why).
async fn for_cluster(
    ctx: &Context,
    p: &GatewayPool,
    vp: &ValidPool,
    ns: &str,
    now: &Time,
) -> Result<Option<Rendered>, Error> {
    // Dereference the cluster; its changes reach this pool through a watch.
    // Through the guard: an undecodable cluster blocks this pool instead of failing it.
    let clusters: Api<DeserializeGuard<WardengateCluster>> =
        Api::namespaced(ctx.client.clone(), ns);
    let Some(DeserializeGuard(cluster)) = clusters.get_opt(&vp.cluster).await? else {
        let m = format!(
            "spec.clusterRef.name: WardengateCluster {ns}/{} not found",
            vp.cluster
        );
        blocked(ctx, p, true, reasons::CLUSTER_NOT_FOUND, m, now).await?;
        return Ok(None);
    };
    let cluster = match cluster {
        Ok(c) => c,
        Err(invalid) => {
            let why =
                undecodable::describe::<WardengateCluster>(ctx, ns, &vp.cluster, &invalid).await?;
            let m = format!(
                "WardengateCluster {ns}/{} does not decode: {why}",
                vp.cluster
            );
            blocked(ctx, p, true, reasons::CLUSTER_NOT_FOUND, m, now).await?;
            return Ok(None);
        }
    };
    let vc = match validate::validate(&cluster) {
        Ok(v) => v,
        Err(e) => {
            let m = format!("WardengateCluster {ns}/{} is invalid: {e}", vp.cluster);
            blocked(ctx, p, true, reasons::CLUSTER_NOT_FOUND, m, now).await?;
            return Ok(None);
        }
    };
    let reported = cluster.status.as_ref().and_then(|s| s.version.clone());
    let Some(version) = pool_version(vp.spec.version.as_deref(), reported.as_deref()) else {
        let m = format!(
            "waiting for WardengateCluster {ns}/{} to report a version",
            vp.cluster
        );
        blocked(ctx, p, false, reasons::WAITING_FOR_CLUSTER, m, now).await?;
        return Ok(None);
    };
    let source = format!("WardengateCluster {ns}/{} status.version", vp.cluster);
    Ok(Some(Rendered {
        held: held(
            vp.spec.version.as_deref(),
            &version,
            reported.as_deref().unwrap_or_default(),
            &source,
        ),
        desired: pool_objects(vp, &vc, &version, p.controller_owner_ref(&())),
        version,
    }))
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
