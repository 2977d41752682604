//! Events for humans: what an apply pass wrote and pruned, and warnings when a resource stalls.
//! Failing to record one is logged and never fails a reconcile.

use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};

use super::Context;
use super::apply::{ObjectName, Outcome};

/// Records an Event about `obj`.
pub(crate) async fn publish<K>(
    ctx: &Context,
    obj: &K,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) where
    K: Resource<DynamicType = ()>,
{
    let ev = Event {
        type_,
        reason: reason.to_string(),
        note: Some(note),
        action: action.to_string(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &obj.object_ref(&())).await {
        tracing::warn!(kind = %K::kind(&()), name = %obj.name_any(), error = %e, "could not record an event");
    }
}

fn list(names: &[ObjectName]) -> String {
    names
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Counts and reports (as Events) what an apply step wrote and deleted.
pub(crate) async fn report<K>(ctx: &Context, obj: &K, outcome: &Outcome)
where
    K: Resource<DynamicType = ()>,
{
    if !outcome.written.is_empty() {
        ctx.metrics.applied.inc_by(outcome.written.len() as u64);
        let note = format!("applied {}", list(&outcome.written));
        publish(ctx, obj, EventType::Normal, "Applied", "Apply", note).await;
    }
    if !outcome.deleted.is_empty() {
        ctx.metrics.deleted.inc_by(outcome.deleted.len() as u64);
        let note = format!("deleted {}", list(&outcome.deleted));
        publish(ctx, obj, EventType::Normal, "Pruned", "Delete", note).await;
    }
}
