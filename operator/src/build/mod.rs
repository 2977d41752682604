//! Pure desired-state builders: a validated spec in, typed Kubernetes objects out. No client,
//! no clock, no randomness: secret material is passed in, so the same input always renders the
//! same objects (a steady-state reconcile then writes nothing, and operator upgrades only roll
//! fleets when the rendered template really changes).

mod connection;
mod deployment;
mod desired;
pub mod overrides;
mod pool;
mod remote;
mod service;

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;

pub use connection::{
    Credentials, DATABASE_URL_KEY, REDIS_URL_KEY, connection_secret, database_url, encode,
    redis_url,
};
pub use deployment::{
    ADMIN_SOCKET, ADMIN_TOKEN_KEY, CONFIG_DIR, KEYS_KEY, RUN_DIR, SPOOL_DIR, deployments,
};
pub use desired::{Desired, ZoneObjects};
pub use pool::{GATEWAY, pool_objects, pool_selector, remote_pool_objects};
pub use remote::{AGENT_STATE_DIR, CONTROL_PLANE_CA_FILE, JOIN_TOKEN_FILE};
pub use service::service;

use crate::labels::{self, names};
use crate::validate::ValidCluster;

/// Annotation on Secrets whose content the operator generates once and never rotates silently.
pub const GENERATED: &str = "wardengate.io/generated";

/// One owned object of any kind, for previews (`render`'s YAML stream); the controller works
/// on the typed [`Desired`] set instead.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
// A handful of these exist per reconcile; their size does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Owned {
    /// ServiceAccount.
    ServiceAccount(ServiceAccount),
    /// Secret.
    Secret(Secret),
    /// ConfigMap.
    ConfigMap(ConfigMap),
    /// Deployment.
    Deployment(Deployment),
    /// Service.
    Service(Service),
    /// PodDisruptionBudget.
    Pdb(PodDisruptionBudget),
    /// NetworkPolicy.
    NetworkPolicy(NetworkPolicy),
}

impl Owned {
    /// `Kind/name`, for messages and events.
    pub fn describe(&self) -> String {
        let (kind, meta) = match self {
            Owned::ServiceAccount(o) => ("ServiceAccount", &o.metadata),
            Owned::Secret(o) => ("Secret", &o.metadata),
            Owned::ConfigMap(o) => ("ConfigMap", &o.metadata),
            Owned::Deployment(o) => ("Deployment", &o.metadata),
            Owned::Service(o) => ("Service", &o.metadata),
            Owned::Pdb(o) => ("PodDisruptionBudget", &o.metadata),
            Owned::NetworkPolicy(o) => ("NetworkPolicy", &o.metadata),
        };
        format!("{kind}/{}", meta.name.as_deref().unwrap_or_default())
    }
}

/// Secret material the builders cannot invent (it is generated once by the controller, or left
/// empty by `render`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SecretMaterial {
    /// Data of the internal Secret (`keys`, `admin-token`); empty in previews.
    pub internal: BTreeMap<String, ByteString>,
    /// Data of the generated TLS Secret (`tls.crt`, `tls.key`, `ca.crt`); empty in previews.
    pub tls: BTreeMap<String, ByteString>,
    /// Data of the generated SSH Secret (`ssh-host-key`, `ssh-user-ca`, `ssh-login-ca`); empty
    /// in previews.
    pub ssh: BTreeMap<String, ByteString>,
    /// Credentials read from the Secrets the spec references, for the URLs the operator
    /// builds; empty in previews.
    pub credentials: Credentials,
}

/// Metadata of an owned object.
pub fn meta(v: &ValidCluster, name: String, owner: &Option<OwnerReference>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(v.namespace.clone()),
        labels: Some(labels::common(&v.name)),
        owner_references: owner.clone().map(|o| vec![o]),
        ..Default::default()
    }
}

/// All objects of a cluster, by kind and placement.
pub fn cluster_objects(
    v: &ValidCluster,
    owner: Option<OwnerReference>,
    secrets: &SecretMaterial,
) -> Desired {
    let mut generated = vec![generated_secret(
        v,
        names::internal_secret(&v.name),
        &owner,
        &secrets.internal,
        None,
    )];
    generated.push(generated_secret(
        v,
        names::ssh_secret(&v.name),
        &owner,
        &secrets.ssh,
        None,
    ));
    if v.spec.tls.secret_name.is_none() {
        generated.push(generated_secret(
            v,
            names::tls_secret(&v.name),
            &owner,
            &secrets.tls,
            Some("kubernetes.io/tls"),
        ));
    }
    generated.extend(connection_secret(v, &owner, &secrets.credentials));
    Desired {
        service_account: Some(ServiceAccount {
            metadata: meta(v, names::service_account(&v.name), &owner),
            automount_service_account_token: Some(false),
            ..Default::default()
        }),
        secrets: generated,
        config_map: Some(config_map(v, &owner)),
        zones: deployments(v, &owner)
            .into_iter()
            .map(|mut z| {
                crate::rollout::stamp(&mut z.deployment);
                z
            })
            .collect(),
        service: service(v, &owner),
        pdb: pdb(v, &owner),
        network_policy: network_policy(v, &owner),
    }
}

fn generated_secret(
    v: &ValidCluster,
    name: String,
    owner: &Option<OwnerReference>,
    data: &BTreeMap<String, ByteString>,
    type_: Option<&str>,
) -> Secret {
    let mut metadata = meta(v, name, owner);
    metadata.annotations = Some(BTreeMap::from([(
        GENERATED.to_string(),
        "once; never rotated by the operator".to_string(),
    )]));
    Secret {
        metadata,
        type_: type_.map(str::to_string),
        data: (!data.is_empty()).then(|| data.clone()),
        immutable: Some(true),
        ..Default::default()
    }
}

/// Non-secret settings, as `WG_*` variables. Never holds a secret value.
fn config_map(v: &ValidCluster, owner: &Option<OwnerReference>) -> ConfigMap {
    let mut data = BTreeMap::from([
        ("WG_ROLE".to_string(), "all".to_string()),
        (
            "WG_LISTEN".to_string(),
            format!("0.0.0.0:{}", labels::HTTPS_PORT),
        ),
        (
            "WG_AGENT_LISTEN".to_string(),
            format!("0.0.0.0:{}", labels::AGENT_PORT),
        ),
        (
            "WG_STATEMENT_TIMEOUT".to_string(),
            humantime::format_duration(v.statement_timeout).to_string(),
        ),
        (
            "WG_TLS_CERT".to_string(),
            format!("{CONFIG_DIR}/tls/tls.crt"),
        ),
        (
            "WG_TLS_KEY".to_string(),
            format!("{CONFIG_DIR}/tls/tls.key"),
        ),
        (
            "WG_INTERNAL_KEY_FILE".to_string(),
            format!("{CONFIG_DIR}/internal/{KEYS_KEY}"),
        ),
    ]);
    if let Some(r) = &v.spec.recordings {
        data.insert("WG_RECORDINGS_URL".into(), r.url.clone());
    }
    if let Some(s) = &v.spec.ssh {
        data.insert("WG_SSH_LISTEN".into(), format!("0.0.0.0:{}", s.port));
    }
    ConfigMap {
        metadata: meta(v, names::config_map(&v.name), owner),
        data: Some(data),
        ..Default::default()
    }
}

/// Ingress to the gateway pods on 8443 (API, relays, probes), 8444 (the agent port of remote
/// gateways) and, with `spec.ssh`, its SSH port only, from anywhere: nothing else they might
/// listen on is reachable from the network. Egress is not restricted (targets are wherever users connect to; Postgres, Redis
/// and object storage are the user's); see the README to restrict it.
pub fn network_policy(v: &ValidCluster, owner: &Option<OwnerReference>) -> NetworkPolicy {
    let port = |p: i32| NetworkPolicyPort {
        port: Some(IntOrString::Int(p)),
        protocol: Some("TCP".into()),
        ..Default::default()
    };
    NetworkPolicy {
        metadata: meta(v, names::network_policy(&v.name), owner),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(labels::selector(&v.name, "control-plane")),
                ..Default::default()
            }),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                ports: Some(
                    [labels::HTTPS_PORT, labels::AGENT_PORT]
                        .into_iter()
                        .chain(v.spec.ssh.as_ref().map(|s| s.port))
                        .map(port)
                        .collect(),
                ),
                from: None,
            }]),
            ..Default::default()
        }),
    }
}

/// `maxUnavailable: 1`, `unhealthyPodEvictionPolicy: AlwaysAllow` (a broken pod never blocks a
/// node drain); none below 2 replicas, where it could only deadlock drains.
/// The PodDisruptionBudget: none below two replicas (it would block every node drain).
pub fn pdb(v: &ValidCluster, owner: &Option<OwnerReference>) -> Option<PodDisruptionBudget> {
    (v.spec.replicas >= 2).then(|| PodDisruptionBudget {
        metadata: meta(v, names::pdb(&v.name), owner),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".into()),
            selector: Some(LabelSelector {
                match_labels: Some(labels::selector(&v.name, "control-plane")),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}
