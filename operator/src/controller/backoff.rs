//! Per-object error backoff: 1 s, 2 s, 4 s … capped, keyed by kind, namespace and name. An
//! entry lives only while its object keeps failing: a successful reconcile, a deletion, or the
//! controller finding the object gone removes it, so the map never outgrows the failing set.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use kube::core::DynamicObject;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use prometheus::IntGauge;

/// Which object a backoff entry belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// Kubernetes kind.
    pub kind: String,
    /// Namespace, if namespaced.
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
}

impl ObjectKey {
    /// The key of `obj`.
    pub fn of<K: Resource<DynamicType = ()>>(obj: &K) -> Self {
        Self {
            kind: K::kind(&()).into_owned(),
            namespace: obj.namespace(),
            name: obj.name_any(),
        }
    }

    /// The key of the object a controller reference names (as reported for vanished objects).
    pub fn of_ref(r: &ObjectRef<DynamicObject>) -> Self {
        Self {
            kind: r.dyntype.kind.clone(),
            namespace: r.namespace.clone(),
            name: r.name.clone(),
        }
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// Exponential backoff per object, doubling from `base` up to `max`.
#[derive(Debug)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    failures: Mutex<HashMap<ObjectKey, u32>>,
    /// Objects currently in backoff, exported as a metric.
    tracked: Option<IntGauge>,
}

impl Backoff {
    /// A backoff from `base` doubling up to `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            failures: Mutex::new(HashMap::new()),
            tracked: None,
        }
    }

    /// The same, reporting the number of objects in backoff on `gauge`.
    pub fn with_gauge(mut self, gauge: IntGauge) -> Self {
        self.tracked = Some(gauge);
        self
    }

    fn update<T>(&self, f: impl FnOnce(&mut HashMap<ObjectKey, u32>) -> T) -> T {
        let mut m = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let out = f(&mut m);
        if let Some(g) = &self.tracked {
            g.set(i64::try_from(m.len()).unwrap_or(i64::MAX));
        }
        out
    }

    /// Records a failure of `key` and returns how long to wait.
    pub fn fail(&self, key: &ObjectKey) -> Duration {
        let n = self.update(|m| {
            let n = m.entry(key.clone()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        });
        let factor = 2u32.saturating_pow(n.saturating_sub(1).min(20));
        self.base.saturating_mul(factor).min(self.max)
    }

    /// Forgets `key`: it reconciled, or it no longer exists.
    pub fn forget(&self, key: &ObjectKey) {
        self.update(|m| m.remove(key));
    }

    /// Whether `key` is in backoff.
    pub fn contains(&self, key: &ObjectKey) -> bool {
        self.update(|m| m.contains_key(key))
    }

    /// How many objects are in backoff.
    pub fn len(&self) -> usize {
        self.update(|m| m.len())
    }

    /// Whether no object is in backoff.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> ObjectKey {
        ObjectKey {
            kind: "WardengateCluster".into(),
            namespace: Some("ns".into()),
            name: name.into(),
        }
    }

    #[test]
    fn backoff_doubles_caps_and_resets() {
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(10));
        let waits: Vec<u64> = (0..6).map(|_| b.fail(&key("a")).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 10, 10]);
        assert_eq!(b.fail(&key("other")).as_secs(), 1, "per object");
        b.forget(&key("a"));
        assert_eq!(b.fail(&key("a")).as_secs(), 1);
    }

    #[test]
    fn forgotten_objects_leave_the_map_and_the_gauge() {
        let gauge = IntGauge::new("t", "t").unwrap();
        let b =
            Backoff::new(Duration::from_secs(1), Duration::from_secs(10)).with_gauge(gauge.clone());
        b.fail(&key("a"));
        b.fail(&key("b"));
        b.fail(&key("a"));
        assert_eq!((b.len(), gauge.get()), (2, 2));
        b.forget(&key("a"));
        assert!(!b.contains(&key("a")) && b.contains(&key("b")));
        assert_eq!(gauge.get(), 1);
        b.forget(&key("b"));
        b.forget(&key("never-failed"));
        assert!(b.is_empty());
        assert_eq!(gauge.get(), 0);
    }

    #[test]
    fn a_vanished_object_reference_names_the_same_key() {
        let c: wardengate_crds::WardengateCluster = serde_json::from_value(serde_json::json!({
            "apiVersion": "wardengate.io/v1alpha1", "kind": "WardengateCluster",
            "metadata": {"name": "a", "namespace": "ns"},
            "spec": {"version": "0.1.0", "postgres": {}, "redis": {"hosts": ["r:6379"]}}
        }))
        .unwrap();
        let r = ObjectRef::from_obj(&c).erase();
        assert_eq!(ObjectKey::of_ref(&r), ObjectKey::of(&c));
        assert_eq!(ObjectKey::of(&c), key("a"));
    }
}
