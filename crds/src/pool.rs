//! `GatewayPool`: gateway-only replicas for a cluster, in its namespace or another region.

use k8s_openapi::api::core::v1::ResourceRequirements;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::*;

fn default_pool_replicas() -> i32 {
    2
}

/// Desired state of a pool of gateways.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "wardengate.io",
    version = "v1alpha1",
    kind = "GatewayPool",
    plural = "gatewaypools",
    shortname = "wgp",
    namespaced,
    cel,
    status = "GatewayPoolStatus",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Replicas",
        type_ = "integer",
        json_path = ".status.readyReplicas"
    ),
    printcolumn(name = "Version", type_ = "string", json_path = ".status.version"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.clusterRef) && self.clusterRef.name != ''")
    .message("spec.clusterRef.name: a GatewayPool needs the WardengateCluster it belongs to"))]
#[x_kube(validation = Rule::new(
    "!has(self.terminationGracePeriodSeconds) || self.terminationGracePeriodSeconds >= self.drain.timeoutSeconds"
).message("spec.terminationGracePeriodSeconds must not be shorter than spec.drain.timeoutSeconds: pods would be killed mid-drain").field_path(".terminationGracePeriodSeconds"))]
pub struct GatewayPoolSpec {
    /// The `WardengateCluster` these gateways serve. Required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_ref: Option<ClusterRef>,
    /// Gateway replicas. At least 1. Default: 2.
    #[serde(default = "default_pool_replicas")]
    #[x_kube(validation = Rule::new("self >= 1").message("spec.replicas must be at least 1"))]
    pub replicas: i32,
    /// Version (image tag). Default: the cluster's; never newer than the cluster reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Region label for remote pools (informational; placement is by nodeSelector). Default:
    /// none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Requests and limits of the gateway container. Default: the cluster's `resources`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// How long a stopping gateway waits for its sessions (preStop drain). Default:
    /// `timeoutSeconds: 270`.
    #[serde(default)]
    pub drain: DrainSpec,
    /// Pod `terminationGracePeriodSeconds`; must not be shorter than `drain.timeoutSeconds`.
    /// Default: the drain timeout plus 30 s (300 s with the default drain).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_grace_period_seconds: Option<i64>,
    /// Rollout controls. Default: not paused.
    #[serde(default)]
    pub rollout: RolloutSpec,
    /// Placement and pod-template additions of the gateways (nodeSelector, tolerations,
    /// affinity, priorityClassName, podAnnotations, podLabels, env, envFrom); the cluster's are
    /// not inherited.
    #[serde(flatten)]
    pub pod: PodOverrides,
}

/// Which cluster a pool belongs to.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRef {
    /// `WardengateCluster` name. Required.
    pub name: String,
    /// Its namespace. Default: the pool's (the only one supported today).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Observed state.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayPoolStatus {
    /// Generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Reconciling`, `Stalled`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Conditions,
    /// Pods.
    #[serde(default)]
    pub replicas: i32,
    /// Ready pods.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Version every gateway runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Human summary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Label selector (scale subresource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
}
