//! The pure builders: each property issue 4 and the HA guide require, pinned.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use k8s_openapi::api::apps::v1::Deployment;
use wardengate_operator::build::{Owned, SecretMaterial, cluster_objects};
use wardengate_operator::render::{RenderError, render};
use wardengate_operator::validate::validate;

fn example(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/../examples/{name}.yaml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn objects(yaml: &str) -> Vec<Owned> {
    render(yaml).unwrap().objects
}

fn deployments(objs: &[Owned]) -> Vec<&Deployment> {
    objs.iter()
        .filter_map(|o| {
            if let Owned::Deployment(d) = o {
                Some(d)
            } else {
                None
            }
        })
        .collect()
}

fn find<'a>(objs: &'a [Owned], what: &str) -> &'a Owned {
    objs.iter()
        .find(|o| o.describe() == what)
        .unwrap_or_else(|| panic!("no {what}"))
}

#[test]
fn three_zones_get_one_pinned_deployment_each() {
    let objs = objects(&example("three-zone-ha"));
    let ds = deployments(&objs);
    assert_eq!(ds.len(), 3);
    for (d, zone) in ds.iter().zip(["eu-west-1a", "eu-west-1b", "eu-west-1c"]) {
        let spec = &d.spec;
        assert_eq!(spec.replicas, Some(1));
        assert_eq!(spec.min_ready_seconds, Some(10));
        let ru = spec
            .strategy
            .as_ref()
            .unwrap()
            .rolling_update
            .as_ref()
            .unwrap();
        assert_eq!(
            serde_json::to_value(ru).unwrap(),
            serde_json::json!({"maxSurge": 1, "maxUnavailable": 0})
        );
        let pod = spec.template.spec.as_ref().unwrap();
        let na = pod
            .affinity
            .as_ref()
            .unwrap()
            .node_affinity
            .as_ref()
            .unwrap();
        let term = &na
            .required_during_scheduling_ignored_during_execution
            .as_ref()
            .unwrap()
            .node_selector_terms[0];
        let req = &term.match_expressions.as_ref().unwrap()[0];
        assert_eq!(
            (req.key.as_str(), req.values.as_ref().unwrap()[0].as_str()),
            ("topology.kubernetes.io/zone", zone)
        );
        let anti = pod
            .affinity
            .as_ref()
            .unwrap()
            .pod_anti_affinity
            .as_ref()
            .unwrap();
        assert_eq!(
            anti.preferred_during_scheduling_ignored_during_execution
                .as_ref()
                .unwrap()[0]
                .pod_affinity_term
                .topology_key,
            "kubernetes.io/hostname"
        );
        assert!(pod.topology_spread_constraints.is_none());
    }
}

#[test]
fn without_zones_one_deployment_spreads_over_zones() {
    let objs = objects(&example("redis-cluster"));
    let ds = deployments(&objs);
    assert_eq!(ds.len(), 1);
    assert_eq!(ds[0].spec.replicas, Some(6));
    let tsc = &ds[0]
        .spec
        .template
        .spec
        .as_ref()
        .unwrap()
        .topology_spread_constraints
        .as_ref()
        .unwrap()[0];
    assert_eq!(
        (tsc.topology_key.as_str(), tsc.max_skew),
        ("topology.kubernetes.io/zone", 1)
    );
}

#[test]
fn probes_drain_and_grace_follow_the_guide() {
    let objs = objects(&example("three-zone-ha"));
    let pod = deployments(&objs)[0].spec.template.spec.clone().unwrap();
    assert_eq!(
        pod.termination_grace_period_seconds,
        Some(300),
        "drain 270 s + 30 s margin"
    );
    let c = &pod.containers[0];
    let live = c.liveness_probe.as_ref().unwrap();
    let get = live.http_get.as_ref().unwrap();
    assert_eq!(
        (get.path.as_deref(), get.scheme.as_deref()),
        (Some("/healthz"), Some("HTTPS"))
    );
    assert_eq!(serde_json::to_value(&get.port).unwrap(), "https");
    assert_eq!(
        (
            live.period_seconds,
            live.timeout_seconds,
            live.failure_threshold
        ),
        (Some(5), Some(2), Some(3))
    );
    assert_eq!(
        c.readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap()
            .path
            .as_deref(),
        Some("/readyz")
    );
    let pre = c
        .lifecycle
        .as_ref()
        .unwrap()
        .pre_stop
        .as_ref()
        .unwrap()
        .exec
        .as_ref()
        .unwrap()
        .command
        .clone()
        .unwrap();
    assert_eq!(pre[0], "wgctl");
    assert_eq!(
        &pre[pre.len() - 4..],
        ["system", "drain", "--timeout", "270s"]
    );
    assert_eq!(
        c.ports
            .as_ref()
            .unwrap()
            .iter()
            .map(|p| p.container_port)
            .collect::<Vec<_>>(),
        [8443, 8444]
    );
}

#[test]
fn explicit_grace_is_kept() {
    let yaml = example("quickstart").replace("  version: \"0.1.0\"", "  version: \"0.1.0\"\n  terminationGracePeriodSeconds: 900\n  drain: {timeoutSeconds: 600}");
    let objs = objects(&yaml);
    assert_eq!(
        deployments(&objs)[0]
            .spec
            .template
            .spec
            .as_ref()
            .unwrap()
            .termination_grace_period_seconds,
        Some(900)
    );
}

#[test]
fn secrets_are_referenced_never_copied() {
    let yaml = example("three-zone-ha");
    let objs = objects(&yaml);
    let Owned::ConfigMap(cm) = find(&objs, "ConfigMap/wardengate-config") else {
        unreachable!()
    };
    let text = serde_json::to_string(cm).unwrap();
    for forbidden in ["password", "WG_DATABASE_URL"] {
        assert!(
            !text.contains(forbidden),
            "ConfigMap mentions {forbidden}: {text}"
        );
    }
    let env = deployments(&objs)[0]
        .spec
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .env
        .clone()
        .unwrap();
    let by_name = |n: &str| {
        env.iter()
            .find(|e| e.name == n)
            .unwrap_or_else(|| panic!("no env {n}"))
    };
    let pw = by_name("WG_DATABASE_PASSWORD")
        .value_from
        .as_ref()
        .unwrap()
        .secret_key_ref
        .as_ref()
        .unwrap();
    assert_eq!(
        (pw.name.as_str(), pw.key.as_str()),
        ("wardengate-pg", "password")
    );
    assert_eq!(
        by_name("WG_DATABASE_URL").value.as_deref(),
        Some(
            "postgres://$(WG_DATABASE_USER):$(WG_DATABASE_PASSWORD)@pg-primary.db.svc:5432/wardengate?sslmode=require"
        )
    );
    assert_eq!(
        by_name("WG_REDIS_URL").value.as_deref(),
        Some(
            "sentinel://:$(WG_REDIS_PASSWORD)@sentinel-0.redis.svc:26379,sentinel-1.redis.svc:26379,sentinel-2.redis.svc:26379/wardengate"
        )
    );
    // $(VAR) expansion only sees variables defined earlier.
    let pos = |n: &str| env.iter().position(|e| e.name == n).unwrap();
    assert!(pos("WG_REDIS_PASSWORD") < pos("WG_REDIS_URL"));
    assert!(pos("WG_DATABASE_PASSWORD") < pos("WG_DATABASE_URL"));
    // CloudNativePG: the app Secret's URI.
    let objs = objects(&example("cloudnativepg"));
    let env = deployments(&objs)[0]
        .spec
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .env
        .clone()
        .unwrap();
    let url = env
        .iter()
        .find(|e| e.name == "WG_DATABASE_URL")
        .unwrap()
        .value_from
        .clone()
        .unwrap()
        .secret_key_ref
        .unwrap();
    assert_eq!(
        (url.name.as_str(), url.key.as_str()),
        ("wardengate-pg-app", "uri")
    );
}

#[test]
fn service_is_l4_without_affinity() {
    let objs = objects(&example("three-zone-ha"));
    let Owned::Service(s) = find(&objs, "Service/wardengate") else {
        unreachable!()
    };
    let spec = s.spec.as_ref().unwrap();
    assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
    assert_eq!(spec.session_affinity.as_deref(), Some("None"));
    assert_eq!(spec.external_traffic_policy.as_deref(), Some("Local"));
    assert_eq!(
        spec.ports
            .as_ref()
            .unwrap()
            .iter()
            .map(|p| p.port)
            .collect::<Vec<_>>(),
        [8443, 8444]
    );
    assert!(
        s.metadata
            .annotations
            .as_ref()
            .unwrap()
            .contains_key("service.beta.kubernetes.io/aws-load-balancer-type")
    );
    let objs = objects(&example("cloudnativepg"));
    let Owned::Service(s) = find(&objs, "Service/wardengate") else {
        unreachable!()
    };
    let spec = s.spec.as_ref().unwrap();
    assert_eq!(
        (
            spec.type_.as_deref(),
            spec.external_traffic_policy.as_deref()
        ),
        (Some("ClusterIP"), None)
    );
}

#[test]
fn pdb_cannot_deadlock_a_drain_and_is_absent_below_two() {
    let objs = objects(&example("three-zone-ha"));
    let Owned::Pdb(p) = find(&objs, "PodDisruptionBudget/wardengate-cp") else {
        unreachable!()
    };
    let spec = p.spec.as_ref().unwrap();
    assert_eq!(serde_json::to_value(&spec.max_unavailable).unwrap(), 1);
    assert!(spec.min_available.is_none());
    assert_eq!(
        spec.unhealthy_pod_eviction_policy.as_deref(),
        Some("AlwaysAllow")
    );
    let one = example("quickstart").replace(
        "  version: \"0.1.0\"",
        "  version: \"0.1.0\"\n  replicas: 1",
    );
    let r = render(&one).unwrap();
    assert!(r.objects.iter().all(|o| !matches!(o, Owned::Pdb(_))));
    assert!(
        r.notes.iter().any(|n| n.contains("recommends three")),
        "{:?}",
        r.notes
    );
}

#[test]
fn generated_secrets_are_empty_in_previews_and_keep_given_material() {
    let objs = objects(&example("quickstart"));
    let Owned::Secret(s) = find(&objs, "Secret/wardengate-internal") else {
        unreachable!()
    };
    assert!(s.data.is_none(), "render must not invent secret material");
    assert_eq!(s.immutable, Some(true));
    let c: wardengate_crds::WardengateCluster =
        serde_yaml::from_str(&example("quickstart")).unwrap();
    let v = validate(&c).unwrap();
    let mut m = SecretMaterial::default();
    m.internal
        .insert("keys".into(), k8s_openapi::ByteString(b"k1 abc".to_vec()));
    let built = cluster_objects(&v, None, &m);
    let Owned::Secret(s) = &built[1] else {
        unreachable!()
    };
    assert_eq!(s.data.as_ref().unwrap()["keys"].0, b"k1 abc");
    // A given TLS Secret: none generated, the pod mounts the given one.
    let objs = objects(&example("redis-cluster"));
    assert!(objs.iter().all(|o| o.describe() != "Secret/wardengate-tls"));
    let pod = deployments(&objs)[0].spec.template.spec.clone().unwrap();
    let tls = pod
        .volumes
        .unwrap()
        .into_iter()
        .find(|v| v.name == "tls")
        .unwrap();
    assert_eq!(
        tls.secret.unwrap().secret_name.as_deref(),
        Some("wardengate-serving-cert")
    );
}

#[test]
fn rendering_is_deterministic() {
    let y = example("three-zone-ha");
    assert_eq!(render(&y).unwrap().to_yaml(), render(&y).unwrap().to_yaml());
}

#[test]
fn invalid_resources_fail_with_the_field_named() {
    let bad = example("quickstart").replace(
        "    hosts: [\"redis.wardengate.svc:6379\"]",
        "    hosts: [\"r:6379\"]\n    password: hunter2",
    );
    let err = render(&bad).unwrap_err();
    assert!(matches!(err, RenderError::Invalid { .. }));
    assert!(
        err.to_string()
            .contains("spec.redis.password: credentials must not be inline"),
        "{err}"
    );
    let zones = example("quickstart").replace(
        "  version: \"0.1.0\"",
        "  version: \"0.1.0\"\n  replicas: 2\n  zones: [a, b, c]",
    );
    assert!(
        render(&zones)
            .unwrap_err()
            .to_string()
            .contains("spec.replicas: 2 replicas cannot cover 3 zones")
    );
    let typo = example("quickstart")
        .replace("replicas", "x")
        .replace("  version: \"0.1.0\"", "  version: 3.5\n  replicas: many");
    assert!(matches!(
        render(&typo).unwrap_err(),
        RenderError::Parse { doc: 1, .. }
    ));
    let other = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n";
    assert!(
        render(other)
            .unwrap_err()
            .to_string()
            .contains("not a Wardengate resource")
    );
}

#[test]
fn a_pool_renders_relay_only_gateways_on_its_node_pool_with_their_own_service_and_pdb() {
    let yaml = format!(
        "{}\n---\n{}",
        example("remote-gateway-pool"),
        example("three-zone-ha")
    );
    let objs = objects(&yaml);
    let Owned::Deployment(d) = find(&objs, "Deployment/us-east-gw") else {
        panic!()
    };
    let sel = d.spec.selector.match_labels.clone().unwrap();
    assert_eq!(sel["app.kubernetes.io/component"], "gateway");
    assert_eq!(sel["wardengate.io/pool"], "us-east");
    assert_eq!(d.spec.replicas, Some(2));
    let pod = d.spec.template.spec.as_ref().unwrap();
    assert_eq!(
        pod.node_selector.as_ref().unwrap()["wardengate.io/pool"],
        "gateways"
    );
    assert_eq!(
        pod.tolerations.as_ref().unwrap()[0].key.as_deref(),
        Some("dedicated")
    );
    let c = &pod.containers[0];
    let role = c
        .env
        .as_ref()
        .unwrap()
        .iter()
        .find(|e| e.name == "WG_ROLE")
        .unwrap();
    assert_eq!(role.value.as_deref(), Some("gateway"));
    assert!(
        c.image.as_deref().unwrap().ends_with(":0.1.0"),
        "the cluster's version"
    );
    assert!(
        pod.topology_spread_constraints.as_ref().unwrap()[0]
            .label_selector
            .as_ref()
            .unwrap()
            .match_labels
            .as_ref()
            .unwrap()["wardengate.io/pool"]
            == "us-east"
    );
    let Owned::Service(s) = find(&objs, "Service/us-east-gw") else {
        panic!()
    };
    assert_eq!(s.spec.as_ref().unwrap().selector.as_ref().unwrap(), &sel);
    let Owned::Pdb(b) = find(&objs, "PodDisruptionBudget/us-east-gw") else {
        panic!()
    };
    assert_eq!(
        b.spec
            .as_ref()
            .unwrap()
            .selector
            .as_ref()
            .unwrap()
            .match_labels
            .as_ref()
            .unwrap(),
        &sel
    );
    // The control plane's Service does not select gateways.
    let Owned::Service(cp) = find(&objs, "Service/wardengate") else {
        panic!()
    };
    assert_eq!(
        cp.spec.as_ref().unwrap().selector.as_ref().unwrap()["app.kubernetes.io/component"],
        "control-plane"
    );
}

#[test]
fn a_pool_without_its_cluster_in_the_file_renders_nothing_and_says_why() {
    let r = render(&example("remote-gateway-pool")).unwrap();
    assert!(r.objects.is_empty());
    assert!(
        r.notes.iter().any(|n| n.contains("not in this file")),
        "{:?}",
        r.notes
    );
}

#[test]
fn a_pool_in_another_namespace_than_its_cluster_is_refused_naming_the_field() {
    let yaml = example("remote-gateway-pool").replace(
        "clusterRef: {name: wardengate}",
        "clusterRef: {name: wardengate, namespace: elsewhere}",
    );
    let err = render(&yaml).unwrap_err();
    assert!(
        err.to_string().contains("spec.clusterRef.namespace"),
        "{err}"
    );
}
