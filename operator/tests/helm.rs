//! The Helm charts under `charts/`, with the real tools: `helm lint --strict`; `helm template`
//! with default and example values, every object strict-valid against the Kubernetes 1.37
//! schemas (kubernetes-validate offline, then server-side dry-run with strict field validation
//! against a real apiserver); the operator chart's RBAC equal to `config/rbac*` and its CRDs
//! and rules equal to the repository's; the fleet chart rendering what the operator renders
//! from the same input; `helm install`, `helm upgrade` and `helm test` into the real control
//! plane of the harness (etcd, kube-apiserver, controller-manager, scheduler, kwok nodes).
//!
//! ```text
//! ./task kube-tools && cargo test -p wardengate-operator --features services --test helm -- --nocapture
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wardengate_testkit::kube::{kubectl_ok, tool};
use wardengate_testkit::{KubeCluster, wait_until};

mod support;

use support::schema::{KUBE_VERSION, kubernetes_validate};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn chart(name: &str) -> String {
    repo().join("charts").join(name).display().to_string()
}

/// Runs helm; Ok(stdout) or Err(stdout + stderr).
fn try_helm(args: &[&str], kubeconfig: Option<&Path>) -> Result<String, String> {
    let mut cmd = Command::new(tool("helm").expect("helm: run ./task kube-tools"));
    cmd.args(args);
    // Keep helm's caches and config out of $HOME.
    let home = std::env::temp_dir().join("wardengate-helm-home");
    cmd.env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"));
    if let Some(k) = kubeconfig {
        cmd.env("KUBECONFIG", k);
    }
    let out = cmd.output().expect("helm runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("{text}{}", String::from_utf8_lossy(&out.stderr)))
    }
}

fn helm(args: &[&str], kubeconfig: Option<&Path>) -> String {
    try_helm(args, kubeconfig).unwrap_or_else(|e| panic!("helm {args:?}: {e}"))
}

/// `helm template` of `chart` as `release` in `ns` with `extra` flags, as parsed objects.
fn template(chart_name: &str, release: &str, ns: &str, extra: &[&str]) -> Vec<Value> {
    let c = chart(chart_name);
    let mut args = vec![
        "template",
        release,
        &c,
        "-n",
        ns,
        "--kube-version",
        KUBE_VERSION,
    ];
    args.extend(extra);
    docs(&helm(&args, None))
}

fn docs(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .filter_map(|d| {
            let v: Value = serde::Deserialize::deserialize(d).unwrap();
            (!v.is_null()).then_some(v)
        })
        .collect()
}

fn find<'a>(objs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objs.iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| {
            let all: Vec<String> = objs
                .iter()
                .map(|o| format!("{}/{}", o["kind"], o["metadata"]["name"]))
                .collect();
            panic!("no {kind}/{name} in {all:?}")
        })
}

fn yaml_file(path: &str) -> Vec<Value> {
    docs(&std::fs::read_to_string(repo().join(path)).unwrap())
}

fn values_file(chart_name: &str) -> String {
    repo()
        .join("charts")
        .join(chart_name)
        .join("values-example.yaml")
        .display()
        .to_string()
}

#[test]
fn charts_pass_helm_lint_strict_with_default_and_example_values() {
    for c in ["wardengate-operator", "wardengate"] {
        let path = chart(c);
        let out = helm(&["lint", "--strict", &path], None);
        assert!(out.contains("0 chart(s) failed"), "{out}");
        let ex = values_file(c);
        let out = helm(&["lint", "--strict", &path, "-f", &ex], None);
        assert!(out.contains("0 chart(s) failed"), "{out}");
    }
}

/// `values.schema.json` turns bad values into an error at install time, naming the value.
#[test]
fn bad_values_fail_before_anything_is_installed() {
    let cases = [
        ("wardengate-operator", "replicaCount=two", "/replicaCount"),
        ("wardengate-operator", "rbac.scope=global", "/rbac/scope"),
        ("wardengate-operator", "logFormat=xml", "/logFormat"),
        ("wardengate-operator", "replicaCuont=2", "replicaCuont"),
        ("wardengate", "env[0].name=WG_ROLE", "/env/0/name"),
        ("wardengate", "service.type=NodePort", "/service/type"),
        (
            "wardengate",
            "drain.timeoutSeconds=-1",
            "/drain/timeoutSeconds",
        ),
        (
            "wardengate",
            "redis.url=redis://user:pw@r:6379",
            "/redis/url",
        ),
        ("wardengate", "recordings.url=ftp://x", "/recordings/url"),
    ];
    for (c, set, needle) in cases {
        let path = chart(c);
        let err = try_helm(
            &[
                "template",
                "t",
                &path,
                "--kube-version",
                KUBE_VERSION,
                "--set",
                set,
            ],
            None,
        )
        .expect_err(set);
        assert!(err.contains(needle), "{set}: {err}");
    }
    // Template-level checks for what a schema cannot express.
    let path = chart("wardengate");
    for (sets, needle) in [
        (
            vec!["redis.urlSecretRef.name=r", "redis.urlSecretRef.key=url"],
            "exactly one of redis.url or redis.urlSecretRef",
        ),
        (
            vec!["terminationGracePeriodSeconds=100"],
            "must not be shorter than drain.timeoutSeconds",
        ),
    ] {
        let mut args = vec!["template", "t", &path, "--kube-version", KUBE_VERSION];
        for s in &sets {
            args.extend(["--set", s]);
        }
        let err = try_helm(&args, None).expect_err(needle);
        assert!(err.contains(needle), "{sets:?}: {err}");
    }
}

/// The operator chart grants exactly config/rbac's rules (cluster scope) or
/// config/rbac-namespaced's (namespace scope), which the real_cluster suite proves sufficient
/// and the controller test proves necessary; the leader-election Role is the same in both.
#[test]
fn operator_chart_rbac_is_config_rbac() {
    let rules = |objs: &[Value], kind: &str, name: &str| find(objs, kind, name)["rules"].clone();
    let cluster = template("wardengate-operator", "wgo", "wardengate-system", &[]);
    let want = yaml_file("config/rbac/role.yaml");
    assert_eq!(
        rules(&cluster, "ClusterRole", "wardengate-operator"),
        want[0]["rules"]
    );
    let binding = find(&cluster, "ClusterRoleBinding", "wardengate-operator");
    assert_eq!(binding["subjects"][0]["namespace"], "wardengate-system");
    assert!(
        cluster
            .iter()
            .all(|o| o["kind"] != "Role" || o["metadata"]["name"] != "wardengate-operator")
    );
    let le = yaml_file("config/rbac/leader_election_role.yaml");
    assert_eq!(
        rules(&cluster, "Role", "wardengate-operator-leader-election"),
        le[0]["rules"]
    );
    let ns = template(
        "wardengate-operator",
        "wgo",
        "tenant",
        &["--set", "rbac.scope=namespace"],
    );
    let want = yaml_file("config/rbac-namespaced/role.yaml");
    let role = find(&ns, "Role", "wardengate-operator");
    assert_eq!(role["rules"], want[0]["rules"]);
    assert_eq!(role["metadata"]["namespace"], "tenant");
    assert!(
        ns.iter()
            .all(|o| o["kind"] != "ClusterRole" && o["kind"] != "ClusterRoleBinding")
    );
    // Namespaced RBAC means a namespaced operator: it watches only its own namespace.
    let env = &find(&ns, "Deployment", "wardengate-operator")["spec"]["template"]["spec"]["containers"]
        [0]["env"];
    assert!(
        env.as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "WG_OPERATOR_NAMESPACE"
                && e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"),
        "{env}"
    );
    let env = &find(&cluster, "Deployment", "wardengate-operator")["spec"]["template"]["spec"]["containers"]
        [0]["env"];
    assert!(!env.to_string().contains("WG_OPERATOR_NAMESPACE"), "{env}");
}

/// What the operator chart copies from the repository stays identical: the CRDs
/// (config/crd, generated from the Rust types) and the alert rules (config/monitoring), in the
/// chart's files and as the PrometheusRule it renders.
#[test]
fn operator_chart_copies_are_the_repositorys() {
    let read = |p: &str| std::fs::read_to_string(repo().join(p)).unwrap();
    assert!(
        read("charts/wardengate-operator/crds/crds.yaml") == read("config/crd/crds.yaml"),
        "charts/wardengate-operator/crds/crds.yaml differs: cp config/crd/crds.yaml charts/wardengate-operator/crds/"
    );
    assert!(
        read("charts/wardengate-operator/files/wardengate.rules.yaml")
            == read("config/monitoring/wardengate.rules.yaml"),
        "cp config/monitoring/wardengate.rules.yaml charts/wardengate-operator/files/"
    );
    let rules = &yaml_file("config/monitoring/wardengate.rules.yaml")[0]["groups"];
    let objs = template(
        "wardengate-operator",
        "wgo",
        "monitoring",
        &["--set", "prometheusRule.enabled=true"],
    );
    assert_eq!(
        &find(&objs, "PrometheusRule", "wardengate")["spec"]["groups"],
        rules
    );
    let plain = &yaml_file("config/monitoring/prometheusrule.yaml")[0]["spec"]["groups"];
    assert_eq!(
        plain, rules,
        "config/monitoring/prometheusrule.yaml drifted"
    );
    // `kubectl apply -k config/monitoring` applies exactly that PrometheusRule.
    let kustomized = Command::new(tool("kubectl").unwrap())
        .args([
            "kustomize",
            &repo().join("config/monitoring").display().to_string(),
        ])
        .output()
        .unwrap();
    assert!(kustomized.status.success(), "{kustomized:?}");
    let k = docs(&String::from_utf8_lossy(&kustomized.stdout));
    assert_eq!(k.len(), 1);
    assert_eq!(k[0]["kind"], "PrometheusRule");
    assert_eq!(&k[0]["spec"]["groups"], rules);
    // The ServiceMonitor scrapes the port the metrics Service names, as the job the rules use.
    let objs = template(
        "wardengate-operator",
        "wgo",
        "monitoring",
        &["--set", "metrics.serviceMonitor.enabled=true"],
    );
    let sm = find(&objs, "ServiceMonitor", "wardengate-operator");
    let svc = find(&objs, "Service", "wardengate-operator-metrics");
    assert_eq!(
        sm["spec"]["endpoints"][0]["port"],
        svc["spec"]["ports"][0]["name"]
    );
    let job_label = sm["spec"]["jobLabel"].as_str().unwrap();
    assert_eq!(svc["metadata"]["labels"][job_label], "wardengate-operator");
    assert_eq!(
        sm["spec"]["selector"]["matchLabels"],
        svc["spec"]["selector"]
    );
}

/// Every object of both charts, default and example values, test hooks included.
fn all_rendered() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for c in ["wardengate-operator", "wardengate"] {
        let ex = values_file(c);
        for (label, extra) in [("default", vec![]), ("example", vec!["-f", ex.as_str()])] {
            for o in template(c, "wg", "access", &extra) {
                out.push((format!("{c}-{label}"), o));
            }
        }
    }
    out
}

#[test]
fn every_templated_object_passes_strict_schema_validation() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (i, (label, o)) in all_rendered().into_iter().enumerate() {
        // The Prometheus operator's kinds are not Kubernetes': checked by
        // operator_chart_copies_are_the_repositorys and promtool.
        if o["apiVersion"]
            .as_str()
            .unwrap()
            .starts_with("monitoring.coreos.com/")
        {
            continue;
        }
        let f = dir.path().join(format!("{label}-{i}.yaml"));
        std::fs::write(&f, serde_yaml::to_string(&o).unwrap()).unwrap();
        files.push(f);
    }
    assert!(files.len() >= 20, "{}", files.len());
    kubernetes_validate(&files);
}

/// Strips what legitimately differs between the operator's and the chart's objects: the owner
/// (`managed-by`), the operator's template-hash annotation and server-populated nothing else.
fn normalized(mut o: Value) -> Value {
    if let Some(labels) = o["metadata"]["labels"].as_object_mut() {
        labels.remove("app.kubernetes.io/managed-by");
    }
    if let Some(labels) = o["spec"]["template"]["metadata"]["labels"].as_object_mut() {
        labels.remove("app.kubernetes.io/managed-by");
    }
    let meta = o["metadata"].as_object_mut().unwrap();
    if let Some(a) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
        a.remove("wardengate.io/template-hash");
        if a.is_empty() {
            meta.remove("annotations");
        }
    }
    o
}

/// Renders `spec` (a WardengateCluster named `wardengate` in `access`) with the operator and the
/// same settings as chart values with the chart, and compares every object both render.
fn operator_and_chart_agree(spec: Value, values: Value) {
    let cr = json!({"apiVersion": "wardengate.io/v1alpha1", "kind": "WardengateCluster",
                    "metadata": {"name": "wardengate", "namespace": "access"}, "spec": spec});
    let rendered = wardengate_operator::render::render(&serde_yaml::to_string(&cr).unwrap())
        .unwrap()
        .objects;
    let operator: Vec<Value> = rendered
        .iter()
        .map(|o| normalized(serde_json::to_value(o).unwrap()))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let vf = dir.path().join("values.json");
    std::fs::write(&vf, values.to_string()).unwrap();
    let vf = vf.display().to_string();
    let chart_objs: Vec<Value> = template("wardengate", "wardengate", "access", &["-f", &vf])
        .into_iter()
        .map(normalized)
        .collect();
    let kinds = [
        ("Deployment", "wardengate-cp", "spec"),
        ("Service", "wardengate", "spec"),
        ("PodDisruptionBudget", "wardengate-cp", "spec"),
        ("NetworkPolicy", "wardengate-cp", "spec"),
        ("ConfigMap", "wardengate-config", "data"),
        (
            "ServiceAccount",
            "wardengate",
            "automountServiceAccountToken",
        ),
    ];
    for (kind, name, field) in kinds {
        let a = find(&operator, kind, name);
        let b = find(&chart_objs, kind, name);
        assert_eq!(
            a[field],
            b[field],
            "{kind}/{name}.{field} differs\noperator: {}\nchart:    {}",
            serde_json::to_string_pretty(&a[field]).unwrap(),
            serde_json::to_string_pretty(&b[field]).unwrap()
        );
        assert_eq!(a["metadata"], b["metadata"], "{kind}/{name} metadata");
    }
    // The Secrets the pods mount exist in both (generated ones: same names and types).
    for name in ["wardengate-internal", "wardengate-tls", "wardengate-ssh"] {
        let a = operator
            .iter()
            .find(|o| o["kind"] == "Secret" && o["metadata"]["name"] == name);
        let b = chart_objs
            .iter()
            .find(|o| o["kind"] == "Secret" && o["metadata"]["name"] == name);
        assert_eq!(
            a.map(|o| &o["type"]),
            b.map(|o| &o["type"]),
            "Secret/{name}"
        );
    }
}

#[test]
fn the_fleet_chart_renders_the_deployment_the_operator_renders() {
    // The smallest input: defaults on both sides.
    operator_and_chart_agree(
        json!({"version": "0.1.0",
               "postgres": {"external": {"urlSecretRef": {"name": "wardengate-db", "key": "url"}}},
               "redis": {"mode": "standalone", "hosts": ["redis:6379"]}}),
        json!({"version": "0.1.0"}),
    );
    // Every shared setting moved off its default, pod overrides included: the overrides
    // object is passed verbatim as values, since the chart's names are the spec's.
    let overrides = json!({
        "nodeSelector": {"node-pool": "wardengate"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "wardengate", "effect": "NoSchedule"}],
        "affinity": {
            "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}]}},
            "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 5, "podAffinityTerm": {"topologyKey": "zone", "labelSelector": {"matchLabels": {"app": "noisy"}}}}]},
        },
        "priorityClassName": "wardengate-critical",
        "podAnnotations": {"example.com/owner": "sre"},
        "podLabels": {"team": "access", "app.kubernetes.io/name": "not-this"},
        "env": [{"name": "HTTPS_PROXY", "valueFrom": {"secretKeyRef": {"name": "proxy", "key": "url"}}}],
        "envFrom": [{"configMapRef": {"name": "tuning"}}],
        "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}},
        "replicas": 5,
        "image": "registry.example.com/wardengate",
        "topologyKey": "example.com/rack",
        "drain": {"timeoutSeconds": 600},
        "terminationGracePeriodSeconds": 700,
        "tls": {"secretName": "my-tls"},
        "service": {"type": "ClusterIP", "annotations": {"a": "b"}},
        "recordings": {"url": "s3://bucket/prefix", "credentialsSecretRef": {"name": "s3"}},
    });
    let mut spec = overrides.clone();
    let mut values = overrides;
    spec["version"] = json!("0.2.0");
    spec["postgres"] = json!({"external": {"urlSecretRef": {"name": "db", "key": "uri"}},
                              "statementTimeout": "2s"});
    spec["redis"] = json!({"mode": "standalone", "hosts": ["redis.db:6380"], "tls": true});
    values["version"] = json!("0.2.0");
    values["postgres"] =
        json!({"urlSecretRef": {"name": "db", "key": "uri"}, "statementTimeout": "2s"});
    values["redis"] = json!({"url": "rediss://redis.db:6380"});
    // Terminating SSH on a port of its own: `spec.ssh` on one side, `ssh.enabled` on the other.
    spec["ssh"] = json!({"port": 2300});
    values["ssh"] = json!({"enabled": true, "port": 2300});
    operator_and_chart_agree(spec, values);
}

// ---------------------------------------------------------------------------------------------
// Against the real control plane.

struct Kube {
    _cluster: KubeCluster,
    kubectl: PathBuf,
    admin: PathBuf,
    work: tempfile::TempDir,
    started: Instant,
}

impl Kube {
    fn k(&self, args: &[&str]) -> String {
        kubectl_ok(&self.kubectl, &self.admin, args)
            .unwrap_or_else(|e| panic!("kubectl {args:?}: {e}"))
    }
    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.k(&a)).unwrap()
    }
    fn helm(&self, args: &[&str]) -> String {
        helm(args, Some(&self.admin))
    }
    fn step(&self, what: &str) {
        eprintln!("[{:>6.1}s] {what}", self.started.elapsed().as_secs_f64());
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
    fn secret_data(&self, ns: &str, name: &str) -> Value {
        self.json(&["get", "secret", name, "-n", ns])["data"].clone()
    }
}

#[test]
fn charts_install_upgrade_and_test_on_a_real_control_plane() {
    let started = Instant::now();
    let cluster = KubeCluster::start().expect("the harness' Kubernetes control plane starts");
    let kube = Kube {
        kubectl: tool("kubectl").unwrap(),
        admin: cluster.kubeconfig().to_path_buf(),
        _cluster: cluster,
        work: tempfile::tempdir().unwrap(),
        started,
    };
    kube.step("control plane up");

    // Every templated object, as the apiserver itself validates it: server-side dry-run with
    // strict field validation (before the install, so nothing conflicts with its objects).
    let mut files = Vec::new();
    for (i, (label, o)) in all_rendered().into_iter().enumerate() {
        if o["apiVersion"]
            .as_str()
            .unwrap()
            .starts_with("monitoring.coreos.com/")
            || o["kind"] == "CustomResourceDefinition"
        {
            continue;
        }
        let f = kube.work.path().join(format!("{label}-{i}.json"));
        let mut o = o;
        o["metadata"]["namespace"] = json!("default");
        std::fs::write(&f, o.to_string()).unwrap();
        files.push(f.display().to_string());
    }
    for f in &files {
        kube.k(&[
            "apply",
            "--dry-run=server",
            "--validate=strict",
            "--server-side",
            "-f",
            f,
        ]);
    }
    kube.step(&format!(
        "{} templated objects pass server-side dry-run (strict)",
        files.len()
    ));

    // The operator chart, cluster-wide: CRDs from crds/, RBAC, two leader-elected replicas.
    let op = chart("wardengate-operator");
    kube.helm(&[
        "install",
        "wardengate-operator",
        &op,
        "-n",
        "wardengate-system",
        "--create-namespace",
        "--wait",
        "--timeout",
        "180s",
    ]);
    kube.k(&[
        "wait",
        "--for=condition=Established",
        "crd/wardengateclusters.wardengate.io",
        "crd/gatewaypools.wardengate.io",
    ]);
    let d = kube.json(&[
        "get",
        "deployment",
        "wardengate-operator",
        "-n",
        "wardengate-system",
    ]);
    assert_eq!(d["status"]["readyReplicas"], 2, "{}", d["status"]);
    let sa = "system:serviceaccount:wardengate-system:wardengate-operator";
    let can = |args: &[&str]| {
        let mut a = vec!["auth", "can-i", "--as", sa];
        a.extend(args);
        kubectl_ok(&kube.kubectl, &kube.admin, &a).unwrap_or_else(|e| e.to_string())
    };
    assert!(
        can(&[
            "patch",
            "wardengateclusters",
            "--subresource=status",
            "-n",
            "anywhere"
        ])
        .starts_with("yes")
    );
    assert!(can(&["create", "secrets", "-n", "anywhere"]).starts_with("yes"));
    assert!(!can(&["update", "wardengateclusters", "-n", "anywhere"]).starts_with("yes"));
    assert!(!can(&["delete", "nodes"]).starts_with("yes"));
    kube.step("helm install wardengate-operator: CRDs established, 2/2 ready, RBAC as config/rbac");

    kube.helm(&[
        "upgrade",
        "wardengate-operator",
        &op,
        "-n",
        "wardengate-system",
        "--reuse-values",
        "--set",
        "replicaCount=3",
        "--wait",
        "--timeout",
        "180s",
    ]);
    let d = kube.json(&[
        "get",
        "deployment",
        "wardengate-operator",
        "-n",
        "wardengate-system",
    ]);
    assert_eq!(d["spec"]["replicas"], 3);
    assert_eq!(d["status"]["readyReplicas"], 3, "{}", d["status"]);
    let status = kube.helm(&[
        "status",
        "wardengate-operator",
        "-n",
        "wardengate-system",
        "-o",
        "json",
    ]);
    let status: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["version"], 2);
    assert_eq!(status["info"]["status"], "deployed");
    let out = kube.helm(&[
        "test",
        "wardengate-operator",
        "-n",
        "wardengate-system",
        "--timeout",
        "120s",
    ]);
    assert!(
        out.contains("wardengate-operator-test-metrics") && out.contains("Succeeded"),
        "{out}"
    );
    // Simulated nodes run no container, so check what the hook would reach: its URL names a
    // Service that exists, on that port, with a ready endpoint per operator replica.
    hook_reaches(
        &kube,
        "wardengate-system",
        "wardengate-operator-test-metrics",
        3,
    );
    kube.step("helm upgrade (3 replicas, revision 2) and helm test: ok");

    // A second, namespaced operator install (tenant mode): a Role, no cluster-wide grant.
    kube.helm(&[
        "install",
        "tenant-operator",
        &op,
        "-n",
        "tenant",
        "--create-namespace",
        "--set",
        "rbac.scope=namespace",
        "--skip-crds",
        "--wait",
        "--timeout",
        "180s",
    ]);
    let tsa = "system:serviceaccount:tenant:wardengate-operator";
    let tcan = |args: &[&str]| {
        let mut a = vec!["auth", "can-i", "--as", tsa];
        a.extend(args);
        kubectl_ok(&kube.kubectl, &kube.admin, &a).unwrap_or_else(|e| e.to_string())
    };
    assert!(tcan(&["create", "secrets", "-n", "tenant"]).starts_with("yes"));
    assert!(!tcan(&["get", "secrets", "-n", "wardengate-system"]).starts_with("yes"));
    kube.step("namespaced operator install: secrets in its namespace only");

    // The fleet chart: three replicas spread over the three zones, PDB, Service, Secrets
    // generated once and kept by an upgrade.
    let fleet = chart("wardengate");
    kube.k(&["create", "namespace", "fleet"]);
    kube.k(&[
        "create",
        "secret",
        "generic",
        "wardengate-db",
        "-n",
        "fleet",
        "--from-literal=url=postgres://wardengate:pw@postgres:5432/wardengate",
    ]);
    // ClusterIP: no load-balancer controller here, and `--wait` waits for a LoadBalancer IP.
    kube.helm(&[
        "install",
        "wardengate",
        &fleet,
        "-n",
        "fleet",
        "--set",
        "service.type=ClusterIP",
        "--wait",
        "--timeout",
        "180s",
    ]);
    let zones_of_pods = || {
        let nodes = kube.json(&["get", "nodes"]);
        let zone = |n: &str| {
            nodes["items"]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["metadata"]["name"] == n)
                .map(|x| x["metadata"]["labels"]["topology.kubernetes.io/zone"].clone())
                .unwrap_or(Value::Null)
        };
        kube.json(&[
            "get",
            "pods",
            "-n",
            "fleet",
            "-l",
            "app.kubernetes.io/component=control-plane",
        ])["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .map(|p| zone(p["spec"]["nodeName"].as_str().unwrap_or_default()).to_string())
            .collect::<Vec<_>>()
    };
    let zones = zones_of_pods();
    let distinct: std::collections::BTreeSet<_> = zones.iter().collect();
    assert_eq!(
        (zones.len(), distinct.len()),
        (3, 3),
        "one pod per zone: {zones:?}"
    );
    let pdb = kube.json(&["get", "pdb", "wardengate-cp", "-n", "fleet"]);
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    assert_eq!(pdb["status"]["expectedPods"], 3, "{}", pdb["status"]);
    let svc = kube.json(&["get", "service", "wardengate", "-n", "fleet"]);
    assert_eq!(svc["spec"]["sessionAffinity"], "None");
    let pod = &kube.json(&["get", "deployment", "wardengate-cp", "-n", "fleet"])["spec"]["template"]
        ["spec"];
    assert_eq!(pod["terminationGracePeriodSeconds"], 300);
    let internal = kube.secret_data("fleet", "wardengate-internal");
    let tls = kube.secret_data("fleet", "wardengate-tls");
    let token =
        String::from_utf8(base64_decode(internal["admin-token"].as_str().unwrap())).unwrap();
    assert!(token.starts_with("wg_") && token.len() > 40, "{token}");
    kube.step(
        "helm install wardengate: 3 pods in 3 zones, PDB, ClusterIP Service, Secrets generated",
    );

    kube.helm(&[
        "upgrade",
        "wardengate",
        &fleet,
        "-n",
        "fleet",
        "--reuse-values",
        "--set",
        "replicas=4",
        "--wait",
        "--timeout",
        "180s",
    ]);
    kube.wait("4 ready fleet replicas", 120, || {
        kube.json(&["get", "deployment", "wardengate-cp", "-n", "fleet"])["status"]["readyReplicas"]
            == 4
    });
    assert_eq!(
        kube.secret_data("fleet", "wardengate-internal"),
        internal,
        "keys rotated by upgrade"
    );
    assert_eq!(
        kube.secret_data("fleet", "wardengate-tls"),
        tls,
        "certificate rotated by upgrade"
    );
    let out = kube.helm(&["test", "wardengate", "-n", "fleet", "--timeout", "120s"]);
    assert!(
        out.contains("wardengate-test-readyz") && out.contains("Succeeded"),
        "{out}"
    );
    hook_reaches(&kube, "fleet", "wardengate-test-readyz", 4);
    let hook = kube.json(&["get", "pod", "wardengate-test-readyz", "-n", "fleet"]);
    assert_eq!(
        hook["spec"]["volumes"][0]["secret"]["secretName"], "wardengate-tls",
        "the hook verifies TLS against the generated CA"
    );
    kube.step("helm upgrade (4 replicas; internal and TLS Secrets unchanged) and helm test: ok");

    // Uninstall keeps the generated Secrets (a reinstall must not rotate the signing keys).
    kube.helm(&["uninstall", "wardengate", "-n", "fleet", "--wait"]);
    assert_eq!(kube.secret_data("fleet", "wardengate-internal"), internal);
    kube.step("helm uninstall: generated Secrets kept");
}

/// The `http(s)://SERVICE.NS.svc:PORT/…` URLs in hook pod `pod`'s command name a Service in
/// `ns` with that port and `ready` ready endpoints.
fn hook_reaches(kube: &Kube, ns: &str, pod: &str, ready: usize) {
    let p = kube.json(&["get", "pod", pod, "-n", ns]);
    assert_eq!(p["status"]["phase"], "Succeeded", "{}", p["status"]);
    let script: String = p["spec"]["containers"][0]["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect::<Vec<_>>()
        .join(" ");
    let mut found = 0;
    for part in script.split("://").skip(1) {
        let hostport = part.split('/').next().unwrap();
        let (host, port) = hostport.split_once(':').unwrap();
        let port: String = port.chars().take_while(char::is_ascii_digit).collect();
        let (svc, rest) = host.split_once('.').unwrap();
        assert_eq!(rest, format!("{ns}.svc"), "{script}");
        let s = kube.json(&["get", "service", svc, "-n", ns]);
        let ports: Vec<String> = s["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["port"].to_string())
            .collect();
        assert!(ports.contains(&port), "{svc}: {ports:?} lacks {port}");
        // The harness' pod IPs are loopback addresses, which EndpointSlices refuse; so match
        // the Service's selector against the pods as the EndpointSlice controller would.
        let sel = s["spec"]["selector"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap()))
            .collect::<Vec<_>>()
            .join(",");
        kube.wait(&format!("{ready} ready pods behind {svc}"), 60, || {
            let pods = kube.json(&["get", "pods", "-n", ns, "-l", &sel]);
            let items = pods["items"].as_array().unwrap();
            assert!(
                items
                    .iter()
                    .all(|p| p["metadata"]["annotations"]["helm.sh/hook"].is_null()),
                "{svc} selects its own test pod"
            );
            items
                .iter()
                .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
                .filter(|p| {
                    p["status"]["conditions"].as_array().is_some_and(|c| {
                        c.iter()
                            .any(|c| c["type"] == "Ready" && c["status"] == "True")
                    })
                })
                .count()
                == ready
        });
        found += 1;
    }
    assert!(found >= 1, "no URL in {script}");
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}
