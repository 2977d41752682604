//! The observed fleet, pure: each control-plane pod with what its `GET /v1/system/status`
//! answered (or why it did not), turned into per-zone status, deletion-cost patches, the
//! degraded-dependency verdict that stops a rollout, and the zero-write rule for session counts.
//!
//! Zero writes at steady state: session counts move all the time, so status shows exact counts
//! only while something is active (a rollout not done, or a pod draining or terminating). At
//! steady state a count is rewritten only when it leaves the [`bucket`] of the value last
//! written (1-2-5 steps: 0, 1, 2, 5, 10, 20, 50, …), so a busy but steady fleet writes nothing.
//! `pod-deletion-cost` follows the same buckets, so churn inside a bucket patches no pod.

use std::collections::BTreeMap;

use serde::Deserialize;
use wardengate_crds::{DrainingPod, ZoneStatus};

/// Annotation the ReplicaSet controller reads to pick the pods a scale-in removes first
/// (lowest cost first).
pub const DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

/// What a gateway's `GET /v1/system/status` says (the fields the operator reads).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Report {
    /// Replica id (the pod name).
    pub replica: String,
    /// Whether a drain started.
    pub draining: bool,
    /// Relays this replica carries.
    pub owned_sessions: i64,
    /// Server version.
    pub version: String,
    /// Dependency verdicts (absent from gateways older than this field).
    #[serde(default)]
    pub dependencies: Option<Dependencies>,
}

/// The dependency verdicts of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Dependencies {
    /// Postgres passes the replica's readiness check.
    pub postgres: bool,
    /// Redis passes the replica's readiness check.
    pub redis: bool,
}

/// What asking one pod gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// It answered.
    Report(Report),
    /// It did not (timeout, refused, TLS, HTTP error): why.
    NoAnswer(String),
    /// It was not asked (not ready and not terminating, or no pod IP yet).
    NotAsked,
}

/// One control-plane pod as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    /// Pod name.
    pub name: String,
    /// Index into the cluster's placements (zone), when its labels tell.
    pub placement: Option<usize>,
    /// Ready condition true.
    pub ready: bool,
    /// Deletion requested (the preStop drain runs).
    pub terminating: bool,
    /// Image tag of its gateway container.
    pub version: Option<String>,
    /// Current `pod-deletion-cost` annotation.
    pub deletion_cost: Option<String>,
    /// What its status endpoint said.
    pub answer: Answer,
}

impl PodView {
    /// The report, when it answered.
    pub fn report(&self) -> Option<&Report> {
        match &self.answer {
            Answer::Report(r) => Some(r),
            _ => None,
        }
    }

    /// Live sessions it reported (0 when it did not answer).
    pub fn sessions(&self) -> i64 {
        self.report().map_or(0, |r| r.owned_sessions.max(0))
    }

    /// Terminating, or told to drain.
    pub fn draining(&self) -> bool {
        self.terminating || self.report().is_some_and(|r| r.draining)
    }
}

/// Whether a pod should be asked: every pod with an IP, ready or not (a replica whose Redis
/// fails also fails readiness, and is exactly the one whose verdict matters), terminating or
/// not (a draining pod is no longer ready but still holds sessions). Pods not running yet are
/// not asked.
pub fn worth_asking(running: bool, terminating: bool, has_ip: bool) -> bool {
    has_ip && (running || terminating)
}

/// The 1-2-5 bucket `n` falls in (its lower bound): 0, 1, 2, 5, 10, 20, 50, 100, …
pub fn bucket(n: i64) -> i64 {
    if n <= 0 {
        return 0;
    }
    let (mut best, mut step) = (1i64, 1i64);
    loop {
        for m in [1, 2, 5] {
            match step.checked_mul(m) {
                Some(c) if c <= n => best = c,
                _ => return best,
            }
        }
        step = match step.checked_mul(10) {
            Some(s) => s,
            None => return best,
        };
    }
}

/// The deletion cost a pod carrying `sessions` should have: its bucket, so a scale-in removes
/// idle replicas first and churn inside a bucket patches nothing.
pub fn deletion_cost(sessions: i64) -> String {
    bucket(sessions).to_string()
}

/// Pods whose `pod-deletion-cost` must change: every pod that answered and is not terminating,
/// whose annotation is not its bucket yet. Pods that did not answer keep theirs.
pub fn deletion_cost_patches(pods: &[PodView]) -> Vec<(String, String)> {
    pods.iter()
        .filter(|p| !p.terminating)
        .filter_map(|p| {
            let r = p.report()?;
            let want = deletion_cost(r.owned_sessions);
            (p.deletion_cost.as_deref() != Some(want.as_str())).then(|| (p.name.clone(), want))
        })
        .collect()
}

/// A dependency most serving pods report failing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dependency {
    /// Postgres.
    Postgres,
    /// Redis.
    Redis,
}

impl std::fmt::Display for Dependency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Dependency::Postgres => "Postgres",
            Dependency::Redis => "Redis",
        })
    }
}

/// The degraded fleet verdict: a dependency that more than half of the serving pods (not
/// terminating) that answered report failing, with the counts for the message. Kubernetes
/// readiness is not a filter: a replica failing Redis past its grace fails readiness too.
/// Postgres first.
pub fn degraded(pods: &[PodView]) -> Option<(Dependency, usize, usize)> {
    let deps: Vec<Dependencies> = pods
        .iter()
        .filter(|p| !p.terminating)
        .filter_map(|p| p.report()?.dependencies)
        .collect();
    let n = deps.len();
    let pg = deps.iter().filter(|d| !d.postgres).count();
    let redis = deps.iter().filter(|d| !d.redis).count();
    if n > 0 && pg * 2 > n {
        Some((Dependency::Postgres, pg, n))
    } else if n > 0 && redis * 2 > n {
        Some((Dependency::Redis, redis, n))
    } else {
        None
    }
}

/// Whether the fleet is active (session counts are then written exactly): a rollout not done,
/// or a pod draining or terminating.
pub fn active(pods: &[PodView], rollout_done: bool) -> bool {
    !rollout_done || pods.iter().any(PodView::draining)
}

/// The session count to write: `now` while active, else `previous` as long as `now` stays in
/// its bucket (so moving counts at steady state write nothing).
pub fn sessions_to_write(previous: Option<i64>, now: i64, active: bool) -> i64 {
    match previous {
        Some(p) if !active && bucket(p) == bucket(now) => p,
        _ => now,
    }
}

/// What each placement looks like from its Deployment's status (the fleet adds the rest).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PlacementCounts {
    /// Zone name, or the Deployment's name.
    pub name: String,
    /// Replicas wanted.
    pub desired: i32,
    /// Ready pods.
    pub ready: i32,
    /// Pods on the current template.
    pub updated: i32,
}

/// Per-zone status and the cluster-wide live sessions, applying the zero-write rule against
/// `previous` zones (and `previous_total`).
pub fn zones(
    placements: &[PlacementCounts],
    pods: &[PodView],
    previous: &[ZoneStatus],
    previous_total: Option<i64>,
    active: bool,
) -> (Vec<ZoneStatus>, i64) {
    let mut out = Vec::with_capacity(placements.len());
    let mut total = 0;
    for (i, pc) in placements.iter().enumerate() {
        let mine: Vec<&PodView> = pods.iter().filter(|p| p.placement == Some(i)).collect();
        let sessions: i64 = mine.iter().map(|p| p.sessions()).sum();
        total += sessions;
        let mut versions: Vec<String> = mine
            .iter()
            .filter(|p| !p.terminating)
            .filter_map(|p| p.version.clone())
            .collect();
        versions.sort();
        versions.dedup();
        let draining = mine
            .iter()
            .filter(|p| p.draining())
            .map(|p| DrainingPod {
                name: p.name.clone(),
                sessions: p.sessions(),
            })
            .collect();
        let unreachable = mine
            .iter()
            .filter(|p| matches!(p.answer, Answer::NoAnswer(_)))
            .map(|p| p.name.clone())
            .collect();
        let prev = previous
            .iter()
            .find(|z| z.name == pc.name)
            .map(|z| z.sessions);
        out.push(ZoneStatus {
            name: pc.name.clone(),
            desired: pc.desired,
            ready: pc.ready,
            updated: pc.updated,
            version: (!versions.is_empty()).then(|| versions.join(", ")),
            sessions: sessions_to_write(prev, sessions, active),
            draining,
            unreachable,
        });
    }
    (out, sessions_to_write(previous_total, total, active))
}

/// Pods draining and the sessions they still hold, cluster-wide.
pub fn draining_totals(pods: &[PodView]) -> (i32, i64) {
    let d: Vec<&PodView> = pods.iter().filter(|p| p.draining()).collect();
    (d.len() as i32, d.iter().map(|p| p.sessions()).sum())
}

/// The pods that did not answer, with why, for the condition message.
pub fn unanswered(pods: &[PodView]) -> BTreeMap<String, String> {
    pods.iter()
        .filter_map(|p| match &p.answer {
            Answer::NoAnswer(why) => Some((p.name.clone(), why.clone())),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, zone: usize, sessions: Option<i64>) -> PodView {
        PodView {
            name: name.into(),
            placement: Some(zone),
            ready: true,
            terminating: false,
            version: Some("1.0.0".into()),
            deletion_cost: None,
            answer: match sessions {
                Some(n) => Answer::Report(Report {
                    replica: name.into(),
                    draining: false,
                    owned_sessions: n,
                    version: "1.0.0".into(),
                    dependencies: Some(Dependencies {
                        postgres: true,
                        redis: true,
                    }),
                }),
                None => Answer::NoAnswer("connection refused".into()),
            },
        }
    }

    fn placements() -> Vec<PlacementCounts> {
        ["a", "b"]
            .iter()
            .map(|z| PlacementCounts {
                name: z.to_string(),
                desired: 2,
                ready: 2,
                updated: 2,
            })
            .collect()
    }

    #[test]
    fn buckets_step_1_2_5() {
        let b: Vec<i64> = [
            0, 1, 2, 3, 4, 5, 9, 10, 19, 20, 49, 50, 99, 100, 150, 200, 999,
        ]
        .iter()
        .map(|n| bucket(*n))
        .collect();
        assert_eq!(
            b,
            [
                0, 1, 2, 2, 2, 5, 5, 10, 10, 20, 20, 50, 50, 100, 100, 200, 500
            ]
        );
        assert_eq!(bucket(-3), 0);
        assert_eq!(
            bucket(i64::MAX),
            bucket(i64::MAX - 1),
            "no overflow at the top"
        );
    }

    #[test]
    fn deletion_costs_follow_buckets_and_skip_silent_and_terminating_pods() {
        let mut pods = vec![
            pod("idle", 0, Some(0)),
            pod("busy", 0, Some(7)),
            pod("silent", 1, None),
            pod("same", 1, Some(3)),
            pod("leaving", 1, Some(4)),
        ];
        pods[3].deletion_cost = Some("2".into());
        pods[4].terminating = true;
        assert_eq!(
            deletion_cost_patches(&pods),
            [("idle".into(), "0".into()), ("busy".into(), "5".into())]
        );
        // Churn inside the bucket: nothing to patch.
        pods[0].deletion_cost = Some("0".into());
        pods[1].deletion_cost = Some("5".into());
        if let Answer::Report(r) = &mut pods[1].answer {
            r.owned_sessions = 9;
        }
        assert!(deletion_cost_patches(&pods).is_empty());
        if let Answer::Report(r) = &mut pods[1].answer {
            r.owned_sessions = 10;
        }
        assert_eq!(deletion_cost_patches(&pods), [("busy".into(), "10".into())]);
    }

    #[test]
    fn zones_count_sessions_draining_pods_and_silent_pods() {
        let mut pods = vec![
            pod("a-1", 0, Some(3)),
            pod("a-old", 0, Some(1)),
            pod("b-1", 1, Some(2)),
            pod("b-2", 1, None),
        ];
        pods[1].terminating = true;
        pods[1].version = Some("0.9.0".into());
        let (z, total) = zones(&placements(), &pods, &[], None, true);
        assert_eq!(total, 6);
        assert_eq!(z[0].sessions, 4);
        assert_eq!(
            z[0].draining,
            [DrainingPod {
                name: "a-old".into(),
                sessions: 1
            }]
        );
        assert_eq!(
            z[0].version.as_deref(),
            Some("1.0.0"),
            "terminating pods do not count"
        );
        assert_eq!(z[1].unreachable, ["b-2"]);
        assert_eq!(z[1].sessions, 2);
        assert_eq!(draining_totals(&pods), (1, 1));
        assert_eq!(
            unanswered(&pods).get("b-2").map(String::as_str),
            Some("connection refused")
        );
        // A pod told to drain (not yet terminating) is draining too.
        pods[1].terminating = false;
        if let Answer::Report(r) = &mut pods[1].answer {
            r.draining = true;
        }
        assert_eq!(draining_totals(&pods), (1, 1));
        pods[2].version = Some("1.1.0".into());
        pods[3].version = Some("1.0.0".into());
        let (z, _) = zones(&placements(), &pods, &[], None, true);
        assert_eq!(z[1].version.as_deref(), Some("1.0.0, 1.1.0"));
    }

    #[test]
    fn steady_moving_counts_write_nothing_until_a_bucket_changes() {
        let mut pods = vec![pod("a-1", 0, Some(12)), pod("b-1", 1, Some(3))];
        let (first, total) = zones(&placements(), &pods, &[], None, false);
        assert_eq!((first[0].sessions, total), (12, 15));
        // Counts move inside their buckets (10..20, 2..5 and 10..20): identical status.
        for (a, b) in [(17, 2), (11, 4), (19, 0)] {
            if let Answer::Report(r) = &mut pods[0].answer {
                r.owned_sessions = a;
            }
            if let Answer::Report(r) = &mut pods[1].answer {
                r.owned_sessions = b;
            }
            let (again, t) = zones(&placements(), &pods, &first, Some(total), false);
            if b == 0 {
                assert_eq!(again[1].sessions, 0, "zone b left its bucket");
                assert_eq!(again[0], first[0]);
            } else {
                assert_eq!((again.clone(), t), (first.clone(), total), "{a}/{b}");
            }
        }
        // Leaving the bucket writes the exact count.
        if let Answer::Report(r) = &mut pods[0].answer {
            r.owned_sessions = 25;
        }
        let (z, t) = zones(&placements(), &pods, &first, Some(total), false);
        assert_eq!((z[0].sessions, t), (25, 25));
        // While active, exact counts every pass.
        if let Answer::Report(r) = &mut pods[0].answer {
            r.owned_sessions = 13;
        }
        let (z, t) = zones(&placements(), &pods, &first, Some(total), true);
        assert_eq!((z[0].sessions, t), (13, 13));
    }

    #[test]
    fn activity_is_a_rollout_or_a_draining_pod() {
        let mut pods = vec![pod("a-1", 0, Some(1))];
        assert!(!active(&pods, true));
        assert!(active(&pods, false));
        pods[0].terminating = true;
        assert!(active(&pods, true));
    }

    #[test]
    fn most_ready_pods_failing_a_dependency_degrade_the_fleet() {
        let dep = |p: &mut PodView, pg: bool, redis: bool| {
            if let Answer::Report(r) = &mut p.answer {
                r.dependencies = Some(Dependencies {
                    postgres: pg,
                    redis,
                });
            }
        };
        let mut pods = vec![
            pod("a", 0, Some(0)),
            pod("b", 0, Some(0)),
            pod("c", 1, Some(0)),
            pod("d", 1, None),
        ];
        assert_eq!(degraded(&pods), None);
        dep(&mut pods[0], true, false);
        assert_eq!(degraded(&pods), None, "one of three is not most");
        dep(&mut pods[1], true, false);
        assert_eq!(degraded(&pods), Some((Dependency::Redis, 2, 3)));
        dep(&mut pods[2], false, false);
        assert_eq!(
            degraded(&pods),
            Some((Dependency::Redis, 3, 3)),
            "Postgres from one pod only"
        );
        dep(&mut pods[0], false, false);
        dep(&mut pods[1], false, true);
        assert_eq!(degraded(&pods), Some((Dependency::Postgres, 3, 3)));
        // Unready pods vote (a failing dependency makes them unready).
        for p in &mut pods {
            p.ready = false;
        }
        assert_eq!(degraded(&pods), Some((Dependency::Postgres, 3, 3)));
        // Terminating pods do not vote; nobody answering is no verdict.
        for p in &mut pods {
            p.terminating = true;
        }
        assert_eq!(degraded(&pods), None);
    }

    #[test]
    fn running_or_draining_pods_with_an_ip_are_asked() {
        assert!(worth_asking(true, false, true));
        assert!(worth_asking(false, true, true));
        assert!(!worth_asking(false, false, true));
        assert!(!worth_asking(true, false, false));
    }
}
