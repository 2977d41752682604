//! Kubernetes API types of group `wardengate.io`, version `v1alpha1`: [`WardengateCluster`]
//! (short name `wgc`) and [`GatewayPool`] (`wgp`).
//!
//! Admission rules are CEL (`x-kubernetes-validations`) rather than webhooks, each with a message
//! naming the field; the same rules run client-side via the generated `validate_cel()` (used by
//! `wardengate-operator render` and the tests).

// clippy reads kube's repeated `printcolumn(type_ = …)` as duplicated attributes; each is a column.
#![allow(clippy::duplicated_attributes)]

pub mod cluster;
pub mod common;
pub mod pool;

pub use cluster::*;
pub use common::*;
pub use pool::*;

/// The API group every Wardengate custom resource belongs to.
pub const GROUP: &str = "wardengate.io";
/// The served and stored API version.
pub const VERSION: &str = "v1alpha1";

/// Every CRD this crate defines, in install order.
pub fn crds()
-> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    use kube::CustomResourceExt;
    vec![WardengateCluster::crd(), GatewayPool::crd()]
}

/// The CRDs as a YAML stream (what `wardengate-operator crds` prints and `config/crd` holds).
pub fn crds_yaml() -> String {
    crds()
        .iter()
        .map(|c| format!("---\n{}", serde_yaml::to_string(c).unwrap_or_default()))
        .collect()
}
