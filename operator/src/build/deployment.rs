//! Control-plane Deployments: one per listed zone (pinned by node affinity, so rollouts can go
//! zone by zone), or one spread over zones by `topologySpreadConstraints`. Hostname
//! anti-affinity, `minReadySeconds`, surge-only rolling updates, the HA guide's probes (plus a
//! startup probe that outlasts a database outage), and a `preStop` drain through the local
//! admin socket bounded by a derived termination grace, with `WG_DRAIN_TIMEOUT` equal to it for
//! a SIGTERM without the hook. Recordings get a spool volume that outlives container restarts.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::*;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{DATABASE_URL_KEY, REDIS_URL_KEY, ZoneObjects, meta, redis_url};
use crate::labels::{self, names};
use crate::validate::ValidCluster;

/// Where configuration files are mounted in the pod.
pub const CONFIG_DIR: &str = "/etc/wardengate";
/// Seconds a new pod must stay Ready before it counts as available.
pub const MIN_READY_SECONDS: i32 = 10;
/// Directory of the local admin socket (an `emptyDir`, so the preStop `wgctl` reaches it).
pub const RUN_DIR: &str = "/run/wardengate";
/// The local admin socket: `wgctl system drain --local` drains through it with no token and no
/// TLS, so the drain works with any serving certificate (a user's Secret has no `ca.crt` and no
/// `127.0.0.1` name).
pub const ADMIN_SOCKET: &str = "/run/wardengate/admin.sock";
/// Recordings spool (an `emptyDir`: it lives as long as the pod, so chunks not yet uploaded
/// survive a container restart and are uploaded by the next run).
pub const SPOOL_DIR: &str = "/var/lib/wardengate/spool";
/// Key of the bootstrap admin token in the internal Secret (mounted by control-plane pods only).
pub const ADMIN_TOKEN_KEY: &str = "admin-token";
/// Volume (and directory under [`CONFIG_DIR`]) of the SSH Secret, mounted with `spec.ssh` only.
pub const SSH_VOLUME: &str = "ssh";
/// Key of the signing keys in the internal Secret.
pub const KEYS_KEY: &str = "keys";
/// Startup probe: `/healthz` every 2 s, up to 60 times (2 minutes) before liveness takes over,
/// so a replica starting while Postgres is down is not restarted in a loop.
pub const STARTUP_PERIOD_SECONDS: i32 = 2;
/// See [`STARTUP_PERIOD_SECONDS`].
pub const STARTUP_FAILURE_THRESHOLD: i32 = 60;

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

/// Environment of the container, in order (`$(VAR)` expansion only sees earlier variables):
/// connection URLs by Secret reference, then the per-Deployment settings the shared ConfigMap
/// cannot carry (a pool's drain timeout differs from its cluster's).
fn container_env(v: &ValidCluster) -> Vec<EnvVar> {
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
    let connection = names::connection_secret(&v.name);
    if let Some(x) = &pg.external {
        e.push(env_secret(
            "WG_DATABASE_URL",
            &x.url_secret_ref.name,
            &x.url_secret_ref.key,
        ));
    } else if pg.patroni.is_some() {
        // Built by the operator from the credentials Secret, percent-encoded.
        e.push(env_secret("WG_DATABASE_URL", &connection, DATABASE_URL_KEY));
    } else if let Some(c) = &pg.cloud_native_pg {
        // CloudNativePG's app Secret carries a ready URI pointing at the `<cluster>-rw` Service.
        e.push(env_secret(
            "WG_DATABASE_URL",
            &format!("{}-app", c.cluster_name),
            "uri",
        ));
    }
    if v.spec.redis.password_secret_ref.is_some() {
        e.push(env_secret("WG_REDIS_URL", &connection, REDIS_URL_KEY));
    } else {
        e.push(env("WG_REDIS_URL", &redis_url(v, None)));
    }
    e.push(env(
        "WG_DRAIN_TIMEOUT",
        &format!("{}s", v.spec.drain.timeout_seconds),
    ));
    e.push(env("WG_ADMIN_SOCKET", ADMIN_SOCKET));
    e.push(env(
        "WG_ADMIN_TOKEN_FILE",
        &format!("{CONFIG_DIR}/internal/{ADMIN_TOKEN_KEY}"),
    ));
    // Control-plane replicas sign recording manifests; GatewayPools drop this (see pool.rs).
    e.push(env(
        "WG_RECORDING_KEY_FILE",
        &format!("{CONFIG_DIR}/internal/{}", crate::material::RECORDING_KEY),
    ));
    if v.spec.recordings.is_some() {
        e.push(env("WG_RECORDINGS_SPOOL", SPOOL_DIR));
    }
    // Terminating SSH: the three keys of the generated SSH Secret.
    if v.spec.ssh.is_some() {
        for (var, item) in [
            ("WG_SSH_HOST_KEY_FILE", crate::material::SSH_HOST_KEY),
            ("WG_SSH_CA_KEY_FILE", crate::material::SSH_USER_CA),
            ("WG_SSH_LOGIN_CA_KEY_FILE", crate::material::SSH_LOGIN_CA),
        ] {
            e.push(env(var, &format!("{CONFIG_DIR}/{SSH_VOLUME}/{item}")));
        }
    }
    // The operator's read-only identity for GET /v1/system/status.
    e.push(env(
        "WG_OBSERVER_TOKEN_FILE",
        &format!("{CONFIG_DIR}/internal/{}", crate::material::OBSERVER_TOKEN),
    ));
    e
}

fn probe(path: &str, period_seconds: i32, failure_threshold: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("https".into()),
            scheme: Some("HTTPS".into()),
            ..Default::default()
        }),
        period_seconds: Some(period_seconds),
        timeout_seconds: Some(2),
        failure_threshold: Some(failure_threshold),
        success_threshold: Some(1),
        ..Default::default()
    }
}

/// `envFrom`: the shared ConfigMap and, for an object store, the recordings credentials Secret
/// (its keys, e.g. `AWS_ACCESS_KEY_ID`, become variables).
fn env_from(v: &ValidCluster) -> Vec<EnvFromSource> {
    let mut out = vec![EnvFromSource {
        config_map_ref: Some(ConfigMapEnvSource {
            name: names::config_map(&v.name),
            optional: Some(false),
        }),
        ..Default::default()
    }];
    if let Some(r) = v
        .spec
        .recordings
        .as_ref()
        .and_then(|r| r.credentials_secret_ref.as_ref())
    {
        out.push(EnvFromSource {
            secret_ref: Some(SecretEnvSource {
                name: r.name.clone(),
                optional: Some(false),
            }),
            ..Default::default()
        });
    }
    out
}

fn empty_dir(name: &str) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
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
        ports: Some(
            vec![
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
            ]
            .into_iter()
            .chain(v.spec.ssh.as_ref().map(|s| ContainerPort {
                name: Some("ssh".into()),
                container_port: s.port,
                protocol: Some("TCP".into()),
                ..Default::default()
            }))
            .collect(),
        ),
        env_from: Some(env_from(v)),
        env: Some(container_env(v)),
        startup_probe: Some(probe(
            "/healthz",
            STARTUP_PERIOD_SECONDS,
            STARTUP_FAILURE_THRESHOLD,
        )),
        liveness_probe: Some(probe("/healthz", 5, 3)),
        readiness_probe: Some(probe("/readyz", 5, 2)),
        lifecycle: Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                exec: Some(ExecAction {
                    // Through the local admin socket (`WG_ADMIN_SOCKET`): no token, no TLS.
                    command: Some(vec![
                        "wgctl".into(),
                        "system".into(),
                        "drain".into(),
                        "--local".into(),
                        "--timeout".into(),
                        drain,
                    ]),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        resources: v.spec.resources.clone(),
        volume_mounts: Some(
            vec![
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
                VolumeMount {
                    name: "run".into(),
                    mount_path: RUN_DIR.into(),
                    ..Default::default()
                },
            ]
            .into_iter()
            .chain(v.spec.recordings.is_some().then(|| VolumeMount {
                name: "spool".into(),
                mount_path: SPOOL_DIR.into(),
                ..Default::default()
            }))
            .chain(v.spec.ssh.is_some().then(|| VolumeMount {
                name: SSH_VOLUME.into(),
                mount_path: format!("{CONFIG_DIR}/{SSH_VOLUME}"),
                read_only: Some(true),
                ..Default::default()
            }))
            .collect(),
        ),
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
        volumes: Some(
            [
                secret_volume("tls", tls_secret),
                secret_volume("internal", names::internal_secret(&v.name)),
                empty_dir("scratch"),
                empty_dir("run"),
            ]
            .into_iter()
            .chain(v.spec.recordings.is_some().then(|| empty_dir("spool")))
            .chain(
                v.spec
                    .ssh
                    .is_some()
                    .then(|| secret_volume(SSH_VOLUME, names::ssh_secret(&v.name))),
            )
            .collect(),
        ),
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

/// The control-plane Deployments of `v`, one per placement, each with its zone.
pub fn deployments(v: &ValidCluster, owner: &Option<OwnerReference>) -> Vec<ZoneObjects> {
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
            let mut deployment = Deployment {
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
            };
            super::overrides::apply(&mut deployment.spec.template, &v.spec.pod);
            ZoneObjects {
                zone: zone.clone(),
                deployment,
            }
        })
        .collect()
}
