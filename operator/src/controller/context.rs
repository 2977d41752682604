//! Shared state of the controllers: the API client, the event recorder, metrics and the
//! per-object backoff.

use std::time::Duration;

use kube::Client;
use kube::runtime::events::{Recorder, Reporter};

use super::backoff::Backoff;
use crate::labels::MANAGER;
use crate::metrics::Metrics;

/// Shared state of the controller.
pub struct Context {
    /// API client.
    pub client: Client,
    /// Event recorder.
    pub recorder: Recorder,
    /// Operator metrics.
    pub metrics: Metrics,
    /// Per-object error backoff.
    pub backoff: Backoff,
}

impl Context {
    /// A context for `client`, reporting events as `identity`.
    pub fn new(client: Client, identity: &str, metrics: Metrics) -> Self {
        let reporter = Reporter {
            controller: MANAGER.to_string(),
            instance: Some(identity.to_string()),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(300))
                .with_gauge(metrics.backoff_objects.clone()),
            metrics,
        }
    }
}
