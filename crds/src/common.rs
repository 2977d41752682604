//! Types shared by both kinds: Secret references, drain settings, status conditions.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A key in a Secret of the resource's namespace. Credentials are always referenced, never
/// copied into the custom resource or a ConfigMap.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Secret name.
    pub name: String,
    /// Key inside the Secret.
    pub key: String,
}

/// A Secret by name (its keys are fixed by the field that references it).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Secret name.
    pub name: String,
}

/// Default drain timeout: 270 s, which with the margins gives the 300 s grace of the HA guide.
pub const DEFAULT_DRAIN_SECONDS: i64 = 270;

fn default_drain() -> i64 {
    DEFAULT_DRAIN_SECONDS
}

/// What the cluster-autoscaler waits for a pod it evicts by default
/// (`--max-graceful-termination-sec`).
pub const DEFAULT_AUTOSCALER_GRACE_SECONDS: i64 = 600;

/// How long a replica may drain before it is stopped.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DrainSpec {
    /// Seconds `wgctl system drain --timeout` waits for owned sessions to end (preStop).
    #[serde(default = "default_drain")]
    #[schemars(range(min = 0, max = 86400))]
    pub timeout_seconds: i64,
    /// The longest the cluster's autoscaler waits for an evicted pod (its
    /// `--max-graceful-termination-sec`; 600 when unset). A termination grace above it gets a
    /// warning condition: scale-down would kill pods mid-drain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 86400))]
    pub autoscaler_max_graceful_termination_seconds: Option<i64>,
}

impl Default for DrainSpec {
    fn default() -> Self {
        Self {
            timeout_seconds: DEFAULT_DRAIN_SECONDS,
            autoscaler_max_graceful_termination_seconds: None,
        }
    }
}

/// Rollout controls.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutSpec {
    /// Pause between rollout steps (zone by zone).
    #[serde(default)]
    pub paused: bool,
}

/// Progress of a drain-aware rollout, as observed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// Version being rolled out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_version: Option<String>,
    /// Zone currently rolling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_zone: Option<String>,
    /// Pods draining now.
    #[serde(default)]
    pub pods_draining: i32,
    /// Sessions those pods still hold.
    #[serde(default)]
    pub sessions_draining: i64,
}

/// One pod that is draining (terminating, or told to drain) and the sessions it still carries.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DrainingPod {
    /// Pod name.
    pub name: String,
    /// Live sessions it still relays.
    #[serde(default)]
    pub sessions: i64,
}

/// One placement (a zone, or the single Deployment without zones) as observed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ZoneStatus {
    /// Zone, or the Deployment's name when no zones are listed.
    pub name: String,
    /// Replicas wanted.
    #[serde(default)]
    pub desired: i32,
    /// Ready pods.
    #[serde(default)]
    pub ready: i32,
    /// Pods on the current template.
    #[serde(default)]
    pub updated: i32,
    /// Version(s) its running pods carry (comma-separated while mixed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Live sessions on its pods (see the README for when this is refreshed).
    #[serde(default)]
    pub sessions: i64,
    /// Pods draining, with the sessions each still holds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub draining: Vec<DrainingPod>,
    /// Pods that did not answer `GET /v1/system/status`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unreachable: Vec<String>,
}

/// kstatus-compatible status fields shared by both kinds.
pub type Conditions = Vec<Condition>;
