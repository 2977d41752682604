//! Dereference: the only reads of a reconcile. One label-selected list per owned kind (which
//! serves both drift comparison and orphan detection) and one GET per Secret the spec
//! references.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, ListParams};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::build::Credentials;
use crate::labels::{self, names};
use crate::validate::ValidCluster;

/// What exists of a cluster's owned objects, keyed by `(kind, name)`.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Owned objects as JSON (for drift comparison and pruning).
    pub objects: BTreeMap<(String, String), Value>,
    /// Owned Deployments, typed (rollout planning and status).
    pub deployments: BTreeMap<String, Deployment>,
    /// Owned Secrets, typed (generated material is reused, never regenerated).
    pub secrets: BTreeMap<String, Secret>,
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

/// Lists `K` objects of the cluster owned by `uid`.
async fn owned<K>(
    client: &Client,
    namespace: &str,
    selector: &str,
    uid: &str,
    out: &mut Observed,
) -> Result<Vec<K>, kube::Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let list = api.list(&ListParams::default().labels(selector)).await?;
    let mine: Vec<K> = list
        .items
        .into_iter()
        .filter(|o| o.owner_references().iter().any(|r| r.uid == uid))
        .collect();
    for o in &mine {
        let kind = K::kind(&()).to_string();
        if let Ok(json) = serde_json::to_value(o) {
            out.objects.insert((kind, o.name_any()), json);
        }
    }
    Ok(mine)
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
    owned::<ServiceAccount>(client, ns, sel, uid, &mut out).await?;
    for s in owned::<Secret>(client, ns, sel, uid, &mut out).await? {
        out.secrets.insert(s.name_any(), s);
    }
    owned::<ConfigMap>(client, ns, sel, uid, &mut out).await?;
    for d in owned::<Deployment>(client, ns, sel, uid, &mut out).await? {
        out.deployments.insert(d.name_any(), d);
    }
    owned::<Service>(client, ns, sel, uid, &mut out).await?;
    owned::<PodDisruptionBudget>(client, ns, sel, uid, &mut out).await?;
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

/// Reads the owned objects of a pool (a Deployment, a Service, a PDB).
pub async fn observe_pool(
    client: &Client,
    namespace: &str,
    pool: &str,
    uid: &str,
) -> Result<Observed, kube::Error> {
    let mut out = Observed::default();
    let sel = format!(
        "{}={pool},app.kubernetes.io/managed-by={}",
        labels::POOL,
        labels::MANAGER
    );
    for d in owned::<Deployment>(client, namespace, &sel, uid, &mut out).await? {
        out.deployments.insert(d.name_any(), d);
    }
    owned::<Service>(client, namespace, &sel, uid, &mut out).await?;
    owned::<PodDisruptionBudget>(client, namespace, &sel, uid, &mut out).await?;
    Ok(out)
}
