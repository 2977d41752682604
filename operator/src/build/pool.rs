//! Gateway pools: relay-only replicas (`WG_ROLE=gateway`) for a cluster, on their own node pool
//! (nodeSelector, tolerations and the other `spec` pod overrides), with the same probes, drain,
//! surge-only rollout and PDB rules as the control plane, their own L4 Service, and the
//! cluster's wiring (ConfigMap, Secrets) — or, for a remote pool, the agent link instead of any
//! wiring (see [`super::remote`]).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{EnvVar, KeyToPath, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};

use super::{Desired, KEYS_KEY, deployments, network_policy, pdb, service};
use crate::labels::{self, COMPONENT, POOL, names};
use crate::validate::{ValidCluster, ValidPool, ValidRemote};

/// Component label value of gateway pods.
pub const GATEWAY: &str = "gateway";

/// Pod selector of a pool's gateways.
pub fn pool_selector(p: &ValidPool) -> BTreeMap<String, String> {
    let mut s = labels::selector(&p.cluster, GATEWAY);
    s.insert(POOL.to_string(), p.name.clone());
    s
}

/// Turns a control-plane selector or label set into the pool's.
pub(super) fn relabel(m: &mut BTreeMap<String, String>, p: &ValidPool) {
    m.insert(COMPONENT.to_string(), GATEWAY.to_string());
    m.insert(POOL.to_string(), p.name.clone());
}

/// Relabels the operator's own control-plane selectors only; a user's affinity terms (from
/// `spec.affinity`) keep theirs.
fn relabel_selector(s: &mut Option<LabelSelector>, p: &ValidPool) {
    if let Some(m) = s.as_mut().and_then(|s| s.match_labels.as_mut())
        && m.get(COMPONENT).map(String::as_str) == Some("control-plane")
        && m.get(labels::INSTANCE) == Some(&p.cluster)
    {
        relabel(m, p);
    }
}

/// The cluster's settings with the pool's replicas, drain, resources and version.
fn as_cluster(p: &ValidPool, cluster: &ValidCluster, version: &str) -> ValidCluster {
    let mut v = cluster.clone();
    v.spec.version = version.to_string();
    v.spec.replicas = p.spec.replicas;
    v.spec.zones = Vec::new();
    v.spec.drain = p.spec.drain.clone();
    if p.spec.resources.is_some() {
        v.spec.resources = p.spec.resources.clone();
    }
    // A pool's placement and additions are its own (a gateway node pool, not the control
    // plane's): the cluster's are not inherited.
    v.spec.pod = p.spec.pod.clone();
    // Gateways relay bytes only: terminating SSH (its port, keys and Service port) stays on the
    // control plane. The shared ConfigMap's WG_SSH_LISTEN alone starts nothing.
    v.spec.ssh = None;
    v.grace_seconds = p.grace_seconds;
    v.placements = vec![(None, p.spec.replicas)];
    v
}

/// Every object a pool owns: its gateway Deployment (one placement, no zone), Service and (from
/// two replicas) PDB. `version` is what [`crate::validate::pool_version`] allows.
pub fn pool_objects(
    p: &ValidPool,
    cluster: &ValidCluster,
    version: &str,
    owner: Option<OwnerReference>,
) -> Desired {
    objects(p, &as_cluster(p, cluster, version), owner)
}

/// Every object a remote (`spec.controlPlane`) pool owns: the same Deployment, Service, PDB and
/// NetworkPolicy as [`pool_objects`], rendered from the pool alone, with the agent link's
/// command line and mounts instead of the cluster's wiring, and a ServiceAccount of its own.
/// `version` is what [`crate::validate::pool_version`] allows against the control plane's.
pub fn remote_pool_objects(
    p: &ValidPool,
    remote: &ValidRemote,
    version: &str,
    owner: Option<OwnerReference>,
) -> Desired {
    let mut d = objects(p, &super::remote::as_cluster(p, remote, version), owner);
    super::remote::finish(&mut d, p);
    d
}

/// The objects of `p` rendered through the control plane's builders from `v`.
fn objects(p: &ValidPool, v: &ValidCluster, owner: Option<OwnerReference>) -> Desired {
    let pool_labels = |m: &mut Option<BTreeMap<String, String>>| {
        let m = m.get_or_insert_with(BTreeMap::new);
        relabel(m, p);
        m.insert(labels::INSTANCE.to_string(), p.cluster.clone());
    };
    let zones = deployments(v, &owner)
        .into_iter()
        .map(|mut z| {
            let d = &mut z.deployment;
            gatewayify(d, p);
            if let Some(r) = &p.remote {
                super::remote::dial_out(d, p, r);
            }
            d.metadata.name = Some(names::pool(&p.name));
            pool_labels(&mut d.metadata.labels);
            crate::rollout::stamp(d);
            z
        })
        .collect();
    let mut s: Service = service(v, &owner);
    s.metadata.name = Some(names::pool(&p.name));
    pool_labels(&mut s.metadata.labels);
    if let Some(spec) = s.spec.as_mut() {
        spec.selector = Some(pool_selector(p));
    }
    let pdb = pdb(v, &owner).map(|mut b: PodDisruptionBudget| {
        b.metadata.name = Some(names::pool(&p.name));
        pool_labels(&mut b.metadata.labels);
        if let Some(spec) = b.spec.as_mut() {
            relabel_selector(&mut spec.selector, p);
        }
        b
    });
    let mut np = network_policy(v, &owner);
    np.metadata.name = Some(names::pool(&p.name));
    pool_labels(&mut np.metadata.labels);
    if let Some(spec) = np.spec.as_mut() {
        let mut sel = spec.pod_selector.take();
        relabel_selector(&mut sel, p);
        spec.pod_selector = sel;
    }
    Desired {
        service_account: None,
        secrets: Vec::new(),
        config_map: None,
        zones,
        service: s,
        pdb,
        network_policy: np,
    }
}

/// Makes a control-plane Deployment a gateway one: labels and selectors, role, placement.
fn gatewayify(d: &mut Deployment, p: &ValidPool) {
    let spec = &mut d.spec;
    if let Some(m) = spec.selector.match_labels.as_mut() {
        relabel(m, p);
    }
    if let Some(m) = spec.template.metadata.as_mut() {
        relabel(m.labels.get_or_insert_with(BTreeMap::new), p);
    }
    let Some(pod) = spec.template.spec.as_mut() else {
        return;
    };
    if let Some(aa) = pod
        .affinity
        .as_mut()
        .and_then(|a| a.pod_anti_affinity.as_mut())
        .and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .as_mut()
        })
    {
        for t in aa {
            relabel_selector(&mut t.pod_affinity_term.label_selector, p);
        }
    }
    for t in pod.topology_spread_constraints.iter_mut().flatten() {
        relabel_selector(&mut t.label_selector, p);
    }
    for c in &mut pod.containers {
        let env = c.env.get_or_insert_with(Vec::new);
        // Gateways never bootstrap an admin token: they neither read nor mount it.
        // Nor the recording-manifest key: relay-only pods never sign manifests. Nor the observer
        // token: the operator observes control-plane pods only (for now).
        env.retain(|e| {
            !matches!(
                e.name.as_str(),
                "WG_ADMIN_TOKEN_FILE" | "WG_RECORDING_KEY_FILE" | "WG_OBSERVER_TOKEN_FILE"
            )
        });
        // `env` wins over the ConfigMap's `envFrom`, so the shared ConfigMap stays one object.
        env.push(EnvVar {
            name: "WG_ROLE".into(),
            value: Some(GATEWAY.into()),
            ..Default::default()
        });
    }
    // Of the internal Secret, gateways get the signing keys only.
    for vol in pod.volumes.iter_mut().flatten() {
        if let Some(s) = vol.secret.as_mut()
            && vol.name == "internal"
        {
            s.items = Some(vec![KeyToPath {
                key: KEYS_KEY.into(),
                path: KEYS_KEY.into(),
                ..Default::default()
            }]);
        }
    }
}
