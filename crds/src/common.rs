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

/// How long a replica may drain before it is stopped.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DrainSpec {
    /// Seconds `wgctl system drain --timeout` waits for owned sessions to end (preStop).
    #[serde(default = "default_drain")]
    #[schemars(range(min = 0, max = 86400))]
    pub timeout_seconds: i64,
}

impl Default for DrainSpec {
    fn default() -> Self {
        Self {
            timeout_seconds: DEFAULT_DRAIN_SECONDS,
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

/// kstatus-compatible status fields shared by both kinds.
pub type Conditions = Vec<Condition>;
