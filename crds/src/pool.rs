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
#[x_kube(validation = Rule::new("has(self.clusterRef) != has(self.controlPlane)")
    .message(EXACTLY_ONE_TARGET))]
#[x_kube(validation = Rule::new("!has(self.clusterRef) || self.clusterRef.name != ''")
    .message("spec.clusterRef.name: a GatewayPool needs the WardengateCluster it belongs to"))]
#[x_kube(validation = Rule::new("!has(self.controlPlane) || (has(self.region) && self.region != '')")
    .message(REGION_REQUIRED))]
#[x_kube(validation = Rule::new("!has(self.controlPlane) || (has(self.version) && self.version != '')")
    .message(VERSION_REQUIRED))]
#[x_kube(validation = Rule::new("!has(self.controlPlane) || (has(self.tls) && has(self.tls.secretName) && self.tls.secretName != '')")
    .message(TLS_REQUIRED))]
#[x_kube(validation = Rule::new("!has(self.controlPlane) || (has(self.publicAddress) && self.publicAddress != '')")
    .message(PUBLIC_ADDRESS_REQUIRED))]
#[x_kube(validation = Rule::new("has(self.controlPlane) || (!has(self.tls) && !has(self.image) && !has(self.publicAddress))")
    .message(REMOTE_ONLY))]
#[x_kube(validation = Rule::new(
    "!has(self.terminationGracePeriodSeconds) || self.terminationGracePeriodSeconds >= self.drain.timeoutSeconds"
).message("spec.terminationGracePeriodSeconds must not be shorter than spec.drain.timeoutSeconds: pods would be killed mid-drain").field_path(".terminationGracePeriodSeconds"))]
pub struct GatewayPoolSpec {
    /// The `WardengateCluster` these gateways serve, in the pool's namespace. Set exactly one
    /// of `clusterRef` and `controlPlane`. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_ref: Option<ClusterRef>,
    /// A control plane elsewhere (another namespace, cluster or region) that these gateways dial
    /// over the agent link: they carry no database or Redis wiring. Exactly one of `clusterRef`
    /// and `controlPlane`; needs `region`, `version` and `tls.secretName`. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane: Option<ControlPlaneRef>,
    /// Gateway image repository of a `controlPlane` pool (the tag is `version`). Default:
    /// `ghcr.io/wardengate/wardengate`. A `clusterRef` pool runs its cluster's image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Serving certificate of a `controlPlane` pool's gateways on 8443 (`tls.secretName`, a
    /// `kubernetes.io/tls` Secret in the pool's namespace). Required with `controlPlane`; a
    /// `clusterRef` pool serves its cluster's certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<crate::TlsSpec>,
    /// Where users' clients reach a `controlPlane` pool's gateways, `HOST:PORT` (their load
    /// balancer or Service address, e.g. `gw.ap-south.example.com:8443`): each gateway reports it
    /// over the agent link (`--public-address`) and the control plane hands it to `wgctl` with
    /// every session to a target of this region. Required with `controlPlane`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 261))]
    #[x_kube(validation = Rule::new("self.matches('^([A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?|\\\\[[0-9A-Fa-f:.]+\\\\]):[0-9]{1,5}$')").message(PUBLIC_ADDRESS_FORMAT))]
    pub public_address: Option<String>,
    /// Gateway replicas. At least 1. Default: 2.
    #[serde(default = "default_pool_replicas")]
    #[x_kube(validation = Rule::new("self >= 1").message("spec.replicas must be at least 1"))]
    pub replicas: i32,
    /// Version (image tag). Default: the cluster's; required with `controlPlane`. Never newer
    /// than the control plane reports (the cluster's `status.version`, or this pool's
    /// `status.controlPlaneVersion`): a newer one is held, with a condition saying why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The region these gateways serve (`--region`; must match the join token's). Required
    /// with `controlPlane`, 1 to 63 characters. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
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

/// The words of the admission rules above, shared with the operator's own validation (which
/// names the same fields the same way).
pub const EXACTLY_ONE_TARGET: &str = "spec.clusterRef, spec.controlPlane: set exactly one: clusterRef for a WardengateCluster in this namespace, controlPlane for one elsewhere";
/// See [`EXACTLY_ONE_TARGET`].
pub const REGION_REQUIRED: &str =
    "spec.region: required with spec.controlPlane (the region of the pool's join token)";
/// See [`EXACTLY_ONE_TARGET`].
pub const VERSION_REQUIRED: &str = "spec.version: required with spec.controlPlane (there is no WardengateCluster here to take it from)";
/// See [`EXACTLY_ONE_TARGET`].
pub const TLS_REQUIRED: &str = "spec.tls.secretName: required with spec.controlPlane (the gateways' serving certificate on 8443)";
/// See [`EXACTLY_ONE_TARGET`].
pub const REMOTE_ONLY: &str = "spec.tls, spec.image, spec.publicAddress: only with spec.controlPlane; a clusterRef pool runs its cluster's image and certificate behind its cluster's Service";
/// See [`EXACTLY_ONE_TARGET`].
pub const PUBLIC_ADDRESS_REQUIRED: &str = "spec.publicAddress: required with spec.controlPlane (the HOST:PORT users' clients reach these gateways at)";
/// See [`EXACTLY_ONE_TARGET`].
pub const PUBLIC_ADDRESS_FORMAT: &str =
    "spec.publicAddress: use HOST:PORT (a DNS name, IPv4 address or [IPv6] address, and a port)";
/// See [`EXACTLY_ONE_TARGET`].
pub const URL_FORMAT: &str =
    "spec.controlPlane.url: use https://HOST:8444 (the control plane's agent port; no path)";

/// How a remote pool's gateways reach their control plane: the agent endpoint, the join token,
/// and the CA of the endpoint's serving certificate. The operator only mounts these; each
/// gateway joins by itself (see the README for how a restarted or new pod gets its identity).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ControlPlaneRef {
    /// The control plane's agent endpoint, `https://HOST:8444`. Required.
    #[x_kube(validation = Rule::new("self.matches('^https://([A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?|\\\\[[0-9A-Fa-f:.]+\\\\]):8444/?$')").message(URL_FORMAT))]
    pub url: String,
    /// The join token (`wgctl gateways join-token --region R`), a key of a Secret in the pool's
    /// namespace, mounted as the gateways' `--join-token-file`. Required.
    pub join_token_secret_ref: SecretKeyRef,
    /// PEM CA certificate(s) of the control plane's agent serving certificate, a key of a
    /// Secret in the pool's namespace (`--control-plane-ca`). Default: none (the system roots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeyRef>,
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
    /// The version the remote control plane of a `controlPlane` pool runs, written by its
    /// user or a probe (`kubectl patch gatewaypool NAME --subresource=status --type=merge -p
    /// '{"status":{"controlPlaneVersion":"0.2.0"}}'`); the operator reads it and never writes
    /// it. Until it is set the pool renders nothing; gateways never run newer than it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane_version: Option<String>,
}
