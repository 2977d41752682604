//! Prometheus metrics of one replica, named as the HA guide documents them. Every series carries
//! a constant `replica` label so dashboards can compare replicas.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// All metrics of a replica.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// 1 while this replica passes `/healthz`.
    pub replica_up: IntGauge,
    /// Postgres round-trip latency measured by the background checker.
    pub db_roundtrip: Histogram,
    /// Redis topology changes observed (Sentinel promotions).
    pub redis_failover_total: IntCounter,
    /// Relays this replica carries right now.
    pub sessions_active: IntGauge,
    /// Background-job leases this replica holds.
    pub leader_leases: IntGauge,
    /// HTTP requests by method and status code.
    pub http_requests: IntCounterVec,
    /// Relay bytes by direction (`up` = client→target, `down` = target→client).
    pub relay_bytes: IntCounterVec,
    /// Relays ended, by reason.
    pub relays_ended: IntCounterVec,
    /// 1 while this replica drains.
    pub draining: IntGauge,
    /// Drains finished, by outcome (`drained`, `evicted`).
    pub drains: IntCounterVec,
    /// Connections closed at accept, by reason (`max_connections`, `proxy_protocol`).
    pub connections_refused: IntCounterVec,
    /// Outbox events published to subscribers by the fan-out job on this replica.
    pub events_published: IntCounter,
    /// Lease changes of background jobs on this replica, by job and change (`acquired`, `lost`).
    pub lease_changes: IntCounterVec,
    /// 1 for each background job whose lease this replica holds.
    pub job_lease_held: IntGaugeVec,
    /// Approval decisions made through this replica, by decision.
    pub approvals: IntCounterVec,
    /// Recordings whose manifest this replica signed.
    pub manifests_signed: IntCounter,
    /// Recording chunks uploaded to object storage by this replica.
    pub chunks_uploaded: IntCounter,
    /// Requests refused by a rate limit or cap, by limit (`requests`, `auth_failures`,
    /// `session_rate`, `token_sessions`, `replica_relays`).
    pub rate_limited: IntCounterVec,
    /// Gateway side: 1 while this gateway's agent link to the control plane is up.
    pub agent_link_up: IntGauge,
    /// Gateway side: seconds since the agent link went down (0 while it is up).
    pub agent_offline_seconds: prometheus::Gauge,
    /// Control-plane side: agent links this replica holds.
    pub agent_gateways: IntGauge,
    /// Gateway side: session events waiting to be acknowledged by the control plane.
    pub agent_events_queued: IntGauge,
    /// Sessions started, by mode (see [`SessionMode`]).
    pub sessions_started: IntCounterVec,
    /// Sessions carried right now, by mode.
    pub sessions_by_mode: IntGaugeVec,
}

/// How a session reaches its target: the label of `wg_sessions_started_total` and
/// `wg_sessions_active_by_mode`, so dashboards tell byte relays from terminated SSH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionMode {
    /// Bytes relayed (`wgctl connect`/`tunnel`, psql, RDP, SSH as ciphertext).
    Relay,
    /// Terminated SSH from an SSH client (`ssh -p 2222`, `wgctl ssh`).
    Ssh,
    /// Terminated SSH from the web console's browser terminal.
    Console,
}

impl SessionMode {
    /// Every mode, for exposing each at zero from the start.
    pub const ALL: [SessionMode; 3] = [Self::Relay, Self::Ssh, Self::Console];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Relay => "relay",
            Self::Ssh => "ssh",
            Self::Console => "console",
        }
    }
}

/// Counts one session of a mode as active for as long as it lives.
#[derive(Debug)]
pub struct ModeGuard(IntGauge);

impl Drop for ModeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Metrics {
    /// Registers every metric with `replica` as a constant label.
    pub fn new(replica: &str) -> Self {
        let labels = std::iter::once(("replica".to_string(), replica.to_string())).collect();
        let registry = Registry::new_custom(None, Some(labels)).unwrap_or_default();
        let m = Self {
            replica_up: IntGauge::new(
                "wg_replica_up",
                "1 while this control plane replica passes /healthz",
            )
            .unwrap_or_else(|_| unreachable_metric()),
            db_roundtrip: Histogram::with_opts(
                HistogramOpts::new(
                    "wg_db_roundtrip_seconds",
                    "Postgres round-trip latency from this replica",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ]),
            )
            .unwrap_or_else(|_| unreachable_metric()),
            redis_failover_total: IntCounter::new(
                "wg_redis_failover_total",
                "Redis topology changes (Sentinel promotions) observed by this replica",
            )
            .unwrap_or_else(|_| unreachable_metric()),
            sessions_active: IntGauge::new(
                "wg_sessions_active",
                "Sessions relayed by this replica right now",
            )
            .unwrap_or_else(|_| unreachable_metric()),
            leader_leases: IntGauge::new(
                "wg_leader_leases_gauge",
                "Background-job leases held by this replica",
            )
            .unwrap_or_else(|_| unreachable_metric()),
            http_requests: IntCounterVec::new(
                Opts::new(
                    "wg_http_requests_total",
                    "HTTP requests served, by method, matched route and status code",
                ),
                &["method", "route", "code"],
            )
            .unwrap_or_else(|_| unreachable_metric()),
            relay_bytes: IntCounterVec::new(
                Opts::new(
                    "wg_relay_bytes_total",
                    "Bytes relayed, by direction (up: client to target)",
                ),
                &["direction"],
            )
            .unwrap_or_else(|_| unreachable_metric()),
            relays_ended: IntCounterVec::new(
                Opts::new("wg_relays_ended_total", "Relays ended, by reason"),
                &["reason"],
            )
            .unwrap_or_else(|_| unreachable_metric()),
            draining: IntGauge::new("wg_draining", "1 while this replica drains")
                .unwrap_or_else(|_| unreachable_metric()),
            connections_refused: IntCounterVec::new(
                Opts::new(
                    "wg_connections_refused_total",
                    "Connections closed at accept, by reason: max_connections (the cap was \
                     reached) or proxy_protocol (a missing or invalid PROXY header)",
                ),
                &["reason"],
            )
            .unwrap_or_else(|_| unreachable_metric()),
            drains: IntCounterVec::new(
                Opts::new("wg_drains_total", "Drains finished, by outcome"),
                &["outcome"],
            )
            .unwrap_or_else(|_| unreachable_metric()),
            events_published: IntCounter::new(
                "wg_events_published_total",
                "Outbox events published to subscribers by the fan-out job",
            )
            .unwrap_or_else(|_| unreachable_metric()),
            lease_changes: IntCounterVec::new(
                Opts::new(
                    "wg_lease_changes_total",
                    "Background-job lease changes on this replica, by job and change",
                ),
                &["job", "change"],
            )
            .unwrap_or_else(|_| unreachable_metric()),
            job_lease_held: IntGaugeVec::new(
                Opts::new(
                    "wg_job_lease_held",
                    "1 while this replica holds the job's lease",
                ),
                &["job"],
            )
            .unwrap_or_else(|_| unreachable_metric()),
            approvals: IntCounterVec::new(
                Opts::new("wg_approvals_total", "Approval decisions, by decision"),
                &["decision"],
            )
            .unwrap_or_else(|_| unreachable_metric()),
            manifests_signed: IntCounter::new(
                "wg_recording_manifests_signed_total",
                "Recording manifests signed by the manifest job",
            )
            .unwrap_or_else(|_| unreachable_metric()),
            chunks_uploaded: IntCounter::new(
                "wg_recording_chunks_uploaded_total",
                "Recording chunks uploaded to object storage",
            )
            .unwrap_or_else(|_| unreachable_metric()),
            rate_limited: IntCounterVec::new(
                Opts::new(
                    "wg_rate_limited_total",
                    "Requests refused by a rate limit or cap, by limit",
                ),
                &["limit"],
            )
            .unwrap_or_else(|_| unreachable_metric()),
            agent_link_up: IntGauge::new(
                "wg_agent_link_up",
                "1 while this gateway's agent link to the control plane is up",
            )
            .unwrap_or_else(|_| unreachable_metric()),
            agent_offline_seconds: prometheus::Gauge::new(
                "wg_agent_offline_seconds",
                "Seconds since this gateway's agent link went down (0 while up)",
            )
            .unwrap_or_else(|_| unreachable_metric()),
            agent_gateways: IntGauge::new(
                "wg_agent_gateways",
                "Gateway agent links this control plane replica holds",
            )
            .unwrap_or_else(|_| unreachable_metric()),
            agent_events_queued: IntGauge::new(
                "wg_agent_events_queued",
                "Session events this gateway holds until the control plane acknowledges them",
            )
            .unwrap_or_else(|_| unreachable_metric()),
            sessions_started: IntCounterVec::new(
                Opts::new(
                    "wg_sessions_started_total",
                    "Sessions started on this replica, by mode: relay (bytes), ssh (terminated \
                     SSH from an SSH client) or console (the browser terminal)",
                ),
                &["mode"],
            )
            .unwrap_or_else(|_| unreachable_metric()),
            sessions_by_mode: IntGaugeVec::new(
                Opts::new(
                    "wg_sessions_active_by_mode",
                    "Sessions carried by this replica right now, by mode",
                ),
                &["mode"],
            )
            .unwrap_or_else(|_| unreachable_metric()),
            registry,
        };
        for mode in SessionMode::ALL {
            m.sessions_started.with_label_values(&[mode.as_str()]);
            m.sessions_by_mode.with_label_values(&[mode.as_str()]);
        }
        for c in [
            Box::new(m.replica_up.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.db_roundtrip.clone()),
            Box::new(m.redis_failover_total.clone()),
            Box::new(m.sessions_active.clone()),
            Box::new(m.leader_leases.clone()),
            Box::new(m.http_requests.clone()),
            Box::new(m.relay_bytes.clone()),
            Box::new(m.relays_ended.clone()),
            Box::new(m.draining.clone()),
            Box::new(m.drains.clone()),
            Box::new(m.connections_refused.clone()),
            Box::new(m.events_published.clone()),
            Box::new(m.lease_changes.clone()),
            Box::new(m.job_lease_held.clone()),
            Box::new(m.approvals.clone()),
            Box::new(m.manifests_signed.clone()),
            Box::new(m.chunks_uploaded.clone()),
            Box::new(m.rate_limited.clone()),
            Box::new(m.agent_link_up.clone()),
            Box::new(m.agent_offline_seconds.clone()),
            Box::new(m.agent_gateways.clone()),
            Box::new(m.agent_events_queued.clone()),
            Box::new(m.sessions_started.clone()),
            Box::new(m.sessions_by_mode.clone()),
        ] {
            let _ = m.registry.register(c);
        }
        m
    }

    /// Counts a session of `mode` as started, and as active until the guard drops.
    pub fn session_of(&self, mode: SessionMode) -> ModeGuard {
        self.sessions_started
            .with_label_values(&[mode.as_str()])
            .inc();
        let g = self.sessions_by_mode.with_label_values(&[mode.as_str()]);
        g.inc();
        ModeGuard(g)
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// Metric constructors only fail on invalid names, which are constants here.
fn unreachable_metric<T>() -> T {
    unreachable!("metric names and help texts are valid constants")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_counted_by_mode_while_they_live() {
        let m = Metrics::new("r1");
        let a = m.session_of(SessionMode::Ssh);
        let b = m.session_of(SessionMode::Ssh);
        let _c = m.session_of(SessionMode::Relay);
        drop(a);
        let text = m.render();
        for line in [
            "wg_sessions_started_total{mode=\"ssh\",replica=\"r1\"} 2",
            "wg_sessions_active_by_mode{mode=\"ssh\",replica=\"r1\"} 1",
            "wg_sessions_active_by_mode{mode=\"relay\",replica=\"r1\"} 1",
            "wg_sessions_active_by_mode{mode=\"console\",replica=\"r1\"} 0",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        drop(b);
        assert!(
            m.render()
                .contains("wg_sessions_active_by_mode{mode=\"ssh\",replica=\"r1\"} 0")
        );
    }

    #[test]
    fn exposition_has_the_guide_metrics_with_replica_label() {
        let m = Metrics::new("r1");
        m.db_roundtrip.observe(0.002);
        m.relay_bytes.with_label_values(&["up"]).inc_by(5);
        let text = m.render();
        for name in [
            "wg_replica_up{replica=\"r1\"} 0",
            "wg_db_roundtrip_seconds_count{replica=\"r1\"} 1",
            "wg_redis_failover_total{replica=\"r1\"} 0",
            "wg_sessions_active{replica=\"r1\"} 0",
            "wg_leader_leases_gauge{replica=\"r1\"} 0",
            "wg_relay_bytes_total{direction=\"up\",replica=\"r1\"} 5",
            "wg_sessions_started_total{mode=\"console\",replica=\"r1\"} 0",
            "wg_sessions_active_by_mode{mode=\"ssh\",replica=\"r1\"} 0",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
    }
}
