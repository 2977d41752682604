//! CRD generation and the admission rules, evaluated client-side with kube's CEL validator.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use kube::CustomResourceExt;
use serde_json::{Value, json};
use wardengate_crds::*;

fn cluster(spec: Value) -> WardengateCluster {
    serde_json::from_value(json!({
        "apiVersion": "wardengate.io/v1alpha1", "kind": "WardengateCluster",
        "metadata": {"name": "wg", "namespace": "ns"}, "spec": spec,
    }))
    .unwrap()
}

fn pool(spec: Value) -> GatewayPool {
    serde_json::from_value(json!({
        "apiVersion": "wardengate.io/v1alpha1", "kind": "GatewayPool",
        "metadata": {"name": "p", "namespace": "ns"}, "spec": spec,
    }))
    .unwrap()
}

fn base() -> Value {
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

fn rejected_with(r: Result<(), impl std::fmt::Display>, needle: &str) {
    let msg = match r {
        Ok(()) => panic!("accepted, expected a rejection mentioning `{needle}`"),
        Err(e) => e.to_string(),
    };
    assert!(
        msg.contains(needle),
        "rejection `{msg}` does not mention `{needle}`"
    );
}

#[test]
fn crds_generate_with_subresources_columns_and_short_names() {
    for crd in crds() {
        let v = serde_json::to_value(&crd).unwrap();
        let ver = &v["spec"]["versions"][0];
        assert_eq!(ver["name"], "v1alpha1");
        assert!(ver["subresources"]["status"].is_object());
        assert_eq!(
            ver["subresources"]["scale"]["specReplicasPath"],
            ".spec.replicas"
        );
        let cols: Vec<&str> = ver["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        let want: &[&str] = if crd.spec.names.kind == "WardengateCluster" {
            &["Ready", "Replicas", "Sessions", "Version", "Phase", "Age"]
        } else {
            &["Ready", "Replicas", "Version", "Phase", "Age"]
        };
        assert_eq!(cols, want);
        assert_eq!(v["spec"]["scope"], "Namespaced");
        let yaml = serde_yaml::to_string(&crd).unwrap();
        assert!(
            // The pod overrides embed Kubernetes' own Affinity, EnvVar and Toleration schemas
            // (~45 KiB of it is Affinity); still far from the 256 KiB where client-side apply's
            // annotation breaks and the 1.5 MiB object limit.
            yaml.len() < 128 * 1024,
            "{} is {} bytes; keep well under 256 KiB",
            crd.metadata.name.unwrap(),
            yaml.len()
        );
    }
    assert_eq!(
        WardengateCluster::crd().spec.names.short_names,
        Some(vec!["wgc".to_string()])
    );
    assert_eq!(
        GatewayPool::crd().spec.names.short_names,
        Some(vec!["wgp".to_string()])
    );
}

#[test]
fn checked_in_crd_yaml_matches_the_types() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/crd/crds.yaml");
    let on_disk = std::fs::read_to_string(path).unwrap_or_default();
    if std::env::var_os("WG_UPDATE_CRDS").is_some() {
        std::fs::write(path, crds_yaml()).unwrap();
        return;
    }
    assert!(
        on_disk == crds_yaml(),
        "config/crd/crds.yaml is out of date: run `WG_UPDATE_CRDS=1 cargo test -p wardengate-crds` and commit it"
    );
}

#[test]
fn defaults_apply() {
    let c = cluster(base());
    assert_eq!(c.spec.replicas, 3);
    assert_eq!(c.spec.drain.timeout_seconds, 270);
    assert_eq!(c.spec.topology_key, "topology.kubernetes.io/zone");
    assert_eq!(c.spec.service.type_, ServiceType::LoadBalancer);
    c.validate_cel().unwrap();
}

#[test]
fn replicas_below_one_are_rejected() {
    rejected_with(
        cluster(with(base(), &["replicas"], json!(0))).validate_cel(),
        "spec.replicas must be at least 1",
    );
    cluster(with(base(), &["replicas"], json!(1)))
        .validate_cel()
        .unwrap();
    rejected_with(
        pool(json!({"clusterRef": {"name": "wg"}, "replicas": 0})).validate_cel(),
        "spec.replicas must be at least 1",
    );
}

#[test]
fn grace_shorter_than_drain_is_rejected() {
    let spec = with(
        with(base(), &["drain", "timeoutSeconds"], json!(600)),
        &["terminationGracePeriodSeconds"],
        json!(300),
    );
    rejected_with(
        cluster(spec).validate_cel(),
        "spec.terminationGracePeriodSeconds must not be shorter than spec.drain.timeoutSeconds",
    );
    let ok = with(
        with(base(), &["drain", "timeoutSeconds"], json!(200)),
        &["terminationGracePeriodSeconds"],
        json!(300),
    );
    cluster(ok).validate_cel().unwrap();
    rejected_with(
        pool(json!({"clusterRef": {"name": "wg"}, "drain": {"timeoutSeconds": 100}, "terminationGracePeriodSeconds": 10})).validate_cel(),
        "spec.terminationGracePeriodSeconds",
    );
}

#[test]
fn sentinel_mode_needs_sentinels_and_master_name() {
    let no_sentinels = with(
        base(),
        &["redis"],
        json!({"mode": "sentinel", "masterName": "wg"}),
    );
    rejected_with(
        cluster(no_sentinels).validate_cel(),
        "spec.redis: sentinel mode needs sentinels",
    );
    let no_master = with(
        base(),
        &["redis"],
        json!({"mode": "sentinel", "sentinels": ["s1:26379"]}),
    );
    rejected_with(cluster(no_master).validate_cel(), "masterName");
    let ok = with(
        base(),
        &["redis"],
        json!({"mode": "sentinel", "sentinels": ["s1:26379", "s2:26379"], "masterName": "wg"}),
    );
    cluster(ok).validate_cel().unwrap();
    let no_hosts = with(base(), &["redis"], json!({"mode": "cluster"}));
    rejected_with(cluster(no_hosts).validate_cel(), "spec.redis.hosts");
}

#[test]
fn inline_credentials_are_rejected() {
    let pg = with(
        base(),
        &["postgres", "external", "url"],
        json!("postgres://u:secret@db/wg"),
    );
    rejected_with(
        cluster(pg).validate_cel(),
        "spec.postgres.external.url: credentials must not be inline",
    );
    let redis = with(base(), &["redis", "password"], json!("secret"));
    rejected_with(
        cluster(redis).validate_cel(),
        "spec.redis.password: credentials must not be inline",
    );
    let by_ref = with(
        base(),
        &["redis", "passwordSecretRef"],
        json!({"name": "r", "key": "password"}),
    );
    cluster(by_ref).validate_cel().unwrap();
}

#[test]
fn exactly_one_postgres_source() {
    rejected_with(
        cluster(with(base(), &["postgres"], json!({}))).validate_cel(),
        "spec.postgres: set exactly one",
    );
    let two = with(
        base(),
        &["postgres", "cloudNativePG"],
        json!({"clusterName": "pg"}),
    );
    rejected_with(
        cluster(two).validate_cel(),
        "spec.postgres: set exactly one",
    );
    cluster(with(
        base(),
        &["postgres"],
        json!({"cloudNativePG": {"clusterName": "pg"}}),
    ))
    .validate_cel()
    .unwrap();
}

#[test]
fn pool_without_cluster_reference_is_rejected() {
    rejected_with(pool(json!({})).validate_cel(), EXACTLY_ONE_TARGET);
    rejected_with(
        pool(json!({"clusterRef": {"name": ""}})).validate_cel(),
        "spec.clusterRef.name: a GatewayPool needs the WardengateCluster",
    );
    pool(json!({"clusterRef": {"name": "wg"}}))
        .validate_cel()
        .unwrap();
}

fn remote(url: &str) -> Value {
    json!({
        "controlPlane": {"url": url, "joinTokenSecretRef": {"name": "join", "key": "token"}},
        "region": "eu-1", "version": "0.1.0", "tls": {"secretName": "gw-tls"},
        "publicAddress": "gw.eu-1.example.com:8443",
    })
}

#[test]
fn a_pool_names_exactly_one_of_cluster_ref_and_control_plane() {
    let ok = "https://cp.example.com:8444";
    pool(remote(ok)).validate_cel().unwrap();
    rejected_with(
        pool(with(remote(ok), &["clusterRef"], json!({"name": "wg"}))).validate_cel(),
        EXACTLY_ONE_TARGET,
    );
    assert!(EXACTLY_ONE_TARGET.starts_with("spec.clusterRef, spec.controlPlane:"));
    // What a remote pool needs, each refusal naming its field.
    for (field, message) in [
        ("region", REGION_REQUIRED),
        ("version", VERSION_REQUIRED),
        ("tls", TLS_REQUIRED),
        ("publicAddress", PUBLIC_ADDRESS_REQUIRED),
    ] {
        let mut spec = remote(ok);
        spec.as_object_mut().unwrap().remove(field);
        rejected_with(pool(spec).validate_cel(), message);
        assert!(message.starts_with(&format!("spec.{field}")), "{message}");
    }
    rejected_with(
        pool(with(remote(ok), &["region"], json!(""))).validate_cel(),
        REGION_REQUIRED,
    );
    // A clusterRef pool runs its cluster's image and certificate.
    for (field, value) in [
        ("tls", json!({"secretName": "x"})),
        ("image", json!("registry.example.com/wg")),
        ("publicAddress", json!("gw.example.com:8443")),
    ] {
        rejected_with(
            pool(with(json!({"clusterRef": {"name": "wg"}}), &[field], value)).validate_cel(),
            REMOTE_ONLY,
        );
    }
}

#[test]
fn the_control_plane_url_is_https_host_8444() {
    for good in [
        "https://cp.example.com:8444",
        "https://cp:8444/",
        "https://10.0.0.7:8444",
        "https://[fd00::7]:8444",
    ] {
        pool(remote(good))
            .validate_cel()
            .unwrap_or_else(|e| panic!("{good}: {e}"));
    }
    for bad in [
        "http://cp.example.com:8444",
        "https://cp.example.com",
        "https://cp.example.com:8443",
        "https://cp.example.com:8444/agent",
        "https://user@cp.example.com:8444",
        "cp.example.com:8444",
        "https://:8444",
    ] {
        rejected_with(pool(remote(bad)).validate_cel(), URL_FORMAT);
    }
    assert!(URL_FORMAT.starts_with("spec.controlPlane.url: use https://HOST:8444"));
}

#[test]
fn a_remote_pools_public_address_is_host_port() {
    let ok = "https://cp.example.com:8444";
    for good in [
        "gw.example.com:8443",
        "gw:443",
        "203.0.113.7:8443",
        "[2001:db8::7]:8443",
    ] {
        pool(with(remote(ok), &["publicAddress"], json!(good)))
            .validate_cel()
            .unwrap_or_else(|e| panic!("{good}: {e}"));
    }
    for bad in [
        "gw.example.com",
        "https://gw.example.com:8443",
        "gw.example.com:8443/path",
        ":8443",
        "-gw.example.com:8443",
        "gw.example.com:",
        "2001:db8::7:8443",
    ] {
        rejected_with(
            pool(with(remote(ok), &["publicAddress"], json!(bad))).validate_cel(),
            PUBLIC_ADDRESS_FORMAT,
        );
    }
    assert!(PUBLIC_ADDRESS_FORMAT.starts_with("spec.publicAddress: use HOST:PORT"));
}

#[test]
fn env_names_the_operator_sets_are_refused_at_admission() {
    for name in OPERATOR_ENV {
        let spec = with(base(), &["env"], json!([{"name": name, "value": "x"}]));
        rejected_with(cluster(spec).validate_cel(), "spec.env");
        let p = json!({"clusterRef": {"name": "wg"}, "env": [{"name": name, "value": "x"}]});
        rejected_with(pool(p).validate_cel(), "spec.env");
    }
    // Other variables, WG_* the operator does not set included, are the user's.
    let spec = with(
        base(),
        &["env"],
        json!([{"name": "WG_LOG_LEVEL", "value": "debug"},
               {"name": "HTTPS_PROXY", "valueFrom": {"secretKeyRef": {"name": "proxy", "key": "url"}}}]),
    );
    cluster(spec).validate_cel().unwrap();
}

#[test]
fn the_cel_env_rule_lists_exactly_the_operator_variables() {
    let crd = serde_json::to_value(WardengateCluster::crd()).unwrap();
    let env = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
        ["env"];
    let rule = env["x-kubernetes-validations"][0]["rule"].as_str().unwrap();
    let start = rule.find('[').unwrap();
    let end = rule.rfind(']').unwrap();
    let listed: Vec<String> = rule[start + 1..end]
        .split(',')
        .map(|s| s.trim().trim_matches('\'').to_string())
        .collect();
    assert_eq!(
        listed, OPERATOR_ENV,
        "the CEL rule and OPERATOR_ENV drifted"
    );
    assert_eq!(
        env["maxItems"], 64,
        "bounded, so the apiserver accepts the rule's cost"
    );
}

#[test]
fn pod_overrides_round_trip_flattened_into_spec() {
    let spec = with(
        with(base(), &["nodeSelector"], json!({"pool": "cp"})),
        &["priorityClassName"],
        json!("wardengate-critical"),
    );
    let c = cluster(spec);
    assert_eq!(c.spec.pod.node_selector["pool"], "cp");
    assert_eq!(
        c.spec.pod.priority_class_name.as_deref(),
        Some("wardengate-critical")
    );
    let back = serde_json::to_value(&c.spec).unwrap();
    assert_eq!(back["nodeSelector"]["pool"], "cp", "{back}");
    assert!(back.get("pod").is_none(), "flattened, not nested: {back}");
}

/// Every property of both CRDs, ours and the embedded Kubernetes types alike, has a description
/// (what `kubectl explain` prints); ours also say their default or that they are required.
#[test]
fn every_crd_property_has_a_description() {
    fn walk(path: &str, schema: &Value, ours: bool, missing: &mut Vec<String>) {
        if let Some(props) = schema["properties"].as_object() {
            for (name, p) in props {
                let here = format!("{path}.{name}");
                let d = p["description"].as_str().unwrap_or_default();
                if d.trim().is_empty() {
                    missing.push(format!("{here}: no description"));
                } else if ours
                    && here.starts_with(".spec")
                    && !(d.contains("Default") || d.contains("Required") || d.contains("Refused"))
                {
                    missing.push(format!("{here}: does not say its default: {d:?}"));
                }
                // Kubernetes' own types (EnvVar, Affinity, …) keep their upstream texts.
                let theirs = ["env", "envFrom", "affinity", "tolerations", "resources"]
                    .contains(&name.as_str())
                    && path == ".spec"
                    || !ours;
                walk(&here, p, !theirs, missing);
            }
        }
        if schema["items"].is_object() {
            walk(&format!("{path}[]"), &schema["items"], ours, missing);
        }
    }
    let mut missing = Vec::new();
    for crd in crds() {
        let v = serde_json::to_value(&crd).unwrap();
        let root = &v["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        let mut found = Vec::new();
        walk(".spec", &root["properties"]["spec"], true, &mut found);
        walk(".status", &root["properties"]["status"], false, &mut found);
        let checked = serde_json::to_string(&root["properties"]["spec"])
            .unwrap()
            .matches("\"description\"")
            .count();
        assert!(checked > 100, "walked {checked} descriptions only");
        missing.extend(
            found
                .into_iter()
                .map(|m| format!("{}: {m}", crd.metadata.name.clone().unwrap())),
        );
    }
    missing.sort();
    missing.dedup();
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}
