#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};

fn cm(name: &str, value: &str) -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "ns", "labels": {"app": "x"}},
        "data": {"k": value}
    }))
    .unwrap()
}

fn deployment(name: &str, replicas: i32) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "ns"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"a": "b"}},
                 "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": []}}}
    }))
    .unwrap()
}

#[test]
fn paths_parse_for_core_group_namespaced_and_subresources() {
    let t = parse_path("/apis/apps/v1/namespaces/ns/deployments/d/status").unwrap();
    assert_eq!(t.resource, "apps/v1/deployments");
    assert_eq!(t.namespace.as_deref(), Some("ns"));
    assert_eq!(t.name.as_deref(), Some("d"));
    assert_eq!(t.subresource.as_deref(), Some("status"));
    let t = parse_path("/api/v1/services").unwrap();
    assert_eq!(
        (t.resource.as_str(), t.namespace, t.name),
        ("v1/services", None, None)
    );
    assert!(parse_path("/version").is_none());
}

#[test]
fn label_selectors_support_equality_inequality_and_existence() {
    let obj = json!({"metadata": {"labels": {"a": "1", "b": "2"}}});
    let m = |s: &str| labels_match(&obj, &parse_label_selector(s).unwrap());
    assert!(m("a=1,b==2"));
    assert!(!m("a=2"));
    assert!(m("a!=2"));
    assert!(m("b,!c"));
    assert!(!m("c"));
    assert!(parse_label_selector("a in (1,2)").is_err());
}

#[test]
fn dates_are_civil() {
    assert_eq!(civil_from_days(0), (1970, 1, 1));
    assert_eq!(civil_from_days(20_416), (2025, 11, 24));
}

#[tokio::test]
async fn create_get_list_and_conflicting_create() {
    let fake = FakeApi::new();
    let api: Api<ConfigMap> = Api::namespaced(fake.client("t"), "ns");
    let created = api
        .create(&PostParams::default(), &cm("a", "1"))
        .await
        .unwrap();
    assert!(created.metadata.uid.is_some());
    assert_eq!(created.metadata.resource_version.as_deref(), Some("1"));
    let err = api
        .create(&PostParams::default(), &cm("a", "1"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(s) if s.code == 409),
        "duplicate create must conflict"
    );
    api.create(&PostParams::default(), &cm("b", "1"))
        .await
        .unwrap();
    assert_eq!(
        api.list(&ListParams::default().labels("app=x"))
            .await
            .unwrap()
            .items
            .len(),
        2
    );
    assert_eq!(
        api.list(&ListParams::default().labels("app=y"))
            .await
            .unwrap()
            .items
            .len(),
        0
    );
    assert_eq!(api.get("a").await.unwrap().data.unwrap()["k"], "1");
    let missing = api.get("zzz").await.unwrap_err();
    assert!(matches!(missing, kube::Error::Api(s) if s.code == 404));
    let verbs: Vec<Verb> = fake.requests().iter().map(|r| r.verb).collect();
    assert_eq!(
        verbs,
        [
            Verb::Create,
            Verb::Create,
            Verb::Create,
            Verb::List,
            Verb::List,
            Verb::Get,
            Verb::Get
        ]
    );
}

#[tokio::test]
async fn server_side_apply_creates_updates_and_a_same_apply_changes_nothing() {
    let fake = FakeApi::new();
    let api: Api<Deployment> = Api::namespaced(fake.client("t"), "ns");
    let pp = PatchParams::apply("me").force();
    let d = api
        .patch("d", &pp, &Patch::Apply(deployment("d", 1)))
        .await
        .unwrap();
    assert_eq!(d.metadata.generation, Some(1));
    let rv = d.metadata.resource_version.clone();
    let again = api
        .patch("d", &pp, &Patch::Apply(deployment("d", 1)))
        .await
        .unwrap();
    assert_eq!(
        again.metadata.resource_version, rv,
        "a no-op apply must not bump resourceVersion"
    );
    let scaled = api
        .patch("d", &pp, &Patch::Apply(deployment("d", 3)))
        .await
        .unwrap();
    assert_eq!(
        scaled.metadata.generation,
        Some(2),
        "a spec change bumps generation"
    );
    // A status write leaves generation alone and is kept by later main-resource writes.
    fake.patch_status(
        "apps/v1/deployments",
        Some("ns"),
        "d",
        json!({"readyReplicas": 3}),
    );
    let d = api.get("d").await.unwrap();
    assert_eq!(d.metadata.generation, Some(2));
    assert_eq!(d.status.unwrap().ready_replicas, Some(3));
    let d = api
        .patch("d", &pp, &Patch::Apply(deployment("d", 3)))
        .await
        .unwrap();
    assert_eq!(d.status.unwrap().ready_replicas, Some(3));
}

#[tokio::test]
async fn apply_removes_fields_the_manager_stopped_applying() {
    let fake = FakeApi::new();
    let api: Api<ConfigMap> = Api::namespaced(fake.client("t"), "ns");
    let pp = PatchParams::apply("me");
    let mut with_annotation = cm("a", "1");
    with_annotation.metadata.annotations = Some([("x".to_string(), "y".to_string())].into());
    api.patch("a", &pp, &Patch::Apply(&with_annotation))
        .await
        .unwrap();
    let after = api
        .patch("a", &pp, &Patch::Apply(&cm("a", "1")))
        .await
        .unwrap();
    assert!(after.metadata.annotations.unwrap_or_default().is_empty());
}

#[tokio::test]
async fn replace_with_a_stale_resource_version_conflicts() {
    let fake = FakeApi::new();
    let api: Api<Lease> = Api::namespaced(fake.client("t"), "ns");
    let lease: Lease =
        serde_json::from_value(json!({"metadata": {"name": "l"}, "spec": {"holderIdentity": "a"}}))
            .unwrap();
    let created = api.create(&PostParams::default(), &lease).await.unwrap();
    let mut first = created.clone();
    first.spec.as_mut().unwrap().holder_identity = Some("b".into());
    api.replace("l", &PostParams::default(), &first)
        .await
        .unwrap();
    let mut stale = created;
    stale.spec.as_mut().unwrap().holder_identity = Some("c".into());
    let err = api
        .replace("l", &PostParams::default(), &stale)
        .await
        .unwrap_err();
    assert!(matches!(err, kube::Error::Api(s) if s.code == 409));
}

#[tokio::test]
async fn watch_resumes_from_a_version_and_delete_cascades_to_dependents() {
    let fake = FakeApi::new();
    let client = fake.client("t");
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "ns");
    let owner = api
        .create(&PostParams::default(), &cm("owner", "1"))
        .await
        .unwrap();
    let rv = owner.metadata.resource_version.clone().unwrap();
    let mut child = cm("child", "1");
    child.metadata.owner_references = Some(vec![
        k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            name: "owner".into(),
            uid: owner.metadata.uid.clone().unwrap(),
            ..Default::default()
        },
    ]);
    api.create(&PostParams::default(), &child).await.unwrap();
    let stream = api
        .watch(&WatchParams::default().timeout(5), &rv)
        .await
        .unwrap();
    let mut stream = Box::pin(stream);
    api.delete("owner", &DeleteParams::default()).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        match tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            WatchEvent::Added(o) => seen.push(format!("added {}", o.metadata.name.unwrap())),
            WatchEvent::Deleted(o) => seen.push(format!("deleted {}", o.metadata.name.unwrap())),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen, ["added child", "deleted owner", "deleted child"]);
    assert!(fake.names("v1/configmaps", Some("ns")).is_empty());
}
