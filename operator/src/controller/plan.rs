//! The bridge from observed Deployments to the pure rollout planner, shared by clusters and
//! pools.

use std::collections::BTreeMap;

use super::observe::Observed;
use crate::rollout::{self, Progress, Wanted};

/// What the planner needs of each observed Deployment.
pub(crate) fn observed_progress(observed: &Observed) -> BTreeMap<String, Progress> {
    observed
        .deployments
        .iter()
        .map(|(n, d)| (n.clone(), Progress::of(d)))
        .collect()
}

/// The rollout planner's next step for `wanted` given the observed Deployments.
pub(crate) fn plan_rollout(wanted: &[Wanted], observed: &Observed, paused: bool) -> rollout::Plan {
    rollout::plan(wanted, &observed_progress(observed), paused)
}
