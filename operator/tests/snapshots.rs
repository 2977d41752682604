//! Snapshot tests: every example rendered as `render` prints it, pinned in
//! `tests/snapshots/`. A change to any builder shows up as a reviewable diff; accept an
//! intended one with `INSTA_UPDATE=always cargo test -p wardengate-operator --test snapshots`
//! (or `cargo insta review`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

fn example(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/../examples/{name}.yaml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn rendered(yaml: &str) -> String {
    wardengate_operator::render::render(yaml).unwrap().to_yaml()
}

#[test]
fn quickstart() {
    insta::assert_snapshot!(rendered(&example("quickstart")));
}

#[test]
fn three_zone_ha_with_its_gateway_pool() {
    let both = format!(
        "{}\n---\n{}",
        example("three-zone-ha"),
        example("gateway-pool")
    );
    insta::assert_snapshot!(rendered(&both));
}

#[test]
fn cloudnativepg() {
    insta::assert_snapshot!(rendered(&example("cloudnativepg")));
}

#[test]
fn redis_cluster() {
    insta::assert_snapshot!(rendered(&example("redis-cluster")));
}

/// Every pod override at once, over pinned zones: the zone pinning ANDed with the user's
/// required node affinity, labels, annotations, env and envFrom in their places.
#[test]
fn pod_overrides() {
    let yaml = r#"
apiVersion: wardengate.io/v1alpha1
kind: WardengateCluster
metadata: {name: wg, namespace: access}
spec:
  version: "0.1.0"
  replicas: 2
  zones: [a, b]
  postgres: {external: {urlSecretRef: {name: db, key: url}}}
  redis: {mode: standalone, hosts: ["redis:6379"]}
  nodeSelector: {node-pool: control-plane}
  tolerations: [{key: dedicated, operator: Equal, value: wardengate, effect: NoSchedule}]
  priorityClassName: wardengate-critical
  affinity:
    nodeAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        nodeSelectorTerms: [{matchExpressions: [{key: disk, operator: In, values: [ssd]}]}]
  podAnnotations: {example.com/owner: sre}
  podLabels: {team: access}
  env:
    - name: HTTPS_PROXY
      valueFrom: {secretKeyRef: {name: proxy, key: url}}
  envFrom: [{configMapRef: {name: tuning}}]
"#;
    insta::assert_snapshot!(rendered(yaml));
}
