//! Control-plane Deployments: one per listed zone (pinned by node affinity, so rollouts can go
//! zone by zone), or one spread over zones by `topologySpreadConstraints`. Hostname
//! anti-affinity, `minReadySeconds`, surge-only rolling updates, the HA guide's probes, and a
//! `preStop` drain bounded by a derived termination grace.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::*;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{meta, redis_url};
use crate::labels::{self, names};
use crate::validate::ValidCluster;

/// Where configuration files are mounted in the pod.
pub const CONFIG_DIR: &str = "/etc/wardengate";
/// Seconds a new pod must stay Ready before it counts as available.
pub const MIN_READY_SECONDS: i32 = 10;

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    }
}

fn env_secret(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Environment carrying secrets by reference; order matters for `$(VAR)` expansion.
fn secret_env(v: &ValidCluster) -> Vec<EnvVar> {
    let mut e = vec![EnvVar {
        name: "WG_REPLICA_ID".into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: "metadata.name".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }];
    let pg = &v.spec.postgres;
    if let Some(x) = &pg.external {
        e.push(env_secret(
            "WG_DATABASE_URL",
            &x.url_secret_ref.name,
            &x.url_secret_ref.key,
        ));
    } else if let Some(p) = &pg.patroni {
        e.push(env_secret(
            "WG_DATABASE_USER",
            &p.credentials_secret_ref.name,
            "username",
        ));
        e.push(env_secret(
            "WG_DATABASE_PASSWORD",
            &p.credentials_secret_ref.name,
            "password",
        ));
        let ssl = p
            .ssl_mode
            .as_deref()
            .map(|m| format!("?sslmode={m}"))
            .unwrap_or_default();
        e.push(env(
            "WG_DATABASE_URL",
            &format!(
                "postgres://$(WG_DATABASE_USER):$(WG_DATABASE_PASSWORD)@{}:{}/{}{ssl}",
                p.primary_host, p.port, p.database
            ),
        ));
    } else if let Some(c) = &pg.cloud_native_pg {
        // CloudNativePG's app Secret carries a ready URI pointing at the `<cluster>-rw` Service.
        e.push(env_secret(
            "WG_DATABASE_URL",
            &format!("{}-app", c.cluster_name),
            "uri",
        ));
    }
    if let Some(r) = &v.spec.redis.password_secret_ref {
        e.push(env_secret("WG_REDIS_PASSWORD", &r.name, &r.key));
    }
    e.push(env("WG_REDIS_URL", &redis_url(v)));
    // For the preStop drain: wgctl talks to this pod with the bootstrap admin token.
    e.push(env(
        "WG_ADDR",
        &format!("https://127.0.0.1:{}", labels::HTTPS_PORT),
    ));
    e.push(env(
        "WG_TOKEN_FILE",
        &format!("{CONFIG_DIR}/internal/admin-token"),
    ));
    e
}

fn probe(path: &str, failure_threshold: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("https".into()),
            scheme: Some("HTTPS".into()),
            ..Default::default()
        }),
        period_seconds: Some(5),
        timeout_seconds: Some(2),
        failure_threshold: Some(failure_threshold),
        success_threshold: Some(1),
        ..Default::default()
    }
}

fn pod_spec(v: &ValidCluster, zone: Option<&str>, selector: &BTreeMap<String, String>) -> PodSpec {
    let drain = format!("{}s", v.spec.drain.timeout_seconds);
    let tls_secret = v
        .spec
        .tls
        .secret_name
        .clone()
        .unwrap_or_else(|| names::tls_secret(&v.name));
    let container = Container {
        name: "wardengate".into(),
        image: Some(format!("{}:{}", v.spec.image, v.spec.version)),
        args: Some(vec!["serve".into()]),
        ports: Some(vec![
            ContainerPort {
                name: Some("https".into()),
                container_port: labels::HTTPS_PORT,
                protocol: Some("TCP".into()),
                ..Default::default()
            },
            ContainerPort {
                name: Some("agent".into()),
                container_port: labels::AGENT_PORT,
                protocol: Some("TCP".into()),
                ..Default::default()
            },
        ]),
        env_from: Some(vec![EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource {
                name: names::config_map(&v.name),
                optional: Some(false),
            }),
            ..Default::default()
        }]),
        env: Some(secret_env(v)),
        liveness_probe: Some(probe("/healthz", 3)),
        readiness_probe: Some(probe("/readyz", 2)),
        lifecycle: Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                exec: Some(ExecAction {
                    command: Some(vec![
                        "wgctl".into(),
                        "--ca-cert".into(),
                        format!("{CONFIG_DIR}/tls/ca.crt"),
                        "system".into(),
                        "drain".into(),
                        "--timeout".into(),
                        drain,
                    ]),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        resources: v.spec.resources.clone(),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "tls".into(),
                mount_path: format!("{CONFIG_DIR}/tls"),
                read_only: Some(true),
                ..Default::default()
            },
            VolumeMount {
                name: "internal".into(),
                mount_path: format!("{CONFIG_DIR}/internal"),
                read_only: Some(true),
                ..Default::default()
            },
            VolumeMount {
                name: "scratch".into(),
                mount_path: "/tmp".into(),
                ..Default::default()
            },
        ]),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let secret_volume = |name: &str, secret: String| Volume {
        name: name.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret),
            default_mode: Some(0o440),
            ..Default::default()
        }),
        ..Default::default()
    };
    let node_affinity = zone.map(|z| NodeAffinity {
        required_during_scheduling_ignored_during_execution: Some(NodeSelector {
            node_selector_terms: vec![NodeSelectorTerm {
                match_expressions: Some(vec![NodeSelectorRequirement {
                    key: v.spec.topology_key.clone(),
                    operator: "In".into(),
                    values: Some(vec![z.to_string()]),
                }]),
                ..Default::default()
            }],
        }),
        ..Default::default()
    });
    let all_zones_selector = LabelSelector {
        match_labels: Some(selector.clone()),
        ..Default::default()
    };
    PodSpec {
        service_account_name: Some(names::service_account(&v.name)),
        automount_service_account_token: Some(false),
        termination_grace_period_seconds: Some(v.grace_seconds),
        containers: vec![container],
        volumes: Some(vec![
            secret_volume("tls", tls_secret),
            secret_volume("internal", names::internal_secret(&v.name)),
            Volume {
                name: "scratch".into(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Default::default()
            },
        ]),
        affinity: Some(Affinity {
            node_affinity,
            pod_anti_affinity: Some(PodAntiAffinity {
                preferred_during_scheduling_ignored_during_execution: Some(vec![
                    WeightedPodAffinityTerm {
                        weight: 100,
                        pod_affinity_term: PodAffinityTerm {
                            label_selector: Some(all_zones_selector.clone()),
                            topology_key: "kubernetes.io/hostname".into(),
                            ..Default::default()
                        },
                    },
                ]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        // Pinned per-zone Deployments are spread by construction; a single one spreads itself.
        topology_spread_constraints: zone.is_none().then(|| {
            vec![TopologySpreadConstraint {
                max_skew: 1,
                topology_key: v.spec.topology_key.clone(),
                when_unsatisfiable: "DoNotSchedule".into(),
                label_selector: Some(all_zones_selector),
                ..Default::default()
            }]
        }),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(65532),
            fs_group: Some(65532),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The control-plane Deployments of `v`.
pub fn deployments(v: &ValidCluster, owner: &Option<OwnerReference>) -> Vec<Deployment> {
    let selector = labels::selector(&v.name, "control-plane");
    v.placements
        .iter()
        .map(|(zone, replicas)| {
            let mut pod_labels = selector.clone();
            pod_labels.extend(labels::common(&v.name));
            if let Some(z) = zone {
                pod_labels.insert(labels::ZONE.into(), names::sanitize(z));
            }
            let mut match_labels = selector.clone();
            if let Some(z) = zone {
                match_labels.insert(labels::ZONE.into(), names::sanitize(z));
            }
            let mut metadata = meta(v, names::deployment(&v.name, zone.as_deref()), owner);
            metadata.labels = Some(pod_labels.clone());
            Deployment {
                metadata,
                spec: DeploymentSpec {
                    replicas: Some(*replicas),
                    min_ready_seconds: Some(MIN_READY_SECONDS),
                    selector: LabelSelector {
                        match_labels: Some(match_labels),
                        ..Default::default()
                    },
                    strategy: Some(DeploymentStrategy {
                        type_: Some("RollingUpdate".into()),
                        rolling_update: Some(RollingUpdateDeployment {
                            max_surge: Some(IntOrString::Int(1)),
                            max_unavailable: Some(IntOrString::Int(0)),
                        }),
                    }),
                    template: PodTemplateSpec {
                        metadata: Some(ObjectMeta {
                            labels: Some(pod_labels),
                            ..Default::default()
                        }),
                        spec: Some(pod_spec(v, zone.as_deref(), &selector)),
                    },
                    ..Default::default()
                },
                ..Default::default()
            }
        })
        .collect()
}
