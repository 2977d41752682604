//! Status, computed purely from what the apply step returned (the types make sure: an
//! [`Applied`] can only come from applying). kstatus rules, so `kubectl wait
//! --for=condition=Ready`, Flux and Argo CD read it correctly: `observedGeneration`, and the
//! conditions `Ready`, `Reconciling` and `Stalled` (abnormal-true) with stable reasons.
//!
//! Nothing here changes from one pass to the next unless the cluster changed: condition
//! timestamps are carried over while a condition keeps its status, so a steady-state reconcile
//! computes an identical status and writes nothing.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use wardengate_crds::{RolloutStatus, WardengateClusterStatus};

use crate::labels::{self, names};
use crate::rollout::{Plan, Progress};
use crate::validate::ValidCluster;

/// Condition types.
pub mod types {
    /// The cluster serves at the requested version.
    pub const READY: &str = "Ready";
    /// The operator is still moving the cluster towards its spec.
    pub const RECONCILING: &str = "Reconciling";
    /// Progress is impossible without a change from the user.
    pub const STALLED: &str = "Stalled";
    /// Non-blocking findings about the spec.
    pub const WARNINGS: &str = "Warnings";
}

/// Stable condition reasons.
pub mod reasons {
    /// Every replica ready at the requested version.
    pub const AVAILABLE: &str = "Available";
    /// Deployments are rolling or pods are starting.
    pub const PROGRESSING: &str = "Progressing";
    /// A template change waits for `spec.rollout.paused` to clear.
    pub const PAUSED: &str = "RolloutPaused";
    /// A Deployment exceeded its progress deadline; the rollout stopped.
    pub const DEADLINE: &str = "ProgressDeadlineExceeded";
    /// The spec fails validation.
    pub const INVALID: &str = "InvalidSpec";
    /// A Secret the spec references does not exist.
    pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
    /// No problem.
    pub const HEALTHY: &str = "Healthy";
    /// The spec has warnings.
    pub const SPEC_WARNINGS: &str = "SpecWarnings";
}

/// The Deployments as the apply step left them (server responses, or the observed objects
/// where nothing needed writing). Only [`crate::controller`] can construct one.
#[derive(Debug, Clone)]
pub struct Applied {
    pub(crate) deployments: Vec<Deployment>,
}

impl Applied {
    /// The applied Deployments.
    pub fn deployments(&self) -> &[Deployment] {
        &self.deployments
    }
}

/// A condition, keeping `lastTransitionTime` from `previous` when the status is unchanged.
pub fn condition(
    previous: &[Condition],
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    generation: i64,
    now: &Time,
) -> Condition {
    let status = if status { "True" } else { "False" }.to_string();
    let since = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    Condition {
        type_: type_.to_string(),
        status,
        reason: reason.to_string(),
        message,
        observed_generation: Some(generation),
        last_transition_time: since,
    }
}

/// Status of a cluster whose objects were applied.
pub fn cluster(
    v: &ValidCluster,
    generation: i64,
    applied: &Applied,
    plan: &Plan,
    previous: Option<&WardengateClusterStatus>,
    now: &Time,
) -> WardengateClusterStatus {
    let prev_conditions = previous.map(|p| p.conditions.as_slice()).unwrap_or(&[]);
    let replicas: i32 = v.placements.iter().map(|(_, r)| r).sum();
    let (mut ready, mut updated, mut draining) = (0, 0, 0);
    for d in applied.deployments() {
        let s = d.status.clone().unwrap_or_default();
        ready += s.ready_replicas.unwrap_or(0);
        draining += s.terminating_replicas.unwrap_or(0);
        if !plan
            .hold
            .contains(d.metadata.name.as_deref().unwrap_or_default())
        {
            updated += s.updated_replicas.unwrap_or(0);
        }
    }
    let all_complete = plan.done
        && applied.deployments().len() == v.placements.len()
        && applied
            .deployments()
            .iter()
            .all(|d| Progress::of(d).complete);
    let (ready_cond, reconciling, stalled, phase) = if let Some(zone) = &plan.stopped_at {
        let msg = format!(
            "the rollout stopped in {zone}: new pods did not become ready before the progress deadline; \
             check `kubectl describe` of its pods"
        );
        (
            (false, reasons::DEADLINE, msg.clone()),
            (false, reasons::DEADLINE, msg.clone()),
            (true, reasons::DEADLINE, msg),
            "Degraded",
        )
    } else if all_complete {
        let msg = format!(
            "{ready}/{replicas} replicas ready at version {}",
            v.spec.version
        );
        (
            (true, reasons::AVAILABLE, msg.clone()),
            (false, reasons::AVAILABLE, msg),
            (false, reasons::HEALTHY, String::new()),
            "Ready",
        )
    } else if plan.paused {
        let msg = format!(
            "rollout to {} paused by spec.rollout.paused ({ready}/{replicas} ready, {updated} updated)",
            v.spec.version
        );
        (
            (false, reasons::PAUSED, msg.clone()),
            (true, reasons::PAUSED, msg),
            (false, reasons::HEALTHY, String::new()),
            "Paused",
        )
    } else {
        let at = plan
            .current
            .as_ref()
            .map(|z| format!(", rolling {z}"))
            .unwrap_or_default();
        let msg = format!(
            "{ready}/{replicas} replicas ready, {updated} on version {}{at}",
            v.spec.version
        );
        (
            (false, reasons::PROGRESSING, msg.clone()),
            (true, reasons::PROGRESSING, msg),
            (false, reasons::HEALTHY, String::new()),
            "Progressing",
        )
    };
    let mut conditions = vec![
        condition(
            prev_conditions,
            types::READY,
            ready_cond.0,
            ready_cond.1,
            ready_cond.2,
            generation,
            now,
        ),
        condition(
            prev_conditions,
            types::RECONCILING,
            reconciling.0,
            reconciling.1,
            reconciling.2,
            generation,
            now,
        ),
        condition(
            prev_conditions,
            types::STALLED,
            stalled.0,
            stalled.1,
            stalled.2,
            generation,
            now,
        ),
    ];
    if !v.warnings.is_empty() {
        conditions.push(condition(
            prev_conditions,
            types::WARNINGS,
            true,
            reasons::SPEC_WARNINGS,
            v.warnings.join("; "),
            generation,
            now,
        ));
    }
    let version = if all_complete {
        Some(v.spec.version.clone())
    } else {
        previous.and_then(|p| p.version.clone())
    };
    WardengateClusterStatus {
        observed_generation: Some(generation),
        conditions,
        replicas,
        ready_replicas: ready,
        updated_replicas: updated,
        version,
        phase: Some(phase.to_string()),
        endpoint: Some(format!(
            "{}.{}.svc:{}",
            names::service(&v.name),
            v.namespace,
            labels::HTTPS_PORT
        )),
        selector: Some(labels::selector_string(&labels::selector(
            &v.name,
            "control-plane",
        ))),
        rollout: Some(RolloutStatus {
            target_version: Some(v.spec.version.clone()),
            current_zone: plan.current.clone(),
            pods_draining: draining,
            sessions_draining: 0,
        }),
    }
}

/// Status of a cluster that cannot progress until the user changes something: `Stalled=True`
/// with `reason` and `message`; counts and version stay as last observed.
pub fn stalled(
    generation: i64,
    reason: &str,
    message: String,
    previous: Option<&WardengateClusterStatus>,
    now: &Time,
) -> WardengateClusterStatus {
    let prev_conditions = previous.map(|p| p.conditions.as_slice()).unwrap_or(&[]);
    let mut s = previous.cloned().unwrap_or_default();
    s.observed_generation = Some(generation);
    s.phase = Some("Stalled".to_string());
    s.conditions = vec![
        condition(
            prev_conditions,
            types::READY,
            false,
            reason,
            message.clone(),
            generation,
            now,
        ),
        condition(
            prev_conditions,
            types::RECONCILING,
            false,
            reason,
            message.clone(),
            generation,
            now,
        ),
        condition(
            prev_conditions,
            types::STALLED,
            true,
            reason,
            message,
            generation,
            now,
        ),
    ];
    s
}
