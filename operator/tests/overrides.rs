//! Pod overrides of both kinds (issue 13 item 5): validated with errors naming the field, and
//! laid over the operator's pod template as additions — zone pinning ANDed with the user's
//! required node affinity, the operator's labels winning, its `WG_*` variables untouchable.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::PodSpec;
use serde_json::{Value, json};
use wardengate_crds::{GatewayPool, OPERATOR_ENV, WardengateCluster};
use wardengate_operator::build::{Owned, SecretMaterial, cluster_objects, pool_objects};
use wardengate_operator::render::render;
use wardengate_operator::validate::{validate, validate_pool};

fn base() -> Value {
    json!({
        "version": "0.1.0",
        "replicas": 3,
        "zones": ["a", "b", "c"],
        "postgres": {"external": {"urlSecretRef": {"name": "db", "key": "url"}}},
        "redis": {"mode": "standalone", "hosts": ["redis:6379"]},
    })
}

fn merge(mut a: Value, b: Value) -> Value {
    for (k, v) in b.as_object().unwrap() {
        a[k] = v.clone();
    }
    a
}

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
        "metadata": {"name": "edge", "namespace": "ns"},
        "spec": merge(json!({"clusterRef": {"name": "wg"}}), spec),
    }))
    .unwrap()
}

fn cluster_deployments(spec: Value) -> Vec<Deployment> {
    let v = validate(&cluster(spec)).unwrap();
    cluster_objects(&v, None, &SecretMaterial::default())
        .zones
        .into_iter()
        .map(|z| z.deployment)
        .collect()
}

fn pool_deployment(cluster_spec: Value, pool_spec: Value) -> Deployment {
    let v = validate(&cluster(cluster_spec)).unwrap();
    let p = validate_pool(&pool(pool_spec)).unwrap();
    pool_objects(&p, &v, "0.1.0", None)
        .zones
        .remove(0)
        .deployment
}

fn pod(d: &Deployment) -> &PodSpec {
    d.spec.template.spec.as_ref().unwrap()
}

fn invalid(c: Result<impl std::fmt::Debug, impl std::fmt::Display>, field: &str) -> String {
    let msg = c.unwrap_err().to_string();
    assert!(msg.starts_with(field), "`{msg}` does not name `{field}`");
    msg
}

fn placement() -> Value {
    json!({
        "nodeSelector": {"node-pool": "control-plane"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "wardengate", "effect": "NoSchedule"}],
        "priorityClassName": "wardengate-critical",
    })
}

#[test]
fn node_selector_tolerations_and_priority_class_reach_every_zone_deployment() {
    let ds = cluster_deployments(merge(base(), placement()));
    assert_eq!(ds.len(), 3);
    for d in &ds {
        let p = pod(d);
        assert_eq!(
            p.node_selector.as_ref().unwrap()["node-pool"],
            "control-plane"
        );
        let t = &p.tolerations.as_ref().unwrap()[0];
        assert_eq!(
            (t.key.as_deref(), t.value.as_deref(), t.effect.as_deref()),
            (Some("dedicated"), Some("wardengate"), Some("NoSchedule"))
        );
        assert_eq!(
            p.priority_class_name.as_deref(),
            Some("wardengate-critical")
        );
    }
    // Without overrides nothing of the kind is rendered.
    let plain = cluster_deployments(base());
    let p = pod(&plain[0]);
    assert!(p.node_selector.is_none() && p.tolerations.is_none());
    assert!(p.priority_class_name.is_none());
}

#[test]
fn required_node_affinity_is_anded_with_zone_pinning_and_other_terms_are_appended() {
    let spec = merge(
        base(),
        json!({"affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]},
                    {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["nvme"]}]},
                ]},
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 10, "preference": {"matchExpressions": [{"key": "cpu", "operator": "In", "values": ["fast"]}]}}
                ],
            },
            "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"app": "noisy"}}}
            ]},
        }}),
    );
    for (d, zone) in cluster_deployments(spec).iter().zip(["a", "b", "c"]) {
        let a = pod(d).affinity.as_ref().unwrap();
        let na = a.node_affinity.as_ref().unwrap();
        let terms = &na
            .required_during_scheduling_ignored_during_execution
            .as_ref()
            .unwrap()
            .node_selector_terms;
        // (zone) AND (ssd OR nvme) = (zone AND ssd) OR (zone AND nvme): no term lets a pod
        // leave its zone.
        assert_eq!(terms.len(), 2, "{terms:?}");
        for (t, disk) in terms.iter().zip(["ssd", "nvme"]) {
            let e = t.match_expressions.as_ref().unwrap();
            assert_eq!(e.len(), 2, "{e:?}");
            assert_eq!(e[0].key, "topology.kubernetes.io/zone");
            assert_eq!(e[0].values.as_deref(), Some(&[zone.to_string()][..]));
            assert_eq!(e[1].key, "disk");
            assert_eq!(e[1].values.as_deref(), Some(&[disk.to_string()][..]));
        }
        assert_eq!(
            na.preferred_during_scheduling_ignored_during_execution
                .as_ref()
                .unwrap()
                .len(),
            1
        );
        let anti = a.pod_anti_affinity.as_ref().unwrap();
        // The operator's hostname spreading stays; the user's term is added.
        let own = &anti
            .preferred_during_scheduling_ignored_during_execution
            .as_ref()
            .unwrap()[0];
        assert_eq!(
            own.pod_affinity_term
                .label_selector
                .as_ref()
                .unwrap()
                .match_labels
                .as_ref()
                .unwrap()["app.kubernetes.io/component"],
            "control-plane"
        );
        let user = &anti
            .required_during_scheduling_ignored_during_execution
            .as_ref()
            .unwrap()[0];
        assert_eq!(
            user.label_selector
                .as_ref()
                .unwrap()
                .match_labels
                .as_ref()
                .unwrap()["app"],
            "noisy"
        );
    }
}

#[test]
fn without_zones_the_users_required_affinity_is_used_as_given_and_spread_stays() {
    let mut spec = merge(
        base(),
        json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
            {"nodeSelectorTerms": [{"matchExpressions": [{"key": "disk", "operator": "Exists"}]}]}}}}),
    );
    spec.as_object_mut().unwrap().remove("zones");
    let ds = cluster_deployments(spec);
    let p = pod(&ds[0]);
    let terms = &p
        .affinity
        .as_ref()
        .unwrap()
        .node_affinity
        .as_ref()
        .unwrap()
        .required_during_scheduling_ignored_during_execution
        .as_ref()
        .unwrap()
        .node_selector_terms;
    assert_eq!(terms.len(), 1);
    assert_eq!(terms[0].match_expressions.as_ref().unwrap()[0].key, "disk");
    assert_eq!(p.topology_spread_constraints.as_ref().unwrap().len(), 1);
}

#[test]
fn pod_labels_never_replace_the_operators_and_annotations_are_added() {
    let spec = merge(
        base(),
        json!({
            "podLabels": {"team": "access", "app.kubernetes.io/component": "mine"},
            "podAnnotations": {"example.com/owner": "sre"},
        }),
    );
    let v = validate(&cluster(spec.clone())).unwrap();
    assert!(
        v.warnings
            .iter()
            .any(|w| w.contains("spec.podLabels.app.kubernetes.io/component")),
        "{:?}",
        v.warnings
    );
    for d in cluster_deployments(spec) {
        let meta = d.spec.template.metadata.as_ref().unwrap();
        let labels = meta.labels.as_ref().unwrap();
        assert_eq!(labels["team"], "access");
        assert_eq!(labels["app.kubernetes.io/component"], "control-plane");
        // The Deployment's selector still matches its pods.
        for (k, want) in d.spec.selector.match_labels.as_ref().unwrap() {
            assert_eq!(labels.get(k), Some(want), "selector key {k}");
        }
        assert_eq!(
            meta.annotations.as_ref().unwrap()["example.com/owner"],
            "sre"
        );
    }
}

#[test]
fn extra_env_is_appended_and_env_from_comes_before_the_operators_config_map() {
    let spec = merge(
        base(),
        json!({
            "env": [
                {"name": "HTTPS_PROXY", "valueFrom": {"secretKeyRef": {"name": "proxy", "key": "url"}}},
                {"name": "WG_LOG_LEVEL", "valueFrom": {"configMapKeyRef": {"name": "tuning", "key": "log"}}},
            ],
            "envFrom": [{"secretRef": {"name": "vendor"}, "prefix": "VENDOR_"}],
        }),
    );
    for d in cluster_deployments(spec) {
        let c = &pod(&d).containers[0];
        let env = c.env.as_ref().unwrap();
        let names: Vec<&str> = env.iter().map(|e| e.name.as_str()).collect();
        let n = names.len();
        assert_eq!(
            &names[n - 2..],
            ["HTTPS_PROXY", "WG_LOG_LEVEL"],
            "{names:?}"
        );
        assert_eq!(
            env[n - 2]
                .value_from
                .as_ref()
                .unwrap()
                .secret_key_ref
                .as_ref()
                .unwrap()
                .name,
            "proxy"
        );
        let from = c.env_from.as_ref().unwrap();
        assert_eq!(from[0].secret_ref.as_ref().unwrap().name, "vendor");
        assert_eq!(from[0].prefix.as_deref(), Some("VENDOR_"));
        // The operator's ConfigMap is last: its WG_* keys win over any source's.
        assert_eq!(
            from.last()
                .unwrap()
                .config_map_ref
                .as_ref()
                .map(|r| r.name.as_str()),
            Some("wg-config")
        );
    }
}

#[test]
fn a_pool_gets_its_own_overrides_not_the_clusters() {
    let d = pool_deployment(
        merge(base(), placement()),
        json!({
            "nodeSelector": {"wardengate.io/pool": "edge"},
            "tolerations": [{"key": "gateways", "operator": "Exists", "effect": "NoSchedule"}],
            "priorityClassName": "gateway-high",
            "podLabels": {"tier": "edge"},
            "env": [{"name": "EXTRA", "value": "1"}],
            "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 5, "podAffinityTerm": {"topologyKey": "zone",
                  "labelSelector": {"matchLabels": {"app.kubernetes.io/component": "control-plane",
                                                    "app.kubernetes.io/instance": "other"}}}}]}},
        }),
    );
    let p = pod(&d);
    assert_eq!(
        p.node_selector.as_ref().unwrap().clone(),
        [("wardengate.io/pool".to_string(), "edge".to_string())].into()
    );
    assert_eq!(p.tolerations.as_ref().unwrap().len(), 1);
    assert_eq!(
        p.tolerations.as_ref().unwrap()[0].key.as_deref(),
        Some("gateways")
    );
    assert_eq!(p.priority_class_name.as_deref(), Some("gateway-high"));
    let labels = d
        .spec
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .as_ref()
        .unwrap();
    assert_eq!(labels["tier"], "edge");
    assert_eq!(labels["app.kubernetes.io/component"], "gateway");
    let env: Vec<&str> = p.containers[0]
        .env
        .as_ref()
        .unwrap()
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    assert!(
        env.contains(&"EXTRA") && env.contains(&"WG_ROLE"),
        "{env:?}"
    );
    // The operator's own anti-affinity term is relabelled for the pool; the user's is left as
    // written, even though it selects control-plane pods (of another cluster).
    let terms = p
        .affinity
        .as_ref()
        .unwrap()
        .pod_anti_affinity
        .as_ref()
        .unwrap()
        .preferred_during_scheduling_ignored_during_execution
        .as_ref()
        .unwrap();
    let comp = |i: usize| {
        terms[i]
            .pod_affinity_term
            .label_selector
            .as_ref()
            .unwrap()
            .match_labels
            .as_ref()
            .unwrap()["app.kubernetes.io/component"]
            .clone()
    };
    assert_eq!(
        (comp(0).as_str(), comp(1).as_str()),
        ("gateway", "control-plane")
    );
}

#[test]
fn env_the_operator_sets_is_refused_naming_the_field() {
    for name in OPERATOR_ENV {
        let e = json!({"env": [{"name": "OK", "value": "1"}, {"name": name, "value": "x"}]});
        let msg = invalid(
            validate(&cluster(merge(base(), e.clone()))),
            "spec.env[1].name",
        );
        assert!(msg.contains(name), "{msg}");
        invalid(validate_pool(&pool(e.clone())), "spec.env[1].name");
        // Admission (CEL, as the apiserver runs it) refuses it too.
        assert!(cluster(merge(base(), e)).validate_cel().is_err());
    }
    // Past admission (a fake or old apiserver), the pure check names the index.
    let c = cluster(merge(
        base(),
        json!({"env": [{"name": "OK", "value": "1"}, {"name": "OK", "value": "2"}]}),
    ));
    invalid(validate(&c), "spec.env[1].name");
}

#[test]
fn env_and_env_from_shapes_are_checked_naming_the_field() {
    let cases = [
        (
            json!({"envFrom": [{"configMapRef": {"name": "x"}, "prefix": "WG_"}]}),
            "spec.envFrom[0].prefix",
        ),
        (json!({"envFrom": [{"prefix": "X_"}]}), "spec.envFrom[0]"),
        (
            json!({"envFrom": [{"configMapRef": {"name": "x"}, "secretRef": {"name": "y"}}]}),
            "spec.envFrom[0]",
        ),
        (
            json!({"env": [{"name": "A", "value": "1", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}),
            "spec.env[0]",
        ),
        (
            json!({"env": [{"name": "A", "valueFrom": {}}]}),
            "spec.env[0].valueFrom",
        ),
        (
            json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}}}}),
            "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms",
        ),
        (json!({"priorityClassName": ""}), "spec.priorityClassName"),
    ];
    for (extra, field) in cases {
        invalid(validate(&cluster(merge(base(), extra.clone()))), field);
        invalid(validate_pool(&pool(extra)), field);
    }
}

/// `OPERATOR_ENV` (what validation and the CEL rule refuse) is exactly the set of variables the
/// builders set, by `env` or the ConfigMap, for a spec that uses every feature: a new variable
/// in a builder fails here until it is listed.
#[test]
fn operator_env_is_exactly_what_the_builders_set() {
    let yaml = r#"
apiVersion: wardengate.io/v1alpha1
kind: WardengateCluster
metadata: {name: wg, namespace: ns}
spec:
  version: "0.1.0"
  postgres:
    patroni: {primaryHost: pg, database: wg, credentialsSecretRef: {name: pg}}
  redis: {mode: standalone, hosts: ["redis:6379"], passwordSecretRef: {name: r, key: password}}
  recordings: {url: "s3://b/p", credentialsSecretRef: {name: s3}}
---
apiVersion: wardengate.io/v1alpha1
kind: GatewayPool
metadata: {name: edge, namespace: ns}
spec: {clusterRef: {name: wg}}
"#;
    let mut set = BTreeSet::new();
    for o in render(yaml).unwrap().objects {
        match o {
            Owned::ConfigMap(cm) => set.extend(cm.data.unwrap_or_default().into_keys()),
            Owned::Deployment(d) => {
                for c in d.spec.template.spec.unwrap().containers {
                    set.extend(c.env.unwrap_or_default().into_iter().map(|e| e.name));
                }
            }
            _ => {}
        }
    }
    let listed: BTreeSet<String> = OPERATOR_ENV.iter().map(|s| s.to_string()).collect();
    assert_eq!(set, listed);
}

/// The README's "Pod placement and overrides" lists every variable `spec.env` may not name.
#[test]
fn the_readme_names_every_refused_variable() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let section = readme
        .split("### Pod placement and overrides")
        .nth(1)
        .unwrap()
        .split("\n## ")
        .next()
        .unwrap();
    for name in OPERATOR_ENV {
        assert!(
            section.contains(&format!("`{name}`")),
            "README lacks {name}"
        );
    }
}
