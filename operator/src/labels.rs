//! Names and labels of everything the operator owns. Stable: changing them would orphan objects
//! or roll fleets.

use std::collections::BTreeMap;

/// Field manager for server-side apply, and the managed-by label value.
pub const MANAGER: &str = "wardengate-operator";
/// Label naming the owning cluster.
pub const INSTANCE: &str = "app.kubernetes.io/instance";
/// Label naming the component (`control-plane`, `gateway`).
pub const COMPONENT: &str = "app.kubernetes.io/component";
/// Label naming the `GatewayPool` of gateway pods.
pub const POOL: &str = "wardengate.io/pool";
/// Label naming the zone a per-zone Deployment is pinned to.
pub const ZONE: &str = "wardengate.io/zone";
/// HTTPS port (API, relay, health).
pub const HTTPS_PORT: i32 = 8443;
/// Agent gRPC port for remote gateways.
pub const AGENT_PORT: i32 = 8444;

/// Labels on every owned object of `cluster`.
pub fn common(cluster: &str) -> BTreeMap<String, String> {
    [
        ("app.kubernetes.io/name", "wardengate"),
        (INSTANCE, cluster),
        ("app.kubernetes.io/managed-by", MANAGER),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Pod selector of a component of `cluster` (all zones).
pub fn selector(cluster: &str, component: &str) -> BTreeMap<String, String> {
    [
        ("app.kubernetes.io/name", "wardengate"),
        (INSTANCE, cluster),
        (COMPONENT, component),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// `key=value,…` form of a selector (status `selector` for the scale subresource).
pub fn selector_string(sel: &BTreeMap<String, String>) -> String {
    sel.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Object names.
pub mod names {
    /// ServiceAccount of the control plane.
    pub fn service_account(cluster: &str) -> String {
        cluster.to_string()
    }
    /// Secret with the internal signing keys and the bootstrap admin token.
    pub fn internal_secret(cluster: &str) -> String {
        format!("{cluster}-internal")
    }
    /// Secret with the connection URLs the operator builds from referenced credentials.
    pub fn connection_secret(cluster: &str) -> String {
        format!("{cluster}-connection")
    }
    /// Generated TLS Secret.
    pub fn tls_secret(cluster: &str) -> String {
        format!("{cluster}-tls")
    }
    /// Generated Secret with the terminating SSH keys (host key, user CA, login CA).
    pub fn ssh_secret(cluster: &str) -> String {
        format!("{cluster}-ssh")
    }
    /// ConfigMap of non-secret settings.
    pub fn config_map(cluster: &str) -> String {
        format!("{cluster}-config")
    }
    /// Control-plane Deployment, per zone when zones are listed.
    pub fn deployment(cluster: &str, zone: Option<&str>) -> String {
        match zone {
            Some(z) => format!("{cluster}-cp-{}", sanitize(z)),
            None => format!("{cluster}-cp"),
        }
    }
    /// Service in front of the control plane.
    pub fn service(cluster: &str) -> String {
        cluster.to_string()
    }
    /// PodDisruptionBudget.
    pub fn pdb(cluster: &str) -> String {
        format!("{cluster}-cp")
    }
    /// NetworkPolicy of the control plane's pods.
    pub fn network_policy(cluster: &str) -> String {
        format!("{cluster}-cp")
    }

    /// Gateway Deployment (and its Service and PDB) of a pool.
    pub fn pool(pool: &str) -> String {
        format!("{pool}-gw")
    }

    /// A zone name as a DNS-1123 label fragment.
    pub fn sanitize(zone: &str) -> String {
        zone.to_ascii_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect()
    }
}
