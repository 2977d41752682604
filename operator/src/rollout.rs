//! The drain-aware rollout planner: observed Deployments in, the next step out. Pure, so every
//! decision is unit-tested without a cluster.
//!
//! Layer 1 of a safe rollout is the binary itself (preStop/SIGTERM drain). This is layer 2: with
//! zones listed, zone k+1's pod template changes only after zone k has every pod updated and
//! available (available already includes `minReadySeconds`) and no old pod left. Inside a zone
//! the Deployment's own surge 1 / unavailable 0 applies. The intent needs no memory: the
//! template hash annotation on each Deployment says which zones are done.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::Deployment;
use sha2::{Digest, Sha256};

/// Annotation on an owned Deployment: hash of the pod template the operator rendered for it.
pub const TEMPLATE_HASH: &str = "wardengate.io/template-hash";

/// Hash of a Deployment's pod template (16 hex digits of SHA-256 of its JSON).
pub fn template_hash(d: &Deployment) -> String {
    let json = serde_json::to_vec(&d.spec.template).unwrap_or_default();
    Sha256::digest(&json)
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Writes [`TEMPLATE_HASH`] on a rendered Deployment.
pub fn stamp(d: &mut Deployment) {
    let h = template_hash(d);
    d.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(TEMPLATE_HASH.to_string(), h);
}

/// What the planner needs to know about one observed Deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// Template hash it carries.
    pub template_hash: Option<String>,
    /// Every pod updated and available, no old or surplus pod left, status current.
    pub complete: bool,
    /// The Deployment controller gave up (`ProgressDeadlineExceeded`).
    pub deadline_exceeded: bool,
}

impl Progress {
    /// Reads a Deployment's status.
    pub fn of(d: &Deployment) -> Self {
        let want = d.spec.replicas.unwrap_or(1);
        let generation = d.metadata.generation.unwrap_or(0);
        let s = d.status.clone().unwrap_or_default();
        let complete = s.observed_generation.unwrap_or(-1) >= generation
            && s.updated_replicas.unwrap_or(0) == want
            && s.available_replicas.unwrap_or(0) == want
            && s.ready_replicas.unwrap_or(0) == want
            && s.replicas.unwrap_or(0) == want
            && s.terminating_replicas.unwrap_or(0) == 0;
        let deadline_exceeded = s.conditions.unwrap_or_default().iter().any(|c| {
            c.type_.as_deref() == Some("Progressing")
                && c.status.as_deref() == Some("False")
                && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
        });
        Self {
            template_hash: d
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(TEMPLATE_HASH).cloned()),
            complete,
            deadline_exceeded,
        }
    }
}

/// One Deployment the operator wants, in rollout order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// Deployment name.
    pub name: String,
    /// Zone it is pinned to, if any.
    pub zone: Option<String>,
    /// Hash of the rendered template.
    pub template_hash: String,
}

/// The planner's decision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Deployments whose rendered template must not be applied yet (an earlier zone is still
    /// rolling, or the rollout is paused or stopped).
    pub hold: BTreeSet<String>,
    /// The zone (or the single Deployment) being rolled now.
    pub current: Option<String>,
    /// Whether everything runs the rendered template and is complete.
    pub done: bool,
    /// Whether a pending template change waits for `spec.rollout.paused` to clear.
    pub paused: bool,
    /// A Deployment that exceeded its progress deadline: the rollout stops here.
    pub stopped_at: Option<String>,
    /// Why every template change is held although the plan would proceed (the Patroni health
    /// URL does not answer 2xx).
    pub database_unhealthy: Option<String>,
    /// Why every template change is held: most serving pods report a dependency (named in the
    /// message) failing. The rollout resumes when they no longer do.
    pub dependency_unavailable: Option<String>,
}

/// Whether applying `plan` would change the template of a Deployment that exists (creating a
/// missing one replaces nothing).
pub fn replaces_pods(
    wanted: &[Wanted],
    observed: &BTreeMap<String, Progress>,
    plan: &Plan,
) -> bool {
    wanted.iter().any(|w| {
        !plan.hold.contains(&w.name)
            && observed
                .get(&w.name)
                .is_some_and(|o| o.template_hash.as_deref() != Some(w.template_hash.as_str()))
    })
}

/// Holds every template change to an existing Deployment, for `why` (the Patroni gate).
pub fn hold_changes(
    plan: &mut Plan,
    wanted: &[Wanted],
    observed: &BTreeMap<String, Progress>,
    why: String,
) {
    hold_existing(plan, wanted, observed);
    plan.database_unhealthy = Some(why);
}

/// Holds every template change to an existing Deployment because most serving pods report a
/// dependency failing (`why` names it). Zones already rolling finish on their own (their
/// Deployment has the template); no further zone starts.
pub fn hold_for_dependency(
    plan: &mut Plan,
    wanted: &[Wanted],
    observed: &BTreeMap<String, Progress>,
    why: String,
) {
    hold_existing(plan, wanted, observed);
    plan.dependency_unavailable = Some(why);
}

fn hold_existing(plan: &mut Plan, wanted: &[Wanted], observed: &BTreeMap<String, Progress>) {
    for w in wanted {
        if observed
            .get(&w.name)
            .is_some_and(|o| o.template_hash.as_deref() != Some(w.template_hash.as_str()))
        {
            plan.hold.insert(w.name.clone());
        }
    }
}

/// Decides which Deployments may take their rendered template now.
pub fn plan(wanted: &[Wanted], observed: &BTreeMap<String, Progress>, paused: bool) -> Plan {
    let mut out = Plan {
        done: true,
        ..Plan::default()
    };
    let mut busy = false;
    for w in wanted {
        let label = w.zone.clone().unwrap_or_else(|| w.name.clone());
        let Some(o) = observed.get(&w.name) else {
            // Creating a missing Deployment never disturbs running pods.
            out.done = false;
            continue;
        };
        if o.template_hash.as_deref() == Some(w.template_hash.as_str()) {
            if !o.complete {
                out.done = false;
                if o.deadline_exceeded && out.stopped_at.is_none() {
                    out.stopped_at = Some(label.clone());
                }
                if !busy {
                    busy = true;
                    out.current = Some(label);
                }
            }
            continue;
        }
        out.done = false;
        if paused {
            out.paused = true;
            out.hold.insert(w.name.clone());
        } else if busy || out.stopped_at.is_some() {
            out.hold.insert(w.name.clone());
        } else {
            busy = true;
            out.current = Some(label);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn wanted(zones: &[&str], hash: &str) -> Vec<Wanted> {
        zones
            .iter()
            .map(|z| Wanted {
                name: format!("cp-{z}"),
                zone: Some(z.to_string()),
                template_hash: hash.into(),
            })
            .collect()
    }

    fn observed(states: &[(&str, &str, bool)]) -> BTreeMap<String, Progress> {
        states
            .iter()
            .map(|(z, h, complete)| {
                (
                    format!("cp-{z}"),
                    Progress {
                        template_hash: Some(h.to_string()),
                        complete: *complete,
                        deadline_exceeded: false,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn an_unhealthy_database_holds_changes_to_running_zones_but_not_creations() {
        let w = wanted(&["a", "b", "c"], "new");
        let mut o = observed(&[("a", "old", true), ("b", "old", true)]);
        let mut p = plan(&w, &o, false);
        assert!(replaces_pods(&w, &o, &p));
        hold_changes(&mut p, &w, &o, "503".into());
        assert_eq!(
            p.hold.iter().map(String::as_str).collect::<Vec<_>>(),
            ["cp-a", "cp-b"],
            "zone c does not exist yet: creating it replaces nothing"
        );
        assert!(!replaces_pods(&w, &o, &p));
        assert_eq!(p.database_unhealthy.as_deref(), Some("503"));
        // Nothing to replace: the URL is not even asked.
        o = observed(&[("a", "new", true), ("b", "new", true), ("c", "new", true)]);
        assert!(!replaces_pods(&w, &o, &plan(&w, &o, false)));
    }

    #[test]
    fn a_degraded_fleet_holds_the_next_zone_and_releases_it_on_recovery() {
        let w = wanted(&["a", "b"], "new");
        let o = observed(&[("a", "new", true), ("b", "old", true)]);
        let mut p = plan(&w, &o, false);
        assert_eq!(p.current.as_deref(), Some("b"));
        hold_for_dependency(&mut p, &w, &o, "Redis".into());
        assert!(p.hold.contains("cp-b"), "zone b must not start");
        assert!(!replaces_pods(&w, &o, &p));
        assert_eq!(p.dependency_unavailable.as_deref(), Some("Redis"));
        assert_eq!(p.database_unhealthy, None);
        // Recovered: the next pass plans afresh and zone b rolls.
        let p = plan(&w, &o, false);
        assert!(p.hold.is_empty() && p.dependency_unavailable.is_none());
    }

    #[test]
    fn replacements_not_ready_keep_the_rollout_in_their_zone() {
        // Zone a's new pods exist but are not ready: b waits, whatever else happens.
        let w = wanted(&["a", "b", "c"], "new");
        let o = observed(&[("a", "new", false), ("b", "old", true), ("c", "old", true)]);
        let p = plan(&w, &o, false);
        assert_eq!(p.current.as_deref(), Some("a"));
        assert!(p.hold.contains("cp-b") && p.hold.contains("cp-c"));
    }

    #[test]
    fn a_fresh_cluster_creates_every_zone_at_once() {
        let p = plan(&wanted(&["a", "b", "c"], "new"), &BTreeMap::new(), false);
        assert!(p.hold.is_empty());
        assert!(!p.done);
    }

    #[test]
    fn an_upgrade_starts_with_the_first_zone_only() {
        let o = observed(&[("a", "old", true), ("b", "old", true), ("c", "old", true)]);
        let p = plan(&wanted(&["a", "b", "c"], "new"), &o, false);
        assert_eq!(p.current.as_deref(), Some("a"));
        assert_eq!(
            p.hold,
            BTreeSet::from(["cp-b".to_string(), "cp-c".to_string()])
        );
    }

    #[test]
    fn the_next_zone_waits_until_the_previous_one_is_complete() {
        let o = observed(&[("a", "new", false), ("b", "old", true), ("c", "old", true)]);
        let p = plan(&wanted(&["a", "b", "c"], "new"), &o, false);
        assert_eq!(p.current.as_deref(), Some("a"));
        assert_eq!(p.hold.len(), 2);
        let o = observed(&[("a", "new", true), ("b", "old", true), ("c", "old", true)]);
        let p = plan(&wanted(&["a", "b", "c"], "new"), &o, false);
        assert_eq!(p.current.as_deref(), Some("b"));
        assert_eq!(p.hold, BTreeSet::from(["cp-c".to_string()]));
    }

    #[test]
    fn a_completed_rollout_is_done_and_holds_nothing() {
        let o = observed(&[("a", "new", true), ("b", "new", true)]);
        let p = plan(&wanted(&["a", "b"], "new"), &o, false);
        assert!(p.done);
        assert!(p.hold.is_empty());
        assert_eq!(p.current, None);
    }

    #[test]
    fn pause_holds_every_pending_change_but_not_a_running_one() {
        let o = observed(&[("a", "new", false), ("b", "old", true)]);
        let p = plan(&wanted(&["a", "b"], "new"), &o, true);
        assert!(p.paused);
        assert_eq!(p.hold, BTreeSet::from(["cp-b".to_string()]));
        assert_eq!(p.current.as_deref(), Some("a"));
    }

    #[test]
    fn a_progress_deadline_stops_the_rollout_before_the_next_zone() {
        let mut o = observed(&[("a", "new", false), ("b", "old", true)]);
        o.get_mut("cp-a").unwrap().deadline_exceeded = true;
        let p = plan(&wanted(&["a", "b"], "new"), &o, false);
        assert_eq!(p.stopped_at.as_deref(), Some("a"));
        assert!(p.hold.contains("cp-b"));
    }

    #[test]
    fn the_hash_follows_the_pod_template_only() {
        let mut d = Deployment::default();
        let h0 = template_hash(&d);
        d.metadata.name = Some("x".into());
        assert_eq!(template_hash(&d), h0, "metadata does not roll pods");
        d.spec.replicas = Some(5);
        assert_eq!(template_hash(&d), h0, "scaling does not roll pods");
        d.spec.template.metadata = Some(ObjectMeta {
            name: Some("t".into()),
            ..Default::default()
        });
        assert_ne!(template_hash(&d), h0);
    }
}
