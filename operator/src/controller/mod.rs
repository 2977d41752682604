//! The controllers of `WardengateCluster` and `GatewayPool`: dereference → validate (pure) →
//! build (pure) → apply → status. Side effects live in [`observe`], [`apply`], the status and
//! event writes; everything between them is pure and tested without a client.
//!
//! Module map (one idea each):
//! - [`wiring`]: what the two controllers watch, and forgetting objects that vanish;
//! - [`cluster`] and [`pool`]: one reconcile of each kind;
//! - [`undecodable`]: `Stalled` for custom resources that do not deserialize;
//! - [`observe`]: the reads (owned objects by kind, referenced Secrets);
//! - [`plan`]: observed Deployments into the pure rollout planner;
//! - [`pods`]: the fleet's pods and their `/v1/system/status`, and deletion-cost patches;
//! - [`patroni`]: the database health gate before a rollout replaces pods;
//! - [`apply`]: server-side apply and pruning, returning the typed applied set;
//! - [`status_write`] and [`events`]: what the user sees;
//! - [`backoff`]: per-object error backoff that forgets objects once they succeed or vanish;
//! - [`context`] and [`error`]: shared state and failure causes.

pub mod apply;
pub mod backoff;
pub mod cluster;
pub mod context;
pub mod error;
pub mod events;
pub mod observe;
pub mod patroni;
pub mod plan;
pub mod pods;
pub mod pool;
pub mod status_write;
pub mod undecodable;
pub mod wiring;

use std::time::Duration;

pub use backoff::{Backoff, ObjectKey};
pub use cluster::{error_policy, reconcile, reconcile_guarded};
pub use context::Context;
pub use error::Error;
pub use wiring::run;

/// How long to wait before looking again at a cluster whose referenced Secret is missing (the
/// operator does not watch Secrets it does not own).
pub const MISSING_SECRET_RETRY: Duration = Duration::from_secs(30);
/// Periodic resync of a healthy cluster (reads only, unless something drifted unnoticed).
pub const RESYNC: Duration = Duration::from_secs(300);
/// Resync of a cluster whose fleet is steady: pods' session counts (and so deletion costs)
/// change without any Kubernetes event. Reads only unless a count changed bucket.
pub const FLEET_RESYNC: Duration = Duration::from_secs(30);
/// Resync while a rollout or a drain is in progress, so status follows draining sessions.
pub const FLEET_ACTIVE_RESYNC: Duration = Duration::from_secs(5);
