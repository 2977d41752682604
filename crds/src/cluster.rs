//! `WardengateCluster`: one highly available control plane.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::*;

fn default_replicas() -> i32 {
    3
}

fn default_topology_key() -> String {
    "topology.kubernetes.io/zone".into()
}

/// Repository of the gateway image (`wardengate` and `wgctl`; the Dockerfile's `gateway`
/// target). The operator's own image is [`OPERATOR_IMAGE`].
pub const GATEWAY_IMAGE: &str = "ghcr.io/wardengate/wardengate";
/// Repository of the operator image (the Dockerfile's `operator` target), as `config/manager`
/// names it.
pub const OPERATOR_IMAGE: &str = "ghcr.io/wardengate/wardengate-operator";

fn default_image() -> String {
    GATEWAY_IMAGE.into()
}

/// Desired state of a Wardengate control plane.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "wardengate.io",
    version = "v1alpha1",
    kind = "WardengateCluster",
    plural = "wardengateclusters",
    shortname = "wgc",
    namespaced,
    cel,
    status = "WardengateClusterStatus",
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
    printcolumn(name = "Sessions", type_ = "integer", json_path = ".status.sessions"),
    printcolumn(name = "Version", type_ = "string", json_path = ".status.version"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "!has(self.terminationGracePeriodSeconds) || self.terminationGracePeriodSeconds >= self.drain.timeoutSeconds"
).message("spec.terminationGracePeriodSeconds must not be shorter than spec.drain.timeoutSeconds: pods would be killed mid-drain").field_path(".terminationGracePeriodSeconds"))]
pub struct WardengateClusterSpec {
    /// Wardengate version (image tag).
    pub version: String,
    /// Repository of the gateway image (the Dockerfile's `gateway` target); the tag is
    /// `version`.
    #[serde(default = "default_image")]
    pub image: String,
    /// Control plane replicas in total (spread over `zones` when listed).
    #[serde(default = "default_replicas")]
    #[x_kube(validation = Rule::new("self >= 1").message("spec.replicas must be at least 1"))]
    pub replicas: i32,
    /// Zones to pin one Deployment each to (rollouts then go zone by zone). Empty: one
    /// Deployment spread over zones by topologySpreadConstraints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zones: Vec<String>,
    /// Node label that names the failure domain.
    #[serde(default = "default_topology_key")]
    pub topology_key: String,
    /// Container resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Where durable state lives.
    pub postgres: PostgresSpec,
    /// Where live session state lives.
    pub redis: RedisSpec,
    /// Serving certificate.
    #[serde(default)]
    pub tls: TlsSpec,
    /// The Service in front of the replicas.
    #[serde(default)]
    pub service: ServiceSpec,
    /// Drain before stop.
    #[serde(default)]
    pub drain: DrainSpec,
    /// Explicit termination grace; derived from the drain timeout when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_grace_period_seconds: Option<i64>,
    /// Rollout controls.
    #[serde(default)]
    pub rollout: RolloutSpec,
    /// Session recordings destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recordings: Option<RecordingsSpec>,
}

/// Postgres wiring: exactly one of `external`, `patroni`, `cloudNativePG`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "[has(self.external), has(self.patroni), has(self.cloudNativePG)].filter(x, x).size() == 1"
).message("spec.postgres: set exactly one of external, patroni or cloudNativePG"))]
pub struct PostgresSpec {
    /// A Postgres you run elsewhere (managed service); its URL lives in a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalPostgres>,
    /// A Patroni cluster: its primary endpoint (VIP/HAProxy) and REST health URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patroni: Option<PatroniPostgres>,
    /// A CloudNativePG cluster in this namespace: `<name>-rw` Service and `<name>-app` Secret.
    #[serde(
        default,
        rename = "cloudNativePG",
        skip_serializing_if = "Option::is_none"
    )]
    pub cloud_native_pg: Option<CloudNativePgRef>,
    /// `statement_timeout` for every connection (default 5s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statement_timeout: Option<String>,
}

/// External Postgres.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.url)").message(
    "spec.postgres.external.url: credentials must not be inline; store the URL in a Secret and set urlSecretRef"
))]
pub struct ExternalPostgres {
    /// Secret key holding the full `postgres://` URL.
    pub url_secret_ref: SecretKeyRef,
    /// Refused: present only so admission can say why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

fn default_pg_port() -> i32 {
    5432
}

/// Patroni-managed Postgres.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PatroniPostgres {
    /// Host of the primary endpoint (Patroni VIP or HAProxy routing to `/primary`).
    pub primary_host: String,
    /// Port of the primary endpoint.
    #[serde(default = "default_pg_port")]
    pub port: i32,
    /// Database name.
    pub database: String,
    /// Patroni REST health URL (e.g. `http://patroni:8008/primary`): while it does not answer
    /// 2xx, the operator holds template changes to running pods (reason `DatabaseUnhealthy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rest_health_url: Option<String>,
    /// Secret with keys `username` and `password`.
    pub credentials_secret_ref: SecretRef,
    /// libpq sslmode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssl_mode: Option<String>,
}

/// Reference to a CloudNativePG cluster.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CloudNativePgRef {
    /// `Cluster` name.
    pub cluster_name: String,
}

/// Redis topology.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RedisMode {
    /// One server.
    #[default]
    Standalone,
    /// Primary discovered through Sentinels.
    Sentinel,
    /// Redis Cluster.
    Cluster,
}

/// Redis wiring.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.mode != 'sentinel' || (size(self.sentinels) >= 1 && has(self.masterName) && self.masterName != '')")
    .message("spec.redis: sentinel mode needs sentinels (host:port list) and masterName"))]
#[x_kube(validation = Rule::new("self.mode == 'sentinel' || size(self.hosts) >= 1")
    .message("spec.redis.hosts: standalone and cluster modes need at least one host:port"))]
#[x_kube(validation = Rule::new("!has(self.password)").message(
    "spec.redis.password: credentials must not be inline; store the password in a Secret and set passwordSecretRef"
))]
pub struct RedisSpec {
    /// Topology.
    #[serde(default)]
    pub mode: RedisMode,
    /// `host:port` of the server (standalone) or seed nodes (cluster).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// `host:port` of each Sentinel.
    #[serde(default)]
    pub sentinels: Vec<String>,
    /// Master name the Sentinels monitor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_name: Option<String>,
    /// TLS to Redis.
    #[serde(default)]
    pub tls: bool,
    /// Secret key with the password of the data nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<SecretKeyRef>,
    /// Refused: present only so admission can say why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

/// Serving certificate.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// A `kubernetes.io/tls` Secret to serve; when unset the operator generates one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
}

/// Service type.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum ServiceType {
    /// An L4 load balancer (the HA guide's recommendation).
    #[default]
    LoadBalancer,
    /// In-cluster only.
    ClusterIP,
}

/// The Service in front of the control plane.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// Type.
    #[serde(default, rename = "type")]
    pub type_: ServiceType,
    /// Annotations (cloud load-balancer settings).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// `spec.loadBalancerClass`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer_class: Option<String>,
}

/// Recordings destination.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecordingsSpec {
    /// `file:///path` or `s3://bucket/prefix`.
    #[schemars(regex(pattern = r"^(file:///|s3://).+"))]
    pub url: String,
    /// Secret whose keys all become environment variables of the pods, for `s3://`:
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, and optionally
    /// `AWS_SESSION_TOKEN`, `AWS_ENDPOINT` (an S3-compatible store) and `AWS_ALLOW_HTTP`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretRef>,
}

/// Observed state.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WardengateClusterStatus {
    /// Generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Reconciling`, `Stalled` (kstatus).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Conditions,
    /// Pods of all control plane Deployments.
    #[serde(default)]
    pub replicas: i32,
    /// Ready pods.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Pods on the current template.
    #[serde(default)]
    pub updated_replicas: i32,
    /// Version every replica runs, once the rollout is complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Human summary: Pending, Progressing, Ready, Degraded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Where clients connect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Label selector of the pods (scale subresource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Rollout progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutStatus>,
    /// Live sessions on all control-plane pods (exact while rolling or draining; at steady
    /// state refreshed only when it changes bucket, see the README).
    #[serde(default)]
    pub sessions: i64,
    /// Per placement: desired, ready, updated, version, sessions, draining pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zones: Vec<ZoneStatus>,
}
