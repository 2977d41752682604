//! Status, computed purely from what the apply step returned (the types make sure: an
//! [`Applied`] set can only come from applying, and carries each Deployment with its zone). kstatus rules, so `kubectl wait
//! --for=condition=Ready`, Flux and Argo CD read it correctly: `observedGeneration`, and the
//! conditions `Ready`, `Reconciling` and `Stalled` (abnormal-true) with stable reasons.
//!
//! Nothing here changes from one pass to the next unless the cluster changed: condition
//! timestamps are carried over while a condition keeps its status, so a steady-state reconcile
//! computes an identical status and writes nothing.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use wardengate_crds::{GatewayPoolStatus, RolloutStatus, WardengateClusterStatus};

use crate::fleet::{self, PlacementCounts, PodView};
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
    /// The custom resource does not deserialize (a field of the wrong type).
    pub const INVALID_RESOURCE: &str = "InvalidResource";
    /// A Secret the spec references does not exist.
    pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
    /// No problem.
    pub const HEALTHY: &str = "Healthy";
    /// The spec has warnings.
    pub const SPEC_WARNINGS: &str = "SpecWarnings";
    /// The Patroni health URL does not answer 2xx: template changes wait.
    pub const DATABASE_UNHEALTHY: &str = "DatabaseUnhealthy";
    /// A pool's cluster does not exist or is invalid.
    pub const CLUSTER_NOT_FOUND: &str = "ClusterNotFound";
    /// A pool waits for its cluster to report a version.
    pub const WAITING_FOR_CLUSTER: &str = "WaitingForCluster";
    /// A remote pool waits for its control plane's version (`status.controlPlaneVersion`).
    pub const WAITING_FOR_CONTROL_PLANE: &str = "WaitingForControlPlane";
    /// `spec.version` is newer than the control plane reports: gateways stay at the control
    /// plane's version until it catches up.
    pub const VERSION_HELD: &str = "VersionHeld";
    /// Pods are draining (terminating with sessions, or told to drain); the message counts them.
    pub const DRAINING: &str = "Draining";
    /// Most serving pods report Postgres or Redis failing: the rollout stopped (the message names
    /// the dependency) and resumes when they recover.
    pub const DEPENDENCY_UNAVAILABLE: &str = "DependencyUnavailable";
}

/// One placement as the apply step left it.
#[derive(Debug, Clone)]
pub struct AppliedZone {
    /// Zone the placement is pinned to, if any.
    pub zone: Option<String>,
    /// Name of its Deployment.
    pub name: String,
    /// The server's answer to the apply, the observed Deployment when nothing needed writing
    /// (or its template change is held), none when a held Deployment does not exist yet.
    pub deployment: Option<Deployment>,
}

/// The typed applied set: per kind and per placement, the objects as the apply step left them
/// (server responses, or the observed objects where nothing needed writing). Only
/// [`crate::controller`] can construct one.
#[derive(Debug, Clone)]
pub struct Applied {
    pub(crate) service_account: Option<ServiceAccount>,
    pub(crate) secrets: Vec<Secret>,
    pub(crate) config_map: Option<ConfigMap>,
    pub(crate) zones: Vec<AppliedZone>,
    pub(crate) service: Service,
    pub(crate) pdb: Option<PodDisruptionBudget>,
    pub(crate) network_policy: NetworkPolicy,
}

impl Applied {
    /// The ServiceAccount (clusters only).
    pub fn service_account(&self) -> Option<&ServiceAccount> {
        self.service_account.as_ref()
    }
    /// The owned Secrets.
    pub fn secrets(&self) -> &[Secret] {
        &self.secrets
    }
    /// The ConfigMap (clusters only).
    pub fn config_map(&self) -> Option<&ConfigMap> {
        self.config_map.as_ref()
    }
    /// Every placement, in rollout order.
    pub fn zones(&self) -> &[AppliedZone] {
        &self.zones
    }
    /// The Service.
    pub fn service(&self) -> &Service {
        &self.service
    }
    /// The PodDisruptionBudget, if one is wanted.
    pub fn pdb(&self) -> Option<&PodDisruptionBudget> {
        self.pdb.as_ref()
    }
    /// The NetworkPolicy.
    pub fn network_policy(&self) -> &NetworkPolicy {
        &self.network_policy
    }
    /// The Deployments that exist, in rollout order.
    pub fn deployments(&self) -> impl Iterator<Item = &Deployment> {
        self.zones.iter().filter_map(|z| z.deployment.as_ref())
    }
    /// Whether every placement's Deployment exists and finished rolling out.
    pub fn all_complete(&self) -> bool {
        self.zones.iter().all(|z| {
            z.deployment
                .as_ref()
                .is_some_and(|d| Progress::of(d).complete)
        })
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
///
/// `pods` is the observed fleet (each control-plane pod and what its status endpoint said):
/// per-zone sessions and draining pods come from it, with the zero-write rule of
/// [`crate::fleet`].
pub fn cluster(
    v: &ValidCluster,
    generation: i64,
    applied: &Applied,
    plan: &Plan,
    pods: &[PodView],
    previous: Option<&WardengateClusterStatus>,
    now: &Time,
) -> WardengateClusterStatus {
    let prev_conditions = previous.map(|p| p.conditions.as_slice()).unwrap_or(&[]);
    let replicas: i32 = v.placements.iter().map(|(_, r)| r).sum();
    let (mut ready, mut updated, mut terminating) = (0, 0, 0);
    let mut placements: Vec<PlacementCounts> = v
        .placements
        .iter()
        .map(|(zone, want)| PlacementCounts {
            name: zone
                .clone()
                .unwrap_or_else(|| names::deployment(&v.name, None)),
            desired: *want,
            ..PlacementCounts::default()
        })
        .collect();
    for z in applied.zones() {
        let Some(d) = &z.deployment else { continue };
        let s = d.status.clone().unwrap_or_default();
        let held = plan.hold.contains(z.name.as_str());
        let up = if held {
            0
        } else {
            s.updated_replicas.unwrap_or(0)
        };
        ready += s.ready_replicas.unwrap_or(0);
        terminating += s.terminating_replicas.unwrap_or(0);
        updated += up;
        if let Some(pc) = v
            .placements
            .iter()
            .position(|(zone, _)| *zone == z.zone)
            .and_then(|i| placements.get_mut(i))
        {
            pc.ready = s.ready_replicas.unwrap_or(0);
            pc.updated = up;
        }
    }
    let (pods_draining, sessions_draining) = fleet::draining_totals(pods);
    let draining = pods_draining.max(terminating);
    let all_complete = plan.done && applied.all_complete();
    let active = fleet::active(pods, all_complete);
    let (zones, sessions) = fleet::zones(
        &placements,
        pods,
        previous.map(|p| p.zones.as_slice()).unwrap_or(&[]),
        previous.map(|p| p.sessions),
        active,
    );
    let drain_msg =
        format!("{draining} pod(s) draining with {sessions_draining} session(s) still open");
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
        // Old pods may still drain after the Deployments completed: serving, but not done.
        let reconciling = if draining > 0 {
            (true, reasons::DRAINING, drain_msg.clone())
        } else {
            (false, reasons::AVAILABLE, msg.clone())
        };
        (
            (true, reasons::AVAILABLE, msg),
            reconciling,
            (false, reasons::HEALTHY, String::new()),
            "Ready",
        )
    } else if let Some(why) = &plan.dependency_unavailable {
        let msg = format!(
            "rollout to {} stopped: {why}; it resumes when they recover ({ready}/{replicas} ready, {updated} updated)",
            v.spec.version
        );
        (
            (false, reasons::DEPENDENCY_UNAVAILABLE, msg.clone()),
            (false, reasons::DEPENDENCY_UNAVAILABLE, msg.clone()),
            (true, reasons::DEPENDENCY_UNAVAILABLE, msg),
            "Degraded",
        )
    } else if let Some(why) = &plan.database_unhealthy {
        let msg = format!(
            "rollout to {} held: spec.postgres.patroni.restHealthUrl reports no healthy primary ({why}); \
             it resumes when the URL answers 2xx ({ready}/{replicas} ready, {updated} updated)",
            v.spec.version
        );
        (
            (false, reasons::DATABASE_UNHEALTHY, msg.clone()),
            (true, reasons::DATABASE_UNHEALTHY, msg),
            (false, reasons::HEALTHY, String::new()),
            "Progressing",
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
        let reason = if draining > 0 {
            reasons::DRAINING
        } else {
            reasons::PROGRESSING
        };
        let msg = if draining > 0 {
            format!("{msg}; {drain_msg}")
        } else {
            msg
        };
        (
            (false, reason, msg.clone()),
            (true, reason, msg),
            (false, reasons::HEALTHY, String::new()),
            "Progressing",
        )
    };
    let mut conditions = conditions(
        prev_conditions,
        (ready_cond, reconciling, stalled),
        generation,
        now,
    );
    let mut warnings = v.warnings.clone();
    let silent = fleet::unanswered(pods);
    if !silent.is_empty() {
        warnings.push(format!(
            "pods not answering GET /v1/system/status on {}: {}",
            labels::HTTPS_PORT,
            silent
                .iter()
                .map(|(p, why)| format!("{p} ({why})"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if !warnings.is_empty() {
        conditions.push(condition(
            prev_conditions,
            types::WARNINGS,
            true,
            reasons::SPEC_WARNINGS,
            warnings.join("; "),
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
            sessions_draining,
        }),
        sessions,
        zones,
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
    s.conditions = conditions(
        prev_conditions,
        (
            (false, reason, message.clone()),
            (false, reason, message.clone()),
            (true, reason, message),
        ),
        generation,
        now,
    );
    s
}

/// kstatus conditions from one decision: `(ready, reconciling, stalled)` each as
/// `(status, reason, message)`.
type Verdict<'a> = (
    (bool, &'a str, String),
    (bool, &'a str, String),
    (bool, &'a str, String),
);

fn conditions(
    previous: &[Condition],
    v: Verdict<'_>,
    generation: i64,
    now: &Time,
) -> Vec<Condition> {
    let (r, g, s) = v;
    vec![
        condition(previous, types::READY, r.0, r.1, r.2, generation, now),
        condition(previous, types::RECONCILING, g.0, g.1, g.2, generation, now),
        condition(previous, types::STALLED, s.0, s.1, s.2, generation, now),
    ]
}

/// Status of a pool that cannot progress (`Stalled=True`) or waits (`Reconciling=True`).
pub fn pool_blocked(
    generation: i64,
    stalled: bool,
    reason: &str,
    message: String,
    previous: Option<&GatewayPoolStatus>,
    now: &Time,
) -> GatewayPoolStatus {
    let prev = previous.map(|p| p.conditions.as_slice()).unwrap_or(&[]);
    let mut s = previous.cloned().unwrap_or_default();
    s.observed_generation = Some(generation);
    s.phase = Some(if stalled { "Stalled" } else { "Pending" }.to_string());
    s.conditions = conditions(
        prev,
        (
            (false, reason, message.clone()),
            (!stalled, reason, message.clone()),
            (
                stalled,
                reason,
                if stalled { message } else { String::new() },
            ),
        ),
        generation,
        now,
    );
    s
}

/// Status of a pool whose objects were applied.
///
/// `held` says why `version` is not `spec.version` (the control plane runs an older one): the
/// pool then reports `Reconciling=True` with reason `VersionHeld` until the control plane
/// catches up, and phase `Held` once its gateways are ready at the allowed version.
#[allow(clippy::too_many_arguments)] // one per input of the status; a struct would only rename them
pub fn pool(
    p: &crate::validate::ValidPool,
    version: &str,
    held: Option<&str>,
    generation: i64,
    applied: &Applied,
    plan: &Plan,
    previous: Option<&GatewayPoolStatus>,
    now: &Time,
) -> GatewayPoolStatus {
    let prev = previous.map(|p| p.conditions.as_slice()).unwrap_or(&[]);
    let ready: i32 = applied
        .deployments()
        .map(|d| {
            d.status
                .as_ref()
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0)
        })
        .sum();
    let complete = plan.done && applied.all_complete();
    let want = p.spec.replicas;
    let verdict: Verdict<'_> = if let Some(at) = &plan.stopped_at {
        let m = format!(
            "the rollout of {at} stopped: new pods did not become ready before the progress deadline"
        );
        (
            (false, reasons::DEADLINE, m.clone()),
            (false, reasons::DEADLINE, m.clone()),
            (true, reasons::DEADLINE, m),
        )
    } else if complete {
        let m = format!("{ready}/{want} gateways ready at version {version}");
        (
            (true, reasons::AVAILABLE, m.clone()),
            (false, reasons::AVAILABLE, m),
            (false, reasons::HEALTHY, String::new()),
        )
    } else if plan.paused {
        let m = format!("rollout to {version} paused by spec.rollout.paused");
        (
            (false, reasons::PAUSED, m.clone()),
            (true, reasons::PAUSED, m),
            (false, reasons::HEALTHY, String::new()),
        )
    } else {
        let m = format!("{ready}/{want} gateways ready, rolling to {version}");
        (
            (false, reasons::PROGRESSING, m.clone()),
            (true, reasons::PROGRESSING, m),
            (false, reasons::HEALTHY, String::new()),
        )
    };
    let verdict: Verdict<'_> = match (held, plan.stopped_at.is_some()) {
        (Some(why), false) if complete => {
            let m = format!("{ready}/{want} gateways ready at version {version}; {why}");
            (
                (true, reasons::VERSION_HELD, m),
                (true, reasons::VERSION_HELD, why.to_string()),
                verdict.2,
            )
        }
        (Some(why), false) => {
            let (r, g, st) = verdict;
            (r, (g.0, g.1, format!("{}; {why}", g.2)), st)
        }
        _ => verdict,
    };
    let phase = if plan.stopped_at.is_some() {
        "Degraded"
    } else if complete && held.is_some() {
        "Held"
    } else if complete {
        "Ready"
    } else if plan.paused {
        "Paused"
    } else {
        "Progressing"
    };
    GatewayPoolStatus {
        observed_generation: Some(generation),
        conditions: conditions(prev, verdict, generation, now),
        replicas: want,
        ready_replicas: ready,
        version: if complete {
            Some(version.to_string())
        } else {
            previous.and_then(|s| s.version.clone())
        },
        phase: Some(phase.to_string()),
        selector: Some(labels::selector_string(&crate::build::pool_selector(p))),
        // Written by the pool's user or a probe, never by the operator.
        control_plane_version: None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::fleet::{Answer, Dependencies, Report};
    use k8s_openapi::api::apps::v1::DeploymentStatus;
    use wardengate_crds::WardengateCluster;

    fn valid() -> ValidCluster {
        let c: WardengateCluster = serde_json::from_value(serde_json::json!({
            "apiVersion": "wardengate.io/v1alpha1", "kind": "WardengateCluster",
            "metadata": {"name": "wg", "namespace": "ns", "generation": 2},
            "spec": {
                "version": "1.1.0", "replicas": 4, "zones": ["a", "b"],
                "postgres": {"external": {"urlSecretRef": {"name": "db", "key": "url"}}},
                "redis": {"hosts": ["redis:6379"]},
            },
        }))
        .unwrap();
        crate::validate::validate(&c).unwrap()
    }

    fn deployment(name: &str, ready: i32, updated: i32) -> Deployment {
        let mut d = Deployment::default();
        d.metadata.name = Some(name.into());
        d.metadata.generation = Some(1);
        d.spec.replicas = Some(2);
        d.status = Some(DeploymentStatus {
            observed_generation: Some(1),
            replicas: Some(2),
            ready_replicas: Some(ready),
            available_replicas: Some(ready),
            updated_replicas: Some(updated),
            ..Default::default()
        });
        d
    }

    fn applied(a: (i32, i32), b: (i32, i32)) -> Applied {
        Applied {
            service_account: None,
            secrets: Vec::new(),
            config_map: None,
            zones: vec![
                AppliedZone {
                    zone: Some("a".into()),
                    name: "wg-cp-a".into(),
                    deployment: Some(deployment("wg-cp-a", a.0, a.1)),
                },
                AppliedZone {
                    zone: Some("b".into()),
                    name: "wg-cp-b".into(),
                    deployment: Some(deployment("wg-cp-b", b.0, b.1)),
                },
            ],
            service: Service::default(),
            pdb: None,
            network_policy: NetworkPolicy::default(),
        }
    }

    fn pod(name: &str, zone: usize, version: &str, sessions: Option<i64>) -> PodView {
        PodView {
            name: name.into(),
            placement: Some(zone),
            ready: true,
            terminating: false,
            version: Some(version.into()),
            deletion_cost: None,
            answer: match sessions {
                Some(n) => Answer::Report(Report {
                    replica: name.into(),
                    draining: false,
                    owned_sessions: n,
                    version: "x".into(),
                    dependencies: Some(Dependencies {
                        postgres: true,
                        redis: true,
                    }),
                }),
                None => Answer::NoAnswer("connection failed".into()),
            },
        }
    }

    fn now() -> Time {
        Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)
    }

    fn cond<'a>(s: &'a WardengateClusterStatus, t: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == t).unwrap()
    }

    #[test]
    fn a_rollout_with_a_pod_draining_its_last_session() {
        let v = valid();
        let plan = Plan {
            current: Some("a".into()),
            hold: ["wg-cp-b".to_string()].into(),
            ..Plan::default()
        };
        let mut old = pod("wg-cp-a-old", 0, "1.0.0", Some(1));
        old.terminating = true;
        let pods = vec![
            pod("wg-cp-a-1", 0, "1.1.0", Some(0)),
            pod("wg-cp-a-2", 0, "1.1.0", Some(2)),
            old,
            pod("wg-cp-b-1", 1, "1.0.0", Some(5)),
            pod("wg-cp-b-2", 1, "1.0.0", None),
        ];
        let s = cluster(&v, 2, &applied((2, 2), (2, 2)), &plan, &pods, None, &now());
        let r = s.rollout.as_ref().unwrap();
        assert_eq!((r.pods_draining, r.sessions_draining), (1, 1));
        assert_eq!(r.current_zone.as_deref(), Some("a"));
        assert_eq!(r.target_version.as_deref(), Some("1.1.0"));
        assert_eq!(s.sessions, 8);
        assert_eq!(
            s.updated_replicas, 2,
            "zone b is held: its pods are not updated"
        );
        let a = &s.zones[0];
        assert_eq!(
            (a.name.as_str(), a.desired, a.ready, a.updated),
            ("a", 2, 2, 2)
        );
        assert_eq!((a.sessions, a.version.as_deref()), (3, Some("1.1.0")));
        assert_eq!(a.draining.len(), 1);
        assert_eq!(
            (a.draining[0].name.as_str(), a.draining[0].sessions),
            ("wg-cp-a-old", 1)
        );
        let b = &s.zones[1];
        assert_eq!(
            (b.updated, b.sessions, b.unreachable.as_slice()),
            (0, 5, &["wg-cp-b-2".to_string()][..])
        );
        let rec = cond(&s, types::RECONCILING);
        assert_eq!(
            (rec.status.as_str(), rec.reason.as_str()),
            ("True", reasons::DRAINING)
        );
        assert!(
            rec.message.contains("1 pod(s) draining with 1 session(s)"),
            "{}",
            rec.message
        );
        let w = cond(&s, types::WARNINGS);
        assert!(
            w.message.contains("wg-cp-b-2 (connection failed)"),
            "{}",
            w.message
        );

        // The session ends, the old pod goes: exact counts again (still rolling), no Draining.
        let pods: Vec<PodView> = pods.into_iter().filter(|p| !p.terminating).collect();
        let s2 = cluster(
            &v,
            2,
            &applied((2, 2), (2, 2)),
            &plan,
            &pods,
            Some(&s),
            &now(),
        );
        assert_eq!(s2.rollout.as_ref().unwrap().sessions_draining, 0);
        assert_eq!(cond(&s2, types::RECONCILING).reason, reasons::PROGRESSING);
        assert!(s2.zones[0].draining.is_empty());
        assert_eq!(s2.sessions, 7);
    }

    #[test]
    fn a_degraded_fleet_is_stalled_naming_the_dependency() {
        let v = valid();
        let plan = Plan {
            current: Some("a".into()),
            hold: ["wg-cp-a".to_string(), "wg-cp-b".to_string()].into(),
            dependency_unavailable: Some("Redis is unreachable from 3 of 4 ready pods".into()),
            ..Plan::default()
        };
        let pods = vec![pod("wg-cp-a-1", 0, "1.0.0", Some(0))];
        let s = cluster(&v, 2, &applied((2, 2), (2, 2)), &plan, &pods, None, &now());
        let st = cond(&s, types::STALLED);
        assert_eq!(
            (st.status.as_str(), st.reason.as_str()),
            ("True", reasons::DEPENDENCY_UNAVAILABLE)
        );
        assert!(
            st.message.contains("Redis is unreachable from 3 of 4"),
            "{}",
            st.message
        );
        assert_eq!(cond(&s, types::READY).status, "False");
        assert_eq!(s.phase.as_deref(), Some("Degraded"));
    }

    #[test]
    fn a_steady_fleet_with_moving_counts_computes_an_identical_status() {
        let v = valid();
        let plan = Plan {
            done: true,
            ..Plan::default()
        };
        let mut d = applied((2, 2), (2, 2));
        for z in &mut d.zones {
            if let Some(dep) = z.deployment.as_mut() {
                dep.metadata.annotations = None;
            }
        }
        let mk = |a: i64, b: i64| {
            vec![
                pod("wg-cp-a-1", 0, "1.1.0", Some(a)),
                pod("wg-cp-b-1", 1, "1.1.0", Some(b)),
            ]
        };
        let first = cluster(&v, 2, &d, &plan, &mk(12, 3), None, &now());
        assert_eq!(first.phase.as_deref(), Some("Ready"));
        assert_eq!(first.sessions, 15);
        let later = Time(k8s_openapi::jiff::Timestamp::from_second(1000).unwrap());
        for (a, b) in [(14, 4), (16, 2), (10, 3)] {
            let again = cluster(&v, 2, &d, &plan, &mk(a, b), Some(&first), &later);
            assert_eq!(again, first, "{a}/{b} sessions rewrote a steady status");
        }
        let moved = cluster(&v, 2, &d, &plan, &mk(25, 3), Some(&first), &later);
        assert_eq!((moved.sessions, moved.zones[0].sessions), (28, 25));
    }
}
