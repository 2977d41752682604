//! Custom resources that do not deserialize (a field of the wrong type, written under an older
//! CRD or with validation off). The controllers watch them through kube-runtime's
//! [`DeserializeGuard`], so one such object neither breaks the watch for every other object nor
//! gets skipped silently: it gets `Stalled=True` (reason `InvalidResource`, the serde error in
//! the message) and waits for a change, like an invalid spec.
//!
//! Its status cannot come from the undecodable object itself, so it is read once per reconcile
//! as untyped JSON: comparing with it keeps the write idempotent (no status write, so no watch
//! event, so no hot loop).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::core::error_boundary::InvalidObject;
use kube::core::{ApiResource, DeserializeGuard, DynamicObject};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::events::publish;
use super::status_write::{now, write_status};
use super::{Context, Error};
use crate::status::reasons;

/// The message of the `Stalled` condition: the kind, the error (naming the field when the
/// stored object was readable), and what to do.
pub fn message(kind: &str, error: &str) -> String {
    format!(
        "this {kind} does not match the operator's schema ({error}); an older CRD or disabled \
         validation let it in: correct the field and the operator reconciles it again"
    )
}

/// Why `raw` does not deserialize as `K`, naming the field (`spec.replicas: invalid type …`);
/// `None` if it does.
pub fn field_error<K: DeserializeOwned>(raw: &serde_json::Value) -> Option<String> {
    serde_path_to_error::deserialize::<_, K>(raw)
        .err()
        .map(|e| format!("{}: {}", e.path(), e.inner()))
}

/// The stored object as untyped JSON (its status is read from there), if it still exists.
async fn stored<K>(
    ctx: &Context,
    ns: &str,
    name: &str,
) -> Result<Option<serde_json::Value>, kube::Error>
where
    K: Resource<DynamicType = ()>,
{
    let api: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), ns, &ApiResource::erase::<K>(&()));
    Ok(api
        .get_opt(name)
        .await?
        .and_then(|o| serde_json::to_value(o).ok()))
}

/// Why the stored `K` named `name` does not deserialize, naming the field when it can be read
/// again (else `invalid`'s own message).
pub(crate) async fn describe<K>(
    ctx: &Context,
    ns: &str,
    name: &str,
    invalid: &InvalidObject,
) -> Result<String, kube::Error>
where
    K: Resource<DynamicType = ()> + DeserializeOwned,
{
    Ok(stored::<K>(ctx, ns, name)
        .await?
        .and_then(|raw| field_error::<K>(&raw))
        .unwrap_or_else(|| invalid.error.clone()))
}

/// Stalls `guard` (whose content failed to deserialize as `invalid`) with the status `stalled`
/// computes from the generation, reason, message, previous status and time; then waits for a
/// change.
pub(crate) async fn stall<K, S>(
    ctx: &Context,
    guard: &DeserializeGuard<K>,
    invalid: &InvalidObject,
    stalled: impl FnOnce(i64, &str, String, Option<&S>, &Time) -> S,
) -> Result<Action, Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
    S: PartialEq + Serialize + DeserializeOwned,
{
    let ns = guard
        .namespace()
        .ok_or_else(|| Error::Metadata(guard.name_any(), "namespace"))?;
    let name = guard.name_any();
    let Some(raw) = stored::<K>(ctx, &ns, &name).await? else {
        // Deleted meanwhile: nothing to report on.
        return Ok(Action::await_change());
    };
    let error = field_error::<K>(&raw).unwrap_or_else(|| invalid.error.clone());
    let msg = message(&K::kind(&()), &error);
    tracing::warn!(kind = %K::kind(&()), namespace = %ns, %name, %error, "custom resource does not deserialize");
    let previous: Option<S> = raw
        .get("status")
        .and_then(|s| serde_json::from_value(s.clone()).ok());
    let generation = guard.meta().generation.unwrap_or(0);
    let s = stalled(
        generation,
        reasons::INVALID_RESOURCE,
        msg.clone(),
        previous.as_ref(),
        &now(),
    );
    if write_status(ctx, guard, previous.as_ref(), &s).await? {
        publish(
            ctx,
            guard,
            EventType::Warning,
            reasons::INVALID_RESOURCE,
            "Decode",
            msg,
        )
        .await;
    }
    ctx.metrics.invalid.inc();
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use wardengate_crds::WardengateCluster;

    #[test]
    fn a_wrong_field_type_is_caught_and_named_with_its_path() {
        let raw = serde_json::json!({
            "apiVersion": "wardengate.io/v1alpha1", "kind": "WardengateCluster",
            "metadata": {"name": "a", "namespace": "ns", "generation": 4},
            "spec": {"version": "0.1.0", "replicas": "three", "postgres": {}, "redis": {"hosts": ["r:6379"]}}
        });
        let g: DeserializeGuard<WardengateCluster> = serde_json::from_value(raw.clone()).unwrap();
        let Err(invalid) = &g.0 else {
            panic!("decoded although replicas is a string")
        };
        assert_eq!(g.meta().generation, Some(4), "metadata survives");
        assert!(invalid.error.contains("\"three\""), "{}", invalid.error);
        let e = field_error::<WardengateCluster>(&raw).unwrap();
        assert!(
            e.starts_with("spec.replicas: invalid type: string \"three\""),
            "{e}"
        );
        let m = message("WardengateCluster", &e);
        assert!(
            m.starts_with("this WardengateCluster") && m.contains(&e),
            "{m}"
        );
        let mut fixed = raw;
        fixed["spec"]["replicas"] = serde_json::json!(3);
        assert_eq!(field_error::<WardengateCluster>(&fixed), None);
    }
}
