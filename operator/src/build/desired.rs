//! The typed desired set: every object one custom resource should own, held by kind, with each
//! Deployment next to the placement (zone) it was rendered for. The controller plans, applies
//! and reports from these fields, so nothing downstream re-identifies objects by kind strings
//! or pairs Deployments with zones by position.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::ResourceExt;

use super::Owned;
use crate::rollout::{self, Wanted};

/// One placement of the replicas: the zone it is pinned to (none: spread, or a pool) and the
/// Deployment rendered for it.
#[derive(Debug, Clone, PartialEq)]
pub struct ZoneObjects {
    /// Zone the Deployment is pinned to, if any.
    pub zone: Option<String>,
    /// The Deployment, template hash stamped.
    pub deployment: Deployment,
}

/// Everything the operator wants to exist for one `WardengateCluster` or `GatewayPool`.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    /// The pods' ServiceAccount (clusters only).
    pub service_account: Option<ServiceAccount>,
    /// Generated and connection Secrets, in apply order (clusters only).
    pub secrets: Vec<Secret>,
    /// The shared `WG_*` settings (clusters only).
    pub config_map: Option<ConfigMap>,
    /// One entry per placement, in rollout order (the spec's zone order).
    pub zones: Vec<ZoneObjects>,
    /// The L4 Service in front of the replicas.
    pub service: Service,
    /// The PodDisruptionBudget; none below two replicas.
    pub pdb: Option<PodDisruptionBudget>,
    /// Ingress to the pods on 8443/8444 only.
    pub network_policy: NetworkPolicy,
}

impl Desired {
    /// What the rollout planner needs of each Deployment, in rollout order.
    pub fn wanted(&self) -> Vec<Wanted> {
        self.zones
            .iter()
            .map(|z| Wanted {
                name: z.deployment.name_any(),
                zone: z.zone.clone(),
                template_hash: rollout::template_hash(&z.deployment),
            })
            .collect()
    }

    /// Every object, in apply order (for previews: `render` prints them as a YAML stream).
    pub fn into_objects(self) -> Vec<Owned> {
        let mut out: Vec<Owned> = Vec::new();
        out.extend(self.service_account.map(Owned::ServiceAccount));
        out.extend(self.secrets.into_iter().map(Owned::Secret));
        out.extend(self.config_map.map(Owned::ConfigMap));
        out.extend(
            self.zones
                .into_iter()
                .map(|z| Owned::Deployment(z.deployment)),
        );
        out.push(Owned::Service(self.service));
        out.extend(self.pdb.map(Owned::Pdb));
        out.push(Owned::NetworkPolicy(self.network_policy));
        out
    }
}
