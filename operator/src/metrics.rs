//! The operator's own Prometheus metrics, served on `/metrics`.

use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// Metrics of one operator process.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    reconciles: IntCounterVec,
    duration: Histogram,
    /// 1 while this process holds the leader Lease.
    pub leader: IntGauge,
    /// Objects written by server-side apply.
    pub applied: IntCounter,
    /// Orphans deleted.
    pub deleted: IntCounter,
    /// Reconciles that found an invalid spec.
    pub invalid: IntCounter,
    /// Leadership acquisitions by this process.
    pub leader_transitions: IntCounter,
    /// Objects whose last reconcile failed and that wait in the per-object backoff.
    pub backoff_objects: IntGauge,
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let registry = Registry::new();
        let reconciles = IntCounterVec::new(
            Opts::new(
                "wg_operator_reconciles_total",
                "Reconciles by outcome (ok, error).",
            ),
            &["outcome"],
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        let duration = Histogram::with_opts(HistogramOpts::new(
            "wg_operator_reconcile_duration_seconds",
            "Time of one reconcile, API round trips included.",
        ))
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        let gauge = |n: &str, h: &str| {
            IntGauge::new(n, h).unwrap_or_else(|e| unreachable!("static metric definition: {e}"))
        };
        let counter = |n: &str, h: &str| {
            IntCounter::new(n, h).unwrap_or_else(|e| unreachable!("static metric definition: {e}"))
        };
        let m = Self {
            reconciles,
            duration,
            leader: gauge(
                "wg_operator_leader",
                "1 while this process holds the leader Lease.",
            ),
            applied: counter(
                "wg_operator_objects_applied_total",
                "Objects written by server-side apply.",
            ),
            deleted: counter(
                "wg_operator_objects_deleted_total",
                "Owned objects deleted because they were no longer rendered.",
            ),
            invalid: counter(
                "wg_operator_invalid_specs_total",
                "Reconciles that found an invalid spec.",
            ),
            leader_transitions: counter(
                "wg_operator_leader_acquisitions_total",
                "Times this process became leader.",
            ),
            backoff_objects: gauge(
                "wg_operator_backoff_objects",
                "Objects whose last reconcile failed, waiting in the per-object backoff.",
            ),
            registry,
        };
        for c in [
            Box::new(m.reconciles.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.duration.clone()),
            Box::new(m.leader.clone()),
            Box::new(m.applied.clone()),
            Box::new(m.deleted.clone()),
            Box::new(m.invalid.clone()),
            Box::new(m.leader_transitions.clone()),
            Box::new(m.backoff_objects.clone()),
        ] {
            m.registry
                .register(c)
                .unwrap_or_else(|e| unreachable!("metric names are distinct: {e}"));
        }
        m
    }

    /// Records one reconcile.
    pub fn observe_reconcile(&self, outcome: &str, took: Duration) {
        self.reconciles.with_label_values(&[outcome]).inc();
        self.duration.observe(took.as_secs_f64());
    }

    /// Reconciles with `outcome` so far.
    pub fn reconciles(&self, outcome: &str) -> u64 {
        self.reconciles.with_label_values(&[outcome]).get()
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metrics.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
