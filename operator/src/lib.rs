//! The Wardengate operator: pure validation and desired-state builders (this crate's middle,
//! tested without any client), and the `render` pipeline that prints what the operator would own.
//!
//! Reconcile shape: dereference → [`validate`] (pure) → [`build`] (pure) → apply → status.

pub mod build;
pub mod labels;
pub mod render;
pub mod validate;

pub use wardengate_crds::{GROUP, VERSION};
