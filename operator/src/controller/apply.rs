//! Apply: server-side apply (field manager `wardengate-operator`, forced) of every rendered
//! object that differs from what exists, then deletion of owned objects this pass did not
//! render, kind by kind, returning the typed [`Applied`] set. "Differs" means the rendered object is not a subset of the observed one: the
//! apiserver adds defaults and other managers add fields, none of which is drift; a steady
//! cluster therefore gets no write at all.

use std::collections::BTreeSet;

use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::build::Desired;
use crate::controller::observe::{ByName, Observed};
use crate::labels::MANAGER;
use crate::status::{Applied, AppliedZone};

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

/// An object the apply step wrote or deleted, for events and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectName {
    /// Kubernetes kind.
    pub kind: &'static str,
    /// Object name.
    pub name: String,
}

impl std::fmt::Display for ObjectName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.kind, self.name)
    }
}

/// What the apply step did: the typed applied set status is computed from, and the writes.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Every wanted object as it is now, by kind and placement.
    pub applied: Applied,
    /// Every object written.
    pub written: Vec<ObjectName>,
    /// Every orphan deleted.
    pub deleted: Vec<ObjectName>,
}

/// Bounds shared by every owned kind.
trait OwnedKind:
    k8s_openapi::Resource
    + Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + Serialize
    + std::fmt::Debug
{
}

impl<K> OwnedKind for K where
    K: k8s_openapi::Resource
        + Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug
{
}

/// One apply pass in a namespace, collecting what it wrote.
struct Pass<'a> {
    client: &'a Client,
    ns: &'a str,
    written: Vec<ObjectName>,
    deleted: Vec<ObjectName>,
}

impl Pass<'_> {
    /// `want` as it is after this pass: the observed object when it already holds every
    /// rendered field, else the server's answer to a forced server-side apply.
    async fn one<K: OwnedKind>(&mut self, want: &K, have: &ByName<K>) -> Result<K, kube::Error> {
        let name = want.meta().name.clone().unwrap_or_default();
        if let Some(h) = have.get(&name) {
            let wanted = serde_json::to_value(want).unwrap_or(Value::Null);
            let current = serde_json::to_value(h).unwrap_or(Value::Null);
            if is_subset(&wanted, &current) {
                return Ok(h.clone());
            }
        }
        let api: Api<K> = Api::namespaced(self.client.clone(), self.ns);
        let out = api
            .patch(
                &name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(want),
            )
            .await?;
        self.written.push(ObjectName {
            kind: K::KIND,
            name,
        });
        Ok(out)
    }

    /// Deletes every observed `K` not among `wanted` (names).
    async fn prune<'w, K: OwnedKind + 'w>(
        &mut self,
        wanted: impl IntoIterator<Item = &'w K>,
        have: &ByName<K>,
    ) -> Result<(), kube::Error> {
        let keep: BTreeSet<String> = wanted.into_iter().map(|k| k.name_any()).collect();
        let api: Api<K> = Api::namespaced(self.client.clone(), self.ns);
        for name in have.keys().filter(|n| !keep.contains(*n)) {
            match api.delete(name, &DeleteParams::background()).await {
                Ok(_) => {}
                // Already gone: the goal is reached.
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e),
            }
            self.deleted.push(ObjectName {
                kind: K::KIND,
                name: name.clone(),
            });
        }
        Ok(())
    }
}

/// Applies `desired` (except Deployments in `hold`, which keep their observed state) and
/// prunes what `observed` has beyond it.
pub async fn apply(
    client: &Client,
    ns: &str,
    desired: &Desired,
    observed: &Observed,
    hold: &BTreeSet<String>,
) -> Result<Outcome, kube::Error> {
    let mut pass = Pass {
        client,
        ns,
        written: Vec::new(),
        deleted: Vec::new(),
    };
    let service_account = match &desired.service_account {
        Some(sa) => Some(pass.one(sa, &observed.service_accounts).await?),
        None => None,
    };
    let mut secrets = Vec::with_capacity(desired.secrets.len());
    for s in &desired.secrets {
        secrets.push(pass.one(s, &observed.secrets).await?);
    }
    let config_map = match &desired.config_map {
        Some(cm) => Some(pass.one(cm, &observed.config_maps).await?),
        None => None,
    };
    let mut zones = Vec::with_capacity(desired.zones.len());
    for z in &desired.zones {
        let name = z.deployment.name_any();
        let deployment = if hold.contains(&name) {
            observed.deployments.get(&name).cloned()
        } else {
            Some(pass.one(&z.deployment, &observed.deployments).await?)
        };
        zones.push(AppliedZone {
            zone: z.zone.clone(),
            name,
            deployment,
        });
    }
    let service = pass.one(&desired.service, &observed.services).await?;
    let pdb = match &desired.pdb {
        Some(b) => Some(pass.one(b, &observed.pdbs).await?),
        None => None,
    };
    let network_policy = pass
        .one(&desired.network_policy, &observed.network_policies)
        .await?;
    // Orphans, dependents first.
    pass.prune([&desired.network_policy], &observed.network_policies)
        .await?;
    pass.prune(&desired.pdb, &observed.pdbs).await?;
    pass.prune([&desired.service], &observed.services).await?;
    pass.prune(
        desired.zones.iter().map(|z| &z.deployment),
        &observed.deployments,
    )
    .await?;
    pass.prune(&desired.config_map, &observed.config_maps)
        .await?;
    pass.prune(&desired.secrets, &observed.secrets).await?;
    pass.prune(&desired.service_account, &observed.service_accounts)
        .await?;
    Ok(Outcome {
        applied: Applied {
            service_account,
            secrets,
            config_map,
            zones,
            service,
            pdb,
            network_policy,
        },
        written: pass.written,
        deleted: pass.deleted,
    })
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
