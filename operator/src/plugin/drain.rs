//! `kubectl wardengate drain POD`: asks that pod's gateway to drain (`POST /v1/system/drain`)
//! and shows the sessions it still holds until it has drained or the timeout passes.
//!
//! The drain endpoint needs an **admin** token (the operator's observer token is read-only and
//! stays so). The plugin takes it from `--token-file`, else `WG_TOKEN`, else the cluster's
//! `<name>-internal` Secret (key `admin-token`, the bootstrap admin token the pods mount) — so
//! whoever may read that Secret may drain, nobody else. The pod is reached the way the operator
//! reaches it: HTTPS to its IP on 8443, the certificate verified against the cluster CA (`ca.crt`
//! of the TLS Secret) under `<service>.<namespace>.svc`. Where pod IPs are not routable (a laptop
//! outside the cluster network), `kubectl port-forward pod/POD 8443` and `--address
//! 127.0.0.1:8443` go through the API server instead; no `kubectl exec` is needed.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::Api;
use kube::{Client, ResourceExt};
use serde::Serialize;

use super::PluginError;
use crate::build::ADMIN_TOKEN_KEY;
use crate::labels::{self, names};

/// Header the gateway answers a drain with: `drained` or `evicted=N`.
pub const OUTCOME_HEADER: &str = "wardengate-drain-outcome";

/// How to reach one pod's gateway.
#[derive(Debug, Clone)]
pub struct Target {
    /// Pod name.
    pub pod: String,
    /// Where to connect.
    pub addr: SocketAddr,
    /// Name the certificate is verified for.
    pub server_name: String,
    /// PEM of the cluster CA.
    pub ca: String,
    /// Admin token.
    pub token: String,
}

/// What a finished drain reports (`-o json|yaml`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Drained {
    /// Pod name.
    pub pod: String,
    /// `drained` (every session ended) or `evicted=N` (the timeout closed N).
    pub outcome: String,
    /// Seconds the drain took.
    pub seconds: u64,
}

fn first_line(b: &[u8]) -> Option<String> {
    String::from_utf8_lossy(b)
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
}

async fn secret_key(
    client: &Client,
    ns: &str,
    name: &str,
    key: &str,
) -> Result<Vec<u8>, PluginError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let s = api
        .get_opt(name)
        .await?
        .ok_or_else(|| PluginError::NotFound {
            kind: "secret",
            name: name.into(),
            namespace: ns.into(),
        })?;
    s.data
        .and_then(|mut d| d.remove(key))
        .map(|b| b.0)
        .ok_or_else(|| PluginError::Gateway(format!("Secret {name} has no key {key:?}")))
}

/// Finds the pod, its cluster, the CA and the admin token (`token` when given, else the
/// cluster's internal Secret), and the address (`address`, else the pod IP on 8443).
pub async fn target(
    client: &Client,
    ns: &str,
    pod: &str,
    token: Option<String>,
    address: Option<SocketAddr>,
) -> Result<(Target, i64), PluginError> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let p = api
        .get_opt(pod)
        .await?
        .ok_or_else(|| PluginError::NotFound {
            kind: "pod",
            name: pod.into(),
            namespace: ns.into(),
        })?;
    let l = p.labels();
    let cluster = match (l.get(labels::INSTANCE), l.get(labels::COMPONENT)) {
        (Some(c), Some(comp)) if comp == "control-plane" => c.clone(),
        _ => {
            return Err(PluginError::Gateway(format!(
                "pod {pod} is not a control-plane pod of a WardengateCluster (labels {}=…, {}=control-plane)",
                labels::INSTANCE,
                labels::COMPONENT
            )));
        }
    };
    let wgc = super::cluster::get(client, ns, &cluster).await?;
    let tls = wgc
        .spec
        .tls
        .secret_name
        .clone()
        .unwrap_or_else(|| names::tls_secret(&cluster));
    let ca = String::from_utf8_lossy(&secret_key(client, ns, &tls, "ca.crt").await?).into_owned();
    let token = match token {
        Some(t) => t,
        None => {
            let internal = names::internal_secret(&cluster);
            first_line(&secret_key(client, ns, &internal, ADMIN_TOKEN_KEY).await?).ok_or_else(
                || PluginError::Gateway(format!("Secret {internal}: {ADMIN_TOKEN_KEY} is empty")),
            )?
        }
    };
    let addr = match address {
        Some(a) => a,
        None => {
            let ip = p
                .status
                .as_ref()
                .and_then(|s| s.pod_ip.as_deref())
                .and_then(|ip| ip.parse::<IpAddr>().ok())
                .ok_or_else(|| PluginError::Gateway(format!("pod {pod} has no IP yet")))?;
            SocketAddr::new(ip, labels::HTTPS_PORT as u16)
        }
    };
    let t = Target {
        pod: pod.into(),
        addr,
        server_name: format!("{}.{ns}.svc", names::service(&cluster)),
        ca,
        token,
    };
    Ok((t, wgc.spec.drain.timeout_seconds))
}

/// What the pod said while draining.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// A drain has started.
    pub draining: bool,
    /// Sessions it still relays.
    pub sessions: i64,
}

fn http(t: &Target) -> Result<reqwest::Client, PluginError> {
    let cert = reqwest::Certificate::from_pem(t.ca.as_bytes())
        .map_err(|e| PluginError::Gateway(format!("ca.crt: {e}")))?;
    reqwest::Client::builder()
        .tls_certs_only([cert])
        .resolve(&t.server_name, t.addr)
        .https_only(true)
        .no_proxy()
        .connect_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| PluginError::Gateway(e.to_string()))
}

async fn progress(c: &reqwest::Client, base: &str, token: &str) -> Option<Progress> {
    let r = c
        .get(format!("{base}/v1/system/status"))
        .bearer_auth(token)
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    let v: serde_json::Value = r.error_for_status().ok()?.json().await.ok()?;
    Some(Progress {
        draining: v["draining"].as_bool()?,
        sessions: v["owned_sessions"].as_i64()?,
    })
}

/// Drains `t` with the gateway's eviction window `timeout`; reports each change of progress.
/// Gives up [`MARGIN`] after the window (the gateway answers when the window ends).
pub async fn drain(
    t: &Target,
    timeout: Duration,
    mut report: impl FnMut(&Progress),
) -> Result<Drained, PluginError> {
    let c = http(t)?;
    let base = format!("https://{}:{}", t.server_name, t.addr.port());
    let started = Instant::now();
    let deadline = started + timeout + MARGIN;
    let request = c
        .post(format!(
            "{base}/v1/system/drain?timeout={}s",
            timeout.as_secs()
        ))
        .bearer_auth(&t.token)
        .send();
    let mut request = Box::pin(request);
    let mut last: Option<Progress> = None;
    loop {
        tokio::select! {
            r = &mut request => {
                let r = r.map_err(|e| PluginError::Gateway(format!("pod {}: drain request failed: {e}", t.pod)))?;
                let status = r.status();
                if !status.is_success() {
                    let body = r.text().await.unwrap_or_default();
                    let hint = if status.as_u16() == 401 || status.as_u16() == 403 {
                        " (draining needs an admin token: --token-file, WG_TOKEN or the cluster's internal Secret)"
                    } else {
                        ""
                    };
                    return Err(PluginError::Gateway(format!("pod {}: drain answered {status}{hint}: {body}", t.pod)));
                }
                let outcome = r
                    .headers()
                    .get(OUTCOME_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("drained")
                    .to_string();
                return Ok(Drained { pod: t.pod.clone(), outcome, seconds: started.elapsed().as_secs() });
            }
            _ = tokio::time::sleep(Duration::from_millis(500)) => {
                if let Some(p) = progress(&c, &base, &t.token).await
                    && last.as_ref() != Some(&p)
                {
                    report(&p);
                    last = Some(p);
                }
                if Instant::now() >= deadline {
                    return Err(PluginError::Timeout {
                        after: humantime::format_duration(timeout + MARGIN).to_string(),
                        last: last.map_or_else(
                            || format!("pod {} did not answer", t.pod),
                            |p| format!("pod {} still holds {} session(s)", t.pod, p.sessions),
                        ),
                    });
                }
            }
        }
    }
}

/// How long after the eviction window the plugin still waits for the gateway's answer.
pub const MARGIN: Duration = Duration::from_secs(15);
