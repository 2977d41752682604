//! An in-process fake of the Kubernetes API server, served as a `tower::Service` behind a real
//! `kube::Client`, so controller tests run the operator's real code paths (typed `Api` calls,
//! `kube::runtime` watchers, the event recorder) with no cluster.
//!
//! What it honours, because controllers depend on it:
//! - `resourceVersion` (one counter for the whole store, bumped on every real change and **not**
//!   on a no-op write, like the apiserver) and optimistic concurrency on `PUT` (409 on a stale
//!   version);
//! - `metadata.generation`, bumped only when something outside `metadata` and `status` changes;
//! - the `status` subresource: writes to the main resource keep the stored status, writes to
//!   `/status` change nothing else;
//! - server-side apply (`application/apply-patch+yaml`): create-or-update, per field manager;
//!   fields a manager applied before and no longer applies are removed; lists are replaced as a
//!   whole (the real apiserver merges associative lists by key, which gives the same result when a
//!   single manager applies complete objects, as the operator does);
//! - JSON merge patches (also used for strategic-merge content types), `PUT`, `POST`, `DELETE`
//!   with cascading deletion of dependents through `ownerReferences` (the garbage collector);
//! - list and watch with label selectors (`=`, `==`, `!=`, existence), `metadata.name` /
//!   `metadata.namespace` field selectors, watches resumed from a `resourceVersion`, and
//!   `timeoutSeconds`.
//!
//! Every request is recorded with the name of the client that made it, so tests can pin the API
//! traffic of a reconcile ("a steady-state reconcile writes nothing").

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use serde_json::{Map, Value, json};
use tokio::sync::broadcast;

/// Response body type of the fake.
pub type FakeBody = UnsyncBoxBody<Bytes, Infallible>;

/// What a request did, for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verb {
    /// GET of one object.
    Get,
    /// GET of a collection.
    List,
    /// GET of a collection with `watch=true`.
    Watch,
    /// POST.
    Create,
    /// PUT.
    Update,
    /// PATCH with a merge patch.
    Patch,
    /// PATCH with server-side apply.
    Apply,
    /// DELETE.
    Delete,
}

impl Verb {
    /// Whether the verb changes (or tries to change) state.
    pub fn is_write(self) -> bool {
        matches!(
            self,
            Verb::Create | Verb::Update | Verb::Patch | Verb::Apply | Verb::Delete
        )
    }
}

/// One recorded request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// Name given to [`FakeApi::client`].
    pub client: String,
    /// What it did.
    pub verb: Verb,
    /// `group/version/plural` (`v1/services`, `apps/v1/deployments`).
    pub resource: String,
    /// Namespace in the path, if any.
    pub namespace: Option<String>,
    /// Object name in the path, if any.
    pub name: Option<String>,
    /// Subresource (`status`, `scale`), if any.
    pub subresource: Option<String>,
}

impl std::fmt::Display for Recorded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} {}", self.verb, self.resource)?;
        if let Some(ns) = &self.namespace {
            write!(f, " ns={ns}")?;
        }
        if let Some(n) = &self.name {
            write!(f, " {n}")?;
        }
        if let Some(s) = &self.subresource {
            write!(f, "/{s}")?;
        }
        write!(f, " (by {})", self.client)
    }
}

/// Kind of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

#[derive(Debug, Clone)]
struct Change {
    rv: u64,
    resource: String,
    event: EventType,
    object: Value,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    resource: String,
    namespace: Option<String>,
    name: String,
}

#[derive(Default)]
struct State {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    /// Last object each field manager applied, for removing fields it stopped applying.
    applied: BTreeMap<(Key, String), Value>,
    log: Vec<Change>,
    requests: Vec<Recorded>,
    /// `(verb, resource)` pairs answered with a 500, for tests of failing reconciles.
    refused: BTreeSet<(Verb, String)>,
}

struct Shared {
    state: Mutex<State>,
    changes: broadcast::Sender<Change>,
}

/// The fake API server. Cheap to clone; clones share the store.
#[derive(Clone)]
pub struct FakeApi {
    shared: Arc<Shared>,
}

impl Default for FakeApi {
    fn default() -> Self {
        Self::new()
    }
}

/// An API error as the apiserver reports it.
#[derive(Debug, Clone)]
struct ApiError {
    code: u16,
    reason: &'static str,
    message: String,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
        }
    }
    fn not_found(key: &Key) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{}\" not found", key.resource, key.name),
        )
    }
}

/// Resources without a status subresource: writes to them may set anything.
const NO_STATUS: &[&str] = &[
    "v1/configmaps",
    "v1/secrets",
    "v1/serviceaccounts",
    "v1/events",
    "events.k8s.io/v1/events",
    "coordination.k8s.io/v1/leases",
];

fn has_status(resource: &str) -> bool {
    !NO_STATUS.contains(&resource)
}

/// A parsed request path.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    resource: String,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

fn parse_path(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
        _ => (None, rest),
    };
    let (plural, name, sub) = match rest {
        [p] => (*p, None, None),
        [p, n] => (*p, Some(n.to_string()), None),
        [p, n, s] => (*p, Some(n.to_string()), Some(s.to_string())),
        _ => return None,
    };
    let resource = if group.is_empty() {
        format!("{version}/{plural}")
    } else {
        format!("{group}/{version}/{plural}")
    };
    Some(Target {
        resource,
        namespace,
        name,
        subresource: sub,
    })
}

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    NotExists(String),
}

fn parse_label_selector(s: &str) -> Result<Vec<Requirement>, ApiError> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let req = if let Some((k, v)) = part.split_once("!=") {
            Requirement::NotEquals(k.trim().into(), v.trim().into())
        } else if let Some((k, v)) = part.split_once("==") {
            Requirement::Equals(k.trim().into(), v.trim().into())
        } else if let Some((k, v)) = part.split_once('=') {
            Requirement::Equals(k.trim().into(), v.trim().into())
        } else if let Some(k) = part.strip_prefix('!') {
            Requirement::NotExists(k.trim().into())
        } else if part.contains(' ') || part.contains('(') {
            return Err(ApiError::new(
                400,
                "BadRequest",
                format!("the fake supports =, ==, != and existence selectors, not {part:?}"),
            ));
        } else {
            Requirement::Exists(part.into())
        };
        out.push(req);
    }
    Ok(out)
}

fn labels_match(obj: &Value, reqs: &[Requirement]) -> bool {
    let labels = obj.pointer("/metadata/labels");
    let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
    reqs.iter().all(|r| match r {
        Requirement::Equals(k, v) => get(k) == Some(v),
        Requirement::NotEquals(k, v) => get(k) != Some(v),
        Requirement::Exists(k) => get(k).is_some(),
        Requirement::NotExists(k) => get(k).is_none(),
    })
}

fn parse_field_selector(s: &str) -> Result<Vec<(String, String)>, ApiError> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once("==")
            .or_else(|| part.split_once('='))
            .ok_or_else(|| {
                ApiError::new(400, "BadRequest", format!("bad field selector {part:?}"))
            })?;
        if k != "metadata.name" && k != "metadata.namespace" {
            return Err(ApiError::new(
                400,
                "BadRequest",
                format!("the fake supports metadata.name/namespace field selectors, not {k:?}"),
            ));
        }
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

fn fields_match(obj: &Value, reqs: &[(String, String)]) -> bool {
    reqs.iter().all(|(k, v)| {
        let ptr = if k == "metadata.name" {
            "/metadata/name"
        } else {
            "/metadata/namespace"
        };
        obj.pointer(ptr).and_then(Value::as_str) == Some(v.as_str())
    })
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            if let Value::Object(t) = target {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// Removes from `target` the fields present in `before` but absent from `after` (a field
/// manager stopped applying them).
fn remove_dropped(target: &mut Value, before: &Value, after: &Value) {
    let (Value::Object(b), Value::Object(t)) = (before, target) else {
        return;
    };
    for (k, bv) in b {
        match after.get(k) {
            None => {
                t.remove(k);
            }
            Some(av) => {
                if let Some(tv) = t.get_mut(k) {
                    remove_dropped(tv, bv, av);
                }
            }
        }
    }
}

fn without_system_fields(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
        m.remove("managedFields");
    }
    v
}

fn spec_part(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
    }
    v
}

fn now() -> String {
    // Seconds precision, as the apiserver writes `creationTimestamp`.
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn json_response(code: u16, body: &Value) -> http::Response<FakeBody> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    http::Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(bytes)).boxed_unsync())
        .unwrap_or_else(|_| http::Response::new(Full::new(Bytes::new()).boxed_unsync()))
}

fn error_response(e: &ApiError) -> http::Response<FakeBody> {
    json_response(
        e.code,
        &json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": e.message,
            "reason": e.reason,
            "code": e.code,
        }),
    )
}

impl FakeApi {
    /// An empty store.
    pub fn new() -> Self {
        let (changes, _) = broadcast::channel(4096);
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                changes,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not hide the store from the others.
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A `kube::Client` whose requests are recorded under `name`.
    pub fn client(&self, name: &str) -> kube::Client {
        let api = self.clone();
        let who = name.to_string();
        let svc = tower::service_fn(move |req: http::Request<kube::client::Body>| {
            let api = api.clone();
            let who = who.clone();
            async move { Ok::<_, Infallible>(api.handle(&who, req).await) }
        });
        kube::Client::new(svc, "default")
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    /// A mark for [`FakeApi::requests_since`].
    pub fn mark(&self) -> usize {
        self.lock().requests.len()
    }

    /// Requests made after `mark`.
    pub fn requests_since(&self, mark: usize) -> Vec<Recorded> {
        self.lock()
            .requests
            .get(mark..)
            .unwrap_or_default()
            .to_vec()
    }

    /// The current resourceVersion of the whole store.
    pub fn resource_version(&self) -> u64 {
        self.lock().rv
    }

    /// An object, as stored.
    pub fn get(&self, resource: &str, namespace: Option<&str>, name: &str) -> Option<Value> {
        self.lock()
            .objects
            .get(&Key {
                resource: resource.into(),
                namespace: namespace.map(str::to_string),
                name: name.into(),
            })
            .cloned()
    }

    /// Names of the objects of a resource in a namespace.
    pub fn names(&self, resource: &str, namespace: Option<&str>) -> Vec<String> {
        self.lock()
            .objects
            .keys()
            .filter(|k| k.resource == resource && k.namespace.as_deref() == namespace)
            .map(|k| k.name.clone())
            .collect()
    }

    /// Creates an object directly (as another client would), e.g. a CR or a referenced Secret.
    /// Panics on a conflict: it is for test set-up.
    pub fn create(&self, resource: &str, object: Value) -> Value {
        let ns = object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .map(str::to_string);
        let mut st = self.lock();
        match self.do_create(&mut st, resource, ns, object) {
            Ok(v) => v,
            Err(e) => panic!("fake create of {resource}: {}", e.message),
        }
    }

    /// Merge-patches an object's main resource (as a user would with `kubectl patch`).
    pub fn patch(
        &self,
        resource: &str,
        namespace: Option<&str>,
        name: &str,
        patch: Value,
    ) -> Value {
        self.write(resource, namespace, name, None, |cur| {
            merge_patch(cur, &patch);
        })
    }

    /// Merge-patches an object's status (as the Deployment controller would).
    pub fn patch_status(
        &self,
        resource: &str,
        namespace: Option<&str>,
        name: &str,
        status: Value,
    ) -> Value {
        self.write(resource, namespace, name, Some("status"), |cur| {
            merge_patch(cur, &json!({ "status": status }));
        })
    }

    fn write(
        &self,
        resource: &str,
        namespace: Option<&str>,
        name: &str,
        sub: Option<&str>,
        f: impl FnOnce(&mut Value),
    ) -> Value {
        let key = Key {
            resource: resource.into(),
            namespace: namespace.map(str::to_string),
            name: name.into(),
        };
        let mut st = self.lock();
        let Some(old) = st.objects.get(&key).cloned() else {
            panic!("fake write: {resource} {name} does not exist");
        };
        let mut new = old.clone();
        f(&mut new);
        let new = restrict(&old, new, sub);
        self.commit(&mut st, &key, new)
    }

    /// Answers every `verb` request on `resource` (`v1/services`) with a 500 until
    /// [`FakeApi::allow`]: an apiserver failing part of a reconcile.
    pub fn refuse(&self, verb: Verb, resource: &str) {
        self.lock().refused.insert((verb, resource.to_string()));
    }

    /// Serves every request again.
    pub fn allow(&self) {
        self.lock().refused.clear();
    }

    /// Deletes an object (and its dependents) directly. Returns whether it existed.
    pub fn delete(&self, resource: &str, namespace: Option<&str>, name: &str) -> bool {
        let key = Key {
            resource: resource.into(),
            namespace: namespace.map(str::to_string),
            name: name.into(),
        };
        let mut st = self.lock();
        self.do_delete(&mut st, &key).is_ok()
    }

    async fn handle(
        &self,
        who: &str,
        req: http::Request<kube::client::Body>,
    ) -> http::Response<FakeBody> {
        let (parts, body) = req.into_parts();
        let body = match body.collect_bytes().await {
            Ok(b) => b,
            Err(e) => {
                return error_response(&ApiError::new(400, "BadRequest", e.to_string()));
            }
        };
        let Some(target) = parse_path(parts.uri.path()) else {
            return error_response(&ApiError::new(
                404,
                "NotFound",
                format!("the fake serves no path {}", parts.uri.path()),
            ));
        };
        let query: BTreeMap<String, String> =
            url::form_urlencoded::parse(parts.uri.query().unwrap_or_default().as_bytes())
                .into_owned()
                .collect();
        let watch = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
        let verb = match (&parts.method, target.name.is_some()) {
            (&http::Method::GET, true) => Verb::Get,
            (&http::Method::GET, false) if watch => Verb::Watch,
            (&http::Method::GET, false) => Verb::List,
            (&http::Method::POST, _) => Verb::Create,
            (&http::Method::PUT, _) => Verb::Update,
            (&http::Method::PATCH, _) => {
                let ct = parts
                    .headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                if ct.starts_with("application/apply-patch") {
                    Verb::Apply
                } else {
                    Verb::Patch
                }
            }
            (&http::Method::DELETE, _) => Verb::Delete,
            _ => {
                return error_response(&ApiError::new(
                    405,
                    "MethodNotAllowed",
                    format!("{} is not supported", parts.method),
                ));
            }
        };
        self.lock().requests.push(Recorded {
            client: who.to_string(),
            verb,
            resource: target.resource.clone(),
            namespace: target.namespace.clone(),
            name: target.name.clone(),
            subresource: target.subresource.clone(),
        });
        if self
            .lock()
            .refused
            .contains(&(verb, target.resource.clone()))
        {
            return error_response(&ApiError::new(
                500,
                "InternalError",
                format!("the test refuses {verb:?} {}", target.resource),
            ));
        }
        if verb == Verb::Watch {
            return self.watch(&target, &query);
        }
        let content_type = parts
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let result = self.serve(verb, &target, &query, &body, &content_type);
        match result {
            Ok((code, v)) => json_response(code, &v),
            Err(e) => error_response(&e),
        }
    }

    fn serve(
        &self,
        verb: Verb,
        t: &Target,
        query: &BTreeMap<String, String>,
        body: &[u8],
        content_type: &str,
    ) -> Result<(u16, Value), ApiError> {
        let parse_body = || -> Result<Value, ApiError> {
            serde_json::from_slice(body)
                .map_err(|e| ApiError::new(400, "BadRequest", format!("body is not JSON: {e}")))
        };
        let key = |name: &str| Key {
            resource: t.resource.clone(),
            namespace: t.namespace.clone(),
            name: name.to_string(),
        };
        let mut st = self.lock();
        match verb {
            Verb::Get => {
                let k = key(t.name.as_deref().unwrap_or_default());
                st.objects
                    .get(&k)
                    .cloned()
                    .map(|v| (200, v))
                    .ok_or_else(|| ApiError::not_found(&k))
            }
            Verb::List => {
                let labels = parse_label_selector(
                    query.get("labelSelector").map(String::as_str).unwrap_or(""),
                )?;
                let fields = parse_field_selector(
                    query.get("fieldSelector").map(String::as_str).unwrap_or(""),
                )?;
                let items: Vec<Value> = st
                    .objects
                    .iter()
                    .filter(|(k, v)| {
                        k.resource == t.resource
                            && (t.namespace.is_none() || k.namespace == t.namespace)
                            && labels_match(v, &labels)
                            && fields_match(v, &fields)
                    })
                    .map(|(_, v)| v.clone())
                    .collect();
                Ok((
                    200,
                    json!({
                        "apiVersion": "v1",
                        "kind": "List",
                        "metadata": { "resourceVersion": st.rv.to_string() },
                        "items": items,
                    }),
                ))
            }
            Verb::Create => {
                let obj = parse_body()?;
                let v = self.do_create(&mut st, &t.resource, t.namespace.clone(), obj)?;
                Ok((201, v))
            }
            Verb::Update => {
                let k = key(t.name.as_deref().unwrap_or_default());
                let old = st
                    .objects
                    .get(&k)
                    .cloned()
                    .ok_or_else(|| ApiError::not_found(&k))?;
                let new = parse_body()?;
                let given = new
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str);
                let stored = old
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str);
                if given.is_some_and(|g| Some(g) != stored) {
                    return Err(ApiError::new(
                        409,
                        "Conflict",
                        format!(
                            "Operation cannot be fulfilled on {} \"{}\": the object has been modified; please apply your changes to the latest version and try again",
                            t.resource, k.name
                        ),
                    ));
                }
                let new = restrict(&old, new, t.subresource.as_deref());
                Ok((200, self.commit(&mut st, &k, new)))
            }
            Verb::Patch | Verb::Apply => {
                if content_type.starts_with("application/json-patch") {
                    return Err(ApiError::new(
                        415,
                        "UnsupportedMediaType",
                        "the fake does not implement JSON patch",
                    ));
                }
                let k = key(t.name.as_deref().unwrap_or_default());
                let patch = parse_body()?;
                let existing = st.objects.get(&k).cloned();
                if verb == Verb::Apply {
                    let manager = query.get("fieldManager").cloned().ok_or_else(|| {
                        ApiError::new(400, "BadRequest", "fieldManager is required for apply")
                    })?;
                    let applied_key = (k.clone(), manager);
                    let Some(old) = existing else {
                        if t.subresource.is_some() {
                            return Err(ApiError::not_found(&k));
                        }
                        let v = self.do_create(
                            &mut st,
                            &t.resource,
                            t.namespace.clone(),
                            patch.clone(),
                        )?;
                        st.applied.insert(applied_key, patch);
                        return Ok((201, v));
                    };
                    let mut new = old.clone();
                    if let Some(before) = st.applied.get(&applied_key) {
                        remove_dropped(&mut new, before, &patch);
                    }
                    merge_patch(&mut new, &strip_nulls(&patch));
                    let new = restrict(&old, new, t.subresource.as_deref());
                    st.applied.insert(applied_key, patch);
                    Ok((200, self.commit(&mut st, &k, new)))
                } else {
                    let old = existing.ok_or_else(|| ApiError::not_found(&k))?;
                    let mut new = old.clone();
                    merge_patch(&mut new, &patch);
                    let new = restrict(&old, new, t.subresource.as_deref());
                    Ok((200, self.commit(&mut st, &k, new)))
                }
            }
            Verb::Delete => {
                let k = key(t.name.as_deref().unwrap_or_default());
                let v = self.do_delete(&mut st, &k)?;
                Ok((200, v))
            }
            Verb::Watch => Err(ApiError::new(
                500,
                "InternalError",
                "watch is served elsewhere",
            )),
        }
    }

    fn do_create(
        &self,
        st: &mut State,
        resource: &str,
        namespace: Option<String>,
        mut obj: Value,
    ) -> Result<Value, ApiError> {
        let meta = obj
            .get_mut("metadata")
            .and_then(Value::as_object_mut)
            .ok_or_else(|| ApiError::new(400, "BadRequest", "metadata is required"))?;
        let name = match meta.get("name").and_then(Value::as_str) {
            Some(n) => n.to_string(),
            None => {
                let prefix = meta
                    .get("generateName")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        ApiError::new(400, "Invalid", "metadata.name or generateName is required")
                    })?;
                format!(
                    "{prefix}{}",
                    &uuid::Uuid::new_v4().simple().to_string()[..5]
                )
            }
        };
        let key = Key {
            resource: resource.to_string(),
            namespace: namespace.clone(),
            name: name.clone(),
        };
        if st.objects.contains_key(&key) {
            return Err(ApiError::new(
                409,
                "AlreadyExists",
                format!("{resource} \"{name}\" already exists"),
            ));
        }
        st.rv += 1;
        meta.insert("name".into(), json!(name));
        if let Some(ns) = &namespace {
            meta.insert("namespace".into(), json!(ns));
        }
        meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        meta.insert("resourceVersion".into(), json!(st.rv.to_string()));
        meta.insert("generation".into(), json!(1));
        meta.insert("creationTimestamp".into(), json!(now()));
        if has_status(resource)
            && let Some(o) = obj.as_object_mut()
        {
            o.remove("status");
        }
        st.objects.insert(key, obj.clone());
        self.publish(st, resource, EventType::Added, obj.clone());
        Ok(obj)
    }

    /// Stores `new` for `key` unless it equals the stored object (then nothing changes, like the
    /// apiserver's no-op writes); bumps generation when the spec changed.
    fn commit(&self, st: &mut State, key: &Key, mut new: Value) -> Value {
        let Some(old) = st.objects.get(key).cloned() else {
            return new;
        };
        for f in [
            "uid",
            "creationTimestamp",
            "name",
            "namespace",
            "generation",
        ] {
            match old.pointer(&format!("/metadata/{f}")) {
                Some(v) => {
                    if let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut) {
                        m.insert(f.into(), v.clone());
                    }
                }
                None => {
                    if let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut) {
                        m.remove(f);
                    }
                }
            }
        }
        if without_system_fields(&new) == without_system_fields(&old) {
            return old;
        }
        st.rv += 1;
        let generation = old
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        let generation = if spec_part(&new) != spec_part(&old) {
            generation + 1
        } else {
            generation
        };
        if let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut) {
            m.insert("resourceVersion".into(), json!(st.rv.to_string()));
            m.insert("generation".into(), json!(generation));
        }
        st.objects.insert(key.clone(), new.clone());
        self.publish(st, &key.resource, EventType::Modified, new.clone());
        new
    }

    fn do_delete(&self, st: &mut State, key: &Key) -> Result<Value, ApiError> {
        let mut obj = st
            .objects
            .remove(key)
            .ok_or_else(|| ApiError::not_found(key))?;
        st.applied.retain(|(k, _), _| k != key);
        st.rv += 1;
        if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            m.insert("resourceVersion".into(), json!(st.rv.to_string()));
        }
        self.publish(st, &key.resource, EventType::Deleted, obj.clone());
        // The garbage collector: dependents go with their owner.
        if let Some(uid) = obj.pointer("/metadata/uid").and_then(Value::as_str) {
            let dependents: Vec<Key> = st
                .objects
                .iter()
                .filter(|(_, v)| {
                    v.pointer("/metadata/ownerReferences")
                        .and_then(Value::as_array)
                        .is_some_and(|refs| {
                            refs.iter()
                                .any(|r| r.get("uid").and_then(Value::as_str) == Some(uid))
                        })
                })
                .map(|(k, _)| k.clone())
                .collect();
            for d in dependents {
                let _ = self.do_delete(st, &d);
            }
        }
        Ok(obj)
    }

    fn publish(&self, st: &mut State, resource: &str, event: EventType, object: Value) {
        let change = Change {
            rv: st.rv,
            resource: resource.to_string(),
            event,
            object,
        };
        st.log.push(change.clone());
        // No receivers is fine: nobody is watching.
        let _ = self.shared.changes.send(change);
    }

    fn watch(&self, t: &Target, query: &BTreeMap<String, String>) -> http::Response<FakeBody> {
        let labels = match parse_label_selector(
            query.get("labelSelector").map(String::as_str).unwrap_or(""),
        ) {
            Ok(l) => l,
            Err(e) => return error_response(&e),
        };
        let fields = match parse_field_selector(
            query.get("fieldSelector").map(String::as_str).unwrap_or(""),
        ) {
            Ok(f) => f,
            Err(e) => return error_response(&e),
        };
        let since: u64 = query
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let timeout = query
            .get("timeoutSeconds")
            .and_then(|v| v.parse().ok())
            .map(Duration::from_secs)
            .unwrap_or(Duration::from_secs(1800));
        let resource = t.resource.clone();
        let namespace = t.namespace.clone();
        let matches = move |c: &Change| {
            c.resource == resource
                && (namespace.is_none()
                    || c.object
                        .pointer("/metadata/namespace")
                        .and_then(Value::as_str)
                        == namespace.as_deref())
                && labels_match(&c.object, &labels)
                && fields_match(&c.object, &fields)
        };
        // Backlog and subscription under one lock: no change can fall between them.
        let (backlog, mut rx) = {
            let st = self.lock();
            let backlog: Vec<Change> = if since == 0 {
                // "Any version": synthetic ADDED events for what exists now.
                st.objects
                    .iter()
                    .filter(|(k, _)| k.resource == t.resource)
                    .map(|(k, v)| Change {
                        rv: st.rv,
                        resource: k.resource.clone(),
                        event: EventType::Added,
                        object: v.clone(),
                    })
                    .filter(|c| matches(c))
                    .collect()
            } else {
                st.log
                    .iter()
                    .filter(|c| c.rv > since && matches(c))
                    .cloned()
                    .collect()
            };
            (backlog, self.shared.changes.subscribe())
        };
        let last_sent = backlog.last().map(|c| c.rv).unwrap_or(since);
        let (tx, out) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
        let line = |c: &Change| {
            let mut b = serde_json::to_vec(&json!({"type": c.event.as_str(), "object": c.object}))
                .unwrap_or_default();
            b.push(b'\n');
            Bytes::from(b)
        };
        for c in &backlog {
            let _ = tx.send(line(c));
        }
        tokio::spawn(async move {
            let deadline = tokio::time::sleep(timeout);
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    _ = &mut deadline => break,
                    _ = tx.closed() => break,
                    c = rx.recv() => match c {
                        Ok(c) => {
                            if c.rv > last_sent && matches(&c) && tx.send(line(&c)).is_err() {
                                break;
                            }
                        }
                        // A lagging watcher ends its stream; the client re-lists, as after a
                        // "410 Gone" from the apiserver.
                        Err(_) => break,
                    },
                }
            }
        });
        let stream =
            futures::stream::unfold(
                out,
                |mut rx| async move { rx.recv().await.map(|b| (b, rx)) },
            )
            .map(|b| Ok::<_, Infallible>(http_body::Frame::data(b)));
        http::Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(StreamBody::new(stream).boxed_unsync())
            .unwrap_or_else(|_| http::Response::new(Full::new(Bytes::new()).boxed_unsync()))
    }
}

/// What a write may change: `/status` writes only the status; main-resource writes keep the
/// stored status of resources that have a status subresource.
fn restrict(old: &Value, mut new: Value, sub: Option<&str>) -> Value {
    let resource_has_status = old.get("status").is_some() || new.get("status").is_some();
    match sub {
        Some("status") => {
            let mut out = old.clone();
            if let Some(o) = out.as_object_mut() {
                match new.get("status") {
                    Some(s) => {
                        o.insert("status".into(), s.clone());
                    }
                    None => {
                        o.remove("status");
                    }
                }
            }
            out
        }
        _ => {
            if resource_has_status && let Some(o) = new.as_object_mut() {
                match old.get("status") {
                    Some(s) => {
                        o.insert("status".into(), s.clone());
                    }
                    None => {
                        o.remove("status");
                    }
                }
            }
            new
        }
    }
}

/// Server-side apply treats an explicit null as "not set by me".
fn strip_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), strip_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_nulls).collect()),
        other => other.clone(),
    }
}

/// Names of the distinct clients seen so far.
pub fn clients(requests: &[Recorded]) -> BTreeSet<String> {
    requests.iter().map(|r| r.client.clone()).collect()
}

#[cfg(test)]
mod tests;
