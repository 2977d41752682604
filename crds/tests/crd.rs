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
            yaml.len() < 64 * 1024,
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
    rejected_with(
        pool(json!({})).validate_cel(),
        "spec.clusterRef.name: a GatewayPool needs the WardengateCluster",
    );
    rejected_with(
        pool(json!({"clusterRef": {"name": ""}})).validate_cel(),
        "spec.clusterRef.name",
    );
    pool(json!({"clusterRef": {"name": "wg"}}))
        .validate_cel()
        .unwrap();
}
