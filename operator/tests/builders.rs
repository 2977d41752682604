//! The pure builders: each property issue 4 and the HA guide require, pinned.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, EnvVar, PodSpec};
use wardengate_operator::build::{Credentials, Owned, SecretMaterial, cluster_objects};
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
    assert_eq!(
        pre,
        ["wgctl", "system", "drain", "--local", "--timeout", "270s"],
        "through the local admin socket: no token, no CA"
    );
    let startup = c.startup_probe.as_ref().unwrap();
    let get = startup.http_get.as_ref().unwrap();
    assert_eq!(
        (get.path.as_deref(), get.scheme.as_deref()),
        (Some("/healthz"), Some("HTTPS"))
    );
    assert_eq!(
        (startup.period_seconds, startup.failure_threshold),
        (Some(2), Some(60)),
        "two minutes of start-up (a Postgres outage) before liveness may restart it"
    );
    assert_eq!(
        c.ports
            .as_ref()
            .unwrap()
            .iter()
            .map(|p| p.container_port)
            .collect::<Vec<_>>(),
        [8443, 8444, 2222],
        "HTTPS, the agent port, and SSH (the example terminates SSH)"
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
    // URLs built from credentials come from the operator's connection Secret, never by
    // splicing a raw password into a URL with $(VAR).
    for (var, key) in [
        ("WG_DATABASE_URL", "database-url"),
        ("WG_REDIS_URL", "redis-url"),
    ] {
        let r = by_name(var)
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap();
        assert_eq!(
            (r.name.as_str(), r.key.as_str()),
            ("wardengate-connection", key)
        );
    }
    assert!(
        env.iter()
            .all(|e| e.value.as_deref().is_none_or(|v| !v.contains("$("))),
        "{env:?}"
    );
    let Owned::Secret(conn) = find(&objs, "Secret/wardengate-connection") else {
        unreachable!()
    };
    assert_eq!(conn.data, None, "a preview reads no Secret");
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
        [8443, 8444, 2222]
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
    let s = built
        .secrets
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some("wardengate-internal"))
        .unwrap();
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
        example("gateway-pool"),
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
    let r = render(&example("gateway-pool")).unwrap();
    assert!(r.objects.is_empty());
    assert!(
        r.notes.iter().any(|n| n.contains("not in this file")),
        "{:?}",
        r.notes
    );
}

#[test]
fn a_pool_in_another_namespace_than_its_cluster_is_refused_naming_the_field() {
    let yaml = example("gateway-pool").replace(
        "clusterRef: {name: wardengate}",
        "clusterRef: {name: wardengate, namespace: elsewhere}",
    );
    let err = render(&yaml).unwrap_err();
    assert!(
        err.to_string().contains("spec.clusterRef.namespace"),
        "{err}"
    );
}

#[test]
fn a_pool_in_another_namespace_is_pointed_at_spec_control_plane() {
    let yaml = example("gateway-pool").replace(
        "clusterRef: {name: wardengate}",
        "clusterRef: {name: wardengate, namespace: elsewhere}",
    );
    let err = render(&yaml).unwrap_err().to_string();
    assert!(err.contains("spec.controlPlane"), "{err}");
}

#[test]
fn a_remote_pool_dials_out_with_no_database_or_redis_wiring() {
    let r = render(&example("remote-gateway-pool")).unwrap();
    let objs = &r.objects;
    assert!(
        r.notes
            .iter()
            .any(|n| n.contains("status.controlPlaneVersion")),
        "{:?}",
        r.notes
    );
    let kinds: Vec<String> = objs.iter().map(Owned::describe).collect();
    assert_eq!(
        kinds,
        [
            "ServiceAccount/ap-south-gw",
            "Deployment/ap-south-gw",
            "Service/ap-south-gw",
            "PodDisruptionBudget/ap-south-gw",
            "NetworkPolicy/ap-south-gw",
        ],
        "no ConfigMap or Secret of a cluster"
    );
    let Owned::Deployment(d) = find(objs, "Deployment/ap-south-gw") else {
        panic!()
    };
    let p = pod(d);
    let c = &p.containers[0];
    assert_eq!(
        c.args.clone().unwrap(),
        [
            "serve",
            "--role",
            "gateway",
            "--control-plane",
            "https://wardengate-agent.example.com:8444",
            "--join-token-file",
            "/etc/wardengate/join/token",
            "--region",
            "ap-south-1",
            "--public-address",
            "gw.ap-south.example.com:8443",
            "--agent-state-dir",
            "/var/lib/wardengate/agent",
            "--control-plane-ca",
            "/etc/wardengate/control-plane-ca/ca.crt",
        ]
    );
    assert_eq!(
        c.image.as_deref(),
        Some("ghcr.io/wardengate/wardengate:0.1.0")
    );
    for gone in [
        "WG_DATABASE_URL",
        "WG_REDIS_URL",
        "WG_ADMIN_TOKEN_FILE",
        "WG_RECORDING_KEY_FILE",
        "WG_OBSERVER_TOKEN_FILE",
        "WG_INTERNAL_KEY_FILE",
    ] {
        assert!(env_value(c, gone).is_none(), "{gone} in a remote gateway");
    }
    assert!(
        c.env_from.is_none(),
        "no cluster ConfigMap: {:?}",
        c.env_from
    );
    assert_eq!(
        env_value(c, "WG_TLS_CERT").unwrap().value.as_deref(),
        Some("/etc/wardengate/tls/tls.crt")
    );
    // Mounted: its certificate, the join token, the CA and the agent state; not the internal
    // Secret of a cluster.
    assert_eq!(mount(c, "/etc/wardengate/join"), Some("join-token"));
    assert_eq!(
        mount(c, "/etc/wardengate/control-plane-ca"),
        Some("control-plane-ca")
    );
    assert_eq!(mount(c, "/var/lib/wardengate/agent"), Some("agent-state"));
    assert_eq!(mount(c, "/etc/wardengate/internal"), None);
    assert!(volume(p, "agent-state").empty_dir.is_some());
    let join = volume(p, "join-token").secret.as_ref().unwrap();
    assert_eq!(join.secret_name.as_deref(), Some("ap-south-join"));
    assert_eq!(join.items.as_ref().unwrap()[0].path, "token");
    assert_eq!(
        volume(p, "tls")
            .secret
            .as_ref()
            .unwrap()
            .secret_name
            .as_deref(),
        Some("ap-south-tls")
    );
    assert!(
        p.volumes
            .as_ref()
            .unwrap()
            .iter()
            .all(|v| v.name != "internal")
    );
    assert_eq!(p.service_account_name.as_deref(), Some("ap-south-gw"));
    // The same placement and drain as any pool: spread, node pool, preStop, grace.
    assert_eq!(
        p.node_selector.as_ref().unwrap()["wardengate.io/pool"],
        "gateways"
    );
    let spread = &p.topology_spread_constraints.as_ref().unwrap()[0];
    assert_eq!(spread.topology_key, "topology.kubernetes.io/zone");
    assert_eq!(
        spread
            .label_selector
            .as_ref()
            .unwrap()
            .match_labels
            .as_ref()
            .unwrap()["wardengate.io/pool"],
        "ap-south"
    );
    assert_eq!(pre_stop(c).last().unwrap(), "270s");
    assert_eq!(p.termination_grace_period_seconds, Some(300));
    let ports: Vec<i32> = c
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .map(|p| p.container_port)
        .collect();
    assert_eq!(ports, [8443], "the agent port is the control plane's");
    let Owned::Service(s) = find(objs, "Service/ap-south-gw") else {
        panic!()
    };
    let sp: Vec<i32> = s
        .spec
        .as_ref()
        .unwrap()
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .map(|p| p.port)
        .collect();
    assert_eq!(sp, [8443]);
}

#[test]
fn a_remote_pool_never_renders_newer_than_its_control_plane_reports() {
    let capped = format!(
        "{}\nstatus: {{controlPlaneVersion: 0.0.9}}\n",
        example("remote-gateway-pool")
    );
    let r = render(&capped).unwrap();
    let Owned::Deployment(d) = find(&r.objects, "Deployment/ap-south-gw") else {
        panic!()
    };
    assert_eq!(
        pod(d).containers[0].image.as_deref(),
        Some("ghcr.io/wardengate/wardengate:0.0.9")
    );
    assert!(r.notes.is_empty(), "{:?}", r.notes);
}

#[test]
fn remote_pool_specs_are_refused_in_the_words_of_admission() {
    use wardengate_crds::{
        EXACTLY_ONE_TARGET, PUBLIC_ADDRESS_FORMAT, PUBLIC_ADDRESS_REQUIRED, REGION_REQUIRED,
        TLS_REQUIRED, URL_FORMAT, VERSION_REQUIRED,
    };
    let remote = example("remote-gateway-pool");
    for (yaml, words) in [
        (
            remote.replace(
                "  region: ap-south-1\n",
                "  clusterRef: {name: wardengate}\n  region: ap-south-1\n",
            ),
            EXACTLY_ONE_TARGET,
        ),
        (
            remote.replace("  region: ap-south-1\n", ""),
            REGION_REQUIRED,
        ),
        (
            remote.replace("region: ap-south-1", &format!("region: {}", "r".repeat(64))),
            "spec.region: at most 63 characters",
        ),
        (remote.replace("  version: 0.1.0\n", ""), VERSION_REQUIRED),
        (
            remote.replace("  tls: {secretName: ap-south-tls}\n", ""),
            TLS_REQUIRED,
        ),
        (
            remote.replace("example.com:8444", "example.com:443"),
            URL_FORMAT,
        ),
        (
            remote.replace("https://wardengate-agent", "http://wardengate-agent"),
            URL_FORMAT,
        ),
        (
            remote.replace("  publicAddress: gw.ap-south.example.com:8443\n", ""),
            PUBLIC_ADDRESS_REQUIRED,
        ),
        (
            remote.replace("gw.ap-south.example.com:8443", "gw.ap-south.example.com"),
            PUBLIC_ADDRESS_FORMAT,
        ),
        (
            remote.replace("gw.ap-south.example.com:8443", "\"[fd00::7:8443\""),
            PUBLIC_ADDRESS_FORMAT,
        ),
    ] {
        assert_ne!(yaml, remote, "the case changed the example");
        let err = render(&yaml).unwrap_err().to_string();
        assert!(err.contains(words), "`{err}` does not say `{words}`");
    }
}

fn pod(d: &Deployment) -> &PodSpec {
    d.spec.template.spec.as_ref().unwrap()
}

fn env_value<'a>(c: &'a Container, name: &str) -> Option<&'a EnvVar> {
    c.env.as_ref().unwrap().iter().find(|e| e.name == name)
}

fn pre_stop(c: &Container) -> Vec<String> {
    c.lifecycle
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
        .unwrap()
}

fn mount<'a>(c: &'a Container, path: &str) -> Option<&'a str> {
    c.volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.mount_path == path)
        .map(|m| m.name.as_str())
}

fn volume<'a>(p: &'a PodSpec, name: &str) -> &'a k8s_openapi::api::core::v1::Volume {
    p.volumes
        .as_ref()
        .unwrap()
        .iter()
        .find(|v| v.name == name)
        .unwrap_or_else(|| panic!("no volume {name}"))
}

#[test]
fn the_drain_timeout_reaches_sigterm_and_the_hook_of_each_deployment() {
    let yaml = format!(
        "{}\n---\n{}",
        example("three-zone-ha").replace("timeoutSeconds: 270", "timeoutSeconds: 420"),
        example("gateway-pool").replace(
            "  replicas: 2",
            "  replicas: 2\n  drain: {timeoutSeconds: 90}"
        )
    );
    let objs = objects(&yaml);
    for (name, want) in [
        ("Deployment/wardengate-cp-eu-west-1a", "420s"),
        ("Deployment/us-east-gw", "90s"),
    ] {
        let Owned::Deployment(d) = find(&objs, name) else {
            unreachable!()
        };
        let c = &pod(d).containers[0];
        assert_eq!(
            env_value(c, "WG_DRAIN_TIMEOUT").unwrap().value.as_deref(),
            Some(want),
            "{name}"
        );
        assert_eq!(pre_stop(c).last().map(String::as_str), Some(want), "{name}");
    }
}

#[test]
fn the_drain_hook_uses_the_local_admin_socket_so_a_users_tls_secret_works() {
    let yaml = example("quickstart").replace(
        "  version: \"0.1.0\"",
        "  version: \"0.1.0\"\n  tls: {secretName: my-own-cert}",
    );
    let objs = objects(&yaml);
    assert!(
        !objs.iter().any(|o| o.describe() == "Secret/wardengate-tls"),
        "the user's certificate is used"
    );
    let d = deployments(&objs)[0];
    let p = pod(d);
    let c = &p.containers[0];
    let hook = pre_stop(c);
    assert!(hook.contains(&"--local".to_string()), "{hook:?}");
    assert!(
        !hook.iter().any(|a| a.contains("ca.crt") || a == "--addr"),
        "no CA file and no TLS address: {hook:?}"
    );
    assert_eq!(
        env_value(c, "WG_ADMIN_SOCKET").unwrap().value.as_deref(),
        Some("/run/wardengate/admin.sock")
    );
    for gone in ["WG_ADDR", "WG_TOKEN_FILE", "WG_CA_CERT"] {
        assert!(env_value(c, gone).is_none(), "{gone} is no longer needed");
    }
    let run = mount(c, "/run/wardengate").expect("the socket's directory is a volume");
    assert!(volume(p, run).empty_dir.is_some());
    assert_eq!(
        volume(p, "tls")
            .secret
            .as_ref()
            .unwrap()
            .secret_name
            .as_deref(),
        Some("my-own-cert")
    );
}

#[test]
fn recordings_get_a_spool_that_survives_restarts_and_their_credentials() {
    let objs = objects(&example("three-zone-ha"));
    let p = pod(deployments(&objs)[0]);
    let c = &p.containers[0];
    let spool = env_value(c, "WG_RECORDINGS_SPOOL")
        .unwrap()
        .value
        .clone()
        .unwrap();
    let vol = mount(c, &spool).expect("the spool is a mounted volume");
    assert!(
        volume(p, vol).empty_dir.is_some(),
        "an emptyDir outlives container restarts"
    );
    let from: Vec<_> = c
        .env_from
        .as_ref()
        .unwrap()
        .iter()
        .filter_map(|f| f.secret_ref.as_ref())
        .collect();
    assert_eq!(from.len(), 1);
    assert_eq!(
        (from[0].name.as_str(), from[0].optional),
        ("wardengate-recordings", Some(false))
    );
    // Without recordings: no spool, no credentials.
    let objs = objects(&example("quickstart"));
    let c = &pod(deployments(&objs)[0]).containers[0];
    assert!(env_value(c, "WG_RECORDINGS_SPOOL").is_none());
    assert!(mount(c, "/var/lib/wardengate/spool").is_none());
    assert!(
        c.env_from
            .as_ref()
            .unwrap()
            .iter()
            .all(|f| f.secret_ref.is_none())
    );
    // Credentials with a local directory make no sense: refused, naming the field.
    let yaml = example("three-zone-ha").replace(
        "s3://wardengate-recordings/prod",
        "file:///var/lib/recordings",
    );
    let err = render(&yaml).unwrap_err();
    assert!(
        err.to_string()
            .contains("spec.recordings.credentialsSecretRef"),
        "{err}"
    );
}

/// Percent-decoding, as the gateway does.
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

#[test]
fn passwords_in_urls_are_percent_encoded() {
    let nasty = "p@:/%#?w";
    let c: wardengate_crds::WardengateCluster =
        serde_yaml::from_str(&example("three-zone-ha")).unwrap();
    let v = validate(&c).unwrap();
    let m = SecretMaterial {
        credentials: Credentials {
            database_user: Some("wg@ops".into()),
            database_password: Some(nasty.into()),
            redis_password: Some(nasty.into()),
        },
        ..SecretMaterial::default()
    };
    let objs = cluster_objects(&v, None, &m).into_objects();
    let Owned::Secret(s) = find(&objs, "Secret/wardengate-connection") else {
        unreachable!()
    };
    let data = s.data.as_ref().unwrap();
    let text = |k: &str| String::from_utf8(data[k].0.clone()).unwrap();
    let db = text("database-url");
    assert_eq!(
        db,
        "postgres://wg%40ops:p%40%3A%2F%25%23%3Fw@pg-primary.db.svc:5432/wardengate?sslmode=require"
    );
    // The URL splits where a URL parser splits it, and decodes to the credentials.
    let rest = db.strip_prefix("postgres://").unwrap();
    let (userinfo, host) = rest.split_once('@').unwrap();
    assert!(host.starts_with("pg-primary.db.svc:5432/"), "{host}");
    let (user, pw) = userinfo.split_once(':').unwrap();
    assert_eq!(
        (decode(user).as_str(), decode(pw).as_str()),
        ("wg@ops", nasty)
    );
    let redis = text("redis-url");
    let rest = redis.strip_prefix("sentinel://:").unwrap();
    let (pw, hosts) = rest.split_once('@').unwrap();
    assert_eq!(decode(pw), nasty);
    assert!(hosts.starts_with("sentinel-0.redis.svc:26379,"), "{hosts}");
    assert!(!redis.contains('#') && !db.contains('#'));
    // The Secret is never marked immutable: a rotated password must be writable.
    assert_ne!(s.immutable, Some(true));
}

#[test]
fn gateway_pools_do_not_mount_the_bootstrap_admin_token() {
    let yaml = format!(
        "{}\n---\n{}",
        example("three-zone-ha"),
        example("gateway-pool")
    );
    let objs = objects(&yaml);
    let Owned::Deployment(gw) = find(&objs, "Deployment/us-east-gw") else {
        unreachable!()
    };
    let p = pod(gw);
    let items = volume(p, "internal")
        .secret
        .as_ref()
        .unwrap()
        .items
        .clone()
        .expect("only chosen keys");
    assert_eq!(
        items.iter().map(|i| i.key.as_str()).collect::<Vec<_>>(),
        ["keys"]
    );
    assert!(env_value(&p.containers[0], "WG_ADMIN_TOKEN_FILE").is_none());
    // Nor the Ed25519 recording-manifest key: relay-only pools never sign manifests.
    assert!(!items.iter().any(|i| i.key == "recording-key"));
    assert!(env_value(&p.containers[0], "WG_RECORDING_KEY_FILE").is_none());
    // The shared ConfigMap does not name it either; the control plane gets it by env.
    let Owned::ConfigMap(cm) = find(&objs, "ConfigMap/wardengate-config") else {
        unreachable!()
    };
    assert!(
        !cm.data
            .as_ref()
            .unwrap()
            .contains_key("WG_ADMIN_TOKEN_FILE")
    );
    let cp = pod(deployments(&objs)[0]);
    assert!(env_value(&cp.containers[0], "WG_ADMIN_TOKEN_FILE").is_some());
    assert_eq!(
        env_value(&cp.containers[0], "WG_RECORDING_KEY_FILE").and_then(|e| e.value.as_deref()),
        Some("/etc/wardengate/internal/recording-key")
    );
    assert!(
        volume(cp, "internal")
            .secret
            .as_ref()
            .unwrap()
            .items
            .is_none()
    );
}

#[test]
fn a_patroni_health_url_must_be_http() {
    let yaml = example("three-zone-ha").replace(
        "http://pg-primary.db.svc:8008/primary",
        "pg-primary.db.svc:8008",
    );
    let err = render(&yaml).unwrap_err();
    assert!(
        err.to_string()
            .contains("spec.postgres.patroni.restHealthUrl"),
        "{err}"
    );
}

/// Every cluster and pool gets a NetworkPolicy admitting only 8443 and 8444 (TCP) to exactly
/// the pods its Deployments run (nothing else they might listen on is reachable); egress stays
/// open, since targets are wherever users connect. The operator's status reads (8443 from its
/// namespace) are admitted.
#[test]
fn network_policies_admit_only_the_gateway_ports_to_their_own_pods() {
    let yaml = format!(
        "{}\n---\n{}",
        example("three-zone-ha"),
        example("gateway-pool")
    );
    let objs = objects(&yaml);
    let policies: Vec<_> = objs
        .iter()
        .filter_map(|o| match o {
            Owned::NetworkPolicy(p) => Some(p),
            _ => None,
        })
        .collect();
    assert_eq!(policies.len(), 2, "one for the cluster, one for the pool");
    for p in policies {
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(
            spec.policy_types.as_deref(),
            Some(&["Ingress".to_string()][..])
        );
        let rules = spec.ingress.as_ref().unwrap();
        assert_eq!(rules.len(), 1);
        let ports: Vec<(i32, &str)> = rules[0]
            .ports
            .as_ref()
            .unwrap()
            .iter()
            .map(|p| match (&p.port, p.protocol.as_deref()) {
                (
                    Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n)),
                    Some(proto),
                ) => (*n, proto),
                other => panic!("{other:?}"),
            })
            .collect();
        // The example's control plane terminates SSH on 2222; its pool relays bytes only.
        let control_plane = spec
            .pod_selector
            .as_ref()
            .and_then(|s| s.match_labels.as_ref())
            .and_then(|l| l.get("app.kubernetes.io/component"))
            .map(String::as_str)
            == Some("control-plane");
        if control_plane {
            assert_eq!(ports, [(8443, "TCP"), (8444, "TCP"), (2222, "TCP")]);
        } else {
            assert_eq!(ports, [(8443, "TCP"), (8444, "TCP")]);
        }
        // The operator reads each pod's GET /v1/system/status on 8443 from its own namespace:
        // the rule must not restrict sources (or, if it ever does, must name the operator).
        assert!(
            rules[0].from.as_ref().is_none_or(|f| f.iter().any(|peer| {
                peer.namespace_selector.as_ref().is_some_and(|n| {
                    n.match_labels.as_ref().is_some_and(|l| {
                        l.get("kubernetes.io/metadata.name").map(String::as_str)
                            == Some("wardengate-system")
                    })
                })
            })),
            "the operator's traffic to 8443 is not admitted: {:?}",
            rules[0].from
        );
        let want = spec
            .pod_selector
            .as_ref()
            .unwrap()
            .match_labels
            .clone()
            .unwrap();
        // The pods of at least one Deployment, and only the Deployments of this owner.
        let selected: Vec<&Deployment> = deployments(&objs)
            .into_iter()
            .filter(|d| {
                let labels = d
                    .spec
                    .template
                    .metadata
                    .as_ref()
                    .and_then(|m| m.labels.clone())
                    .unwrap_or_default();
                want.iter().all(|(k, v)| labels.get(k) == Some(v))
            })
            .collect();
        assert!(
            !selected.is_empty(),
            "{} selects no pods",
            p.metadata.name.as_deref().unwrap()
        );
        let is_pool = want.contains_key("wardengate.io/pool");
        for d in selected {
            assert_eq!(
                d.metadata.name.as_deref().unwrap().ends_with("-gw"),
                is_pool,
                "{} selects another owner's pods",
                p.metadata.name.as_deref().unwrap()
            );
        }
    }
}
