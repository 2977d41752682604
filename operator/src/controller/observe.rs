//! Dereference: the only reads of a reconcile. One label-selected list per owned kind (which
//! serves both drift comparison and orphan detection), kept typed by kind, and one GET per
//! Secret the spec references.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, ListParams};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::build::Credentials;
use crate::labels::{self, names};
use crate::validate::ValidCluster;

/// Owned objects of one kind, by name.
pub type ByName<K> = BTreeMap<String, K>;

/// What exists of a custom resource's owned objects, by kind, and what its referenced Secrets
/// hold.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Owned ServiceAccounts.
    pub service_accounts: ByName<ServiceAccount>,
    /// Owned Secrets (generated material is reused, never regenerated).
    pub secrets: ByName<Secret>,
    /// Owned ConfigMaps.
    pub config_maps: ByName<ConfigMap>,
    /// Owned Deployments (rollout planning and status).
    pub deployments: ByName<Deployment>,
    /// Owned Services.
    pub services: ByName<Service>,
    /// Owned PodDisruptionBudgets.
    pub pdbs: ByName<PodDisruptionBudget>,
    /// Owned NetworkPolicies.
    pub network_policies: ByName<NetworkPolicy>,
    /// What is missing of the referenced Secrets, one message each naming the spec field and
    /// the Secret (and the key, when the Secret exists without it).
    pub missing: Vec<String>,
    /// Credentials read from referenced Secrets, for the URLs the operator builds.
    pub credentials: Credentials,
}

/// Which credential a referenced key fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    DatabaseUser,
    DatabasePassword,
    RedisPassword,
}

/// The keys whose values the operator reads from the Secret `field` references (only those it
/// builds URLs from; every other Secret is checked for existence only).
fn needed_keys(v: &ValidCluster, field: &str) -> Vec<(String, Slot)> {
    match field {
        PATRONI_FIELD => vec![
            ("username".into(), Slot::DatabaseUser),
            ("password".into(), Slot::DatabasePassword),
        ],
        REDIS_FIELD => v
            .spec
            .redis
            .password_secret_ref
            .as_ref()
            .map(|r| vec![(r.key.clone(), Slot::RedisPassword)])
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

const PATRONI_FIELD: &str = "spec.postgres.patroni.credentialsSecretRef";
const REDIS_FIELD: &str = "spec.redis.passwordSecretRef";

/// Lists the `K` objects matching `selector` that `uid` owns, by name.
async fn owned<K>(
    client: &Client,
    namespace: &str,
    selector: &str,
    uid: &str,
) -> Result<ByName<K>, kube::Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let list = api.list(&ListParams::default().labels(selector)).await?;
    Ok(list
        .items
        .into_iter()
        .filter(|o| o.owner_references().iter().any(|r| r.uid == uid))
        .map(|o| (o.name_any(), o))
        .collect())
}

/// Secrets the spec references, with the field that names each.
pub fn referenced_secrets(v: &ValidCluster) -> Vec<(String, String)> {
    let s = &v.spec;
    let mut out = Vec::new();
    if let Some(e) = &s.postgres.external {
        out.push((
            "spec.postgres.external.urlSecretRef".into(),
            e.url_secret_ref.name.clone(),
        ));
    }
    if let Some(p) = &s.postgres.patroni {
        out.push((PATRONI_FIELD.into(), p.credentials_secret_ref.name.clone()));
    }
    if let Some(c) = &s.postgres.cloud_native_pg {
        out.push((
            "spec.postgres.cloudNativePG.clusterName (its app Secret)".into(),
            format!("{}-app", c.cluster_name),
        ));
    }
    if let Some(r) = &s.redis.password_secret_ref {
        out.push((REDIS_FIELD.into(), r.name.clone()));
    }
    if let Some(t) = &s.tls.secret_name {
        out.push(("spec.tls.secretName".into(), t.clone()));
    }
    if let Some(r) = s
        .recordings
        .as_ref()
        .and_then(|r| r.credentials_secret_ref.as_ref())
    {
        out.push((
            "spec.recordings.credentialsSecretRef".into(),
            r.name.clone(),
        ));
    }
    out
}

/// Reads everything a reconcile of `v` (object uid `uid`) needs.
pub async fn observe(
    client: &Client,
    v: &ValidCluster,
    uid: &str,
) -> Result<Observed, kube::Error> {
    let mut out = Observed::default();
    let ns = v.namespace.as_str();
    let sel = format!(
        "{}={},app.kubernetes.io/managed-by={}",
        labels::INSTANCE,
        v.name,
        labels::MANAGER
    );
    let sel = sel.as_str();
    out.service_accounts = owned(client, ns, sel, uid).await?;
    out.secrets = owned(client, ns, sel, uid).await?;
    out.config_maps = owned(client, ns, sel, uid).await?;
    out.deployments = owned(client, ns, sel, uid).await?;
    out.services = owned(client, ns, sel, uid).await?;
    out.pdbs = owned(client, ns, sel, uid).await?;
    out.network_policies = owned(client, ns, sel, uid).await?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &v.namespace);
    for (field, name) in referenced_secrets(v) {
        // Our own generated Secrets are never referenced by the spec.
        if name == names::internal_secret(&v.name) {
            continue;
        }
        let needed = needed_keys(v, &field);
        if needed.is_empty() {
            if secrets.get_metadata_opt(&name).await?.is_none() {
                out.missing
                    .push(format!("{field}: Secret {ns}/{name} not found"));
            }
            continue;
        }
        let Some(secret) = secrets.get_opt(&name).await? else {
            out.missing
                .push(format!("{field}: Secret {ns}/{name} not found"));
            continue;
        };
        for (key, slot) in needed {
            let value = secret
                .data
                .as_ref()
                .and_then(|d| d.get(&key))
                .map(|b| String::from_utf8(b.0.clone()));
            let value = match value {
                Some(Ok(v)) => v,
                Some(Err(_)) => {
                    out.missing.push(format!(
                        "{field}: key `{key}` of Secret {ns}/{name} is not UTF-8 text"
                    ));
                    continue;
                }
                None => {
                    out.missing
                        .push(format!("{field}: Secret {ns}/{name} has no key `{key}`"));
                    continue;
                }
            };
            let c = &mut out.credentials;
            match slot {
                Slot::DatabaseUser => c.database_user = Some(value),
                Slot::DatabasePassword => c.database_password = Some(value),
                Slot::RedisPassword => c.redis_password = Some(value),
            }
        }
    }
    Ok(out)
}

/// Reads the owned objects of a pool (a Deployment, a Service, a PDB, a NetworkPolicy and, for
/// a remote pool, a ServiceAccount).
pub async fn observe_pool(
    client: &Client,
    namespace: &str,
    pool: &str,
    uid: &str,
) -> Result<Observed, kube::Error> {
    let sel = format!(
        "{}={pool},app.kubernetes.io/managed-by={}",
        labels::POOL,
        labels::MANAGER
    );
    Ok(Observed {
        // A remote pool's own ServiceAccount (a clusterRef pool uses its cluster's).
        service_accounts: owned(client, namespace, &sel, uid).await?,
        deployments: owned(client, namespace, &sel, uid).await?,
        services: owned(client, namespace, &sel, uid).await?,
        pdbs: owned(client, namespace, &sel, uid).await?,
        network_policies: owned(client, namespace, &sel, uid).await?,
        ..Observed::default()
    })
}
