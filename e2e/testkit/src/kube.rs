//! A real Kubernetes 1.37 control plane on loopback: etcd, kube-apiserver (RBAC + Node
//! authorisation, ServiceAccount token signing, default admission plugins, an audit log),
//! kube-controller-manager, kube-scheduler and kwok-simulated nodes in three zones.
//!
//! The binaries come from the Go modules under `e2e/kube/` (`./task kube-tools`, part of
//! `./task deps`), found in `$WG_KUBE_BIN_DIR`, the workspace's `.tools/bin` or `PATH`. Every
//! process runs in the fixture's [`Sandbox`]; dropping the fixture kills them and removes the
//! directory, like every other fixture. Pods get loopback IPs (`127.10.x.y`), so a test can run a
//! real process on a pod's address.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::error::{IoContext, Result, TestkitError};
use crate::net::free_port;
use crate::process::{Service, run};
use crate::sandbox::Sandbox;
use crate::user::RunAs;
use crate::wait::{wait_until, with_log};

/// The zones of the simulated nodes (`topology.kubernetes.io/zone`).
pub const ZONES: [&str; 3] = ["a", "b", "c"];
/// Simulated nodes per zone; nodes are named `node-<zone><n>` (`node-a1`, `node-a2`, …).
pub const NODES_PER_ZONE: usize = 2;
/// The Kubernetes version the binaries are built at (`scripts/build-kube-tools.sh`).
pub const KUBERNETES_VERSION: &str = "v1.37.2";
/// Pod IPs are handed out from this loopback range.
pub const POD_CIDR: &str = "127.10.0.1/16";
/// kwok's stages: node start-up, heartbeat with lease, pods ready, completion and deletion.
const KWOK_STAGES: &str = include_str!("../../kube/kwok/stages.yaml");
/// Annotation marking the nodes kwok manages.
const KWOK_NODE_ANNOTATION: &str = "kwok.x-k8s.io/node";
/// How long helper commands (kubectl) may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// Start-up deadline of each component.
const START_TIMEOUT: Duration = Duration::from_secs(180);
/// Audit policy: every request's metadata (who, verb, resource, user agent), nothing of bodies.
const AUDIT_POLICY: &str = "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n  - level: Metadata\n";

/// Path of one of the Kubernetes tools (`kubectl`, `kube-apiserver`, `etcd`, `kwok`, `helm`,
/// `kstatus`, …) built by `./task kube-tools`.
pub fn tool(name: &str) -> Result<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(d) = std::env::var_os("WG_KUBE_BIN_DIR") {
        dirs.push(PathBuf::from(d));
    }
    dirs.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.tools/bin"));
    if let Some(p) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&p));
    }
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| TestkitError::MissingKubeTool(name.to_string()))
}

/// A running control plane with six simulated nodes. Dropping it stops everything.
#[derive(Debug)]
pub struct KubeCluster {
    kwok: Service,
    scheduler: Service,
    controller_manager: Service,
    apiserver: Service,
    etcd: Service,
    kubectl: PathBuf,
    kubeconfig: PathBuf,
    api_port: u16,
    audit_log: PathBuf,
    sandbox: Sandbox,
}

/// Certificates and keys of one cluster, as files in its sandbox.
struct Pki {
    ca_crt: PathBuf,
    ca_key: PathBuf,
    serving_crt: PathBuf,
    serving_key: PathBuf,
    admin_crt: PathBuf,
    admin_key: PathBuf,
    sa_key: PathBuf,
    sa_pub: PathBuf,
}

impl KubeCluster {
    /// Starts etcd, the apiserver, controller-manager, scheduler and kwok, registers the nodes
    /// and returns once every node is Ready and untainted and the `default` ServiceAccount
    /// exists (pods are refused before it does).
    pub fn start() -> Result<Self> {
        let sandbox = Sandbox::new("kube")?;
        let me = RunAs::current();
        let dir = sandbox.path().to_path_buf();
        let kubectl = tool("kubectl")?;
        let (etcd_bin, apiserver_bin, kcm_bin, sched_bin, kwok_bin) = (
            tool("etcd")?,
            tool("kube-apiserver")?,
            tool("kube-controller-manager")?,
            tool("kube-scheduler")?,
            tool("kwok")?,
        );
        let pki = write_pki(&sandbox.subdir("pki", &me)?)?;

        let (etcd_port, peer_port) = (free_port()?, free_port()?);
        let mut cmd = Command::new(etcd_bin);
        let client = format!("http://127.0.0.1:{etcd_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        cmd.arg(format!(
            "--data-dir={}",
            sandbox.subdir("etcd", &me)?.display()
        ))
        .arg("--unsafe-no-fsync")
        .arg(format!("--listen-client-urls={client}"))
        .arg(format!("--advertise-client-urls={client}"))
        .arg(format!("--listen-peer-urls={peer}"))
        .arg(format!("--initial-advertise-peer-urls={peer}"))
        .arg(format!("--initial-cluster=default={peer}"))
        .arg("--listen-metrics-urls=")
        .arg("--log-level=warn");
        let mut etcd = Service::spawn(&sandbox, "etcd", cmd, &me)?;
        wait_service(&mut etcd, "etcd /health", || {
            crate::http::get_status(etcd_port, "/health") == Some(200)
        })?;

        let api_port = free_port()?;
        let audit_log = dir.join("audit.log");
        let audit_policy = dir.join("audit-policy.yaml");
        write(&audit_policy, AUDIT_POLICY)?;
        let mut cmd = Command::new(apiserver_bin);
        cmd.args([
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            "--endpoint-reconciler-type=none",
            "--authorization-mode=Node,RBAC",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            "--allow-privileged=true",
            "--profiling=false",
        ])
        .arg(format!("--secure-port={api_port}"))
        .arg(format!("--etcd-servers={client}"))
        .arg(format!("--tls-cert-file={}", pki.serving_crt.display()))
        .arg(format!(
            "--tls-private-key-file={}",
            pki.serving_key.display()
        ))
        .arg(format!("--client-ca-file={}", pki.ca_crt.display()))
        .arg(format!(
            "--service-account-key-file={}",
            pki.sa_pub.display()
        ))
        .arg(format!(
            "--service-account-signing-key-file={}",
            pki.sa_key.display()
        ))
        .arg(format!("--audit-policy-file={}", audit_policy.display()))
        .arg(format!("--audit-log-path={}", audit_log.display()))
        .arg("--audit-log-mode=batch")
        .arg("--audit-log-batch-max-wait=1s");
        let mut apiserver = Service::spawn(&sandbox, "kube-apiserver", cmd, &me)?;
        let kubeconfig = dir.join("admin.kubeconfig");
        write(
            &kubeconfig,
            &kubeconfig_yaml(
                api_port,
                &pki.ca_crt,
                &format!(
                    "client-certificate: {}\n    client-key: {}",
                    pki.admin_crt.display(),
                    pki.admin_key.display()
                ),
            ),
        )?;
        let probe = Throttle::new();
        wait_service(&mut apiserver, "kube-apiserver /readyz", || {
            probe.ready() && kubectl_ok(&kubectl, &kubeconfig, &["get", "--raw", "/readyz"]).is_ok()
        })?;

        let kcm_port = free_port()?;
        let mut cmd = Command::new(kcm_bin);
        for flag in [
            "kubeconfig",
            "authentication-kubeconfig",
            "authorization-kubeconfig",
        ] {
            cmd.arg(format!("--{flag}={}", kubeconfig.display()));
        }
        cmd.args([
            "--bind-address=127.0.0.1",
            "--leader-elect=false",
            "--controllers=*",
            "--use-service-account-credentials=true",
            "--service-cluster-ip-range=10.0.0.0/24",
        ])
        .arg(format!("--secure-port={kcm_port}"))
        .arg(format!("--root-ca-file={}", pki.ca_crt.display()))
        .arg(format!(
            "--service-account-private-key-file={}",
            pki.sa_key.display()
        ))
        .arg(format!(
            "--cluster-signing-cert-file={}",
            pki.ca_crt.display()
        ))
        .arg(format!(
            "--cluster-signing-key-file={}",
            pki.ca_key.display()
        ));
        let controller_manager = Service::spawn(&sandbox, "kube-controller-manager", cmd, &me)?;

        let sched_port = free_port()?;
        let mut cmd = Command::new(sched_bin);
        for flag in [
            "kubeconfig",
            "authentication-kubeconfig",
            "authorization-kubeconfig",
        ] {
            cmd.arg(format!("--{flag}={}", kubeconfig.display()));
        }
        cmd.args(["--bind-address=127.0.0.1", "--leader-elect=false"])
            .arg(format!("--secure-port={sched_port}"));
        let scheduler = Service::spawn(&sandbox, "kube-scheduler", cmd, &me)?;

        let stages = dir.join("kwok-stages.yaml");
        write(&stages, KWOK_STAGES)?;
        let kwok_home = sandbox.subdir("kwok-home", &me)?;
        let mut cmd = Command::new(kwok_bin);
        cmd.env("HOME", &kwok_home)
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg(format!("--config={}", stages.display()))
            .arg("--manage-all-nodes=false")
            .arg(format!(
                "--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake"
            ))
            .arg(format!("--cidr={POD_CIDR}"))
            .arg("--node-ip=127.0.0.1")
            .arg("--node-lease-duration-seconds=40")
            .arg(format!("--server-address=127.0.0.1:{}", free_port()?));
        let kwok = Service::spawn(&sandbox, "kwok", cmd, &me)?;

        let mut cluster = Self {
            kwok,
            scheduler,
            controller_manager,
            apiserver,
            etcd,
            kubectl,
            kubeconfig,
            api_port,
            audit_log,
            sandbox,
        };
        cluster.register_nodes()?;
        cluster.wait_ready()?;
        Ok(cluster)
    }

    fn register_nodes(&self) -> Result<()> {
        let mut docs = Vec::new();
        for zone in ZONES {
            for n in 1..=NODES_PER_ZONE {
                let name = format!("node-{zone}{n}");
                docs.push(format!(
                    "apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  annotations:\n    {KWOK_NODE_ANNOTATION}: fake\n    node.alpha.kubernetes.io/ttl: \"0\"\n  labels:\n    kubernetes.io/hostname: {name}\n    kubernetes.io/os: linux\n    kubernetes.io/arch: amd64\n    kubernetes.io/role: agent\n    type: kwok\n    topology.kubernetes.io/zone: {zone}\nspec:\n  providerID: kwok://{name}\n"
                ));
            }
        }
        let file = self.sandbox.path().join("nodes.yaml");
        write(&file, &docs.join("---\n"))?;
        self.kubectl_run(&["apply", "-f", &file.display().to_string()])?;
        Ok(())
    }

    /// Waits until every node is Ready without the not-ready taint and the `default`
    /// namespace's ServiceAccount exists.
    fn wait_ready(&mut self) -> Result<()> {
        let want = ZONES.len() * NODES_PER_ZONE;
        let probe = Throttle::new();
        let template = "{range .items[*]}{.metadata.name} {.status.conditions[?(@.type==\"Ready\")].status} {.spec.taints[*].key}{\"\\n\"}{end}";
        let (kubectl, kubeconfig) = (self.kubectl.clone(), self.kubeconfig.clone());
        let start = Instant::now();
        let nodes = wait_until("the nodes to become Ready", START_TIMEOUT, || {
            if !probe.ready() {
                return false;
            }
            if self.ensure_running().is_err() {
                return true; // reported below
            }
            let Ok(out) = kubectl_ok(
                &kubectl,
                &kubeconfig,
                &["get", "nodes", "-o", &format!("jsonpath={template}")],
            ) else {
                return false;
            };
            let ready = out
                .lines()
                .filter(|l| {
                    let mut f = l.split_whitespace();
                    f.next().is_some() && f.next() == Some("True") && f.next().is_none()
                })
                .count();
            ready == want
        });
        self.ensure_running()?;
        with_log(nodes, || self.kwok.log_tail())?;
        let sa = wait_until(
            "the default ServiceAccount",
            START_TIMEOUT.saturating_sub(start.elapsed()),
            || {
                probe.ready()
                    && kubectl_ok(
                        &kubectl,
                        &kubeconfig,
                        &["get", "serviceaccount", "default", "-n", "default"],
                    )
                    .is_ok()
            },
        );
        with_log(sa, || self.controller_manager.log_tail())?;
        Ok(())
    }

    /// Errors (with the log tail) if any component has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        self.etcd.ensure_running()?;
        self.apiserver.ensure_running()?;
        self.controller_manager.ensure_running()?;
        self.scheduler.ensure_running()?;
        self.kwok.ensure_running()
    }

    /// The admin kubeconfig (client certificate in `system:masters`).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// `https://127.0.0.1:<port>` of the apiserver.
    pub fn api_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.api_port)
    }

    /// The apiserver's audit log (JSON lines, metadata level): every request, its user, verb,
    /// resource and user agent.
    pub fn audit_log(&self) -> &Path {
        &self.audit_log
    }

    /// The sandbox directory: logs of every component, kubeconfigs, PKI.
    pub fn dir(&self) -> &Path {
        self.sandbox.path()
    }

    /// The fixture's sandbox, for processes a test starts next to the cluster.
    pub fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }

    /// A `kubectl` command with the admin kubeconfig.
    pub fn kubectl(&self) -> Command {
        let mut c = Command::new(&self.kubectl);
        c.env("KUBECONFIG", &self.kubeconfig);
        c
    }

    /// Runs `kubectl ARGS` as admin and returns its stdout.
    pub fn kubectl_run(&self, args: &[&str]) -> Result<String> {
        kubectl_ok(&self.kubectl, &self.kubeconfig, args)
    }

    /// Writes a kubeconfig authenticating as ServiceAccount `namespace/name` (a TokenRequest
    /// token valid for `ttl`) to `dest`.
    pub fn service_account_kubeconfig(
        &self,
        namespace: &str,
        name: &str,
        ttl: Duration,
        dest: &Path,
    ) -> Result<()> {
        service_account_kubeconfig(&self.kubectl, &self.kubeconfig, namespace, name, ttl, dest)
    }
}

/// Writes a kubeconfig for ServiceAccount `namespace/name` of the cluster `admin_kubeconfig`
/// points at (any cluster: server and CA come from its current context), with a token from the
/// TokenRequest API (`kubectl create token`) valid for `ttl`.
pub fn service_account_kubeconfig(
    kubectl: &Path,
    admin_kubeconfig: &Path,
    namespace: &str,
    name: &str,
    ttl: Duration,
    dest: &Path,
) -> Result<()> {
    let token = kubectl_ok(
        kubectl,
        admin_kubeconfig,
        &[
            "create",
            "token",
            name,
            "-n",
            namespace,
            &format!("--duration={}s", ttl.as_secs()),
        ],
    )?;
    let view = |path: &str| {
        kubectl_ok(
            kubectl,
            admin_kubeconfig,
            &[
                "config",
                "view",
                "--raw",
                "--minify",
                "--flatten",
                "-o",
                &format!("jsonpath={{.clusters[0].cluster.{path}}}"),
            ],
        )
    };
    let server = view("server")?;
    let ca = view("certificate-authority-data")?;
    let ca_line = if ca.is_empty() {
        "insecure-skip-tls-verify: true".to_string()
    } else {
        format!("certificate-authority-data: {ca}")
    };
    let yaml = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n    {ca_line}\nusers:\n- name: {namespace}-{name}\n  user:\n    token: {token}\ncontexts:\n- name: sa\n  context:\n    cluster: c\n    user: {namespace}-{name}\n    namespace: {namespace}\ncurrent-context: sa\n"
    );
    write(dest, &yaml)
}

/// Runs `kubectl` with `kubeconfig` and `args`, returning trimmed stdout.
pub fn kubectl_ok(kubectl: &Path, kubeconfig: &Path, args: &[&str]) -> Result<String> {
    run(
        Command::new(kubectl)
            .env("KUBECONFIG", kubeconfig)
            .args(args),
        COMMAND_TIMEOUT,
    )
}

/// Rate-limits an expensive probe (a kubectl process) inside a deadline poll.
struct Throttle(std::cell::Cell<Option<Instant>>);

impl Throttle {
    fn new() -> Self {
        Self(std::cell::Cell::new(None))
    }

    /// True at most every 400 ms.
    fn ready(&self) -> bool {
        let now = Instant::now();
        match self.0.get() {
            Some(last) if now.duration_since(last) < Duration::from_millis(400) => false,
            _ => {
                self.0.set(Some(now));
                true
            }
        }
    }
}

/// Waits for `probe`, failing early with the log if the service exits.
fn wait_service(svc: &mut Service, what: &str, mut probe: impl FnMut() -> bool) -> Result<()> {
    let mut exited = None;
    let r = wait_until(what, START_TIMEOUT, || {
        if let Err(e) = svc.ensure_running() {
            exited = Some(e);
            return true;
        }
        probe()
    });
    if let Some(e) = exited {
        return Err(e);
    }
    with_log(r, || svc.log_tail()).map(|_| ())
}

fn write(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text).context(|| format!("writing {}", path.display()))
}

fn kubeconfig_yaml(port: u16, ca: &Path, user: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: wardengate-e2e\n  cluster:\n    server: https://127.0.0.1:{port}\n    certificate-authority: {}\nusers:\n- name: admin\n  user:\n    {user}\ncontexts:\n- name: wardengate-e2e\n  context:\n    cluster: wardengate-e2e\n    user: admin\ncurrent-context: wardengate-e2e\n",
        ca.display()
    )
}

/// A CA, the apiserver's serving certificate, an admin client certificate (`system:masters`)
/// and the ServiceAccount token signing key.
fn write_pki(dir: &Path) -> Result<Pki> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let gen_err = |e: rcgen::Error| TestkitError::Io {
        context: "generating the cluster's certificates".into(),
        source: std::io::Error::other(e.to_string()),
    };
    let file = |name: &str, text: String| -> Result<PathBuf> {
        let p = dir.join(name);
        write(&p, &text)?;
        Ok(p)
    };
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(gen_err)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "wardengate-e2e-ca");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().map_err(gen_err)?;
    let ca_cert = ca.self_signed(&ca_key).map_err(gen_err)?;
    let ca_crt = file("ca.crt", ca_cert.pem())?;
    let ca_key_path = file("ca.key", ca_key.serialize_pem())?;
    let issuer = Issuer::new(ca, ca_key);

    let sans: Vec<String> = [
        "127.0.0.1",
        "localhost",
        "10.0.0.1",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut serving = CertificateParams::new(sans).map_err(gen_err)?;
    serving
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let serving_key = KeyPair::generate().map_err(gen_err)?;
    let serving_cert = serving.signed_by(&serving_key, &issuer).map_err(gen_err)?;

    let mut admin = CertificateParams::new(Vec::<String>::new()).map_err(gen_err)?;
    admin.distinguished_name.push(DnType::CommonName, "admin");
    admin
        .distinguished_name
        .push(DnType::OrganizationName, "system:masters");
    admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let admin_key = KeyPair::generate().map_err(gen_err)?;
    let admin_cert = admin.signed_by(&admin_key, &issuer).map_err(gen_err)?;
    let sa_key = KeyPair::generate().map_err(gen_err)?;

    Ok(Pki {
        ca_crt,
        ca_key: ca_key_path,
        serving_crt: file("apiserver.crt", serving_cert.pem())?,
        serving_key: file("apiserver.key", serving_key.serialize_pem())?,
        admin_crt: file("admin.crt", admin_cert.pem())?,
        admin_key: file("admin.key", admin_key.serialize_pem())?,
        sa_key: file("sa.key", sa_key.serialize_pem())?,
        // The apiserver reads EC keys for verification as SEC1 or SPKI, not PKCS#8.
        sa_pub: file("sa.pub", sa_key.public_key_pem())?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tools_name_the_task_that_builds_them() {
        let err = tool("kubectl-that-does-not-exist").unwrap_err();
        assert!(err.to_string().contains("./task kube-tools"), "{err}");
    }

    #[test]
    fn the_stages_cover_nodes_and_pods() {
        for stage in [
            "node-initialize",
            "node-heartbeat-with-lease",
            "pod-ready",
            "pod-delete",
        ] {
            assert!(
                KWOK_STAGES.contains(&format!("name: {stage}")),
                "{stage} missing"
            );
        }
    }

    #[test]
    fn pki_files_are_pem() {
        let dir = tempfile::tempdir().unwrap();
        let pki = write_pki(dir.path()).unwrap();
        assert!(
            fs::read_to_string(&pki.sa_pub)
                .unwrap()
                .starts_with("-----BEGIN PUBLIC KEY-----")
        );
        for p in [&pki.ca_crt, &pki.serving_crt, &pki.admin_crt] {
            assert!(
                fs::read_to_string(p)
                    .unwrap()
                    .starts_with("-----BEGIN CERTIFICATE-----")
            );
        }
        for p in [&pki.ca_key, &pki.serving_key, &pki.admin_key, &pki.sa_key] {
            assert!(fs::read_to_string(p).unwrap().contains("PRIVATE KEY-----"));
        }
    }
}
