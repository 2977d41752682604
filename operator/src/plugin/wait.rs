//! `kubectl wardengate rollout status`: whether a cluster's rollout is done, still going, or
//! failed, read from its status alone (pure, so each verdict is unit-tested).

use wardengate_crds::WardengateCluster;

use crate::status::reasons;

/// What the status says about the rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every replica ready at the spec's version.
    Done(String),
    /// Still going (or paused, or held): what it waits for.
    Waiting(String),
    /// Stalled: it will not finish without a change (reason and message).
    Failed(String),
}

fn condition<'a>(
    c: &'a WardengateCluster,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    c.status
        .as_ref()?
        .conditions
        .iter()
        .find(|k| k.type_ == type_)
}

/// The verdict for `c`.
pub fn verdict(c: &WardengateCluster) -> Verdict {
    let name = c.metadata.name.as_deref().unwrap_or("?");
    let generation = c.metadata.generation.unwrap_or(0);
    let Some(st) = &c.status else {
        return Verdict::Waiting(format!(
            "waiting for the operator to report on wardengatecluster {name:?}"
        ));
    };
    if st.observed_generation.unwrap_or(0) < generation {
        return Verdict::Waiting(format!(
            "waiting for the operator to observe generation {generation} (status describes {})",
            st.observed_generation.unwrap_or(0)
        ));
    }
    if let Some(k) = condition(c, "Stalled").filter(|k| k.status == "True") {
        return Verdict::Failed(format!(
            "rollout of wardengatecluster {name:?} failed: {}: {}",
            k.reason, k.message
        ));
    }
    let ready = condition(c, "Ready").is_some_and(|k| k.status == "True");
    if ready && st.version.as_deref() == Some(c.spec.version.as_str()) {
        return Verdict::Done(format!(
            "wardengatecluster {name:?} successfully rolled out: version {}, {}/{} replicas ready",
            c.spec.version, st.ready_replicas, c.spec.replicas
        ));
    }
    let reconciling = condition(c, "Reconciling").filter(|k| k.status == "True");
    if c.spec.rollout.paused || reconciling.is_some_and(|k| k.reason == reasons::PAUSED) {
        return Verdict::Waiting(format!(
            "rollout of wardengatecluster {name:?} is paused (kubectl wardengate resume {name})"
        ));
    }
    let mut msg = format!(
        "waiting for wardengatecluster {name:?} rollout to finish: {} of {} updated replicas are ready",
        st.updated_replicas.min(st.ready_replicas),
        c.spec.replicas
    );
    if let Some(r) = &st.rollout {
        if let Some(z) = &r.current_zone {
            msg.push_str(&format!(", zone {z} rolling"));
        }
        if r.pods_draining > 0 {
            msg.push_str(&format!(
                ", {} pod(s) draining with {} session(s)",
                r.pods_draining, r.sessions_draining
            ));
        }
    }
    if let Some(k) = reconciling.filter(|k| !k.message.is_empty()) {
        msg.push_str(&format!(" ({}: {})", k.reason, k.message));
    }
    Verdict::Waiting(msg)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cluster(status: serde_json::Value, paused: bool) -> WardengateCluster {
        serde_json::from_value(json!({
            "apiVersion": "wardengate.io/v1alpha1", "kind": "WardengateCluster",
            "metadata": {"name": "wg", "namespace": "prod", "generation": 2},
            "spec": {"version": "0.2.0", "replicas": 3, "rollout": {"paused": paused},
                     "postgres": {"external": {"urlSecretRef": {"name": "db", "key": "url"}}},
                     "redis": {"hosts": ["redis:6379"]}},
            "status": status
        }))
        .unwrap()
    }

    fn cond(t: &str, s: &str, reason: &str, msg: &str) -> serde_json::Value {
        json!({"type": t, "status": s, "reason": reason, "message": msg,
               "lastTransitionTime": "2026-01-01T00:00:00Z"})
    }

    #[test]
    fn ready_at_the_spec_version_is_done() {
        let c = cluster(
            json!({"observedGeneration": 2, "version": "0.2.0", "readyReplicas": 3,
                   "conditions": [cond("Ready", "True", "Available", "")]}),
            false,
        );
        assert!(matches!(verdict(&c), Verdict::Done(m) if m.contains("version 0.2.0, 3/3")));
    }

    #[test]
    fn ready_at_an_older_version_or_generation_is_not_done() {
        let old = cluster(
            json!({"observedGeneration": 2, "version": "0.1.0",
                   "conditions": [cond("Ready", "True", "Available", "")]}),
            false,
        );
        assert!(matches!(verdict(&old), Verdict::Waiting(_)));
        let stale = cluster(
            json!({"observedGeneration": 1, "version": "0.2.0",
                   "conditions": [cond("Ready", "True", "Available", "")]}),
            false,
        );
        assert!(
            matches!(verdict(&stale), Verdict::Waiting(m) if m.contains("observe generation 2"))
        );
        assert!(matches!(
            verdict(&cluster(json!(null), false)),
            Verdict::Waiting(_)
        ));
    }

    #[test]
    fn stalled_fails_with_its_reason() {
        let c = cluster(
            json!({"observedGeneration": 2, "version": "0.1.0",
                   "conditions": [cond("Stalled", "True", "SecretNotFound", "Secret db not found")]}),
            false,
        );
        assert_eq!(
            verdict(&c),
            Verdict::Failed(
                "rollout of wardengatecluster \"wg\" failed: SecretNotFound: Secret db not found"
                    .into()
            )
        );
    }

    #[test]
    fn progress_and_pause_are_explained() {
        let c = cluster(
            json!({"observedGeneration": 2, "version": "0.1.0", "readyReplicas": 3,
                   "updatedReplicas": 1,
                   "rollout": {"currentZone": "b", "podsDraining": 1, "sessionsDraining": 4},
                   "conditions": [cond("Reconciling", "True", "Draining", "1 pod draining")]}),
            false,
        );
        let Verdict::Waiting(m) = verdict(&c) else {
            panic!()
        };
        assert!(
            m.contains("1 of 3 updated replicas are ready, zone b rolling, 1 pod(s) draining with 4 session(s) (Draining: 1 pod draining)"),
            "{m}"
        );
        let p = cluster(json!({"observedGeneration": 2}), true);
        assert!(matches!(verdict(&p), Verdict::Waiting(m) if m.contains("paused")));
    }
}
