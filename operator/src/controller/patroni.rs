//! The Patroni gate of a rollout: with `spec.postgres.patroni.restHealthUrl` set, a template
//! change reaches running pods only while that URL answers 2xx (Patroni's `/primary` does when
//! a primary is up). Replacing replicas while the database has no primary would only turn a
//! database outage into a gateway outage: new pods could not become ready, and the planner
//! would spend the progress deadline on them.

use std::time::Duration;

/// How long the health request may take.
pub const TIMEOUT: Duration = Duration::from_secs(3);

/// `Ok` when `url` answers 2xx; otherwise why not, for the status message.
pub async fn primary_healthy(url: &str) -> Result<(), String> {
    // reqwest is built without a default TLS provider: use the one the operator installs.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .build()
        .map_err(|e| format!("{url}: {e}"))?;
    match client.get(url).send().await {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(format!("{url} answered {}", r.status())),
        Err(e) => Err(format!("{url} unreachable: {e}")),
    }
}
