//! Remote pools (`spec.controlPlane`): gateways that dial their control plane over the agent
//! link instead of sharing its database, Redis and Secrets. They are rendered by the same
//! builders as a `clusterRef` pool (zone spread, hostname anti-affinity, surge-only rollout,
//! PDB, probes, preStop drain, pod overrides) from a cluster-shaped view of the pool, then
//! turned to dial out: `wardengate serve --role gateway --control-plane URL --join-token-file …
//! --region R --public-address HOST:PORT --agent-state-dir …`, no `WG_DATABASE_URL`/`WG_REDIS_URL`, no internal Secret or
//! ConfigMap, only the pool's serving certificate, join token and (optional) control-plane CA.
//!
//! Identity across restarts: the agent state (the gateway's key and client certificate) lives
//! on an `emptyDir`, which outlives container restarts, so a restarted container keeps its
//! gateway identity without the join token. A new pod (rollout, eviction, scale-up) starts
//! with an empty state dir and joins with the token in the Secret, so the token must admit one
//! join per pod the pool will ever start (see the README: a multi-use join token).

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    EmptyDirVolumeSource, EnvVar, KeyToPath, SecretVolumeSource, ServiceAccount, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use wardengate_crds::{TlsSpec, WardengateClusterSpec};

use super::{CONFIG_DIR, Desired};
use crate::labels::{self, names};
use crate::validate::{ValidCluster, ValidPool, ValidRemote};

/// Where the join token is mounted (`--join-token-file`).
pub const JOIN_TOKEN_FILE: &str = "/etc/wardengate/join/token";
/// Where the control plane's CA is mounted (`--control-plane-ca`), when the pool names one.
pub const CONTROL_PLANE_CA_FILE: &str = "/etc/wardengate/control-plane-ca/ca.crt";
/// The gateway's agent key and certificate (`--agent-state-dir`): an `emptyDir`, kept across
/// container restarts for the pod's lifetime.
pub const AGENT_STATE_DIR: &str = "/var/lib/wardengate/agent";

/// Variables of a cluster's pods a remote gateway must not get: its database, Redis, the
/// cluster's admin, recording and observer material (none of which exists where it runs), and
/// the role (its command line says `--role gateway`).
const NOT_REMOTE: &[&str] = &[
    "WG_DATABASE_URL",
    "WG_REDIS_URL",
    "WG_ADMIN_TOKEN_FILE",
    "WG_RECORDING_KEY_FILE",
    "WG_OBSERVER_TOKEN_FILE",
    "WG_RECORDINGS_SPOOL",
    "WG_ROLE",
];

/// Volumes of a cluster's pods a remote gateway does not mount.
const NOT_REMOTE_VOLUMES: &[&str] = &["internal", "spool"];

/// The pool as the control plane's builders see a cluster: its replicas, drain, grace,
/// resources, image, certificate and overrides; one placement spread over zones; no database,
/// Redis or recordings (the parts that would render them are removed by [`dial_out`]).
pub(super) fn as_cluster(p: &ValidPool, r: &ValidRemote, version: &str) -> ValidCluster {
    ValidCluster {
        name: p.name.clone(),
        namespace: p.namespace.clone(),
        spec: WardengateClusterSpec {
            version: version.to_string(),
            image: r.image.clone(),
            replicas: p.spec.replicas,
            zones: Vec::new(),
            topology_key: "topology.kubernetes.io/zone".into(),
            resources: p.spec.resources.clone(),
            postgres: Default::default(),
            redis: Default::default(),
            tls: TlsSpec {
                secret_name: Some(r.tls_secret.clone()),
            },
            service: Default::default(),
            drain: p.spec.drain.clone(),
            termination_grace_period_seconds: p.spec.termination_grace_period_seconds,
            rollout: p.spec.rollout.clone(),
            recordings: None,
            ssh: None,
            pod: p.spec.pod.clone(),
        },
        grace_seconds: p.grace_seconds,
        statement_timeout: std::time::Duration::from_secs(5),
        placements: vec![(None, p.spec.replicas)],
        warnings: Vec::new(),
    }
}

/// The command line of a remote gateway.
pub fn args(r: &ValidRemote) -> Vec<String> {
    let mut a: Vec<String> = [
        "serve",
        "--role",
        "gateway",
        "--control-plane",
        &r.url,
        "--join-token-file",
        JOIN_TOKEN_FILE,
        "--region",
        &r.region,
        "--public-address",
        &r.public_address,
        "--agent-state-dir",
        AGENT_STATE_DIR,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if r.ca.is_some() {
        a.extend(["--control-plane-ca".into(), CONTROL_PLANE_CA_FILE.into()]);
    }
    a
}

fn env(name: &str, value: String) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value),
        ..Default::default()
    }
}

fn secret_file(volume: &str, secret: &str, key: &str, path: &str) -> Volume {
    Volume {
        name: volume.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.into()),
            items: Some(vec![KeyToPath {
                key: key.into(),
                path: path.into(),
                ..Default::default()
            }]),
            default_mode: Some(0o440),
            optional: Some(false),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn mount(volume: &str, file: &str, read_only: bool) -> VolumeMount {
    let dir = std::path::Path::new(file)
        .parent()
        .map(|d| d.display().to_string())
        .unwrap_or_else(|| file.to_string());
    VolumeMount {
        name: volume.into(),
        mount_path: dir,
        read_only: Some(read_only),
        ..Default::default()
    }
}

/// Turns a gateway Deployment rendered from [`as_cluster`] into one that dials out.
pub(super) fn dial_out(d: &mut Deployment, p: &ValidPool, r: &ValidRemote) {
    let Some(pod) = d.spec.template.spec.as_mut() else {
        return;
    };
    pod.service_account_name = Some(names::pool(&p.name));
    let volumes = pod.volumes.get_or_insert_with(Vec::new);
    volumes.retain(|v| !NOT_REMOTE_VOLUMES.contains(&v.name.as_str()));
    volumes.push(secret_file(
        "join-token",
        &r.join_token.name,
        &r.join_token.key,
        "token",
    ));
    if let Some(ca) = &r.ca {
        volumes.push(secret_file("control-plane-ca", &ca.name, &ca.key, "ca.crt"));
    }
    volumes.push(Volume {
        name: "agent-state".into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    });
    let config_map = names::config_map(&p.name);
    for c in &mut pod.containers {
        c.args = Some(args(r));
        if let Some(ports) = c.ports.as_mut() {
            // Gateways serve 8443 only; the agent port is the control plane's.
            ports.retain(|port| port.container_port == labels::HTTPS_PORT);
        }
        let e = c.env.get_or_insert_with(Vec::new);
        e.retain(|v| !NOT_REMOTE.contains(&v.name.as_str()));
        // Right after WG_REPLICA_ID: the settings the cluster's ConfigMap would carry.
        let at = e.len().min(1);
        e.splice(
            at..at,
            [
                env("WG_LISTEN", format!("0.0.0.0:{}", labels::HTTPS_PORT)),
                env("WG_TLS_CERT", format!("{CONFIG_DIR}/tls/tls.crt")),
                env("WG_TLS_KEY", format!("{CONFIG_DIR}/tls/tls.key")),
            ],
        );
        if let Some(mut from) = c.env_from.take() {
            from.retain(|f| {
                f.config_map_ref
                    .as_ref()
                    .is_none_or(|r| r.name != config_map)
            });
            c.env_from = (!from.is_empty()).then_some(from);
        }
        let mounts = c.volume_mounts.get_or_insert_with(Vec::new);
        mounts.retain(|m| !NOT_REMOTE_VOLUMES.contains(&m.name.as_str()));
        mounts.push(mount("join-token", JOIN_TOKEN_FILE, true));
        if r.ca.is_some() {
            mounts.push(mount("control-plane-ca", CONTROL_PLANE_CA_FILE, true));
        }
        mounts.push(VolumeMount {
            name: "agent-state".into(),
            mount_path: AGENT_STATE_DIR.into(),
            ..Default::default()
        });
    }
}

/// The pool-level objects of a remote pool: a ServiceAccount of its own (there is no cluster's
/// here), and its Service and NetworkPolicy on 8443 only.
pub(super) fn finish(d: &mut Desired, p: &ValidPool) {
    let mut meta = d.service.metadata.clone();
    meta.name = Some(names::pool(&p.name));
    meta.annotations = None;
    d.service_account = Some(ServiceAccount {
        metadata: meta,
        automount_service_account_token: Some(false),
        ..Default::default()
    });
    if let Some(ports) = d.service.spec.as_mut().and_then(|s| s.ports.as_mut()) {
        ports.retain(|port| port.port == labels::HTTPS_PORT);
    }
    for rule in d
        .network_policy
        .spec
        .as_mut()
        .and_then(|s| s.ingress.as_mut())
        .into_iter()
        .flatten()
    {
        if let Some(ports) = rule.ports.as_mut() {
            ports.retain(|port| port.port == Some(IntOrString::Int(labels::HTTPS_PORT)));
        }
    }
}
