//! Controllers, pure desired-state builders and the rollout planner of the Wardengate operator.

pub use wardengate_crds::{GROUP, VERSION};
