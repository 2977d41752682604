//! The controller against the in-process API fake: convergence, drift repair, zero writes at
//! steady state, invalid specs, zone-by-zone rollouts and leader election. Request logs of the
//! fake pin the API traffic of a reconcile.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use kube::Api;
use serde_json::{Value, json};
use wardengate_crds::WardengateCluster;
use wardengate_kube_fake::{FakeApi, Recorded, Verb};
use wardengate_operator::controller::{self, Context};
use wardengate_operator::leader::LeaseConfig;
use wardengate_operator::metrics::Metrics;
use wardengate_operator::run::{RunConfig, run};

const CLUSTERS: &str = "wardengate.io/v1alpha1/wardengateclusters";
const DEPLOYMENTS: &str = "apps/v1/deployments";
const SERVICES: &str = "v1/services";
const NS: &str = "wardengate";

fn example(name: &str) -> Value {
    let text = std::fs::read_to_string(format!(
        "{}/../examples/{name}.yaml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| {
            serde_yaml::from_value::<Value>(serde::Deserialize::deserialize(d).unwrap()).unwrap()
        })
        .find(|v| v["kind"] == "WardengateCluster")
        .unwrap()
}

fn secret(name: &str, key: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NS},
           "data": {key: "dmFsdWU="}})
}

/// Patroni's credentials Secret: `username` and `password`.
fn patroni_secret() -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "wardengate-pg", "namespace": NS},
           "data": {"username": "d2FyZGVuZ2F0ZQ==", "password": "cEA6LyUjP3c="}})
}

/// A fake holding the quickstart cluster and the Secret it references.
fn quickstart() -> FakeApi {
    let fake = FakeApi::new();
    fake.create("v1/secrets", secret("wardengate-db", "url"));
    fake.create(CLUSTERS, example("quickstart"));
    fake
}

/// A fake holding the three-zone cluster and its Secrets.
fn three_zones() -> FakeApi {
    let fake = FakeApi::new();
    fake.create("v1/secrets", patroni_secret());
    for (n, k) in [
        ("wardengate-redis", "password"),
        ("wardengate-recordings", "AWS_ACCESS_KEY_ID"),
    ] {
        fake.create("v1/secrets", secret(n, k));
    }
    let mut cr = example("three-zone-ha");
    cr["metadata"]["namespace"] = json!(NS);
    // Nothing serves the example's Patroni health URL here; the Patroni gate test sets its own.
    cr["spec"]["postgres"]["patroni"]
        .as_object_mut()
        .unwrap()
        .remove("restHealthUrl");
    fake.create(CLUSTERS, cr);
    fake
}

async fn cluster(fake: &FakeApi, name: &str) -> Arc<WardengateCluster> {
    let api: Api<WardengateCluster> = Api::namespaced(fake.client("test"), NS);
    Arc::new(api.get(name).await.unwrap())
}

/// Runs one reconcile directly (no watches) and returns the requests it made.
async fn reconcile_once(fake: &FakeApi, ctx: &Arc<Context>, name: &str) -> Vec<Recorded> {
    let c = cluster(fake, name).await;
    let mark = fake.mark();
    controller::reconcile(c, ctx.clone()).await.unwrap();
    fake.requests_since(mark)
        .into_iter()
        .filter(|r| r.client == "op")
        .collect()
}

fn writes(reqs: &[Recorded]) -> Vec<String> {
    reqs.iter()
        .filter(|r| r.verb.is_write())
        .map(|r| r.to_string())
        .collect()
}

fn summary(reqs: &[Recorded]) -> String {
    reqs.iter().map(|r| format!("  {r}\n")).collect()
}

/// Acts as the Deployment controller: every Deployment of the namespace reports all replicas
/// updated, ready and available for its current generation.
fn deployments_become_ready(fake: &FakeApi) {
    for name in fake.names(DEPLOYMENTS, Some(NS)) {
        let d = fake.get(DEPLOYMENTS, Some(NS), &name).unwrap();
        let replicas = d["spec"]["replicas"].as_i64().unwrap();
        fake.patch_status(
            DEPLOYMENTS,
            Some(NS),
            &name,
            json!({"observedGeneration": d["metadata"]["generation"], "replicas": replicas,
                   "updatedReplicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas}),
        );
    }
}

fn condition(fake: &FakeApi, name: &str, type_: &str) -> Option<(String, String, String)> {
    let c = fake.get(CLUSTERS, Some(NS), name)?;
    c["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|x| x["type"] == type_)
        .map(|x| {
            (
                x["status"].as_str().unwrap_or_default().to_string(),
                x["reason"].as_str().unwrap_or_default().to_string(),
                x["message"].as_str().unwrap_or_default().to_string(),
            )
        })
}

async fn eventually(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn context(fake: &FakeApi) -> Arc<Context> {
    Arc::new(Context::new(fake.client("op"), "op-0", Metrics::new()))
}

#[tokio::test]
async fn fresh_then_ready_then_steady_reconciles_pin_their_api_traffic() {
    let fake = quickstart();
    let ctx = context(&fake);

    let fresh = reconcile_once(&fake, &ctx, "wardengate").await;
    println!(
        "fresh cluster, one reconcile ({} requests):\n{}",
        fresh.len(),
        summary(&fresh)
    );
    let applied: Vec<&Recorded> = fresh
        .iter()
        .filter(|r| r.verb == Verb::Apply && r.subresource.is_none())
        .collect();
    assert_eq!(
        applied.len(),
        9,
        "SA, 3 Secrets (internal, SSH keys, TLS), ConfigMap, Deployment, Service, PDB, \
         NetworkPolicy:\n{}",
        summary(&fresh)
    );
    assert_eq!(
        fresh.iter().filter(|r| r.verb == Verb::List).count(),
        8,
        "one list per owned kind, and one of the pods (the fleet)"
    );
    assert!(
        fresh
            .iter()
            .any(|r| r.subresource.as_deref() == Some("status")),
        "status written"
    );
    assert!(
        fresh
            .iter()
            .any(|r| r.resource == "events.k8s.io/v1/events"),
        "an event tells what was applied"
    );
    let (ready, reason, _) = condition(&fake, "wardengate", "Ready").unwrap();
    assert_eq!((ready.as_str(), reason.as_str()), ("False", "Progressing"));
    assert_eq!(
        condition(&fake, "wardengate", "Reconciling").unwrap().0,
        "True"
    );

    // Owned objects carry the owner reference and the managed-by label.
    let svc = fake.get(SERVICES, Some(NS), "wardengate").unwrap();
    assert_eq!(
        svc["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "wardengate-operator"
    );
    assert_eq!(
        svc["metadata"]["ownerReferences"][0]["kind"],
        "WardengateCluster"
    );
    assert_eq!(svc["metadata"]["ownerReferences"][0]["controller"], true);

    deployments_become_ready(&fake);
    let ready = reconcile_once(&fake, &ctx, "wardengate").await;
    assert_eq!(
        writes(&ready).len(),
        2,
        "only status and a Ready event:\n{}",
        summary(&ready)
    );
    let (ready_status, reason, message) = condition(&fake, "wardengate", "Ready").unwrap();
    assert_eq!(
        (ready_status.as_str(), reason.as_str()),
        ("True", "Available"),
        "{message}"
    );
    let c = fake.get(CLUSTERS, Some(NS), "wardengate").unwrap();
    assert_eq!(
        c["status"]["observedGeneration"],
        c["metadata"]["generation"]
    );
    assert_eq!(c["status"]["version"], "0.1.0");
    assert_eq!(c["status"]["readyReplicas"], 3);
    assert_eq!(
        condition(&fake, "wardengate", "Reconciling").unwrap().0,
        "False"
    );
    assert_eq!(
        condition(&fake, "wardengate", "Stalled").unwrap().0,
        "False"
    );

    let rv = fake.resource_version();
    let steady = reconcile_once(&fake, &ctx, "wardengate").await;
    println!(
        "steady cluster, one reconcile ({} requests):\n{}",
        steady.len(),
        summary(&steady)
    );
    assert!(
        writes(&steady).is_empty(),
        "a steady reconcile must not write:\n{}",
        summary(&steady)
    );
    assert_eq!(fake.resource_version(), rv, "nothing changed in the store");
    assert_eq!(
        steady.len(),
        9,
        "7 lists + the pods + 1 referenced Secret:\n{}",
        summary(&steady)
    );
}

#[tokio::test]
async fn generated_secrets_are_kept_across_reconciles_and_drift_is_repaired() {
    let fake = quickstart();
    let ctx = context(&fake);
    reconcile_once(&fake, &ctx, "wardengate").await;
    let internal = fake
        .get("v1/secrets", Some(NS), "wardengate-internal")
        .unwrap();
    let tls = fake.get("v1/secrets", Some(NS), "wardengate-tls").unwrap();
    assert!(internal["data"]["keys"].is_string() && internal["data"]["admin-token"].is_string());
    for k in ["tls.crt", "tls.key", "ca.crt"] {
        assert!(tls["data"][k].is_string(), "generated TLS Secret lacks {k}");
    }

    // Someone edits the Service; the next reconcile puts it back and touches nothing else.
    fake.patch(
        SERVICES,
        Some(NS),
        "wardengate",
        json!({"spec": {"sessionAffinity": "ClientIP"}}),
    );
    let repair = reconcile_once(&fake, &ctx, "wardengate").await;
    let w = writes(&repair);
    assert!(
        w.iter().any(|x| x.starts_with("Apply v1/services")),
        "{w:?}"
    );
    assert!(
        !w.iter().any(|x| x.contains("secrets")),
        "secrets untouched: {w:?}"
    );
    assert_eq!(
        fake.get(SERVICES, Some(NS), "wardengate").unwrap()["spec"]["sessionAffinity"],
        "None"
    );
    assert_eq!(
        fake.get("v1/secrets", Some(NS), "wardengate-internal")
            .unwrap()["data"],
        internal["data"],
        "never regenerated"
    );
    assert_eq!(
        fake.get("v1/secrets", Some(NS), "wardengate-tls").unwrap()["data"],
        tls["data"]
    );
}

#[tokio::test]
async fn objects_no_longer_rendered_are_deleted() {
    let fake = quickstart();
    let ctx = context(&fake);
    reconcile_once(&fake, &ctx, "wardengate").await;
    assert!(
        fake.get("policy/v1/poddisruptionbudgets", Some(NS), "wardengate-cp")
            .is_some()
    );
    // One replica: no PDB (it would block every node drain).
    fake.patch(
        CLUSTERS,
        Some(NS),
        "wardengate",
        json!({"spec": {"replicas": 1}}),
    );
    let r = reconcile_once(&fake, &ctx, "wardengate").await;
    assert!(
        writes(&r)
            .iter()
            .any(|w| w.starts_with("Delete policy/v1/poddisruptionbudgets")),
        "{}",
        summary(&r)
    );
    assert!(
        fake.get("policy/v1/poddisruptionbudgets", Some(NS), "wardengate-cp")
            .is_none()
    );
}

#[tokio::test]
async fn an_invalid_spec_is_stalled_with_the_field_named_and_waits_for_a_change() {
    let fake = FakeApi::new();
    let mut cr = example("quickstart");
    // Admission (CEL) would refuse this; the fake, like an old apiserver without CEL, does not.
    cr["spec"]["replicas"] = json!(0);
    fake.create(CLUSTERS, cr);
    let ctx = context(&fake);
    let c = cluster(&fake, "wardengate").await;
    let action = controller::reconcile(c, ctx.clone()).await.unwrap();
    assert_eq!(
        format!("{action:?}"),
        format!("{:?}", kube::runtime::controller::Action::await_change()),
        "no requeue"
    );
    let (stalled, reason, message) = condition(&fake, "wardengate", "Stalled").unwrap();
    assert_eq!((stalled.as_str(), reason.as_str()), ("True", "InvalidSpec"));
    assert!(message.contains("spec.replicas"), "{message}");
    assert_eq!(condition(&fake, "wardengate", "Ready").unwrap().0, "False");
    let again = reconcile_once(&fake, &ctx, "wardengate").await;
    assert!(
        again.is_empty(),
        "an invalid spec costs no request at all the second time: {again:?}"
    );
}

#[tokio::test]
async fn a_missing_referenced_secret_is_named_and_nothing_is_applied() {
    let fake = FakeApi::new();
    fake.create(CLUSTERS, example("quickstart"));
    let ctx = context(&fake);
    let r = reconcile_once(&fake, &ctx, "wardengate").await;
    assert!(
        !writes(&r).iter().any(|w| w.contains("deployments")),
        "{}",
        summary(&r)
    );
    let (stalled, reason, message) = condition(&fake, "wardengate", "Stalled").unwrap();
    assert_eq!(
        (stalled.as_str(), reason.as_str()),
        ("True", "SecretNotFound")
    );
    assert!(
        message.contains("spec.postgres.external.urlSecretRef")
            && message.contains("wardengate-db"),
        "{message}"
    );
    fake.create("v1/secrets", secret("wardengate-db", "url"));
    reconcile_once(&fake, &ctx, "wardengate").await;
    assert_eq!(
        condition(&fake, "wardengate", "Stalled").unwrap().0,
        "False"
    );
}

#[tokio::test]
async fn upgrades_roll_one_zone_at_a_time_and_pause_holds_them() {
    let fake = three_zones();
    let ctx = context(&fake);
    reconcile_once(&fake, &ctx, "wardengate").await;
    let mut zones = fake.names(DEPLOYMENTS, Some(NS));
    zones.sort();
    assert_eq!(zones.len(), 3, "{zones:?}");
    deployments_become_ready(&fake);
    reconcile_once(&fake, &ctx, "wardengate").await;
    assert_eq!(condition(&fake, "wardengate", "Ready").unwrap().0, "True");
    let image = |name: &str| {
        fake.get(DEPLOYMENTS, Some(NS), name).unwrap()["spec"]["template"]["spec"]["containers"][0]
            ["image"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let old: Vec<String> = zones.iter().map(|z| image(z)).collect();

    fake.patch(
        CLUSTERS,
        Some(NS),
        "wardengate",
        json!({"spec": {"version": "0.2.0"}}),
    );
    reconcile_once(&fake, &ctx, "wardengate").await;
    let now: Vec<String> = zones.iter().map(|z| image(z)).collect();
    assert!(now[0].ends_with(":0.2.0"), "first zone rolls: {now:?}");
    assert_eq!(now[1..], old[1..], "later zones wait");
    let c = fake.get(CLUSTERS, Some(NS), "wardengate").unwrap();
    assert_eq!(
        c["status"]["version"],
        old[0].rsplit(':').next().unwrap(),
        "version stays until the rollout completes"
    );
    assert!(c["status"]["rollout"]["currentZone"].is_string());

    // Zone a not ready yet: another pass changes nothing.
    reconcile_once(&fake, &ctx, "wardengate").await;
    assert_eq!(image(&zones[1]), old[1]);

    // Pause, then let zone a finish: zone b still waits.
    fake.patch(
        CLUSTERS,
        Some(NS),
        "wardengate",
        json!({"spec": {"rollout": {"paused": true}}}),
    );
    deployments_become_ready(&fake);
    reconcile_once(&fake, &ctx, "wardengate").await;
    assert_eq!(image(&zones[1]), old[1]);
    assert_eq!(
        condition(&fake, "wardengate", "Reconciling").unwrap().1,
        "RolloutPaused"
    );

    fake.patch(
        CLUSTERS,
        Some(NS),
        "wardengate",
        json!({"spec": {"rollout": {"paused": false}}}),
    );
    reconcile_once(&fake, &ctx, "wardengate").await;
    assert!(image(&zones[1]).ends_with(":0.2.0"));
    assert_eq!(image(&zones[2]), old[2]);
    deployments_become_ready(&fake);
    reconcile_once(&fake, &ctx, "wardengate").await;
    deployments_become_ready(&fake);
    reconcile_once(&fake, &ctx, "wardengate").await;
    assert!(image(&zones[2]).ends_with(":0.2.0"));
    let c = fake.get(CLUSTERS, Some(NS), "wardengate").unwrap();
    assert_eq!(c["status"]["version"], "0.2.0");
    assert_eq!(condition(&fake, "wardengate", "Ready").unwrap().0, "True");
}

fn lease(identity: &str) -> LeaseConfig {
    LeaseConfig {
        lease_duration: Duration::from_millis(1500),
        renew_deadline: Duration::from_millis(1000),
        retry_period: Duration::from_millis(100),
        ..LeaseConfig::new("wardengate-system", "wardengate-operator", identity)
    }
}

struct Operator {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    metrics: Metrics,
}

fn start(fake: &FakeApi, identity: &str) -> Operator {
    let (stop, rx) = tokio::sync::watch::channel(false);
    let metrics = Metrics::new();
    let cfg = RunConfig {
        namespace: None,
        concurrency: 2,
        lease: lease(identity),
    };
    let task = tokio::spawn(run(
        fake.client(identity),
        cfg,
        metrics.clone(),
        Arc::new(AtomicBool::new(false)),
        rx,
    ));
    Operator {
        stop,
        task,
        metrics,
    }
}

fn non_lease_writes(fake: &FakeApi, client: &str, since: usize) -> Vec<String> {
    fake.requests_since(since)
        .into_iter()
        .filter(|r| {
            r.client == client && r.verb.is_write() && r.resource != "coordination.k8s.io/v1/leases"
        })
        .map(|r| r.to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_drive_the_cluster_to_ready_and_repair_a_deleted_service() {
    let fake = quickstart();
    let op = start(&fake, "op-a");
    eventually("the Deployment", Duration::from_secs(10), || {
        fake.get(DEPLOYMENTS, Some(NS), "wardengate-cp").is_some()
    })
    .await;
    deployments_become_ready(&fake);
    eventually("Ready=True", Duration::from_secs(10), || {
        condition(&fake, "wardengate", "Ready").is_some_and(|c| c.0 == "True")
    })
    .await;

    fake.delete(SERVICES, Some(NS), "wardengate");
    eventually("the Service back", Duration::from_secs(10), || {
        fake.get(SERVICES, Some(NS), "wardengate").is_some()
    })
    .await;

    // Settled: a change that renders nothing new (a label on the CR) reconciles without writing.
    eventually("quiet", Duration::from_secs(10), || {
        let m = fake.mark();
        std::thread::sleep(Duration::from_millis(300));
        non_lease_writes(&fake, "op-a", m).is_empty()
    })
    .await;
    let before = op.metrics.reconciles("ok");
    let mark = fake.mark();
    fake.patch(
        CLUSTERS,
        Some(NS),
        "wardengate",
        json!({"metadata": {"labels": {"team": "infra"}}}),
    );
    eventually("a reconcile", Duration::from_secs(10), || {
        op.metrics.reconciles("ok") > before
    })
    .await;
    assert!(
        non_lease_writes(&fake, "op-a", mark).is_empty(),
        "{:?}",
        non_lease_writes(&fake, "op-a", mark)
    );
    op.stop.send(true).unwrap();
    op.task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_cluster_is_not_reconciled_in_a_hot_loop() {
    let fake = FakeApi::new();
    let mut cr = example("quickstart");
    cr["spec"]["drain"] = json!({"timeoutSeconds": 600});
    cr["spec"]["terminationGracePeriodSeconds"] = json!(60);
    fake.create(CLUSTERS, cr);
    let op = start(&fake, "op-a");
    eventually("Stalled=True", Duration::from_secs(10), || {
        condition(&fake, "wardengate", "Stalled")
            .is_some_and(|c| c.0 == "True" && c.1 == "InvalidSpec")
    })
    .await;
    let message = condition(&fake, "wardengate", "Stalled").unwrap().2;
    assert!(
        message.contains("terminationGracePeriodSeconds") || message.contains("drain"),
        "{message}"
    );
    // Its own status write triggers one more pass at most; then nothing, for a whole second.
    std::thread::sleep(Duration::from_millis(300));
    let reconciles = op.metrics.reconciles("ok");
    let mark = fake.mark();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(op.metrics.reconciles("ok"), reconciles, "no hot loop");
    assert!(non_lease_writes(&fake, "op-a", mark).is_empty());
    op.stop.send(true).unwrap();
    op.task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_operators_only_the_lease_holder_writes_and_a_standby_takes_over() {
    let fake = quickstart();
    let a = start(&fake, "op-a");
    eventually("op-a leads", Duration::from_secs(10), || {
        a.metrics.leader.get() == 1
    })
    .await;
    let b = start(&fake, "op-b");
    eventually("the Deployment", Duration::from_secs(10), || {
        fake.get(DEPLOYMENTS, Some(NS), "wardengate-cp").is_some()
    })
    .await;
    deployments_become_ready(&fake);
    eventually("Ready=True", Duration::from_secs(10), || {
        condition(&fake, "wardengate", "Ready").is_some_and(|c| c.0 == "True")
    })
    .await;
    // Let b campaign for longer than a lease lasts: a keeps renewing, so b never writes.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(b.metrics.leader.get(), 0);
    assert!(
        non_lease_writes(&fake, "op-b", 0).is_empty(),
        "{:?}",
        non_lease_writes(&fake, "op-b", 0)
    );
    assert!(!non_lease_writes(&fake, "op-a", 0).is_empty());
    let b_reads = fake
        .requests()
        .iter()
        .filter(|r| r.client == "op-b" && r.resource != "coordination.k8s.io/v1/leases")
        .count();
    assert_eq!(b_reads, 0, "a standby does not even watch");

    // The leader stops (releasing the Lease); the standby takes over and repairs drift.
    a.stop.send(true).unwrap();
    a.task.await.unwrap();
    let mark = fake.mark();
    eventually("op-b leads", Duration::from_secs(10), || {
        b.metrics.leader.get() == 1
    })
    .await;
    fake.delete(SERVICES, Some(NS), "wardengate");
    eventually("the Service back", Duration::from_secs(10), || {
        fake.get(SERVICES, Some(NS), "wardengate").is_some()
    })
    .await;
    assert!(
        non_lease_writes(&fake, "op-b", mark)
            .iter()
            .any(|w| w.contains("services"))
    );
    assert!(
        non_lease_writes(&fake, "op-a", mark).is_empty(),
        "the old leader is silent"
    );
    b.stop.send(true).unwrap();
    b.task.await.unwrap();
}

/// The RBAC verb and `group`, `resource[/subresource]` a request needs.
fn rbac_need(r: &Recorded) -> (String, String, String) {
    let verb = match r.verb {
        Verb::Get => "get",
        Verb::List => "list",
        Verb::Watch => "watch",
        Verb::Create => "create",
        Verb::Update => "update",
        Verb::Patch | Verb::Apply => "patch",
        Verb::Delete => "delete",
    };
    let parts: Vec<&str> = r.resource.split('/').collect();
    let group = if parts.len() == 2 { "" } else { parts[0] };
    let mut resource = parts.last().unwrap().to_string();
    if let Some(s) = &r.subresource {
        resource = format!("{resource}/{s}");
    }
    (verb.into(), group.into(), resource)
}

fn allowed(rules: &[k8s_openapi::api::rbac::v1::PolicyRule], r: &Recorded) -> bool {
    let (verb, group, resource) = rbac_need(r);
    rules.iter().any(|rule| {
        rule.verbs.contains(&verb)
            && rule.api_groups.iter().flatten().any(|g| *g == group)
            && rule.resources.iter().flatten().any(|x| *x == resource)
            && rule
                .resource_names
                .as_ref()
                .is_none_or(|names| r.name.as_ref().is_some_and(|n| names.contains(n)))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rbac_manifests_allow_every_request_the_operator_makes() {
    let root = format!("{}/../config/rbac", env!("CARGO_MANIFEST_DIR"));
    let cluster_role: k8s_openapi::api::rbac::v1::ClusterRole =
        serde_yaml::from_str(&std::fs::read_to_string(format!("{root}/role.yaml")).unwrap())
            .unwrap();
    let lease_role: k8s_openapi::api::rbac::v1::Role = serde_yaml::from_str(
        &std::fs::read_to_string(format!("{root}/leader_election_role.yaml")).unwrap(),
    )
    .unwrap();
    let lease_ns = lease_role.metadata.namespace.clone().unwrap();

    let fake = quickstart();
    let op = start(&fake, "op-a");
    eventually("the Deployment", Duration::from_secs(10), || {
        fake.get(DEPLOYMENTS, Some(NS), "wardengate-cp").is_some()
    })
    .await;
    deployments_become_ready(&fake);
    eventually("Ready=True", Duration::from_secs(10), || {
        condition(&fake, "wardengate", "Ready").is_some_and(|c| c.0 == "True")
    })
    .await;
    fake.patch(
        CLUSTERS,
        Some(NS),
        "wardengate",
        json!({"spec": {"replicas": 1}}),
    );
    eventually("the PDB pruned", Duration::from_secs(10), || {
        fake.get("policy/v1/poddisruptionbudgets", Some(NS), "wardengate-cp")
            .is_none()
    })
    .await;
    op.stop.send(true).unwrap();
    op.task.await.unwrap();

    let requests: Vec<Recorded> = fake
        .requests()
        .into_iter()
        .filter(|r| r.client == "op-a")
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    for r in &requests {
        let ok = if r.resource.starts_with("coordination.k8s.io/") {
            r.namespace.as_deref() == Some(lease_ns.as_str())
                && allowed(lease_role.rules.as_deref().unwrap_or_default(), r)
        } else {
            allowed(cluster_role.rules.as_deref().unwrap_or_default(), r)
        };
        assert!(ok, "config/rbac does not allow: {r}");
        seen.insert(rbac_need(r));
    }
    for need in [
        ("patch", "apps", "deployments"),
        ("delete", "policy", "poddisruptionbudgets"),
        ("watch", "", "secrets"),
        ("patch", "wardengate.io", "wardengateclusters/status"),
        ("update", "coordination.k8s.io", "leases"),
    ] {
        assert!(
            seen.contains(&(need.0.into(), need.1.into(), need.2.into())),
            "the run did not exercise {need:?}: {seen:?}"
        );
    }
}

const POOLS: &str = "wardengate.io/v1alpha1/gatewaypools";

fn add_pool(fake: &FakeApi) {
    let mut p: Value = serde_yaml::from_str(
        &std::fs::read_to_string(format!(
            "{}/../examples/gateway-pool.yaml",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap(),
    )
    .unwrap();
    p["metadata"]["namespace"] = json!(NS);
    fake.create(POOLS, p);
}

async fn reconcile_pool_once(fake: &FakeApi, ctx: &Arc<Context>) -> Vec<Recorded> {
    let api: Api<wardengate_crds::GatewayPool> = Api::namespaced(fake.client("test"), NS);
    let p = Arc::new(api.get("us-east").await.unwrap());
    let mark = fake.mark();
    controller::pool::reconcile(p, ctx.clone()).await.unwrap();
    fake.requests_since(mark)
        .into_iter()
        .filter(|r| r.client == "op")
        .collect()
}

fn pool_condition(fake: &FakeApi, type_: &str) -> (String, String) {
    let p = fake.get(POOLS, Some(NS), "us-east").unwrap();
    let c = p["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["type"] == type_)
        .unwrap()
        .clone();
    (
        c["status"].as_str().unwrap().into(),
        c["reason"].as_str().unwrap().into(),
    )
}

fn gateway_image(fake: &FakeApi) -> Option<String> {
    fake.get(DEPLOYMENTS, Some(NS), "us-east-gw").map(|d| {
        d["spec"]["template"]["spec"]["containers"][0]["image"]
            .as_str()
            .unwrap()
            .to_string()
    })
}

#[tokio::test]
async fn a_pool_waits_for_its_cluster_and_never_runs_a_newer_version_than_it_reports() {
    let fake = three_zones();
    add_pool(&fake);
    let ctx = context(&fake);

    reconcile_pool_once(&fake, &ctx).await;
    assert_eq!(
        pool_condition(&fake, "Reconciling"),
        ("True".into(), "WaitingForCluster".into())
    );
    assert_eq!(gateway_image(&fake), None);

    reconcile_once(&fake, &ctx, "wardengate").await;
    deployments_become_ready(&fake);
    reconcile_once(&fake, &ctx, "wardengate").await;
    let r = reconcile_pool_once(&fake, &ctx).await;
    assert!(
        gateway_image(&fake).unwrap().ends_with(":0.1.0"),
        "{}",
        summary(&r)
    );
    deployments_become_ready(&fake);
    reconcile_pool_once(&fake, &ctx).await;
    assert_eq!(
        pool_condition(&fake, "Ready"),
        ("True".into(), "Available".into())
    );
    let steady = reconcile_pool_once(&fake, &ctx).await;
    assert!(writes(&steady).is_empty(), "{}", summary(&steady));
    println!(
        "steady pool, one reconcile ({} requests):\n{}",
        steady.len(),
        summary(&steady)
    );

    // The pool asks for a version its cluster does not run yet: capped.
    fake.patch(
        POOLS,
        Some(NS),
        "us-east",
        json!({"spec": {"version": "0.2.0"}}),
    );
    reconcile_pool_once(&fake, &ctx).await;
    assert!(gateway_image(&fake).unwrap().ends_with(":0.1.0"));
    assert_eq!(
        pool_condition(&fake, "Reconciling"),
        ("True".into(), "VersionHeld".into()),
        "a held version says why"
    );

    // Once the cluster reports 0.2.0 (all zones rolled), the pool follows.
    fake.patch(
        CLUSTERS,
        Some(NS),
        "wardengate",
        json!({"spec": {"version": "0.2.0"}}),
    );
    for _ in 0..4 {
        reconcile_once(&fake, &ctx, "wardengate").await;
        deployments_become_ready(&fake);
    }
    reconcile_once(&fake, &ctx, "wardengate").await;
    assert_eq!(
        fake.get(CLUSTERS, Some(NS), "wardengate").unwrap()["status"]["version"],
        "0.2.0"
    );
    reconcile_pool_once(&fake, &ctx).await;
    assert!(gateway_image(&fake).unwrap().ends_with(":0.2.0"));
}

/// The remote example in the test namespace, with `status.controlPlaneVersion` as given.
fn add_remote_pool(fake: &FakeApi) {
    let mut p: Value = serde_yaml::from_str(
        &std::fs::read_to_string(format!(
            "{}/../examples/remote-gateway-pool.yaml",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap(),
    )
    .unwrap();
    p["metadata"]["namespace"] = json!(NS);
    fake.create(POOLS, p);
}

async fn reconcile_named_pool(fake: &FakeApi, ctx: &Arc<Context>, name: &str) -> Vec<Recorded> {
    let api: Api<wardengate_crds::GatewayPool> = Api::namespaced(fake.client("test"), NS);
    let p = Arc::new(api.get(name).await.unwrap());
    let mark = fake.mark();
    controller::pool::reconcile(p, ctx.clone()).await.unwrap();
    fake.requests_since(mark)
        .into_iter()
        .filter(|r| r.client == "op")
        .collect()
}

fn named_pool_condition(fake: &FakeApi, name: &str, type_: &str) -> (String, String, String) {
    let p = fake.get(POOLS, Some(NS), name).unwrap();
    let c = p["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["type"] == type_)
        .unwrap()
        .clone();
    (
        c["status"].as_str().unwrap().into(),
        c["reason"].as_str().unwrap().into(),
        c["message"].as_str().unwrap().into(),
    )
}

#[tokio::test]
async fn a_remote_pool_dials_its_control_plane_and_never_runs_newer_than_it() {
    let fake = FakeApi::new();
    add_remote_pool(&fake);
    let ctx = context(&fake);
    let pool = "ap-south";
    let gw = "ap-south-gw";

    // Its Secrets first: the pods could not start without them.
    reconcile_named_pool(&fake, &ctx, pool).await;
    let (stalled, reason, message) = named_pool_condition(&fake, pool, "Stalled");
    assert_eq!(
        (stalled.as_str(), reason.as_str()),
        ("True", "SecretNotFound")
    );
    assert!(
        message.contains(
            "spec.controlPlane.joinTokenSecretRef: Secret wardengate/ap-south-join not found"
        ),
        "{message}"
    );
    fake.create("v1/secrets", secret("ap-south-join", "token"));
    fake.create("v1/secrets", secret("control-plane-ca", "ca.crt"));
    fake.create(
        "v1/secrets",
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "ap-south-tls", "namespace": NS},
               "data": {"tls.crt": "eA==", "tls.key": "eA=="}}),
    );

    // Then the control plane's version: nothing is rendered without it.
    let r = reconcile_named_pool(&fake, &ctx, pool).await;
    let (status, reason, message) = named_pool_condition(&fake, pool, "Reconciling");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "WaitingForControlPlane")
    );
    assert!(message.contains("status.controlPlaneVersion"), "{message}");
    assert!(
        fake.get(DEPLOYMENTS, Some(NS), gw).is_none(),
        "{}",
        summary(&r)
    );

    // The user (or a probe) says what the control plane runs.
    fake.patch_status(
        POOLS,
        Some(NS),
        pool,
        json!({"controlPlaneVersion": "0.1.0"}),
    );
    let r = reconcile_named_pool(&fake, &ctx, pool).await;
    let d = fake
        .get(DEPLOYMENTS, Some(NS), gw)
        .unwrap_or_else(|| panic!("no Deployment:\n{}", summary(&r)));
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "ghcr.io/wardengate/wardengate:0.1.0");
    assert_eq!(
        c["args"],
        json!([
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
            "/etc/wardengate/control-plane-ca/ca.crt"
        ])
    );
    assert!(fake.get("v1/serviceaccounts", Some(NS), gw).is_some());
    assert!(fake.get("v1/services", Some(NS), gw).is_some());
    assert!(
        fake.get("policy/v1/poddisruptionbudgets", Some(NS), gw)
            .is_some()
    );
    deployments_become_ready(&fake);
    reconcile_named_pool(&fake, &ctx, pool).await;
    let p = fake.get(POOLS, Some(NS), pool).unwrap();
    assert_eq!(p["status"]["phase"], "Ready", "{p}");
    assert_eq!(
        p["status"]["controlPlaneVersion"], "0.1.0",
        "the operator's status writes leave the user's field alone"
    );
    let steady = reconcile_named_pool(&fake, &ctx, pool).await;
    assert!(writes(&steady).is_empty(), "{}", summary(&steady));
    println!(
        "steady remote pool, one reconcile ({} requests):\n{}",
        steady.len(),
        summary(&steady)
    );
    let secret_reads = steady
        .iter()
        .filter(|r| r.to_string().contains("v1/secrets"))
        .count();
    assert_eq!(
        secret_reads,
        3,
        "one read per referenced Secret:\n{}",
        summary(&steady)
    );

    // A version newer than the control plane's is held, saying why.
    fake.patch(POOLS, Some(NS), pool, json!({"spec": {"version": "0.2.0"}}));
    let r = reconcile_named_pool(&fake, &ctx, pool).await;
    assert!(
        !writes(&r).iter().any(|w| w.contains("deployments")),
        "no gateway is replaced by a newer one:\n{}",
        summary(&r)
    );
    let (status, reason, message) = named_pool_condition(&fake, pool, "Reconciling");
    assert_eq!((status.as_str(), reason.as_str()), ("True", "VersionHeld"));
    assert!(
        message.contains("0.2.0")
            && message.contains("0.1.0")
            && message.contains("status.controlPlaneVersion"),
        "{message}"
    );
    let p = fake.get(POOLS, Some(NS), pool).unwrap();
    assert_eq!(p["status"]["phase"], "Held", "{p}");
    let steady = reconcile_named_pool(&fake, &ctx, pool).await;
    assert!(
        writes(&steady).is_empty(),
        "held is steady too:\n{}",
        summary(&steady)
    );

    // The control plane is upgraded: the rollout proceeds.
    fake.patch_status(
        POOLS,
        Some(NS),
        pool,
        json!({"controlPlaneVersion": "0.2.0"}),
    );
    reconcile_named_pool(&fake, &ctx, pool).await;
    let d = fake.get(DEPLOYMENTS, Some(NS), gw).unwrap();
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "ghcr.io/wardengate/wardengate:0.2.0"
    );
    deployments_become_ready(&fake);
    reconcile_named_pool(&fake, &ctx, pool).await;
    let (ready, reason, _) = named_pool_condition(&fake, pool, "Ready");
    assert_eq!((ready.as_str(), reason.as_str()), ("True", "Available"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_bring_a_pool_to_ready_after_its_cluster() {
    let fake = three_zones();
    add_pool(&fake);
    let op = start(&fake, "op-a");
    eventually("cluster and pool Ready", Duration::from_secs(20), || {
        deployments_become_ready(&fake);
        let p = fake.get(POOLS, Some(NS), "us-east").unwrap();
        p["status"]["phase"] == "Ready"
    })
    .await;
    assert!(gateway_image(&fake).unwrap().ends_with(":0.1.0"));
    op.stop.send(true).unwrap();
    op.task.await.unwrap();
}

/// A stand-in for Patroni's REST `/primary`: answers 200 while `healthy`, else 503.
async fn patroni_stub() -> (String, Arc<AtomicBool>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/primary", listener.local_addr().unwrap());
    let healthy = Arc::new(AtomicBool::new(true));
    let h = healthy.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = vec![0u8; 4096];
            let mut got = Vec::new();
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            let status = if h.load(std::sync::atomic::Ordering::SeqCst) {
                "200 OK"
            } else {
                "503 Service Unavailable"
            };
            let reply =
                format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            let _ = s.write_all(reply.as_bytes()).await;
        }
    });
    (url, healthy)
}

#[tokio::test]
async fn a_rollout_waits_while_patroni_reports_no_primary_and_resumes_by_itself() {
    let (url, healthy) = patroni_stub().await;
    let fake = three_zones();
    fake.patch(
        CLUSTERS,
        Some(NS),
        "wardengate",
        json!({"spec": {"postgres": {"patroni": {"restHealthUrl": url}}}}),
    );
    let ctx = context(&fake);
    // Creating the fleet is never held, even with the database down.
    healthy.store(false, std::sync::atomic::Ordering::SeqCst);
    reconcile_once(&fake, &ctx, "wardengate").await;
    assert_eq!(fake.names(DEPLOYMENTS, Some(NS)).len(), 3);
    deployments_become_ready(&fake);
    reconcile_once(&fake, &ctx, "wardengate").await;
    assert_eq!(condition(&fake, "wardengate", "Ready").unwrap().0, "True");

    fake.patch(
        CLUSTERS,
        Some(NS),
        "wardengate",
        json!({"spec": {"version": "0.2.0"}}),
    );
    let r = reconcile_once(&fake, &ctx, "wardengate").await;
    assert!(
        !writes(&r).iter().any(|w| w.contains("deployments")),
        "no pod is replaced while Patroni has no primary:\n{}",
        summary(&r)
    );
    let (status, reason, message) = condition(&fake, "wardengate", "Reconciling").unwrap();
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "DatabaseUnhealthy")
    );
    assert!(
        message.contains("restHealthUrl") && message.contains("503"),
        "{message}"
    );

    healthy.store(true, std::sync::atomic::Ordering::SeqCst);
    let r = reconcile_once(&fake, &ctx, "wardengate").await;
    let rolled: Vec<String> = writes(&r)
        .into_iter()
        .filter(|w| w.contains("deployments"))
        .collect();
    assert_eq!(rolled.len(), 1, "the first zone rolls: {rolled:?}");
    let (_, reason, _) = condition(&fake, "wardengate", "Reconciling").unwrap();
    assert_eq!(reason, "Progressing");
}

#[tokio::test]
async fn the_connection_secret_carries_percent_encoded_urls_built_from_the_referenced_secrets() {
    let fake = three_zones();
    let ctx = context(&fake);
    reconcile_once(&fake, &ctx, "wardengate").await;
    let s = fake
        .get("v1/secrets", Some(NS), "wardengate-connection")
        .expect("the connection Secret");
    use base64::Engine;
    let url = |k: &str| {
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(s["data"][k].as_str().unwrap())
                .unwrap(),
        )
        .unwrap()
    };
    // wardengate-pg holds the password `p@:/%#?w`.
    assert_eq!(
        url("database-url"),
        "postgres://wardengate:p%40%3A%2F%25%23%3Fw@pg-primary.db.svc:5432/wardengate?sslmode=require"
    );
    assert!(url("redis-url").starts_with("sentinel://:value@sentinel-0.redis.svc:26379,"));
    // A rotated password reaches the Secret on the next reconcile.
    fake.patch(
        "v1/secrets",
        Some(NS),
        "wardengate-pg",
        json!({"data": {"password": "bmV3"}}),
    );
    reconcile_once(&fake, &ctx, "wardengate").await;
    let s = fake
        .get("v1/secrets", Some(NS), "wardengate-connection")
        .unwrap();
    let db = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(s["data"]["database-url"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert!(db.starts_with("postgres://wardengate:new@"), "{db}");
    // A Secret without the key the spec names is reported, naming field, Secret and key.
    fake.patch(
        "v1/secrets",
        Some(NS),
        "wardengate-pg",
        json!({"data": {"username": null}}),
    );
    reconcile_once(&fake, &ctx, "wardengate").await;
    let (stalled, reason, message) = condition(&fake, "wardengate", "Stalled").unwrap();
    assert_eq!(
        (stalled.as_str(), reason.as_str()),
        ("True", "SecretNotFound")
    );
    assert!(
        message.contains("spec.postgres.patroni.credentialsSecretRef")
            && message.contains("wardengate-pg")
            && message.contains("username"),
        "{message}"
    );
}

fn events_about(fake: &FakeApi, name: &str, reason: &str) -> usize {
    fake.names("events.k8s.io/v1/events", Some(NS))
        .into_iter()
        .filter_map(|n| fake.get("events.k8s.io/v1/events", Some(NS), &n))
        .filter(|e| e["regarding"]["name"] == name && e["reason"] == reason)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_cluster_is_stalled_naming_the_field_while_the_others_converge() {
    let fake = quickstart();
    let mut broken = example("quickstart");
    broken["metadata"]["name"] = json!("broken");
    // As an older CRD (or validation turned off) would have let it in.
    broken["spec"]["replicas"] = json!("three");
    fake.create(CLUSTERS, broken);
    let op = start(&fake, "op-a");
    eventually(
        "Stalled=True/InvalidResource",
        Duration::from_secs(10),
        || {
            condition(&fake, "broken", "Stalled")
                .is_some_and(|c| c.0 == "True" && c.1 == "InvalidResource")
        },
    )
    .await;
    let message = condition(&fake, "broken", "Stalled").unwrap().2;
    assert!(
        message.contains("spec.replicas") && message.contains("\"three\""),
        "{message}"
    );
    assert_eq!(
        condition(&fake, "broken", "Ready").unwrap().0,
        "False",
        "kstatus: not ready"
    );
    assert_eq!(
        fake.get(CLUSTERS, Some(NS), "broken").unwrap()["status"]["phase"],
        "Stalled"
    );
    assert_eq!(events_about(&fake, "broken", "InvalidResource"), 1);
    // The broken object does not break the watch: its valid neighbour is reconciled.
    eventually(
        "the valid cluster's Deployment",
        Duration::from_secs(10),
        || fake.get(DEPLOYMENTS, Some(NS), "wardengate-cp").is_some(),
    )
    .await;
    assert!(fake.get(DEPLOYMENTS, Some(NS), "broken-cp").is_none());

    // It waits for a change: once settled, neither reconciles nor writes for a whole second.
    // Settled includes the valid neighbour: its second pass names the zone it rolls (with no
    // ready pods in the fake, that is its steady state), and that pass may come after a
    // quiet 300 ms.
    eventually(
        "the neighbour's rollout names its zone",
        Duration::from_secs(10),
        || {
            fake.get(CLUSTERS, Some(NS), "wardengate").unwrap()["status"]["rollout"]["currentZone"]
                == "wardengate-cp"
        },
    )
    .await;
    eventually("quiet", Duration::from_secs(10), || {
        let m = fake.mark();
        std::thread::sleep(Duration::from_millis(300));
        non_lease_writes(&fake, "op-a", m).is_empty()
    })
    .await;
    let (ok, errors) = (op.metrics.reconciles("ok"), op.metrics.reconciles("error"));
    let mark = fake.mark();
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The valid neighbour still has its own periodic re-read (5 s while its rollout is active),
    // which may land once in this second; a hot loop on the broken object would be dozens.
    let (ok_after, errors_after) = (op.metrics.reconciles("ok"), op.metrics.reconciles("error"));
    assert!(
        ok_after + errors_after - ok - errors <= 1,
        "no hot loop: {} ok and {} error reconciles in one second; requests: {:?}",
        ok_after - ok,
        errors_after - errors,
        fake.requests_since(mark)
    );
    assert!(non_lease_writes(&fake, "op-a", mark).is_empty());
    assert_eq!(events_about(&fake, "broken", "InvalidResource"), 1);

    // Corrected, it is reconciled like any other.
    fake.patch(
        CLUSTERS,
        Some(NS),
        "broken",
        json!({"spec": {"replicas": 3}}),
    );
    eventually(
        "the corrected cluster's Deployment",
        Duration::from_secs(10),
        || fake.get(DEPLOYMENTS, Some(NS), "broken-cp").is_some(),
    )
    .await;
    eventually("Stalled=False", Duration::from_secs(10), || {
        condition(&fake, "broken", "Stalled").is_some_and(|c| c.0 == "False")
    })
    .await;
    op.stop.send(true).unwrap();
    op.task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_pool_is_stalled_and_so_are_pools_of_an_undecodable_cluster() {
    let fake = three_zones();
    let mut pool: Value = serde_yaml::from_str(
        &std::fs::read_to_string(format!(
            "{}/../examples/gateway-pool.yaml",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap(),
    )
    .unwrap();
    pool["metadata"]["namespace"] = json!(NS);
    let mut broken = pool.clone();
    broken["metadata"]["name"] = json!("broken");
    broken["spec"]["replicas"] = json!("two");
    fake.create(POOLS, broken);
    let op = start(&fake, "op-a");
    let pool_stalled = |name: &str| {
        let p = fake.get(POOLS, Some(NS), name)?;
        p["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "Stalled" && c["status"] == "True")
            .map(|c| {
                (
                    c["reason"].as_str().unwrap_or_default().to_string(),
                    c["message"].as_str().unwrap_or_default().to_string(),
                )
            })
    };
    eventually("the pool Stalled", Duration::from_secs(10), || {
        pool_stalled("broken").is_some_and(|(r, _)| r == "InvalidResource")
    })
    .await;
    let (_, message) = pool_stalled("broken").unwrap();
    assert!(
        message.contains("GatewayPool") && message.contains("spec.replicas"),
        "{message}"
    );
    assert!(fake.get(DEPLOYMENTS, Some(NS), "broken-gw").is_none());

    // A valid pool whose cluster no longer decodes is held, naming the cluster's problem.
    fake.create(POOLS, pool);
    fake.patch(
        CLUSTERS,
        Some(NS),
        "wardengate",
        json!({"spec": {"replicas": "three"}}),
    );
    eventually("the cluster Stalled", Duration::from_secs(10), || {
        condition(&fake, "wardengate", "Stalled").is_some_and(|c| c.1 == "InvalidResource")
    })
    .await;
    eventually("the valid pool held", Duration::from_secs(10), || {
        pool_stalled("us-east").is_some_and(|(r, m)| {
            r == "ClusterNotFound" && m.contains("does not decode") && m.contains("spec.replicas")
        })
    })
    .await;
    op.stop.send(true).unwrap();
    op.task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backoff_forgets_a_cluster_once_it_reconciles_and_once_it_is_deleted() {
    let fake = quickstart();
    // The apiserver fails every Service write: each reconcile of the cluster fails.
    fake.refuse(Verb::Apply, SERVICES);
    let op = start(&fake, "op-a");
    eventually("the cluster in backoff", Duration::from_secs(10), || {
        op.metrics.backoff_objects.get() == 1 && op.metrics.reconciles("error") >= 2
    })
    .await;
    fake.allow();
    eventually("forgotten after a success", Duration::from_secs(10), || {
        op.metrics.backoff_objects.get() == 0
            && fake.get(SERVICES, Some(NS), "wardengate").is_some()
    })
    .await;

    // Failing again, then deleted: no reconcile runs for it any more, and the entry goes.
    fake.refuse(Verb::Apply, SERVICES);
    fake.delete(SERVICES, Some(NS), "wardengate");
    eventually("back in backoff", Duration::from_secs(10), || {
        op.metrics.backoff_objects.get() == 1
    })
    .await;
    fake.delete(CLUSTERS, Some(NS), "wardengate");
    eventually(
        "forgotten after the deletion",
        Duration::from_secs(10),
        || op.metrics.backoff_objects.get() == 0,
    )
    .await;
    assert!(fake.get(CLUSTERS, Some(NS), "wardengate").is_none());
    op.stop.send(true).unwrap();
    op.task.await.unwrap();
}
