//! Dereference of the fleet: the cluster's control-plane pods, and what each serving or draining
//! pod's `GET /v1/system/status` says, read over HTTPS from the operator to the pod IP on 8443.
//! The pod's certificate is verified against the cluster's CA under the Service's DNS name
//! (`<service>.<namespace>.svc`, a name every serving certificate carries), not the pod IP, which
//! no certificate lists. The request carries the cluster's observer token, which the gateway
//! accepts for status and metrics only. At most [`CONCURRENCY`] pods are asked at once, each
//! within [`TIMEOUT`]; a pod that does not answer is reported, never fatal.
//!
//! Also the only pod write: `controller.kubernetes.io/pod-deletion-cost`, patched when a pod's
//! session bucket changed.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::fleet::{self, Answer, DELETION_COST, PodView};
use crate::labels::{self, names};
use crate::material::OBSERVER_TOKEN;
use crate::validate::ValidCluster;

/// Pods asked at once.
pub const CONCURRENCY: usize = 8;
/// How long one pod may take to answer.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// How the operator reaches the pods of one cluster.
#[derive(Debug, Clone)]
pub struct Reach {
    /// PEM of the CA that signed the pods' serving certificate.
    pub ca: Option<String>,
    /// The observer token.
    pub token: Option<String>,
    /// DNS name the certificate is verified for.
    pub server_name: String,
}

/// The name pods' certificates are verified for: the Service's `<svc>.<ns>.svc`.
pub fn server_name(v: &ValidCluster) -> String {
    format!("{}.{}.svc", names::service(&v.name), v.namespace)
}

/// The first token of an observer token file's bytes.
pub fn first_token(data: &BTreeMap<String, ByteString>) -> Option<String> {
    let b = data.get(OBSERVER_TOKEN)?;
    String::from_utf8_lossy(&b.0)
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
}

/// The CA and token for `v`: the CA from the generated TLS Secret's `ca.crt` (or the user's
/// `spec.tls.secretName`, read here), the token from the internal Secret data.
pub async fn reach(
    client: &Client,
    v: &ValidCluster,
    generated_tls: Option<&BTreeMap<String, ByteString>>,
    internal: &BTreeMap<String, ByteString>,
) -> Reach {
    let ca_of = |d: &BTreeMap<String, ByteString>| {
        d.get("ca.crt")
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
    };
    let ca = match &v.spec.tls.secret_name {
        None => generated_tls.and_then(ca_of),
        Some(name) => {
            let api: Api<Secret> = Api::namespaced(client.clone(), &v.namespace);
            match api.get_opt(name).await {
                Ok(Some(s)) => s.data.as_ref().and_then(ca_of),
                _ => None,
            }
        }
    };
    Reach {
        ca,
        token: first_token(internal),
        server_name: server_name(v),
    }
}

/// Asks one pod at `ip`.
async fn ask(reach: &Reach, ip: IpAddr) -> Answer {
    let (Some(ca), Some(token)) = (&reach.ca, &reach.token) else {
        return Answer::NoAnswer(
            "no CA (ca.crt of the TLS Secret) or observer token to ask it with".into(),
        );
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cert = match reqwest::Certificate::from_pem(ca.as_bytes()) {
        Ok(c) => c,
        Err(e) => return Answer::NoAnswer(format!("ca.crt: {e}")),
    };
    let addr = SocketAddr::new(ip, labels::HTTPS_PORT as u16);
    let client = match reqwest::Client::builder()
        .tls_certs_only([cert])
        .resolve(&reach.server_name, addr)
        .https_only(true)
        .no_proxy()
        .timeout(TIMEOUT)
        .connect_timeout(TIMEOUT)
        .build()
    {
        Ok(c) => c,
        Err(e) => return Answer::NoAnswer(e.to_string()),
    };
    let url = format!(
        "https://{}:{}/v1/system/status",
        reach.server_name,
        labels::HTTPS_PORT
    );
    let resp = client.get(&url).bearer_auth(token).send().await;
    match resp {
        Ok(r) if r.status().is_success() => match r.json::<fleet::Report>().await {
            Ok(report) => Answer::Report(report),
            Err(e) => Answer::NoAnswer(format!("unreadable status: {e}")),
        },
        Ok(r) => Answer::NoAnswer(format!("answered {}", r.status())),
        Err(e) => Answer::NoAnswer(describe(&e)),
    }
}

/// A stable, short reason (status messages must not change between passes for the same cause).
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        format!("no answer within {}s", TIMEOUT.as_secs())
    } else if e.is_connect() {
        "connection failed".into()
    } else {
        "request failed".into()
    }
}

fn condition_true(p: &Pod, type_: &str) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == type_ && c.status == "True"))
}

/// The placement a pod belongs to: by its zone label when zones are listed, else the only one.
fn placement_of(v: &ValidCluster, p: &Pod) -> Option<usize> {
    if v.placements.len() == 1 && v.placements[0].0.is_none() {
        return Some(0);
    }
    let z = p.labels().get(labels::ZONE)?;
    v.placements
        .iter()
        .position(|(zone, _)| zone.as_deref().map(names::sanitize).as_deref() == Some(z))
}

/// Lists the cluster's control-plane pods and asks the serving and draining ones.
pub async fn observe(
    client: &Client,
    v: &ValidCluster,
    reach: &Reach,
) -> Result<Vec<PodView>, kube::Error> {
    let api: Api<Pod> = Api::namespaced(client.clone(), &v.namespace);
    let sel = labels::selector_string(&labels::selector(&v.name, "control-plane"));
    let pods = api.list(&ListParams::default().labels(&sel)).await?.items;
    let asks = pods.into_iter().map(|p| async move {
        let ready = condition_true(&p, "Ready");
        let terminating = p.metadata.deletion_timestamp.is_some();
        let ip = p
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.as_deref())
            .and_then(|ip| ip.parse::<IpAddr>().ok());
        let running = p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
        let answer = match ip {
            Some(ip) if fleet::worth_asking(running, terminating, true) => ask(reach, ip).await,
            _ => Answer::NotAsked,
        };
        PodView {
            name: p.name_any(),
            placement: placement_of(v, &p),
            ready,
            terminating,
            version: p
                .spec
                .as_ref()
                .and_then(|s| s.containers.iter().find(|c| c.name == "wardengate"))
                .and_then(|c| c.image.as_deref())
                .and_then(|i| i.rsplit_once(':'))
                .map(|(_, tag)| tag.to_string()),
            deletion_cost: p.annotations().get(DELETION_COST).cloned(),
            answer,
        }
    });
    let mut out: Vec<PodView> = futures::stream::iter(asks)
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Patches `pod-deletion-cost` on each `(pod, cost)`: a merge patch of one annotation, nothing
/// else of the pod. A pod gone meanwhile is skipped.
pub async fn patch_deletion_costs(
    client: &Client,
    namespace: &str,
    patches: &[(String, String)],
) -> Result<(), kube::Error> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    for (pod, cost) in patches {
        let patch = json!({"metadata": {"annotations": {DELETION_COST: cost}}});
        match api
            .patch(pod, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => tracing::debug!(pod, cost, "pod-deletion-cost patched"),
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
