//! Leader election on a `coordination.k8s.io/v1` Lease (kube-rs has none built in). Only the
//! leader runs the controllers, so only the leader writes.
//!
//! The rules are client-go's: a holder renews every `retry_period`; a candidate takes the Lease
//! over only when the record has not changed for `lease_duration` **by its own clock** (so clock
//! skew between nodes does not matter); a leader that could not renew for `renew_deadline`
//! (shorter than `lease_duration`) steps down before anyone else may take over. Every write is a
//! compare-and-swap on `resourceVersion`, so two candidates cannot both win.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::sync::watch;

/// Timing and identity of an election.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This process (pod name).
    pub identity: String,
    /// How long a silent holder keeps the Lease.
    pub lease_duration: Duration,
    /// A leader that could not renew for this long steps down (< `lease_duration`).
    pub renew_deadline: Duration,
    /// Time between attempts.
    pub retry_period: Duration,
}

impl LeaseConfig {
    /// client-go's defaults: 15 s / 10 s / 2 s.
    pub fn new(namespace: &str, name: &str, identity: &str) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// State of one candidate.
pub struct Elector {
    api: Api<Lease>,
    cfg: LeaseConfig,
    /// The last record seen (holder, renew time, resourceVersion) and when it was first seen.
    observed: Option<(String, Instant)>,
    last_renewed: Option<Instant>,
}

fn micro_now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

impl Elector {
    /// A candidate using `client`.
    pub fn new(client: Client, cfg: LeaseConfig) -> Self {
        Self {
            api: Api::namespaced(client, &cfg.namespace),
            cfg,
            observed: None,
            last_renewed: None,
        }
    }

    fn spec(&self, previous: Option<&LeaseSpec>) -> LeaseSpec {
        let ours =
            previous.is_some_and(|p| p.holder_identity.as_deref() == Some(&self.cfg.identity));
        let transitions = previous.and_then(|p| p.lease_transitions).unwrap_or(0);
        LeaseSpec {
            holder_identity: Some(self.cfg.identity.clone()),
            lease_duration_seconds: Some(self.cfg.lease_duration.as_secs().max(1) as i32),
            acquire_time: if ours {
                previous.and_then(|p| p.acquire_time.clone())
            } else {
                Some(micro_now())
            },
            renew_time: Some(micro_now()),
            lease_transitions: Some(if ours || previous.is_none() {
                transitions
            } else {
                transitions + 1
            }),
            ..Default::default()
        }
    }

    /// One attempt: acquire a free or expired Lease, or renew ours. `Ok(true)` while leader.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.cfg.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.cfg.name.clone()),
                    namespace: Some(self.cfg.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(self.spec(None)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let record = format!(
            "{holder}|{:?}|{}",
            spec.renew_time,
            lease.metadata.resource_version.clone().unwrap_or_default()
        );
        let first_seen = match &self.observed {
            Some((r, at)) if *r == record => *at,
            _ => {
                let at = Instant::now();
                self.observed = Some((record, at));
                at
            }
        };
        let duration = spec
            .lease_duration_seconds
            .map(|s| Duration::from_secs(s.max(0) as u64))
            .unwrap_or(self.cfg.lease_duration);
        let free = holder.is_empty() || first_seen.elapsed() >= duration;
        if holder != self.cfg.identity && !free {
            return Ok(false);
        }
        lease.spec = Some(self.spec(Some(&spec)));
        match self
            .api
            .replace(&self.cfg.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease up (on shutdown) so a standby takes over at once.
    pub async fn release(&mut self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.cfg.name).await? else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(&self.cfg.identity) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(micro_now());
        self.api
            .replace(&self.cfg.name, &PostParams::default(), &lease)
            .await
            .map(|_| ())
    }

    /// Campaigns until `stop` resolves, publishing leadership on `tx`; releases the Lease at
    /// the end if held. `on_contact` is told whether the API answered (for `/readyz`).
    pub async fn run(
        mut self,
        tx: watch::Sender<bool>,
        stop: impl std::future::Future<Output = ()>,
        on_contact: impl Fn(bool),
    ) {
        tokio::pin!(stop);
        loop {
            let leader = *tx.borrow();
            let now_leader = match self.try_acquire_or_renew().await {
                Ok(true) => {
                    on_contact(true);
                    self.last_renewed = Some(Instant::now());
                    true
                }
                Ok(false) => {
                    on_contact(true);
                    false
                }
                Err(e) => {
                    on_contact(false);
                    let within = self
                        .last_renewed
                        .is_some_and(|t| t.elapsed() < self.cfg.renew_deadline);
                    tracing::warn!(error = %e, leader, "leader election: the API did not answer");
                    leader && within
                }
            };
            if now_leader != leader {
                tracing::info!(identity = %self.cfg.identity, leader = now_leader, lease = %self.cfg.name, "leadership changed");
                let _ = tx.send(now_leader);
            }
            tokio::select! {
                _ = &mut stop => break,
                _ = tokio::time::sleep(self.cfg.retry_period) => {}
            }
        }
        if *tx.borrow() {
            let _ = tx.send(false);
            if let Err(e) = self.release().await {
                tracing::warn!(error = %e, "could not release the leader Lease");
            }
        }
    }
}
