//! The Wardengate operator: pure validation and desired-state builders (this crate's middle,
//! tested without any client), the `render` pipeline that prints what the operator would own,
//! and the controller that applies it.
//!
//! Reconcile shape: dereference ([`controller::observe`]) → [`validate`] (pure) → [`build`]
//! (pure) and [`rollout`] (pure planner) → apply ([`controller::apply`]) → [`status`] (pure,
//! from what apply returned).

pub mod build;
pub mod controller;
pub mod fleet;
pub mod labels;
pub mod leader;
pub mod material;
pub mod metrics;
pub mod plugin;
pub mod render;
pub mod rollout;
pub mod run;
pub mod status;
pub mod validate;

pub use wardengate_crds::{GROUP, VERSION};
