//! Apply: server-side apply (field manager `wardengate-operator`, forced) of every rendered
//! object that differs from what exists, then deletion of owned objects this pass did not
//! render. "Differs" means the rendered object is not a subset of the observed one: the
//! apiserver adds defaults and other managers add fields, none of which is drift; a steady
//! cluster therefore gets no write at all.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::build::Owned;
use crate::controller::observe::Observed;
use crate::labels::MANAGER;

/// Whether every field of `want` is present in `have` with the same value. Lists compare
/// element by element (same length), so defaults the apiserver adds inside list items (a
/// container's `terminationMessagePath`) are not drift.
pub fn is_subset(want: &Value, have: &Value) -> bool {
    match (want, have) {
        (Value::Object(w), Value::Object(h)) => w
            .iter()
            .all(|(k, wv)| h.get(k).is_some_and(|hv| is_subset(wv, hv))),
        (Value::Array(w), Value::Array(h)) => {
            w.len() == h.len() && w.iter().zip(h).all(|(a, b)| is_subset(a, b))
        }
        (w, h) => w == h,
    }
}

/// What the apply step did.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// `Kind/name` of every object written.
    pub applied: Vec<String>,
    /// `Kind/name` of every orphan deleted.
    pub deleted: Vec<String>,
    /// Deployments as they are now, by name.
    pub deployments: BTreeMap<String, Deployment>,
}

async fn ssa<K>(client: &Client, ns: &str, obj: &K) -> Result<K, kube::Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let name = obj.meta().name.clone().unwrap_or_default();
    api.patch(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await
}

fn kind_name(o: &Owned) -> (String, String) {
    let d = o.describe();
    let (k, n) = d.split_once('/').unwrap_or((d.as_str(), ""));
    (k.to_string(), n.to_string())
}

/// Applies `desired` (except Deployments in `hold`) and prunes what `observed` has beyond it.
pub async fn apply(
    client: &Client,
    ns: &str,
    desired: &[Owned],
    observed: &Observed,
    hold: &BTreeSet<String>,
) -> Result<Outcome, kube::Error> {
    let mut out = Outcome {
        deployments: observed.deployments.clone(),
        ..Outcome::default()
    };
    let mut rendered = BTreeSet::new();
    for o in desired {
        let key = kind_name(o);
        rendered.insert(key.clone());
        if matches!(o, Owned::Deployment(_)) && hold.contains(&key.1) {
            continue;
        }
        let want = serde_json::to_value(o).unwrap_or(Value::Null);
        if observed
            .objects
            .get(&key)
            .is_some_and(|have| is_subset(&want, have))
        {
            continue;
        }
        match o {
            Owned::ServiceAccount(x) => {
                ssa(client, ns, x).await?;
            }
            Owned::Secret(x) => {
                ssa(client, ns, x).await?;
            }
            Owned::ConfigMap(x) => {
                ssa(client, ns, x).await?;
            }
            Owned::Deployment(x) => {
                let d = ssa(client, ns, x).await?;
                out.deployments.insert(key.1.clone(), d);
            }
            Owned::Service(x) => {
                ssa(client, ns, x).await?;
            }
            Owned::Pdb(x) => {
                ssa(client, ns, x).await?;
            }
        }
        out.applied.push(o.describe());
    }
    for (kind, name) in observed.objects.keys() {
        if rendered.contains(&(kind.clone(), name.clone())) {
            continue;
        }
        let dp = DeleteParams::background();
        let r = match kind.as_str() {
            "ServiceAccount" => delete::<ServiceAccount>(client, ns, name, &dp).await,
            "Secret" => delete::<Secret>(client, ns, name, &dp).await,
            "ConfigMap" => delete::<ConfigMap>(client, ns, name, &dp).await,
            "Deployment" => delete::<Deployment>(client, ns, name, &dp).await,
            "Service" => delete::<Service>(client, ns, name, &dp).await,
            "PodDisruptionBudget" => delete::<PodDisruptionBudget>(client, ns, name, &dp).await,
            _ => Ok(()),
        };
        r?;
        out.deployments
            .remove(name.as_str())
            .filter(|_| kind == "Deployment");
        out.deleted.push(format!("{kind}/{name}"));
    }
    Ok(out)
}

async fn delete<K>(
    client: &Client,
    ns: &str,
    name: &str,
    dp: &DeleteParams,
) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    match api.delete(name, dp).await {
        Ok(_) => Ok(()),
        // Already gone: the goal is reached.
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_and_foreign_fields_are_not_drift() {
        let want = json!({"spec": {"containers": [{"name": "a", "image": "x"}]}, "metadata": {"labels": {"k": "v"}}});
        let have = json!({"spec": {"containers": [{"name": "a", "image": "x", "terminationMessagePath": "/dev/termination-log"}], "dnsPolicy": "ClusterFirst"},
                          "metadata": {"labels": {"k": "v", "other": "1"}, "resourceVersion": "7"}});
        assert!(is_subset(&want, &have));
    }

    #[test]
    fn changed_missing_or_extra_list_items_are_drift() {
        let want = json!({"spec": {"ports": [{"port": 8443}]}});
        assert!(!is_subset(
            &want,
            &json!({"spec": {"ports": [{"port": 8444}]}})
        ));
        assert!(!is_subset(&want, &json!({"spec": {}})));
        assert!(!is_subset(
            &want,
            &json!({"spec": {"ports": [{"port": 8443}, {"port": 1}]}})
        ));
        assert!(!is_subset(&json!({"a": 1}), &json!({"a": "1"})));
    }
}
