//! The operator against a real Kubernetes apiserver, the way its users run it: CRDs applied with
//! `kubectl apply --server-side`, CEL rules enforced at admission, `kubectl apply -k
//! config/default`, the operator as a process authenticated as its ServiceAccount (so with
//! exactly `config/rbac`'s permissions), every example reconciled to `Ready`, printer columns,
//! the scale subresource, server-side apply next to kubectl, zero writes at steady state, real
//! garbage collection, zone scheduling, `kubectl drain` through the PDB, the zone-by-zone rollout
//! with the real Deployment controller, leader election with a SIGKILL take-over, and kstatus
//! health.
//!
//! One code path, two targets:
//! - with the `services` feature (`./task test`), against the harness' [`KubeCluster`] (etcd,
//!   kube-apiserver, controller-manager, scheduler and six kwok nodes in zones a/b/c; tools from
//!   `./task kube-tools`);
//! - with `WG_REAL_CLUSTER=1`, against the cluster of your kubeconfig (kind, k3d, a real one):
//!   it must have nodes labelled `topology.kubernetes.io/zone` in at least three zones and pods
//!   that become Ready with the image `ghcr.io/wardengate/wardengate:<version>` (or kwok). It creates
//!   namespaces `e2e-*`, installs `config/default` and labels the nodes `wardengate.io/pool`.
//!
//! ```text
//! ./task kube-tools && cargo test -p wardengate-operator --features services --test real_cluster -- --nocapture
//! WG_REAL_CLUSTER=1 cargo test -p wardengate-operator --test real_cluster -- --nocapture
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wardengate_testkit::kube::{kubectl_ok, service_account_kubeconfig, tool};
use wardengate_testkit::net::free_port;
use wardengate_testkit::process::Service;
use wardengate_testkit::user::RunAs;
use wardengate_testkit::{KubeCluster, Sandbox, wait_until};

#[path = "real_cluster/plugin.rs"]
mod plugin;
#[path = "real_cluster/sessions.rs"]
mod sessions;

const SYSTEM_NS: &str = "wardengate-system";
const OPERATOR_SA: &str = "system:serviceaccount:wardengate-system:wardengate-operator";
const READY_TIMEOUT: &str = "--timeout=240s";

/// Where the suite runs: the harness' cluster or the user's.
struct Env {
    cluster: Option<KubeCluster>,
    own_sandbox: Option<Sandbox>,
    kubectl: PathBuf,
    admin: PathBuf,
    work: tempfile::TempDir,
    zones: Vec<String>,
    started: Instant,
}

impl Env {
    fn new() -> Option<Self> {
        let started = Instant::now();
        let real = std::env::var("WG_REAL_CLUSTER").as_deref() == Ok("1");
        if !real && !cfg!(feature = "services") {
            eprintln!(
                "skipped: run with --features services (harness cluster) or WG_REAL_CLUSTER=1 (your kubeconfig)"
            );
            return None;
        }
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (cluster, own_sandbox, admin) = if real {
            let kc = std::env::var_os("KUBECONFIG")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var("HOME").unwrap()).join(".kube/config")
                });
            (None, Some(Sandbox::new("operator-e2e").unwrap()), kc)
        } else {
            let c = KubeCluster::start().expect("the harness' Kubernetes control plane starts");
            let kc = c.kubeconfig().to_path_buf();
            (Some(c), None, kc)
        };
        let kubectl = tool("kubectl").unwrap();
        let mut env = Self {
            cluster,
            own_sandbox,
            kubectl,
            admin,
            work: tempfile::tempdir().unwrap(),
            zones: Vec::new(),
            started,
        };
        let zones: BTreeSet<String> = env.json(&["get", "nodes"])["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|n| {
                n["metadata"]["labels"]["topology.kubernetes.io/zone"]
                    .as_str()
                    .map(String::from)
            })
            .collect();
        env.zones = zones.into_iter().collect();
        assert!(
            env.zones.len() >= 3,
            "the suite needs nodes in three zones, found {:?}",
            env.zones
        );
        env.step(&format!("cluster up, zones {:?}", env.zones));
        Some(env)
    }

    fn sandbox(&self) -> &Sandbox {
        match (&self.cluster, &self.own_sandbox) {
            (Some(c), _) => c.sandbox(),
            (None, Some(s)) => s,
            (None, None) => unreachable!("one of them is set in Env::new"),
        }
    }

    fn step(&self, what: &str) {
        eprintln!("[{:>6.1}s] {what}", self.started.elapsed().as_secs_f64());
    }

    /// kubectl as admin; Err carries stderr.
    fn try_k(&self, args: &[&str]) -> Result<String, String> {
        kubectl_ok(&self.kubectl, &self.admin, args).map_err(|e| e.to_string())
    }

    fn k(&self, args: &[&str]) -> String {
        self.try_k(args)
            .unwrap_or_else(|e| panic!("kubectl {args:?}: {e}"))
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.k(&a)).unwrap()
    }

    fn file(&self, name: &str, text: &str) -> String {
        let p = self.work.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    }

    fn apply_json(&self, name: &str, docs: &[Value]) -> String {
        let list = json!({"apiVersion": "v1", "kind": "List", "items": docs});
        let f = self.file(&format!("{name}.json"), &list.to_string());
        self.k(&["apply", "-f", &f])
    }

    fn namespace(&self, ns: &str) {
        self.apply_json(
            &format!("ns-{ns}"),
            &[json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})],
        );
    }

    fn wait(&self, what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
        let mut last = Instant::now() - Duration::from_secs(1);
        wait_until(what, Duration::from_secs(secs), || {
            if last.elapsed() < Duration::from_millis(300) {
                return false;
            }
            last = Instant::now();
            cond()
        })
        .unwrap_or_else(|e| panic!("{e}"));
    }

    fn audit_log(&self) -> Option<&Path> {
        self.cluster.as_ref().map(|c| c.audit_log())
    }

    fn kstatus(&self, kind: &str, ns: &str, name: &str) -> String {
        let obj = self.k(&["get", kind, name, "-n", ns, "-o", "json"]);
        let f = self.file("kstatus-in.json", &obj);
        let out = Command::new(tool("kstatus").unwrap())
            .stdin(std::fs::File::open(f).unwrap())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kstatus: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

/// One `wardengate-operator run` process, authenticated as its ServiceAccount.
struct Operator {
    svc: Service,
    identity: String,
    probe_port: u16,
}

impl Operator {
    fn start(env: &Env, identity: &str, kubeconfig: &Path) -> Self {
        Self::start_in(env, identity, kubeconfig, SYSTEM_NS, &[])
    }

    /// An operator whose Lease lives in `lease_ns`, with `extra` flags.
    fn start_in(
        env: &Env,
        identity: &str,
        kubeconfig: &Path,
        lease_ns: &str,
        extra: &[&str],
    ) -> Self {
        let probe_port = free_port().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wardengate-operator"));
        cmd.args([
            "run",
            "--probe-addr",
            &format!("127.0.0.1:{probe_port}"),
            "--lease-namespace",
            lease_ns,
            "--identity",
            identity,
            "--log-format",
            "text",
        ])
        .args(extra)
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", "info,kube=warn");
        let svc = Service::spawn(env.sandbox(), identity, cmd, &RunAs::current()).unwrap();
        Self {
            svc,
            identity: identity.to_string(),
            probe_port,
        }
    }

    /// Sum of `wg_operator_reconciles_total` (every controller, every result).
    fn reconciles(&self) -> i64 {
        let body = wardengate_testkit::http::get(self.probe_port, "/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default();
        body.lines()
            .filter(|l| l.starts_with("wg_operator_reconciles_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as i64
    }
}

fn lease_holder(env: &Env) -> Option<String> {
    env.try_k(&[
        "get",
        "lease",
        "wardengate-operator",
        "-n",
        SYSTEM_NS,
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ])
    .ok()
    .filter(|h| !h.is_empty())
}

fn condition(obj: &Value, type_: &str) -> Option<String> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .map(|c| c["status"].as_str().unwrap_or_default().to_string())
}

fn base_spec() -> Value {
    json!({
        "version": "0.1.0",
        "postgres": {"external": {"urlSecretRef": {"name": "db", "key": "url"}}},
        "redis": {"mode": "standalone", "hosts": ["redis:6379"]},
    })
}

fn with(mut v: Value, path: &[&str], value: Value) -> Value {
    let mut cur = &mut v;
    for p in &path[..path.len() - 1] {
        cur = cur.as_object_mut().unwrap().entry(*p).or_insert(json!({}));
    }
    cur[path[path.len() - 1]] = value;
    v
}

fn cr(kind: &str, ns: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": "wardengate.io/v1alpha1", "kind": kind,
           "metadata": {"name": name, "namespace": ns}, "spec": spec})
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Secrets an example references: every `*SecretRef` name, `tls.secretName` and CloudNativePG's
/// `<cluster>-app`, with the keys the operator reads.
fn referenced_secrets(spec: &Value, out: &mut BTreeSet<String>) {
    if let Some(m) = spec.as_object() {
        for (k, v) in m {
            if k.ends_with("SecretRef")
                && let Some(n) = v["name"].as_str()
            {
                out.insert(n.to_string());
            }
            if k == "secretName"
                && let Some(n) = v.as_str()
            {
                out.insert(n.to_string());
            }
            if k == "cloudNativePG"
                && let Some(n) = v["clusterName"].as_str()
            {
                out.insert(format!("{n}-app"));
            }
            referenced_secrets(v, out);
        }
    }
}

fn secret(ns: &str, name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": ns},
           "stringData": {"url": "postgres://wardengate:pw@postgres:5432/wardengate",
                          "uri": "postgres://wardengate:pw@postgres:5432/wardengate",
                          "username": "wardengate", "password": "pw", "token": "wgj_unused",
                          "tls.crt": "unused", "tls.key": "unused", "ca.crt": "unused"}})
}

/// A valid remote (`controlPlane`) pool spec.
fn remote_pool_spec() -> Value {
    json!({
        "controlPlane": {"url": "https://cp.example.com:8444",
                         "joinTokenSecretRef": {"name": "join", "key": "token"}},
        "region": "eu-1", "version": "0.1.0", "tls": {"secretName": "gw-tls"},
        "publicAddress": "gw.eu-1.example.com:8443",
    })
}

/// The pods of cluster `name` in `ns`, as (pod, node, zone, ready).
fn pods(env: &Env, ns: &str, name: &str) -> Vec<(String, String, String, bool)> {
    let nodes = env.json(&["get", "nodes"]);
    let zone_of: BTreeMap<String, String> = nodes["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["metadata"]["name"].as_str().unwrap().to_string(),
                n["metadata"]["labels"]["topology.kubernetes.io/zone"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    let sel =
        format!("app.kubernetes.io/instance={name},app.kubernetes.io/component=control-plane");
    env.json(&["get", "pods", "-n", ns, "-l", &sel])["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            let node = p["spec"]["nodeName"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            (
                p["metadata"]["name"].as_str().unwrap().to_string(),
                node.clone(),
                zone_of.get(&node).cloned().unwrap_or_default(),
                condition(p, "Ready").as_deref() == Some("True"),
            )
        })
        .collect()
}

fn wait_ready(env: &Env, kind: &str, ns: &str, name: &str) {
    let r = env.try_k(&[
        "wait",
        "--for=condition=Ready",
        &format!("{kind}/{name}"),
        "-n",
        ns,
        READY_TIMEOUT,
    ]);
    if let Err(e) = r {
        let obj = env.try_k(&["get", kind, name, "-n", ns, "-o", "yaml"]);
        let deps = env.try_k(&["get", "deploy,pods", "-n", ns, "-o", "wide"]);
        panic!("{kind}/{name} in {ns} not Ready: {e}\n{obj:?}\n{deps:?}");
    }
}

/// Every owned object of cluster `name` in `ns`: kind/name -> resourceVersion.
fn owned_versions(env: &Env, ns: &str, name: &str) -> BTreeMap<String, String> {
    let sel = format!("app.kubernetes.io/instance={name}");
    let list = env.json(&[
        "get",
        "deployments,services,secrets,configmaps,serviceaccounts,poddisruptionbudgets",
        "-n",
        ns,
        "-l",
        &sel,
    ]);
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                format!(
                    "{}/{}",
                    o["kind"].as_str().unwrap(),
                    o["metadata"]["name"].as_str().unwrap()
                ),
                o["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect()
}

/// The operator's requests in the audit log after byte `from`: (verb resource[/sub] code) ->
/// count.
fn operator_requests(log: &Path, from: u64) -> BTreeMap<String, u64> {
    let text = std::fs::read(log).unwrap();
    let text = String::from_utf8_lossy(&text[(from as usize).min(text.len())..]).to_string();
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Ok(ev) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if ev["user"]["username"] != OPERATOR_SA || ev["stage"] != "ResponseComplete" {
            continue;
        }
        let r = &ev["objectRef"];
        let res = match r["subresource"].as_str() {
            Some(s) => format!("{}/{s}", r["resource"].as_str().unwrap_or("?")),
            None => r["resource"].as_str().unwrap_or("?").to_string(),
        };
        let watch = ev["verb"] == "watch";
        let key = format!(
            "{} {res} {}",
            ev["verb"].as_str().unwrap_or("?"),
            if watch {
                "-".to_string()
            } else {
                ev["responseStatus"]["code"].to_string()
            }
        );
        *out.entry(key).or_insert(0) += 1;
    }
    out
}

fn audit_len(env: &Env) -> u64 {
    env.audit_log()
        .and_then(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .unwrap_or(0)
}

#[test]
fn the_operator_on_a_real_apiserver() {
    let Some(env) = Env::new() else { return };
    crds_server_side_with_cel_and_defaults(&env);

    env.step("kubectl apply -k config/default");
    let kustomize = repo().join("config/default");
    env.k(&["apply", "-k", &kustomize.display().to_string()]);
    env.k(&[
        "wait",
        "--for=condition=Established",
        "crd/wardengateclusters.wardengate.io",
        "crd/gatewaypools.wardengate.io",
    ]);
    // The operator as a process, authenticated as its ServiceAccount: config/rbac's rules only.
    let sa_kubeconfig = env.work.path().join("operator.kubeconfig");
    service_account_kubeconfig(
        &env.kubectl,
        &env.admin,
        SYSTEM_NS,
        "wardengate-operator",
        Duration::from_secs(7200),
        &sa_kubeconfig,
    )
    .unwrap();
    let mut ops = vec![
        Operator::start(&env, "operator-1", &sa_kubeconfig),
        Operator::start(&env, "operator-2", &sa_kubeconfig),
    ];
    env.wait("one operator to hold the Lease", 60, || {
        lease_holder(&env).is_some_and(|h| ops.iter().any(|o| o.identity == h))
    });
    env.step(&format!("leader: {:?}", lease_holder(&env)));

    examples_reach_ready(&env);
    plugin::render_matches_the_operator(&env);
    printer_columns(&env);
    assert_eq!(
        env.kstatus("wgc", "ex-quickstart", "wardengate")
            .split_whitespace()
            .nth(1),
        Some("Current"),
        "kstatus of a Ready cluster"
    );
    scale_subresource(&env);
    ssa_coexists(&env);
    let leader = leader_of(&env, &ops);
    steady_state_writes_nothing(&env, &ops[leader]);
    zone_scheduling(&env);
    drain_respects_the_pdb(&env);
    zone_by_zone_rollout(&env);
    if env.cluster.is_some() {
        // Pod IPs on loopback (kwok's CIDR) only on the harness' cluster.
        let [before, during, after, screen] = sessions::sessions_through_real_gateways(&env);
        eprintln!(
            "status before the rollout:\n{before}\nwhile a pod drains with a session:\n{during}\nafter:\n{after}"
        );
        eprintln!("kubectl wardengate status while a pod drains with a session:\n{screen}");
    }
    stalled_is_failed_for_kstatus(&env);
    garbage_collection(&env);
    pod_overrides_on_real_nodes(&env);
    kubectl_explain(&env);
    operator_metrics_pass_promtool(&env, &ops[leader_of(&env, &ops)]);
    leader_takeover(&env, &mut ops);
    no_forbidden_requests(&env);
    namespaced_install(&env, ops);
    image_policy(&env);

    env.k(&["label", "nodes", "--all", "wardengate.io/pool-"]);
    env.step("done");
}

/// Requests by `user` the RBAC authorizer denied, as `verb group/resource in namespace`.
fn denied_requests(env: &Env, user: &str) -> BTreeSet<String> {
    let Some(log) = env.audit_log() else {
        return BTreeSet::new();
    };
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|ev| {
            ev["user"]["username"] == user
                && ev["annotations"]["authorization.k8s.io/decision"] == "forbid"
        })
        .map(|ev| {
            format!(
                "{} {}/{} in {}",
                ev["verb"].as_str().unwrap_or("?"),
                ev["objectRef"]["apiGroup"].as_str().unwrap_or(""),
                ev["objectRef"]["resource"].as_str().unwrap_or("?"),
                ev["objectRef"]["namespace"].as_str().unwrap_or("(cluster)")
            )
        })
        .collect()
}

/// `kubectl auth can-i ARGS` as admin: `yes` or `no`.
fn can_i(env: &Env, args: &[&str]) -> String {
    let out = Command::new(&env.kubectl)
        .env("KUBECONFIG", &env.admin)
        .args(["auth", "can-i"])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The single-tenant install: `config/namespaced` through an overlay that sets the namespace,
/// as its comment says. Its ServiceAccount may touch Secrets in that namespace only; an operator
/// run as it with only that namespace watched (the cluster-wide ones stopped first: one operator
/// per namespace) reconciles a cluster there to Ready without a single request denied.
fn namespaced_install(env: &Env, ops: Vec<Operator>) {
    const NS: &str = "e2e-tenant";
    let sa = format!("system:serviceaccount:{NS}:wardengate-operator");
    let overlay = env.work.path().join("tenant-overlay");
    std::fs::create_dir_all(&overlay).unwrap();
    let up = "../".repeat(overlay.components().count() - 1);
    let base = repo().join("config/namespaced").canonicalize().unwrap();
    let base = format!("{up}{}", base.display().to_string().trim_start_matches('/'));
    std::fs::write(
        overlay.join("kustomization.yaml"),
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
             namespace: {NS}\nresources:\n  - {base}\n"
        ),
    )
    .unwrap();
    env.step("kubectl apply -k <overlay of config/namespaced with namespace e2e-tenant>");
    env.k(&["apply", "-k", &overlay.display().to_string()]);
    for (args, want) in [
        (vec!["get", "secrets", "-n", NS], "yes"),
        (vec!["create", "secrets", "-n", NS], "yes"),
        (vec!["get", "secrets", "-n", "ex-quickstart"], "no"),
        (vec!["list", "secrets", "--all-namespaces"], "no"),
        (
            vec![
                "list",
                "wardengateclusters.wardengate.io",
                "-n",
                "e2e-drain",
            ],
            "no",
        ),
    ] {
        let mut a = args.clone();
        a.extend(["--as", &sa]);
        assert_eq!(can_i(env, &a), want, "can-i {args:?} as {sa}");
    }
    drop(ops);
    let kubeconfig = env.work.path().join("tenant.kubeconfig");
    service_account_kubeconfig(
        &env.kubectl,
        &env.admin,
        NS,
        "wardengate-operator",
        Duration::from_secs(3600),
        &kubeconfig,
    )
    .unwrap();
    let _op = Operator::start_in(
        env,
        "tenant-operator",
        &kubeconfig,
        NS,
        &["--watch-namespace", NS],
    );
    env.apply_json(
        "tenant",
        &[
            secret(NS, "db"),
            cr("WardengateCluster", NS, "wg", base_spec()),
        ],
    );
    wait_ready(env, "wgc", NS, "wg");
    let denied = denied_requests(env, &sa);
    assert!(
        denied.is_empty(),
        "requests the namespaced Role does not allow: {denied:?}"
    );
    env.step(
        "namespaced operator: Ready in e2e-tenant, Secrets elsewhere out of reach, nothing denied",
    );
}

/// The optional admission policy refuses a WardengateCluster whose `spec.image` is not an
/// allow-listed repository, naming the field, and admits the default image.
fn image_policy(env: &Env) {
    const NS: &str = "e2e-images";
    env.namespace(NS);
    env.k(&[
        "apply",
        "-k",
        &repo().join("config/image-policy").display().to_string(),
    ]);
    let evil = with(
        base_spec(),
        &["image"],
        json!("registry.example/not-wardengate"),
    );
    // The apiserver starts enforcing a new policy within a few seconds.
    let mut refusal = String::new();
    env.wait("the image policy to refuse a foreign image", 60, || {
        let f = env.file(
            "evil.json",
            &cr("WardengateCluster", NS, "evil", evil.clone()).to_string(),
        );
        match env.try_k(&["apply", "-f", &f]) {
            Err(e) => {
                refusal = e;
                true
            }
            Ok(_) => {
                let _ = env.try_k(&["delete", "wgc", "evil", "-n", NS, "--wait=false"]);
                false
            }
        }
    });
    assert!(
        refusal.contains("spec.image") && refusal.contains("registry.example/not-wardengate"),
        "{refusal}"
    );
    // A remote pool chooses its image too: the same policy covers it.
    let evil_pool = with(
        remote_pool_spec(),
        &["image"],
        json!("registry.example/not-wardengate"),
    );
    let f = env.file(
        "evil-pool.json",
        &cr("GatewayPool", NS, "evil", evil_pool).to_string(),
    );
    let e = env
        .try_k(&["apply", "-f", &f])
        .expect_err("a remote pool with a foreign image is refused");
    assert!(
        e.contains("spec.image") && e.contains("registry.example/not-wardengate"),
        "{e}"
    );
    env.apply_json(
        "allowed-image",
        &[
            secret(NS, "db"),
            cr("WardengateCluster", NS, "ok", base_spec()),
        ],
    );
    env.k(&[
        "delete",
        "-k",
        &repo().join("config/image-policy").display().to_string(),
    ]);
    env.step(
        "image policy: a foreign spec.image (cluster or remote pool) refused at admission, the default admitted",
    );
}

fn leader_of(env: &Env, ops: &[Operator]) -> usize {
    let h = lease_holder(env).expect("a lease holder");
    ops.iter()
        .position(|o| o.identity == h)
        .expect("the holder is one of ours")
}

fn crds_server_side_with_cel_and_defaults(env: &Env) {
    env.step("CRDs: kubectl apply --server-side");
    let crds = repo().join("config/crd/crds.yaml");
    env.k(&["apply", "--server-side", "-f", &crds.display().to_string()]);
    env.k(&[
        "wait",
        "--for=condition=Established",
        "crd/wardengateclusters.wardengate.io",
        "crd/gatewaypools.wardengate.io",
    ]);
    let ns = "e2e-cel";
    env.namespace(ns);
    let base = base_spec();
    let pool = |spec: Value| cr("GatewayPool", ns, "p", spec);
    let cluster = |spec: Value| cr("WardengateCluster", ns, "wg", spec);
    // The client-side test cases of crds/tests/crd.rs, now at admission by the apiserver.
    let rejected: Vec<(Value, &str)> = vec![
        (
            cluster(with(base.clone(), &["replicas"], json!(0))),
            "spec.replicas must be at least 1",
        ),
        (
            pool(json!({"clusterRef": {"name": "wg"}, "replicas": 0})),
            "spec.replicas must be at least 1",
        ),
        (
            cluster(with(
                with(base.clone(), &["drain", "timeoutSeconds"], json!(600)),
                &["terminationGracePeriodSeconds"],
                json!(300),
            )),
            "spec.terminationGracePeriodSeconds must not be shorter than spec.drain.timeoutSeconds",
        ),
        (
            pool(
                json!({"clusterRef": {"name": "wg"}, "drain": {"timeoutSeconds": 100}, "terminationGracePeriodSeconds": 10}),
            ),
            "spec.terminationGracePeriodSeconds",
        ),
        (
            cluster(with(
                base.clone(),
                &["redis"],
                json!({"mode": "sentinel", "masterName": "wg"}),
            )),
            "spec.redis: sentinel mode needs sentinels",
        ),
        (
            cluster(with(
                base.clone(),
                &["redis"],
                json!({"mode": "sentinel", "sentinels": ["s1:26379"]}),
            )),
            "masterName",
        ),
        (
            cluster(with(base.clone(), &["redis"], json!({"mode": "cluster"}))),
            "spec.redis.hosts",
        ),
        (
            cluster(with(
                base.clone(),
                &["postgres", "external", "url"],
                json!("postgres://u:secret@db/wg"),
            )),
            "spec.postgres.external.url: credentials must not be inline",
        ),
        (
            cluster(with(base.clone(), &["redis", "password"], json!("secret"))),
            "spec.redis.password: credentials must not be inline",
        ),
        (
            cluster(with(base.clone(), &["postgres"], json!({}))),
            "spec.postgres: set exactly one",
        ),
        (
            cluster(with(
                base.clone(),
                &["postgres", "cloudNativePG"],
                json!({"clusterName": "pg"}),
            )),
            "spec.postgres: set exactly one",
        ),
        (pool(json!({})), wardengate_crds::EXACTLY_ONE_TARGET),
        // Issue 15: a pool names its cluster or a control plane elsewhere, never both.
        (
            pool(with(
                remote_pool_spec(),
                &["clusterRef"],
                json!({"name": "wg"}),
            )),
            wardengate_crds::EXACTLY_ONE_TARGET,
        ),
        (
            pool(with(
                remote_pool_spec(),
                &["controlPlane", "url"],
                json!("https://cp.example.com:8443/agent"),
            )),
            wardengate_crds::URL_FORMAT,
        ),
        (
            pool({
                let mut s = remote_pool_spec();
                s.as_object_mut().unwrap().remove("region");
                s
            }),
            wardengate_crds::REGION_REQUIRED,
        ),
        (
            pool(json!({"clusterRef": {"name": ""}})),
            "spec.clusterRef.name",
        ),
    ];
    for (i, (obj, needle)) in rejected.iter().enumerate() {
        let f = env.file(&format!("bad-{i}.json"), &obj.to_string());
        match env.try_k(&["create", "-f", &f]) {
            Ok(out) => {
                panic!("case {i} was admitted ({out}); expected a rejection naming `{needle}`")
            }
            Err(e) => {
                assert!(
                    e.contains("Invalid value") || e.contains("invalid"),
                    "case {i}: not an admission rejection: {e}"
                );
                assert!(
                    e.contains(needle),
                    "case {i}: `{e}` does not name `{needle}`"
                );
            }
        }
    }
    // Accepted variants of the same rules, and the apiserver's defaulting.
    let ok = [
        cluster(with(base.clone(), &["replicas"], json!(1))),
        pool(json!({"clusterRef": {"name": "wg"}})),
        cr("GatewayPool", ns, "remote", remote_pool_spec()),
    ];
    for (i, obj) in ok.iter().enumerate() {
        let f = env.file(&format!("ok-{i}.json"), &obj.to_string());
        env.k(&["create", "-f", &f]);
    }
    let c = env.json(&["get", "wgc", "wg", "-n", ns]);
    assert_eq!(c["spec"]["replicas"], 1);
    assert_eq!(c["spec"]["drain"]["timeoutSeconds"], 270, "{c}");
    assert_eq!(c["spec"]["topologyKey"], "topology.kubernetes.io/zone");
    assert_eq!(c["spec"]["service"]["type"], "LoadBalancer");
    assert_eq!(c["spec"]["rollout"]["paused"], false);
    env.k(&["delete", "namespace", ns, "--wait=false"]);
    env.step(&format!(
        "CEL: {} bad CRs rejected at admission naming their field; defaults applied",
        rejected.len()
    ));
}

/// Each example in its own namespace (`ex-<file>`), with the Secrets it references; zones mapped
/// onto the cluster's zones; the GatewayPool next to the quickstart cluster it references.
fn examples_reach_ready(env: &Env) {
    env.k(&[
        "label",
        "nodes",
        "--all",
        "wardengate.io/pool=gateways",
        "--overwrite",
    ]);
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    // Pools after clusters: a pool joins the quickstart cluster.
    files.sort_by_key(|p| p.to_string_lossy().contains("pool"));
    let mut waits = Vec::new();
    for f in &files {
        let stem = f.file_stem().unwrap().to_string_lossy().to_string();
        let mut doc: Value = serde_yaml::from_str(&std::fs::read_to_string(f).unwrap()).unwrap();
        let kind = doc["kind"].as_str().unwrap().to_string();
        let remote = doc["spec"]["controlPlane"].is_object();
        let ns = if kind == "GatewayPool" && !remote {
            "ex-quickstart".to_string()
        } else {
            format!("ex-{stem}")
        };
        doc["metadata"]["namespace"] = json!(ns);
        if let Some(zones) = doc["spec"]["zones"].as_array().cloned() {
            let mapped: Vec<&String> = env.zones.iter().take(zones.len()).collect();
            doc["spec"]["zones"] = json!(mapped);
        }
        env.namespace(&ns);
        let mut names = BTreeSet::new();
        referenced_secrets(&doc["spec"], &mut names);
        let mut docs: Vec<Value> = names.iter().map(|n| secret(&ns, n)).collect();
        docs.push(doc.clone());
        env.apply_json(&format!("example-{stem}"), &docs);
        if remote {
            remote_pool_dials_out(env, &ns, &doc);
        }
        let short = if kind == "GatewayPool" { "wgp" } else { "wgc" };
        waits.push((
            short,
            ns,
            doc["metadata"]["name"].as_str().unwrap().to_string(),
        ));
    }
    for (kind, ns, name) in &waits {
        wait_ready(env, kind, ns, name);
        env.step(&format!(
            "kubectl wait --for=condition=Ready {kind}/{name} -n {ns}: ok"
        ));
    }
}

/// Issue 15: the remote example renders nothing until its control plane's version is known,
/// then a Deployment whose pods dial the control plane (the args), with no database or Redis,
/// and a version never newer than the control plane's.
fn remote_pool_dials_out(env: &Env, ns: &str, doc: &Value) {
    let name = doc["metadata"]["name"].as_str().unwrap();
    let deployment = format!("{name}-gw");
    env.wait(
        "the remote pool waits for its control plane's version",
        60,
        || {
            let p = env.json(&["get", "wgp", name, "-n", ns]);
            condition_reason(&p, "Reconciling").as_deref() == Some("WaitingForControlPlane")
        },
    );
    assert!(
        env.try_k(&["get", "deployment", &deployment, "-n", ns])
            .is_err(),
        "nothing is rendered before the control plane's version is known"
    );
    // Ask for a newer version than the control plane runs: held at the control plane's.
    env.k(&[
        "patch",
        "wgp",
        name,
        "-n",
        ns,
        "--type=merge",
        "-p",
        r#"{"spec":{"version":"0.2.0"}}"#,
    ]);
    env.k(&[
        "patch",
        "wgp",
        name,
        "-n",
        ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"controlPlaneVersion":"0.1.0"}}"#,
    ]);
    env.wait("the remote pool's Deployment", 60, || {
        env.try_k(&["get", "deployment", &deployment, "-n", ns])
            .is_ok()
    });
    let d = env.json(&["get", "deployment", &deployment, "-n", ns]);
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    let cp = &doc["spec"]["controlPlane"];
    assert_eq!(
        c["args"],
        json!([
            "serve",
            "--role",
            "gateway",
            "--control-plane",
            cp["url"],
            "--join-token-file",
            "/etc/wardengate/join/token",
            "--region",
            doc["spec"]["region"],
            "--public-address",
            doc["spec"]["publicAddress"],
            "--agent-state-dir",
            "/var/lib/wardengate/agent",
            "--control-plane-ca",
            "/etc/wardengate/control-plane-ca/ca.crt"
        ]),
        "{d}"
    );
    assert!(
        c["image"].as_str().unwrap().ends_with(":0.1.0"),
        "held at the control plane's: {d}"
    );
    let names: Vec<&str> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    for gone in ["WG_DATABASE_URL", "WG_REDIS_URL", "WG_INTERNAL_KEY_FILE"] {
        assert!(
            !names.contains(&gone),
            "{gone} in a remote gateway: {names:?}"
        );
    }
    env.wait("VersionHeld, naming both versions", 60, || {
        let p = env.json(&["get", "wgp", name, "-n", ns]);
        condition_reason(&p, "Reconciling").as_deref() == Some("VersionHeld")
    });
    let p = env.json(&["get", "wgp", name, "-n", ns]);
    assert_eq!(
        p["status"]["controlPlaneVersion"], "0.1.0",
        "the operator leaves it alone: {p}"
    );
    // Back to the example's version, which the control plane runs: the pool reaches Ready.
    env.k(&[
        "patch",
        "wgp",
        name,
        "-n",
        ns,
        "--type=merge",
        "-p",
        &json!({"spec": {"version": doc["spec"]["version"]}}).to_string(),
    ]);
    env.step(&format!(
        "remote GatewayPool {ns}/{name}: waits for status.controlPlaneVersion, renders `wardengate serve --role gateway --control-plane {}` with no database or Redis, holds 0.2.0 at the control plane's 0.1.0",
        cp["url"].as_str().unwrap()
    ));
}

fn condition_reason(obj: &Value, type_: &str) -> Option<String> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .and_then(|c| c["reason"].as_str().map(String::from))
}

fn printer_columns(env: &Env) {
    let out = env.k(&["get", "wgc,wgp", "-A"]);
    env.step(&format!("kubectl get wgc,wgp -A:\n{out}"));
    let header = out.lines().next().unwrap();
    for col in ["READY", "REPLICAS", "SESSIONS", "VERSION", "PHASE", "AGE"] {
        assert!(header.contains(col), "column {col} missing: {header}");
    }
    let row = out
        .lines()
        .find(|l| l.starts_with("ex-quickstart") && l.contains("wardengatecluster"))
        .unwrap_or_else(|| panic!("no quickstart row:\n{out}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    // kwok pods have no gateway behind them here: nobody answers, 0 sessions.
    assert_eq!(&cells[2..7], ["True", "3", "0", "0.1.0", "Ready"], "{row}");
    let pool = out
        .lines()
        .find(|l| l.contains("gatewaypool.wardengate.io/us-east"))
        .unwrap_or_else(|| panic!("no pool row:\n{out}"));
    assert!(pool.contains("True") && pool.contains(" 2 "), "{pool}");
}

fn scale_subresource(env: &Env) {
    let ns = "ex-quickstart";
    let scale = env.json(&["get", "wgc", "wardengate", "-n", ns, "--subresource=scale"]);
    assert_eq!(scale["spec"]["replicas"], 3, "{scale}");
    assert_eq!(scale["status"]["replicas"], 3, "{scale}");
    assert!(
        scale["status"]["selector"]
            .as_str()
            .unwrap()
            .contains("app.kubernetes.io/instance=wardengate"),
        "{scale}"
    );
    env.k(&["scale", "wgc", "wardengate", "-n", ns, "--replicas", "5"]);
    env.wait("5 ready replicas after kubectl scale", 180, || {
        let c = env.json(&["get", "wgc", "wardengate", "-n", ns]);
        c["status"]["readyReplicas"] == 5 && condition(&c, "Ready").as_deref() == Some("True")
    });
    let d = env.json(&["get", "deployment", "wardengate-cp", "-n", ns]);
    assert_eq!(d["spec"]["replicas"], 5);
    env.step("kubectl scale wgc --replicas 5: reconciled to 5 ready");
}

fn ssa_coexists(env: &Env) {
    let ns = "ex-quickstart";
    env.k(&[
        "label",
        "deployment",
        "wardengate-cp",
        "-n",
        ns,
        "e2e.example/added-by=kubectl",
    ]);
    env.k(&[
        "annotate",
        "deployment",
        "wardengate-cp",
        "-n",
        ns,
        "e2e.example/note=kept",
    ]);
    // A field the operator owns, changed by another manager: restored.
    env.k(&[
        "scale",
        "deployment",
        "wardengate-cp",
        "-n",
        ns,
        "--replicas",
        "1",
    ]);
    env.wait("the operator to restore spec.replicas", 120, || {
        env.json(&["get", "deployment", "wardengate-cp", "-n", ns])["spec"]["replicas"] == 5
    });
    // A reconcile with nothing to restore keeps the other manager's fields.
    env.k(&[
        "annotate",
        "wgc",
        "wardengate",
        "-n",
        ns,
        "e2e.example/nudge=ssa",
        "--overwrite",
    ]);
    env.wait("Ready again", 120, || {
        condition(&env.json(&["get", "wgc", "wardengate", "-n", ns]), "Ready").as_deref()
            == Some("True")
    });
    let d = env.json(&[
        "get",
        "deployment",
        "wardengate-cp",
        "-n",
        ns,
        "--show-managed-fields",
    ]);
    assert_eq!(d["metadata"]["labels"]["e2e.example/added-by"], "kubectl");
    assert_eq!(d["metadata"]["annotations"]["e2e.example/note"], "kept");
    let managers: Vec<&str> = d["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["manager"].as_str())
        .collect();
    assert!(
        managers.contains(&"wardengate-operator"),
        "managers: {managers:?}"
    );
    env.step(&format!(
        "SSA: kubectl's label/annotation kept, spec.replicas restored; managers {managers:?}"
    ));
}

fn steady_state_writes_nothing(env: &Env, leader: &Operator) {
    let ns = "ex-quickstart";
    // Settled: nothing owned changed for 5 s (the Deployment controller finished the scale-up).
    let mut last = owned_versions(env, ns, "wardengate");
    let mut since = Instant::now();
    env.wait("the owned objects to settle", 120, || {
        let now = owned_versions(env, ns, "wardengate");
        if now != last {
            last = now;
            since = Instant::now();
        }
        since.elapsed() >= Duration::from_secs(5)
    });
    let before = owned_versions(env, ns, "wardengate");
    assert!(before.len() >= 6, "owned objects: {before:?}");
    let status_before = env.json(&["get", "wgc", "wardengate", "-n", ns])["status"].clone();
    let from = audit_len(env);
    let n = 5;
    for i in 0..n {
        let seen = leader.reconciles();
        env.k(&[
            "annotate",
            "wgc",
            "wardengate",
            "-n",
            ns,
            &format!("e2e.example/nudge=steady-{i}"),
            "--overwrite",
        ]);
        env.wait("a reconcile of the nudged cluster", 60, || {
            leader.reconciles() > seen
        });
    }
    let after = owned_versions(env, ns, "wardengate");
    assert_eq!(before, after, "owned objects changed at steady state");
    let status_after = env.json(&["get", "wgc", "wardengate", "-n", ns])["status"].clone();
    assert_eq!(
        status_before, status_after,
        "status rewritten at steady state"
    );
    if let Some(log) = env.audit_log() {
        // Audit batches flush every second.
        std::thread::sleep(Duration::from_millis(1500));
        let reqs = operator_requests(log, from);
        env.step(&format!(
            "steady state: {n} reconciles, the apiserver saw from the operator: {reqs:#?}"
        ));
        let writes: Vec<_> = reqs
            .keys()
            .filter(|k| {
                let verb = k.split(' ').next().unwrap();
                matches!(verb, "create" | "update" | "patch" | "delete") && !k.contains(" leases ")
            })
            .collect();
        assert!(writes.is_empty(), "writes at steady state: {writes:?}");
    }
    env.step(&format!(
        "steady state: {n} reconciles, {} owned objects' resourceVersions unchanged",
        before.len()
    ));
}

fn zone_scheduling(env: &Env) {
    // Pinned zones: the three-zone example, one pod per zone, each in its Deployment's zone.
    let p = pods(env, "ex-three-zone-ha", "wardengate");
    let zones: BTreeSet<&str> = p.iter().map(|x| x.2.as_str()).collect();
    assert_eq!(p.len(), 3, "{p:?}");
    assert_eq!(zones.len(), 3, "pods not one per zone: {p:?}");
    for (pod, _, zone, _) in &p {
        assert!(
            pod.starts_with(&format!("wardengate-cp-{zone}-")),
            "{pod} in zone {zone}"
        );
    }
    // No zones: the spread constraint (quickstart scaled to 5, redis-cluster with 6).
    for (ns, want) in [("ex-quickstart", 5), ("ex-redis-cluster", 6)] {
        let p = pods(env, ns, "wardengate");
        assert_eq!(p.len(), want, "{p:?}");
        let mut per: BTreeMap<&str, usize> = BTreeMap::new();
        for x in &p {
            *per.entry(x.2.as_str()).or_default() += 1;
        }
        let (lo, hi) = (
            per.values().min().copied().unwrap_or(0),
            per.values().max().copied().unwrap_or(0),
        );
        assert!(per.len() == 3 && hi - lo <= 1, "{ns}: {per:?}");
    }
    env.step("scheduling: one pod per pinned zone; unpinned pods spread with skew <= 1");
}

fn drain_respects_the_pdb(env: &Env) {
    let ns = "e2e-drain";
    env.namespace(ns);
    let spec = with(base_spec(), &["replicas"], json!(2));
    env.apply_json(
        "drain",
        &[secret(ns, "db"), cr("WardengateCluster", ns, "wg", spec)],
    );
    wait_ready(env, "wgc", ns, "wg");
    let p = pods(env, ns, "wg");
    let nodes: BTreeSet<String> = p.iter().map(|x| x.1.clone()).collect();
    assert_eq!(p.len(), 2);
    // Drain every node holding a gateway pod at once: only the PDB keeps one serving.
    let min_ready = Arc::new(AtomicI64::new(i64::MAX));
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (min_ready, stop) = (min_ready.clone(), stop.clone());
        let (kubectl, admin) = (env.kubectl.clone(), env.admin.clone());
        std::thread::spawn(move || {
            let sel = "app.kubernetes.io/instance=wg";
            while !stop.load(Ordering::SeqCst) {
                if let Ok(out) = kubectl_ok(
                    &kubectl,
                    &admin,
                    &["get", "pods", "-n", "e2e-drain", "-l", sel, "-o", "json"],
                ) {
                    let v: Value = serde_json::from_str(&out).unwrap();
                    let ready = v["items"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .filter(|p| {
                            p["metadata"]["deletionTimestamp"].is_null()
                                && condition(p, "Ready").as_deref() == Some("True")
                        })
                        .count() as i64;
                    min_ready.fetch_min(ready, Ordering::SeqCst);
                }
                // A sampling interval, not a wait: keeps kubectl from hogging the two cores.
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let started = Instant::now();
    let mut args = vec!["drain"];
    args.extend(nodes.iter().map(String::as_str));
    args.extend([
        "--ignore-daemonsets",
        "--delete-emptydir-data",
        "--timeout=240s",
    ]);
    let out = env.try_k(&args);
    stop.store(true, Ordering::SeqCst);
    watcher.join().unwrap();
    let mut uncordon = vec!["uncordon"];
    uncordon.extend(nodes.iter().map(String::as_str));
    env.k(&uncordon);
    let out = out.unwrap_or_else(|e| panic!("kubectl drain failed (deadlock?): {e}"));
    assert!(out.contains("evicted"), "{out}");
    let min = min_ready.load(Ordering::SeqCst);
    assert!(
        min >= 1,
        "the drain took both replicas at once (min ready {min})"
    );
    let after = pods(env, ns, "wg");
    assert!(
        after.iter().all(|x| !nodes.contains(&x.1)),
        "pods still on drained nodes"
    );
    env.step(&format!(
        "drain of {nodes:?} through the eviction API and PDB: done in {:.0?}, never fewer than {min} ready",
        started.elapsed()
    ));
}

fn zone_by_zone_rollout(env: &Env) {
    let ns = "ex-three-zone-ha";
    let image_of = |d: &Value| -> String {
        d["spec"]["template"]["spec"]["containers"][0]["image"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let complete = |d: &Value| {
        let want = &d["spec"]["replicas"];
        let s = &d["status"];
        s["observedGeneration"] == d["metadata"]["generation"]
            && &s["updatedReplicas"] == want
            && &s["readyReplicas"] == want
            && &s["availableReplicas"] == want
            && &s["replicas"] == want
    };
    let deployments = || -> BTreeMap<String, Value> {
        env.json(&[
            "get",
            "deployments",
            "-n",
            ns,
            "-l",
            "app.kubernetes.io/instance=wardengate",
        ])["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                (
                    d["metadata"]["name"].as_str().unwrap().to_string(),
                    d.clone(),
                )
            })
            .collect()
    };
    let zones: Vec<String> = env.zones.iter().take(3).cloned().collect();
    let dname = |z: &str| format!("wardengate-cp-{z}");
    let old = image_of(&deployments()[&dname(&zones[0])]);
    // Paused (kubectl wardengate pause): the version bump is accepted but no Deployment changes.
    let out = plugin::ok(env, &["pause", "wardengate", "-n", ns]);
    assert_eq!(out, "wardengatecluster.wardengate.io/wardengate paused\n");
    let c = env.json(&["get", "wgc", "wardengate", "-n", ns]);
    assert_eq!(c["spec"]["rollout"]["paused"], true);
    env.k(&[
        "patch",
        "wgc",
        "wardengate",
        "-n",
        ns,
        "--type=merge",
        "-p",
        r#"{"spec":{"version":"0.2.0"}}"#,
    ]);
    env.wait("the paused rollout to be reported", 60, || {
        let c = env.json(&["get", "wgc", "wardengate", "-n", ns]);
        c["status"]["observedGeneration"] == c["metadata"]["generation"]
            && c["status"]["phase"] == "Paused"
    });
    let ks = env.kstatus("wgc", ns, "wardengate");
    assert_eq!(ks.split_whitespace().nth(1), Some("InProgress"), "{ks}");
    for d in deployments().values() {
        assert_eq!(image_of(d), old, "a paused rollout changed a Deployment");
    }
    // `rollout status` waits on a paused rollout and gives up at its timeout, non-zero.
    let t0 = Instant::now();
    let out = plugin::run(
        env,
        &[
            "rollout",
            "status",
            "wardengate",
            "-n",
            ns,
            "--timeout",
            "3s",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("timed out after 3s") && err.contains("paused"),
        "{err}"
    );
    assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
    env.step(&format!(
        "rollout paused: no Deployment changed; kstatus {ks}; kubectl wardengate rollout status: exit 1, {}",
        err.trim()
    ));
    // Unpaused while the example's Patroni REST health URL answers nothing (no Patroni here):
    // the operator holds the rollout, naming the reason, and changes no Deployment.
    let out = plugin::ok(env, &["resume", "wardengate", "-n", ns]);
    assert_eq!(out, "wardengatecluster.wardengate.io/wardengate resumed\n");
    let again = plugin::ok(env, &["resume", "wardengate", "-n", ns, "-o", "json"]);
    let again: Value = serde_json::from_str(&again).unwrap();
    assert_eq!(
        again["spec"]["rollout"]["paused"], false,
        "-o json prints the cluster"
    );
    env.wait(
        "the rollout to be held on the Patroni health URL",
        60,
        || {
            let c = env.json(&["get", "wgc", "wardengate", "-n", ns]);
            c["status"]["observedGeneration"] == c["metadata"]["generation"]
                && c["status"]["conditions"].as_array().is_some_and(|cs| {
                    cs.iter()
                        .any(|x| x["type"] == "Reconciling" && x["reason"] == "DatabaseUnhealthy")
                })
        },
    );
    for d in deployments().values() {
        assert_eq!(image_of(d), old, "a held rollout changed a Deployment");
    }
    env.step("rollout held while spec.postgres.patroni.restHealthUrl does not answer 2xx");
    // A healthy primary (an HTTP endpoint answering 200, as Patroni's /primary does): zone by zone.
    let patroni = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let health_url = format!(
        "http://127.0.0.1:{}/primary",
        patroni.local_addr().unwrap().port()
    );
    std::thread::spawn(move || {
        for conn in patroni.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut buf = [0u8; 1024];
            let _ = std::io::Read::read(&mut conn, &mut buf);
            let _ = std::io::Write::write_all(
                &mut conn,
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
            );
        }
    });
    env.k(&[
        "patch",
        "wgc",
        "wardengate",
        "-n",
        ns,
        "--type=merge",
        "-p",
        &json!({"spec": {"postgres": {"patroni": {"restHealthUrl": health_url}}}}).to_string(),
    ]);
    // `rollout status` follows the rollout from here to the end.
    let waiter = plugin::spawn(
        env,
        &[
            "rollout",
            "status",
            "wardengate",
            "-n",
            ns,
            "--timeout",
            "300s",
        ],
    );
    let mut order: Vec<String> = Vec::new();
    let mut saw_in_progress = false;
    env.wait("the rollout through every zone", 300, || {
        let ds = deployments();
        for (i, z) in zones.iter().enumerate() {
            let d = &ds[&dname(z)];
            if image_of(d) != old && !order.contains(z) {
                // Zone i changed: every earlier zone was already updated and ready.
                for earlier in &zones[..i] {
                    let e = &ds[&dname(earlier)];
                    assert!(
                        image_of(e) != old && complete(e),
                        "zone {z} changed before zone {earlier} was updated and ready"
                    );
                }
                order.push(z.clone());
            }
        }
        if !saw_in_progress && order.len() < zones.len() {
            saw_in_progress = env.kstatus("wgc", ns, "wardengate").contains(" InProgress");
        }
        order.len() == zones.len() && ds.values().all(complete)
    });
    assert_eq!(order, zones, "zones changed out of order");
    wait_ready(env, "wgc", ns, "wardengate");
    let out = waiter.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    let last = stdout.lines().last().unwrap_or_default();
    assert_eq!(
        last,
        r#"wardengatecluster "wardengate" successfully rolled out: version 0.2.0, 3/3 replicas ready"#,
        "{stdout}"
    );
    assert!(
        stdout.lines().count() > 1 && stdout.contains("waiting for"),
        "rollout status showed no progress: {stdout}"
    );
    env.step(&format!(
        "kubectl wardengate rollout status: waited through the zones ({} progress lines), exit 0",
        stdout.lines().count() - 1
    ));
    let screen = plugin::ok(env, &["status", "wardengate", "-n", ns]);
    for z in &zones {
        let r = plugin::row(&screen, z);
        assert_eq!(r[1..5], ["1", "1", "1", "0.2.0"], "zone {z}: {screen}");
    }
    assert_eq!(plugin::row(&screen, "Phase:")[1], "Ready", "{screen}");
    let pods = screen
        .lines()
        .filter(|l| l.trim_start().starts_with("wardengate-cp-"))
        .count();
    assert_eq!(pods, 3, "{screen}");
    let c = env.json(&["get", "wgc", "wardengate", "-n", ns]);
    assert_eq!(c["status"]["version"], "0.2.0");
    assert!(
        saw_in_progress,
        "kstatus never reported InProgress during the rollout"
    );
    env.step(&format!(
        "rollout zone by zone in order {order:?}; kstatus InProgress meanwhile, Current after"
    ));
}

fn stalled_is_failed_for_kstatus(env: &Env) {
    let ns = "e2e-stalled";
    env.namespace(ns);
    env.apply_json("stalled", &[cr("WardengateCluster", ns, "wg", base_spec())]);
    env.wait("Stalled=True (Secret missing)", 120, || {
        condition(&env.json(&["get", "wgc", "wg", "-n", ns]), "Stalled").as_deref() == Some("True")
    });
    let ks = env.kstatus("wgc", ns, "wg");
    assert_eq!(ks.split_whitespace().nth(1), Some("Failed"), "{ks}");
    let t0 = Instant::now();
    let out = plugin::run(
        env,
        &["rollout", "status", "wg", "-n", ns, "--timeout", "120s"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(r#"rollout of wardengatecluster "wg" failed: SecretNotFound"#),
        "{err}"
    );
    assert!(
        t0.elapsed() < Duration::from_secs(30),
        "it waited for the timeout"
    );
    env.step(&format!(
        "Stalled cluster: kstatus {ks}; kubectl wardengate rollout status: exit 1 at once, {}",
        err.trim()
    ));
}

fn garbage_collection(env: &Env) {
    let ns = "ex-redis-cluster";
    let owned = owned_versions(env, ns, "wardengate");
    assert!(owned.len() >= 6, "{owned:?}");
    env.k(&["delete", "wgc", "wardengate", "-n", ns, "--wait=true"]);
    env.wait(
        "the garbage collector to remove every owned object",
        120,
        || {
            owned_versions(env, ns, "wardengate").is_empty()
                && pods(env, ns, "wardengate").is_empty()
        },
    );
    env.step(&format!(
        "GC: {} owned objects and their pods removed",
        owned.len()
    ));
}

fn leader_takeover(env: &Env, ops: &mut [Operator]) {
    let i = leader_of(env, ops);
    let old = ops[i].identity.clone();
    let killed = Instant::now();
    ops[i].svc.kill9();
    let other = ops[1 - i].identity.clone();
    env.wait("the standby to take the Lease", 90, || {
        lease_holder(env).as_deref() == Some(other.as_str())
    });
    let took = killed.elapsed();
    // The new leader reconciles: a deleted Service comes back.
    let ns = "ex-quickstart";
    env.k(&["delete", "service", "wardengate", "-n", ns]);
    env.wait("the new leader to restore the Service", 90, || {
        env.try_k(&["get", "service", "wardengate", "-n", ns])
            .is_ok()
    });
    env.step(&format!(
        "leader {old} SIGKILLed; {other} took the Lease after {took:.1?} and reconciles"
    ));
}

fn no_forbidden_requests(env: &Env) {
    let Some(log) = env.audit_log() else { return };
    std::thread::sleep(Duration::from_millis(1500));
    let reqs = operator_requests(log, 0);
    // Denied by RBAC, as the authorizer decided (a 403 from admission, such as creating an
    // Event in a namespace being deleted, is not a missing permission).
    let text = std::fs::read_to_string(log).unwrap();
    let allowed = text
        .lines()
        .filter(|l| {
            l.contains(OPERATOR_SA) && l.contains(r#""authorization.k8s.io/decision":"allow""#)
        })
        .count();
    assert!(
        allowed > 0,
        "the audit log records no authorization decisions"
    );
    let denied: BTreeSet<String> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|ev| {
            ev["user"]["username"] == OPERATOR_SA
                && ev["annotations"]["authorization.k8s.io/decision"] == "forbid"
        })
        .map(|ev| {
            format!(
                "{} {}/{} in {}",
                ev["verb"].as_str().unwrap_or("?"),
                ev["objectRef"]["apiGroup"].as_str().unwrap_or(""),
                ev["objectRef"]["resource"].as_str().unwrap_or("?"),
                ev["objectRef"]["namespace"].as_str().unwrap_or("(cluster)")
            )
        })
        .collect();
    assert!(
        denied.is_empty(),
        "requests config/rbac does not allow: {denied:?}"
    );
    let total: u64 = reqs.values().sum();
    let other_403: u64 = reqs
        .iter()
        .filter(|(k, _)| k.ends_with(" 403"))
        .map(|(_, n)| n)
        .sum();
    env.step(&format!(
        "RBAC: {total} requests as {OPERATOR_SA}, none denied by the authorizer ({other_403} refused by admission)"
    ));
}

/// Issue 13 item 5 with the real scheduler and admission: a pool pinned by nodeSelector and a
/// toleration lands only on the tainted nodes of its node pool (and the control plane, without
/// the toleration, never does); a cluster's priorityClassName reaches its pods' priority; an
/// `env` entry naming an operator variable is refused by the apiserver's CEL rule.
fn pod_overrides_on_real_nodes(env: &Env) {
    const LABEL: &str = "e2e.wardengate.io/node-pool";
    const TAINT: &str = "e2e.wardengate.io/dedicated";
    let ns = "e2e-placement";
    env.namespace(ns);
    // One node in each of two zones becomes the dedicated, tainted "edge" pool.
    let nodes = env.json(&["get", "nodes"]);
    let mut dedicated = Vec::new();
    for zone in &env.zones[..2] {
        let n = nodes["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["metadata"]["labels"]["topology.kubernetes.io/zone"] == zone.as_str())
            .unwrap()["metadata"]["name"]
            .as_str()
            .unwrap()
            .to_string();
        env.k(&["label", "node", &n, &format!("{LABEL}=edge"), "--overwrite"]);
        env.k(&[
            "taint",
            "node",
            &n,
            &format!("{TAINT}=edge:NoSchedule"),
            "--overwrite",
        ]);
        dedicated.push(n);
    }
    env.apply_json(
        "priority-class",
        &[
            json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                 "metadata": {"name": "e2e-wardengate-critical"}, "value": 1000000,
                 "description": "Wardengate control plane (e2e)"}),
        ],
    );
    let refused = env
        .try_k(&[
            "apply",
            "-f",
            &env.file(
                "env-collision.json",
                &cr(
                    "WardengateCluster",
                    ns,
                    "bad",
                    with(
                        base_spec(),
                        &["env"],
                        json!([{"name": "WG_ROLE", "value": "all"}]),
                    ),
                )
                .to_string(),
            ),
        ])
        .expect_err("an env entry naming WG_ROLE is refused at admission");
    assert!(refused.contains("spec.env"), "{refused}");
    let cluster = with(
        with(
            base_spec(),
            &["priorityClassName"],
            json!("e2e-wardengate-critical"),
        ),
        &["env"],
        json!([{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}]),
    );
    let pool = json!({
        "clusterRef": {"name": "wardengate"},
        "replicas": 4,
        "nodeSelector": {LABEL: "edge"},
        "tolerations": [{"key": TAINT, "operator": "Equal", "value": "edge", "effect": "NoSchedule"}],
        "podLabels": {"team": "edge"},
    });
    env.apply_json(
        "placement",
        &[
            secret(ns, "db"),
            cr("WardengateCluster", ns, "wardengate", cluster),
            cr("GatewayPool", ns, "edge", pool),
        ],
    );
    wait_ready(env, "wgc", ns, "wardengate");
    wait_ready(env, "wgp", ns, "edge");
    let listed = |sel: &str| -> Vec<Value> {
        env.json(&["get", "pods", "-n", ns, "-l", sel])["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .cloned()
            .collect()
    };
    let gateways = listed("wardengate.io/pool=edge,app.kubernetes.io/component=gateway");
    assert_eq!(gateways.len(), 4);
    let mut used = BTreeSet::new();
    for p in &gateways {
        let node = p["spec"]["nodeName"].as_str().unwrap().to_string();
        assert!(
            dedicated.contains(&node),
            "gateway on {node}, not {dedicated:?}"
        );
        assert_eq!(p["metadata"]["labels"]["team"], "edge");
        used.insert(node);
    }
    assert_eq!(used.len(), 2, "spread over both dedicated nodes: {used:?}");
    let cp =
        listed("app.kubernetes.io/instance=wardengate,app.kubernetes.io/component=control-plane");
    assert_eq!(cp.len(), 3);
    for p in &cp {
        let node = p["spec"]["nodeName"].as_str().unwrap();
        assert!(
            !dedicated.iter().any(|d| d == node),
            "control plane on tainted {node}"
        );
        assert_eq!(p["spec"]["priorityClassName"], "e2e-wardengate-critical");
        assert_eq!(
            p["spec"]["priority"], 1000000,
            "admission resolved the class"
        );
        let env_names: Vec<&str> = p["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        assert!(env_names.contains(&"HTTPS_PROXY"), "{env_names:?}");
    }
    env.step(
        "placement: 4 pool pods on the 2 tainted edge nodes only, 3 control-plane pods off them with priority 1000000",
    );
    env.k(&["delete", "namespace", ns, "--wait=false"]);
    for n in &dedicated {
        env.k(&["taint", "node", n, &format!("{TAINT}-")]);
        env.k(&["label", "node", n, &format!("{LABEL}-")]);
    }
    env.k(&["delete", "priorityclass", "e2e-wardengate-critical"]);
}

/// `kubectl explain` prints the CRD descriptions: what a field does and its default.
fn kubectl_explain(env: &Env) {
    for (field, needles) in [
        ("wgc.spec.replicas", &["Default: 3"][..]),
        (
            "wgc.spec.drain.timeoutSeconds",
            &["preStop", "Default: 270"][..],
        ),
        ("wgc.spec.terminationGracePeriodSeconds", &["300 s"][..]),
        (
            "wgc.spec.priorityClassName",
            &["PriorityClass", "Default"][..],
        ),
        ("wgc.spec.env", &["WG_ROLE", "refused"][..]),
        ("wgp.spec.nodeSelector", &["node pool", "Default: none"][..]),
        ("wgp.spec.replicas", &["Default: 2"][..]),
    ] {
        let out = env.k(&["explain", field]);
        let flat = out.split_whitespace().collect::<Vec<_>>().join(" ");
        for n in needles {
            assert!(
                flat.contains(n),
                "kubectl explain {field} lacks {n:?}:\n{out}"
            );
        }
    }
    env.step("kubectl explain wgc.spec.*/wgp.spec.*: descriptions with defaults");
}

/// `promtool check metrics` (Debian package `prometheus`) on the leader's real `/metrics`, after
/// it reconciled every example: no lint finding at all (the operator has no exception).
fn operator_metrics_pass_promtool(env: &Env, leader: &Operator) {
    use std::io::Write;
    let (_, body) = wardengate_testkit::http::get(leader.probe_port, "/metrics").unwrap();
    assert!(body.contains("wg_operator_reconciles_total"), "{body}");
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool: scripts/install-deps.sh installs the Debian package prometheus");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.trim().is_empty(),
        "promtool check metrics: {text}"
    );
    env.step("promtool check metrics on the operator's /metrics: clean");
}
