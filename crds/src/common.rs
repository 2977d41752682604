//! Types shared by both kinds: Secret references, drain settings, status conditions.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, EnvFromSource, EnvVar, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A key in a Secret of the resource's namespace. Credentials are always referenced, never
/// copied into the custom resource or a ConfigMap.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Secret name, in the resource's namespace. Required.
    pub name: String,
    /// Key inside the Secret. Required.
    pub key: String,
}

/// A Secret by name (its keys are fixed by the field that references it).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Secret name, in the resource's namespace. Required.
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
    /// Seconds `wgctl system drain --timeout` waits for owned sessions to end (preStop), 0 to
    /// 86400. Default: 270.
    #[serde(default = "default_drain")]
    #[schemars(range(min = 0, max = 86400))]
    pub timeout_seconds: i64,
    /// The longest the cluster's autoscaler waits for an evicted pod (its
    /// `--max-graceful-termination-sec`). A termination grace above it gets a warning
    /// condition: scale-down would kill pods mid-drain. Default: 600 (the autoscaler's own).
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
    /// Hold the rollout: template changes are not applied to running pods until unpaused.
    /// Default: false.
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

/// Every environment variable the operator sets on gateway containers (by `env` or through its
/// ConfigMap). `spec.env` and `spec.envFrom[].prefix` may not name one: validation and the CEL
/// rule on `spec.env` refuse them, naming the field, and a test keeps this list equal to what
/// the builders render.
pub const OPERATOR_ENV: &[&str] = &[
    "WG_ADMIN_SOCKET",
    "WG_ADMIN_TOKEN_FILE",
    "WG_AGENT_LISTEN",
    "WG_DATABASE_URL",
    "WG_DRAIN_TIMEOUT",
    "WG_INTERNAL_KEY_FILE",
    "WG_LISTEN",
    "WG_OBSERVER_TOKEN_FILE",
    "WG_RECORDINGS_SPOOL",
    "WG_RECORDINGS_URL",
    "WG_RECORDING_KEY_FILE",
    "WG_REDIS_URL",
    "WG_REPLICA_ID",
    "WG_ROLE",
    "WG_STATEMENT_TIMEOUT",
    "WG_TLS_CERT",
    "WG_TLS_KEY",
];

/// Placement and pod-template additions, shared by both kinds (flattened into their `spec`):
/// the HA guide's "dedicate node pools to gateways and to the control plane". Everything here
/// is added to what the operator renders, never replacing it: its zone affinity, hostname
/// anti-affinity and spread constraints stay, its labels win over `podLabels`, and its `WG_*`
/// variables cannot be overridden.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PodOverrides {
    /// Node labels the pods must match (`pod.spec.nodeSelector`), e.g. a dedicated node pool.
    /// Default: none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations for tainted (dedicated) nodes (`pod.spec.tolerations`). Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Affinity added to the operator's own: required node-affinity terms are ANDed with its
    /// zone pinning, preferred terms and pod (anti-)affinity terms are appended. Default: none
    /// (only the operator's zone pinning and hostname anti-affinity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// PriorityClass of the pods (`pod.spec.priorityClassName`). Default: none (the cluster's
    /// default priority).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    /// Annotations added to the pod template. Default: none. Changing them rolls the pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_annotations: BTreeMap<String, String>,
    /// Labels added to the pod template; the operator's own labels (`app.kubernetes.io/*`,
    /// `wardengate.io/*`) win over any of the same key. Default: none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_labels: BTreeMap<String, String>,
    /// Extra environment variables of the gateway container, literal or `valueFrom` a Secret or
    /// ConfigMap key. Names the operator sets (`WG_ROLE`, `WG_DATABASE_URL`, … see the README)
    /// are refused. At most 64. Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new(
        "self.all(e, !(e.name in ['WG_ADMIN_SOCKET', 'WG_ADMIN_TOKEN_FILE', 'WG_AGENT_LISTEN', 'WG_DATABASE_URL', 'WG_DRAIN_TIMEOUT', 'WG_INTERNAL_KEY_FILE', 'WG_LISTEN', 'WG_OBSERVER_TOKEN_FILE', 'WG_RECORDINGS_SPOOL', 'WG_RECORDINGS_URL', 'WG_RECORDING_KEY_FILE', 'WG_REDIS_URL', 'WG_REPLICA_ID', 'WG_ROLE', 'WG_STATEMENT_TIMEOUT', 'WG_TLS_CERT', 'WG_TLS_KEY']))"
    ).message("a variable the operator sets (WG_ROLE, WG_DATABASE_URL, …) cannot be overridden"))]
    pub env: Vec<EnvVar>,
    /// Extra variables from whole Secrets or ConfigMaps (`envFrom`); listed before the
    /// operator's own ConfigMap, so its `WG_*` keys win. A `prefix` starting with `WG_` is
    /// refused. At most 16. Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub env_from: Vec<EnvFromSource>,
}
