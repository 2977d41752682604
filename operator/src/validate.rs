//! Pure validation: the CEL admission rules (client-side, identical to the apiserver's) plus the
//! checks CEL cannot express, turning a `WardengateCluster` into a [`ValidCluster`] the builders
//! accept. Warnings do not block; they become a condition.

use std::time::Duration;

use wardengate_crds::{
    OPERATOR_ENV, PodOverrides, SecretKeyRef, WardengateCluster, WardengateClusterSpec,
};

/// Seconds added to the drain timeout for endpoint propagation (the LB must stop sending new
/// connections before the drain can finish) and for the process to shut down.
pub const GRACE_MARGIN_SECONDS: i64 = 30;

/// Why a cluster cannot be built. The message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// A CEL admission rule failed.
    #[error("{0}")]
    Admission(String),
    /// A check beyond CEL failed.
    #[error("{field}: {reason}")]
    Field {
        /// JSON path of the field.
        field: String,
        /// What is wrong.
        reason: String,
    },
}

/// A cluster spec that passed validation, with derived values.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidCluster {
    /// Name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// The spec as given (defaults applied by serde).
    pub spec: WardengateClusterSpec,
    /// `terminationGracePeriodSeconds`: explicit, or drain + margin.
    pub grace_seconds: i64,
    /// Postgres statement timeout.
    pub statement_timeout: Duration,
    /// Replicas per Deployment: `(zone, replicas)`; one entry with no zone when none are listed.
    pub placements: Vec<(Option<String>, i32)>,
    /// Non-blocking findings.
    pub warnings: Vec<String>,
}

fn field(field: &str, reason: impl Into<String>) -> Invalid {
    Invalid::Field {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Validates `c` (admission rules and semantic checks).
pub fn validate(c: &WardengateCluster) -> Result<ValidCluster, Invalid> {
    // Before CEL: this check names the offending index (`spec.env[2].name`), CEL only the list.
    let override_warnings =
        pod_overrides(&c.spec.pod, c.metadata.name.as_deref().unwrap_or_default())?;
    c.validate_cel()
        .map_err(|e| Invalid::Admission(e.to_string()))?;
    let name = c
        .metadata
        .name
        .clone()
        .ok_or_else(|| field("metadata.name", "required"))?;
    let namespace = c
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let spec = c.spec.clone();
    if spec.version.trim().is_empty() {
        return Err(field(
            "spec.version",
            "required: the Wardengate version (image tag) to run",
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, z) in spec.zones.iter().enumerate() {
        if z.trim().is_empty() || !seen.insert(z) {
            return Err(field(
                &format!("spec.zones[{i}]"),
                format!("`{z}` is empty or listed twice"),
            ));
        }
    }
    if !spec.zones.is_empty() && (spec.replicas as usize) < spec.zones.len() {
        return Err(field(
            "spec.replicas",
            format!(
                "{} replicas cannot cover {} zones; use at least one per zone",
                spec.replicas,
                spec.zones.len()
            ),
        ));
    }
    let statement_timeout = match &spec.postgres.statement_timeout {
        Some(s) => humantime::parse_duration(s).map_err(|e| {
            field(
                "spec.postgres.statementTimeout",
                format!("`{s}`: {e}; use e.g. 5s"),
            )
        })?,
        None => Duration::from_secs(5),
    };
    if let Some(r) = &spec.recordings
        && r.credentials_secret_ref.is_some()
        && !r.url.starts_with("s3://")
    {
        return Err(field(
            "spec.recordings.credentialsSecretRef",
            format!(
                "credentials are for an object store; `{}` is not s3://, remove the reference",
                r.url
            ),
        ));
    }
    if let Some(u) = spec
        .postgres
        .patroni
        .as_ref()
        .and_then(|p| p.rest_health_url.as_deref())
        && !(u.starts_with("http://") || u.starts_with("https://"))
    {
        return Err(field(
            "spec.postgres.patroni.restHealthUrl",
            format!("`{u}` is not an http:// or https:// URL (e.g. http://patroni:8008/primary)"),
        ));
    }
    let drain = spec.drain.timeout_seconds;
    let grace_seconds = spec
        .termination_grace_period_seconds
        .unwrap_or(drain + GRACE_MARGIN_SECONDS);
    let mut warnings = Vec::new();
    let autoscaler = spec
        .drain
        .autoscaler_max_graceful_termination_seconds
        .unwrap_or(wardengate_crds::DEFAULT_AUTOSCALER_GRACE_SECONDS);
    if let Some(w) = autoscaler_warning(drain, grace_seconds, autoscaler) {
        warnings.push(w);
    }
    warnings.extend(override_warnings);
    if spec.replicas < 3 {
        warnings.push(format!(
            "spec.replicas is {}; the HA guide recommends three across failure domains",
            spec.replicas
        ));
    }
    Ok(ValidCluster {
        placements: placements(spec.replicas, &spec.zones),
        name,
        namespace,
        spec,
        grace_seconds,
        statement_timeout,
        warnings,
    })
}

/// The warning when a pod's termination grace exceeds what the cluster-autoscaler waits for an
/// evicted pod (`--max-graceful-termination-sec`, `spec.drain.autoscalerMaxGracefulTerminationSeconds`):
/// a scale-down would then kill the pod mid-drain, cutting the sessions it still carries.
pub fn autoscaler_warning(drain: i64, grace: i64, autoscaler: i64) -> Option<String> {
    (grace > autoscaler).then(|| {
        format!(
            "terminationGracePeriodSeconds is {grace}s (drain {drain}s + margin) but the cluster-autoscaler waits at most {autoscaler}s \
             (spec.drain.autoscalerMaxGracefulTerminationSeconds, its --max-graceful-termination-sec): a scale-down would cut drains short; \
             lower spec.drain.timeoutSeconds or raise the autoscaler's limit"
        )
    })
}

/// A `GatewayPool` that passed validation, with derived values.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidPool {
    /// Name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// The `WardengateCluster` it serves (same namespace); for a remote pool, the pool's own
    /// name (the `app.kubernetes.io/instance` of its objects).
    pub cluster: String,
    /// Set for a `spec.controlPlane` pool: how its gateways reach their control plane.
    pub remote: Option<ValidRemote>,
    /// The spec as given.
    pub spec: wardengate_crds::GatewayPoolSpec,
    /// `terminationGracePeriodSeconds`: explicit, or drain + margin.
    pub grace_seconds: i64,
}

/// What a remote (`spec.controlPlane`) pool's gateways are started with.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidRemote {
    /// The control plane's agent endpoint (`--control-plane`), as given.
    pub url: String,
    /// The Secret key holding the join token.
    pub join_token: SecretKeyRef,
    /// The Secret key holding the control plane's CA, if any.
    pub ca: Option<SecretKeyRef>,
    /// `--region`.
    pub region: String,
    /// The version asked for (`spec.version`).
    pub version: String,
    /// Image repository.
    pub image: String,
    /// The serving certificate's Secret.
    pub tls_secret: String,
    /// `--public-address`: where clients reach these gateways.
    pub public_address: String,
}

impl ValidPool {
    /// The `WardengateCluster` a `clusterRef` pool serves; `None` for a remote pool.
    pub fn cluster_ref(&self) -> Option<&str> {
        self.remote.is_none().then_some(self.cluster.as_str())
    }
}

/// Whether `url` is `https://HOST:8444` (what the CEL rule on `spec.controlPlane.url` admits):
/// no credentials, path, query or fragment.
pub fn is_agent_url(url: &str) -> bool {
    let Ok(u) = reqwest::Url::parse(url) else {
        return false;
    };
    u.scheme() == "https"
        && u.host_str().is_some_and(|h| !h.is_empty())
        && u.port() == Some(crate::labels::AGENT_PORT as u16)
        && u.username().is_empty()
        && u.password().is_none()
        && matches!(u.path(), "" | "/")
        && u.query().is_none()
        && u.fragment().is_none()
        && !url.contains('@')
}

/// The admission rules of a pool's target, checked by the operator itself with the words of
/// the CRD's CEL messages (so `render` and the controller refuse what the apiserver refuses,
/// naming the same fields).
fn pool_target(s: &wardengate_crds::GatewayPoolSpec) -> Result<(), Invalid> {
    use wardengate_crds::{
        EXACTLY_ONE_TARGET, PUBLIC_ADDRESS_FORMAT, PUBLIC_ADDRESS_REQUIRED, REGION_REQUIRED,
        REMOTE_ONLY, TLS_REQUIRED, URL_FORMAT, VERSION_REQUIRED,
    };
    let refuse = |m: &str| Err(Invalid::Admission(m.to_string()));
    let Some(cp) = &s.control_plane else {
        if s.cluster_ref.is_none() {
            return refuse(EXACTLY_ONE_TARGET);
        }
        if s.tls.is_some() || s.image.is_some() || s.public_address.is_some() {
            return refuse(REMOTE_ONLY);
        }
        return Ok(());
    };
    let blank = |o: Option<&str>| o.is_none_or(|v| v.trim().is_empty());
    if s.cluster_ref.is_some() {
        refuse(EXACTLY_ONE_TARGET)
    } else if !is_agent_url(&cp.url) {
        refuse(URL_FORMAT)
    } else if blank(s.region.as_deref()) {
        refuse(REGION_REQUIRED)
    } else if s.region.as_deref().is_some_and(|r| r.trim().len() > 63) {
        // The CRD's maxLength (the apiserver's own words), and the gateway's `--region` bound.
        Err(field(
            "spec.region",
            "at most 63 characters (the gateways' --region)",
        ))
    } else if blank(s.version.as_deref()) {
        refuse(VERSION_REQUIRED)
    } else if blank(s.tls.as_ref().and_then(|t| t.secret_name.as_deref())) {
        refuse(TLS_REQUIRED)
    } else if blank(s.public_address.as_deref()) {
        refuse(PUBLIC_ADDRESS_REQUIRED)
    } else if !s.public_address.as_deref().is_some_and(is_host_port) {
        refuse(PUBLIC_ADDRESS_FORMAT)
    } else {
        Ok(())
    }
}

/// `HOST:PORT` as the CRD's `spec.publicAddress` rule admits it: a DNS name or IPv4 address
/// (letters, digits, dots and dashes, not starting or ending with either) or a bracketed IPv6
/// address, then a port of one to five digits.
pub fn is_host_port(a: &str) -> bool {
    let Some((host, port)) = a.rsplit_once(':') else {
        return false;
    };
    let port_ok = (1..=5).contains(&port.len()) && port.bytes().all(|b| b.is_ascii_digit());
    let host_ok = if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        !inner.is_empty()
            && inner
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
    } else {
        let edge = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_alphanumeric());
        edge(host.as_bytes().first())
            && edge(host.as_bytes().last())
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    };
    port_ok && host_ok
}

/// Validates a pool (admission rules and semantic checks).
pub fn validate_pool(p: &wardengate_crds::GatewayPool) -> Result<ValidPool, Invalid> {
    pool_target(&p.spec)?;
    let name = p
        .metadata
        .name
        .clone()
        .ok_or_else(|| field("metadata.name", "required"))?;
    let cluster = match &p.spec.cluster_ref {
        Some(c) => c.name.clone(),
        None => name.clone(),
    };
    pod_overrides(&p.spec.pod, &cluster)?;
    p.validate_cel()
        .map_err(|e| Invalid::Admission(e.to_string()))?;
    let namespace = p
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    if let Some(cref) = &p.spec.cluster_ref
        && cref.namespace.as_ref().is_some_and(|ns| *ns != namespace)
    {
        return Err(field(
            "spec.clusterRef.namespace",
            "a clusterRef names a WardengateCluster in the pool's own namespace; for a control \
             plane in another namespace or cluster, set spec.controlPlane instead (its agent URL \
             and a join-token Secret)",
        ));
    }
    if p.spec.replicas < 0 {
        return Err(field("spec.replicas", "must not be negative"));
    }
    let grace_seconds = p
        .spec
        .termination_grace_period_seconds
        .unwrap_or(p.spec.drain.timeout_seconds + GRACE_MARGIN_SECONDS);
    let remote = p.spec.control_plane.as_ref().map(|cp| ValidRemote {
        url: cp.url.trim_end_matches('/').to_string(),
        join_token: cp.join_token_secret_ref.clone(),
        ca: cp.ca_secret_ref.clone(),
        region: p.spec.region.clone().unwrap_or_default(),
        public_address: p.spec.public_address.clone().unwrap_or_default(),
        version: p.spec.version.clone().unwrap_or_default(),
        image: p
            .spec
            .image
            .clone()
            .unwrap_or_else(|| wardengate_crds::GATEWAY_IMAGE.to_string()),
        tls_secret: p
            .spec
            .tls
            .as_ref()
            .and_then(|t| t.secret_name.clone())
            .unwrap_or_default(),
    });
    Ok(ValidPool {
        name,
        namespace,
        cluster,
        remote,
        spec: p.spec.clone(),
        grace_seconds,
    })
}

/// Checks the pod overrides of either kind (`spec.env`, `spec.envFrom`, `spec.affinity`, …);
/// the warnings name `podLabels` keys the operator's own labels override.
pub fn pod_overrides(o: &PodOverrides, cluster: &str) -> Result<Vec<String>, Invalid> {
    let mut seen = std::collections::BTreeSet::new();
    for (i, e) in o.env.iter().enumerate() {
        let at = format!("spec.env[{i}].name");
        if e.name.trim().is_empty() {
            return Err(field(&at, "required"));
        }
        if OPERATOR_ENV.contains(&e.name.as_str()) {
            return Err(field(
                &at,
                format!(
                    "`{}` is set by the operator and cannot be overridden (its variables: {})",
                    e.name,
                    OPERATOR_ENV.join(", ")
                ),
            ));
        }
        if !seen.insert(e.name.as_str()) {
            return Err(field(&at, format!("`{}` is listed twice", e.name)));
        }
        if e.value.is_some() && e.value_from.is_some() {
            return Err(field(
                &format!("spec.env[{i}]"),
                "set either value or valueFrom, not both",
            ));
        }
        if let Some(f) = &e.value_from
            && f.secret_key_ref.is_none()
            && f.config_map_key_ref.is_none()
            && f.field_ref.is_none()
            && f.resource_field_ref.is_none()
        {
            return Err(field(
                &format!("spec.env[{i}].valueFrom"),
                "name a secretKeyRef, configMapKeyRef, fieldRef or resourceFieldRef",
            ));
        }
    }
    for (i, s) in o.env_from.iter().enumerate() {
        let named = |n: Option<&str>| n.is_some_and(|n| !n.trim().is_empty());
        let cm = s.config_map_ref.as_ref().map(|r| r.name.as_str());
        let secret = s.secret_ref.as_ref().map(|r| r.name.as_str());
        if named(cm) == named(secret) {
            return Err(field(
                &format!("spec.envFrom[{i}]"),
                "name exactly one of configMapRef or secretRef",
            ));
        }
        if let Some(p) = s.prefix.as_deref()
            && p.starts_with("WG_")
        {
            return Err(field(
                &format!("spec.envFrom[{i}].prefix"),
                format!("`{p}` would shadow the operator's WG_* variables; use another prefix"),
            ));
        }
    }
    if let Some(req) = o
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        && req.node_selector_terms.is_empty()
    {
        return Err(field(
            "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms",
            "list at least one term (an empty list matches no node)",
        ));
    }
    if o.priority_class_name
        .as_deref()
        .is_some_and(|p| p.trim().is_empty())
    {
        return Err(field(
            "spec.priorityClassName",
            "must not be empty when set",
        ));
    }
    let own = crate::labels::common(cluster)
        .into_iter()
        .chain(crate::labels::selector(cluster, "control-plane"))
        .collect();
    Ok(
        crate::build::overrides::shadowed_labels(&o.pod_labels, &own)
            .into_iter()
            .map(|k| {
                format!("spec.podLabels.{k}: the operator sets this label itself; its value wins")
            })
            .collect(),
    )
}

/// The version a pool may run: the one it asks for (default: the cluster's), but never newer
/// than the version its cluster reports. `None` while the cluster reports none yet.
pub fn pool_version(asked: Option<&str>, cluster_reported: Option<&str>) -> Option<String> {
    let reported = cluster_reported?;
    let Some(asked) = asked else {
        return Some(reported.to_string());
    };
    let parse = |v: &str| semver::Version::parse(v.trim_start_matches('v')).ok();
    match (parse(asked), parse(reported)) {
        (Some(a), Some(r)) if a <= r => Some(asked.to_string()),
        (Some(_), Some(_)) => Some(reported.to_string()),
        // Unordered tags: only the reported one is known to be safe.
        _ if asked == reported => Some(asked.to_string()),
        _ => Some(reported.to_string()),
    }
}

/// Splits `replicas` over `zones` as evenly as possible (earlier zones get the remainder).
pub fn placements(replicas: i32, zones: &[String]) -> Vec<(Option<String>, i32)> {
    if zones.is_empty() {
        return vec![(None, replicas)];
    }
    let n = zones.len() as i32;
    zones
        .iter()
        .enumerate()
        .map(|(i, z)| {
            (
                Some(z.clone()),
                replicas / n + i32::from((i as i32) < replicas % n),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_never_runs_newer_than_its_cluster_reports() {
        assert_eq!(pool_version(None, None), None, "wait for the cluster");
        assert_eq!(pool_version(None, Some("0.2.0")).as_deref(), Some("0.2.0"));
        assert_eq!(
            pool_version(Some("0.1.0"), Some("0.2.0")).as_deref(),
            Some("0.1.0")
        );
        assert_eq!(
            pool_version(Some("0.3.0"), Some("0.2.0")).as_deref(),
            Some("0.2.0")
        );
        assert_eq!(
            pool_version(Some("latest"), Some("0.2.0")).as_deref(),
            Some("0.2.0")
        );
    }

    #[test]
    fn replicas_spread_over_zones() {
        let z = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(placements(3, &[]), vec![(None, 3)]);
        let p = placements(5, &z(&["a", "b", "c"]));
        assert_eq!(p.iter().map(|(_, n)| *n).collect::<Vec<_>>(), vec![2, 2, 1]);
    }

    fn cluster(drain: serde_json::Value) -> WardengateCluster {
        #[allow(clippy::unwrap_used)]
        serde_json::from_value(serde_json::json!({
            "apiVersion": "wardengate.io/v1alpha1", "kind": "WardengateCluster",
            "metadata": {"name": "wg", "namespace": "ns"},
            "spec": {
                "version": "1.0.0", "drain": drain,
                "postgres": {"external": {"urlSecretRef": {"name": "db", "key": "url"}}},
                "redis": {"hosts": ["redis:6379"]},
            },
        }))
        .unwrap()
    }

    #[allow(clippy::unwrap_used)]
    fn warnings(drain: serde_json::Value) -> Vec<String> {
        validate(&cluster(drain)).unwrap().warnings
    }

    #[test]
    fn a_grace_beyond_the_autoscalers_limit_is_a_warning() {
        let autoscaler = |w: &[String]| w.iter().any(|m| m.contains("cluster-autoscaler"));
        // Default drain 270 s + 30 s margin = 300 s, within the default 600 s.
        assert!(!autoscaler(&warnings(serde_json::json!({}))));
        // 600 s + 30 s is more than the autoscaler waits by default.
        let w = warnings(serde_json::json!({"timeoutSeconds": 600}));
        assert!(autoscaler(&w), "{w:?}");
        assert!(
            w.iter().any(|m| m.contains("630s") && m.contains("600s")),
            "{w:?}"
        );
        // A cluster whose autoscaler waits longer: no warning; shorter: a warning.
        assert!(!autoscaler(&warnings(serde_json::json!({
            "timeoutSeconds": 600, "autoscalerMaxGracefulTerminationSeconds": 900
        }))));
        assert!(autoscaler(&warnings(serde_json::json!({
            "timeoutSeconds": 120, "autoscalerMaxGracefulTerminationSeconds": 60
        }))));
        assert_eq!(autoscaler_warning(270, 300, 300), None, "equal is fine");
    }
}
