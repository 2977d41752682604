//! The Service in front of the control plane: L4, no session affinity (the HA guide: affinity
//! only adds skew under churn), and `externalTrafficPolicy: Local` on load balancers so the
//! client IP is preserved.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use wardengate_crds::ServiceType;

use super::meta;
use crate::labels::{self, names};
use crate::validate::ValidCluster;

/// Builds the Service.
pub fn service(v: &ValidCluster, owner: &Option<OwnerReference>) -> Service {
    let s = &v.spec.service;
    let lb = s.type_ == ServiceType::LoadBalancer;
    let mut metadata = meta(v, names::service(&v.name), owner);
    if !s.annotations.is_empty() {
        metadata.annotations = Some(s.annotations.clone());
    }
    let port = |name: &str, p: i32| ServicePort {
        name: Some(name.into()),
        port: p,
        target_port: Some(IntOrString::String(name.into())),
        protocol: Some("TCP".into()),
        ..Default::default()
    };
    Service {
        metadata,
        spec: Some(ServiceSpec {
            type_: Some(if lb { "LoadBalancer" } else { "ClusterIP" }.into()),
            selector: Some(labels::selector(&v.name, "control-plane")),
            ports: Some(
                [
                    Some(port("https", labels::HTTPS_PORT)),
                    Some(port("agent", labels::AGENT_PORT)),
                    v.spec.ssh.as_ref().map(|s| port("ssh", s.port)),
                ]
                .into_iter()
                .flatten()
                .collect(),
            ),
            session_affinity: Some("None".into()),
            external_traffic_policy: lb.then(|| "Local".into()),
            load_balancer_class: if lb {
                s.load_balancer_class.clone()
            } else {
                None
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}
