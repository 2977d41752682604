//! `kubectl wardengate status NAME`: one screen about a cluster, built from what the API server
//! and the pods said. Pure (the snapshot is gathered by [`super::gather`]), so the screen is
//! unit-tested from a status object alone.

use k8s_openapi::jiff::Timestamp;
use serde::Serialize;
use wardengate_crds::WardengateCluster;

use super::table::Table;

/// Everything the status screen shows; also what `-o json|yaml` prints.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// The custom resource, with its status.
    pub cluster: WardengateCluster,
    /// Its control-plane pods.
    pub pods: Vec<PodRow>,
    /// Its most recent Events, oldest first.
    pub events: Vec<EventRow>,
    /// Why pods' own status was not read (no CA or token readable), when it was not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pods_not_asked: Option<String>,
}

/// One control-plane pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodRow {
    /// Pod name.
    pub name: String,
    /// Zone (placement) it belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Ready condition.
    pub ready: bool,
    /// Deletion requested.
    pub terminating: bool,
    /// Image tag of its gateway container.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Live sessions it reported; `None` when it was not asked or did not answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sessions: Option<i64>,
    /// Terminating or told to drain.
    pub draining: bool,
    /// Why it did not answer, when asked and silent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unreachable: Option<String>,
}

/// One Event about the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventRow {
    /// `Normal` or `Warning`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Reason.
    pub reason: String,
    /// Note.
    pub message: String,
    /// When it last happened.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<Timestamp>,
    /// How often it happened.
    pub count: i32,
}

/// How many Events the screen shows.
pub const EVENTS_SHOWN: usize = 8;

/// kubectl's age format: `45s`, `12m`, `5h`, `3d`.
pub fn age(now: Timestamp, then: Option<Timestamp>) -> String {
    let Some(then) = then else {
        return "-".into();
    };
    let s = (now.as_second() - then.as_second()).max(0);
    match s {
        0..120 => format!("{s}s"),
        120..7_200 => format!("{}m", s / 60),
        7_200..172_800 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

fn or_dash(s: Option<&str>) -> String {
    s.filter(|s| !s.is_empty()).unwrap_or("-").to_string()
}

fn plural(n: i64, one: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {one}s")
    }
}

/// The status screen as text, ages relative to `now`.
pub fn render(s: &Snapshot, now: Timestamp) -> String {
    let c = &s.cluster;
    let st = c.status.clone().unwrap_or_default();
    let name = c.metadata.name.as_deref().unwrap_or("?");
    let ns = c.metadata.namespace.as_deref().unwrap_or("default");
    let mut out = String::new();
    let line = |out: &mut String, k: &str, v: String| out.push_str(&format!("{k:<18}{v}\n"));
    line(&mut out, "Cluster:", format!("{ns}/{name}"));
    line(
        &mut out,
        "Version:",
        format!(
            "{} (spec {})",
            or_dash(st.version.as_deref()),
            c.spec.version
        ),
    );
    line(&mut out, "Phase:", or_dash(st.phase.as_deref()));
    line(&mut out, "Endpoint:", or_dash(st.endpoint.as_deref()));
    line(
        &mut out,
        "Replicas:",
        format!(
            "{} desired, {} ready, {} updated, {} running",
            c.spec.replicas, st.ready_replicas, st.updated_replicas, st.replicas
        ),
    );
    line(&mut out, "Sessions:", st.sessions.to_string());
    let generation = c.metadata.generation.unwrap_or(0);
    if st.observed_generation.unwrap_or(0) < generation {
        line(
            &mut out,
            "Observed:",
            format!(
                "generation {} of {generation}: the operator has not seen the latest spec",
                st.observed_generation.unwrap_or(0)
            ),
        );
    }

    out.push_str("\nRollout\n");
    let paused = if c.spec.rollout.paused {
        "yes (kubectl wardengate resume to continue)"
    } else {
        "no"
    };
    match &st.rollout {
        Some(r) => {
            line(
                &mut out,
                "  Target:",
                or_dash(r.target_version.as_deref().or(Some(&c.spec.version))),
            );
            line(
                &mut out,
                "  Current zone:",
                or_dash(r.current_zone.as_deref()),
            );
            line(
                &mut out,
                "  Draining:",
                format!(
                    "{}, {} left",
                    plural(r.pods_draining.into(), "pod"),
                    plural(r.sessions_draining, "session")
                ),
            );
        }
        None => line(&mut out, "  Target:", c.spec.version.clone()),
    }
    line(&mut out, "  Paused:", paused.to_string());

    out.push_str("\nZones\n");
    let mut t = Table::new(&[
        "ZONE",
        "DESIRED",
        "READY",
        "UPDATED",
        "VERSION",
        "SESSIONS",
        "DRAINING",
        "UNREACHABLE",
    ]);
    for z in &st.zones {
        let draining = z
            .draining
            .iter()
            .map(|d| format!("{}({})", d.name, d.sessions))
            .collect::<Vec<_>>()
            .join(",");
        t.row(vec![
            z.name.clone(),
            z.desired.to_string(),
            z.ready.to_string(),
            z.updated.to_string(),
            or_dash(z.version.as_deref()),
            z.sessions.to_string(),
            or_dash(Some(&draining)),
            or_dash(Some(&z.unreachable.join(","))),
        ]);
    }
    if st.zones.is_empty() {
        out.push_str("  (none reported yet)\n");
    } else {
        out.push_str(&t.render(2));
    }

    out.push_str("\nPods\n");
    let mut t = Table::new(&["NAME", "ZONE", "READY", "VERSION", "SESSIONS", "STATE"]);
    for p in &s.pods {
        let state = if p.terminating {
            "Terminating (draining)".to_string()
        } else if p.draining {
            "Draining".to_string()
        } else if let Some(why) = &p.unreachable {
            format!("Unreachable: {why}")
        } else if p.ready {
            "Serving".to_string()
        } else {
            "NotReady".to_string()
        };
        t.row(vec![
            p.name.clone(),
            or_dash(p.zone.as_deref()),
            if p.ready { "1/1" } else { "0/1" }.to_string(),
            or_dash(p.version.as_deref()),
            p.sessions.map_or("?".to_string(), |n| n.to_string()),
            state,
        ]);
    }
    if s.pods.is_empty() {
        out.push_str("  (no pods)\n");
    } else {
        out.push_str(&t.render(2));
    }
    if let Some(why) = &s.pods_not_asked {
        out.push_str(&format!("  sessions per pod unknown: {why}\n"));
    }

    out.push_str("\nConditions\n");
    let mut t = Table::new(&["TYPE", "STATUS", "REASON", "AGE", "MESSAGE"]);
    for k in &st.conditions {
        t.row(vec![
            k.type_.clone(),
            k.status.clone(),
            or_dash(Some(&k.reason)),
            age(now, Some(k.last_transition_time.0)),
            or_dash(Some(&k.message)),
        ]);
    }
    if st.conditions.is_empty() {
        out.push_str("  (none yet)\n");
    } else {
        out.push_str(&t.render(2));
    }

    out.push_str("\nEvents\n");
    let shown = &s.events[s.events.len().saturating_sub(EVENTS_SHOWN)..];
    let mut t = Table::new(&["LAST SEEN", "TYPE", "REASON", "MESSAGE"]);
    for e in shown {
        let count = if e.count > 1 {
            format!(" (x{})", e.count)
        } else {
            String::new()
        };
        t.row(vec![
            age(now, e.last_seen),
            e.type_.clone(),
            e.reason.clone(),
            format!("{}{count}", e.message),
        ]);
    }
    if shown.is_empty() {
        out.push_str("  (none)\n");
    } else {
        out.push_str(&t.render(2));
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    /// A cluster mid-rollout, as the operator writes it: zone a rolled, zone b draining one pod
    /// that still holds a session, one pod of zone c silent.
    fn rolling() -> Snapshot {
        let cluster: WardengateCluster = serde_json::from_value(serde_json::json!({
            "apiVersion": "wardengate.io/v1alpha1", "kind": "WardengateCluster",
            "metadata": {"name": "wg", "namespace": "prod", "generation": 4},
            "spec": {"version": "0.2.0", "replicas": 3, "zones": ["a", "b", "c"],
                     "postgres": {"external": {"urlSecretRef": {"name": "db", "key": "url"}}},
                     "redis": {"hosts": ["redis:6379"]}},
            "status": {
                "observedGeneration": 4, "replicas": 4, "readyReplicas": 3, "updatedReplicas": 2,
                "phase": "Progressing", "endpoint": "wg.prod.svc:8443", "sessions": 7,
                "rollout": {"targetVersion": "0.2.0", "currentZone": "b", "podsDraining": 1,
                            "sessionsDraining": 2},
                "zones": [
                    {"name": "a", "desired": 1, "ready": 1, "updated": 1, "version": "0.2.0", "sessions": 3},
                    {"name": "b", "desired": 1, "ready": 1, "updated": 1, "version": "0.1.0,0.2.0",
                     "sessions": 4, "draining": [{"name": "wg-cp-b-old", "sessions": 2}]},
                    {"name": "c", "desired": 1, "ready": 1, "updated": 0, "version": "0.1.0",
                     "sessions": 0, "unreachable": ["wg-cp-c-1"]}
                ],
                "conditions": [
                    {"type": "Ready", "status": "False", "reason": "Draining",
                     "message": "1 pod draining with 2 sessions", "lastTransitionTime": "1970-01-01T00:16:40Z"},
                    {"type": "Reconciling", "status": "True", "reason": "Draining",
                     "message": "1 pod draining with 2 sessions", "lastTransitionTime": "1970-01-01T00:16:40Z"},
                    {"type": "Stalled", "status": "False", "reason": "Healthy", "message": "",
                     "lastTransitionTime": "1970-01-01T00:00:00Z"}
                ]
            }
        }))
        .unwrap();
        let pod = |name: &str, zone: &str, sessions: Option<i64>| PodRow {
            name: name.into(),
            zone: Some(zone.into()),
            ready: true,
            terminating: false,
            version: Some("0.2.0".into()),
            sessions,
            draining: false,
            unreachable: None,
        };
        let mut old = pod("wg-cp-b-old", "b", Some(2));
        old.terminating = true;
        old.draining = true;
        old.ready = false;
        old.version = Some("0.1.0".into());
        let mut silent = pod("wg-cp-c-1", "c", None);
        silent.unreachable = Some("connection failed".into());
        Snapshot {
            cluster,
            pods: vec![
                pod("wg-cp-a-1", "a", Some(3)),
                pod("wg-cp-b-new", "b", Some(2)),
                old,
                silent,
            ],
            events: (0..10)
                .map(|i| EventRow {
                    type_: "Normal".into(),
                    reason: format!("Applied{i}"),
                    message: "applied Deployment/wg-cp-b".into(),
                    last_seen: Some(at(1000 + i)),
                    count: if i == 9 { 3 } else { 1 },
                })
                .collect(),
            pods_not_asked: None,
        }
    }

    fn line_with<'a>(screen: &'a str, start: &str) -> &'a str {
        screen
            .lines()
            .find(|l| l.trim_start().starts_with(start))
            .unwrap_or_else(|| panic!("no line starting {start:?} in\n{screen}"))
    }

    #[test]
    fn the_screen_shows_zones_pods_sessions_rollout_conditions_and_events() {
        let screen = render(&rolling(), at(1060));
        assert!(
            screen.starts_with("Cluster:          prod/wg\n"),
            "{screen}"
        );
        assert_eq!(
            line_with(&screen, "Version:"),
            "Version:          - (spec 0.2.0)"
        );
        assert_eq!(
            line_with(&screen, "Replicas:"),
            "Replicas:         3 desired, 3 ready, 2 updated, 4 running"
        );
        assert_eq!(line_with(&screen, "Sessions:"), "Sessions:         7");
        assert_eq!(line_with(&screen, "Current zone:"), "  Current zone:   b");
        assert_eq!(
            line_with(&screen, "Draining:"),
            "  Draining:       1 pod, 2 sessions left"
        );
        let zone_b: Vec<&str> = line_with(&screen, "b ").split_whitespace().collect();
        assert_eq!(
            zone_b,
            [
                "b",
                "1",
                "1",
                "1",
                "0.1.0,0.2.0",
                "4",
                "wg-cp-b-old(2)",
                "-"
            ]
        );
        assert!(line_with(&screen, "c ").ends_with("wg-cp-c-1"));
        let old: Vec<&str> = line_with(&screen, "wg-cp-b-old")
            .split_whitespace()
            .collect();
        assert_eq!(
            old,
            [
                "wg-cp-b-old",
                "b",
                "0/1",
                "0.1.0",
                "2",
                "Terminating",
                "(draining)"
            ]
        );
        assert!(
            line_with(&screen, "wg-cp-c-1").ends_with("?          Unreachable: connection failed")
        );
        assert!(line_with(&screen, "Reconciling").split_whitespace().eq([
            "Reconciling",
            "True",
            "Draining",
            "60s",
            "1",
            "pod",
            "draining",
            "with",
            "2",
            "sessions"
        ]));
        assert!(line_with(&screen, "Stalled").contains("17m"), "{screen}");
        // The most recent EVENTS_SHOWN events, oldest first, with repeat counts.
        assert!(!screen.contains("Applied1 "), "{screen}");
        assert!(screen.contains("Applied2 "), "{screen}");
        assert!(
            line_with(&screen, "51s").ends_with("applied Deployment/wg-cp-b (x3)"),
            "{screen}"
        );
        assert_eq!(line_with(&screen, "Paused:"), "  Paused:         no");
    }

    #[test]
    fn a_fresh_cluster_says_what_is_not_there_yet() {
        let mut s = rolling();
        s.cluster.status = None;
        s.cluster.spec.rollout.paused = true;
        s.pods.clear();
        s.events.clear();
        s.pods_not_asked = Some("cannot read Secret wg-internal".into());
        let screen = render(&s, at(0));
        for want in [
            "Phase:            -",
            "(none reported yet)",
            "(no pods)",
            "sessions per pod unknown: cannot read Secret wg-internal",
            "(none yet)",
            "(none)",
            "Observed:         generation 0 of 4",
            "Paused:         yes",
        ] {
            assert!(screen.contains(want), "missing {want:?} in\n{screen}");
        }
    }

    #[test]
    fn ages_read_like_kubectl() {
        assert_eq!(age(at(100), Some(at(55))), "45s");
        assert_eq!(age(at(1000), Some(at(100))), "15m");
        assert_eq!(age(at(20_000), Some(at(0))), "5h");
        assert_eq!(age(at(300_000), Some(at(0))), "3d");
        assert_eq!(age(at(0), None), "-");
        assert_eq!(age(at(0), Some(at(10))), "0s", "clock skew is not negative");
    }
}
