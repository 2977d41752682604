//! The API-server side of the plugin: the client from kubectl's flags, the status snapshot,
//! pause/resume and the rollout wait.

use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::json;
use wardengate_crds::WardengateCluster;

use super::PluginError;
use super::screen::{EventRow, PodRow, Snapshot};
use super::wait::{Verdict, verdict};
use crate::controller::pods;
use crate::fleet::Answer;
use crate::labels::names;

/// A client and the namespace to work in, from kubectl's `--kubeconfig`, `--context` and
/// `--namespace` (the context's namespace, or `default`, when not given).
pub async fn connect(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
    namespace: Option<&str>,
) -> Result<(Client, String), PluginError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let opts = KubeConfigOptions {
        context: context.map(String::from),
        ..Default::default()
    };
    let cfg = |e: &dyn std::fmt::Display| PluginError::Config(e.to_string());
    let config = match kubeconfig {
        Some(p) => {
            let kc = Kubeconfig::read_from(p).map_err(|e| cfg(&e))?;
            Config::from_custom_kubeconfig(kc, &opts)
                .await
                .map_err(|e| cfg(&e))?
        }
        None if context.is_some() => Config::from_kubeconfig(&opts).await.map_err(|e| cfg(&e))?,
        None => Config::infer().await.map_err(|e| cfg(&e))?,
    };
    let ns = namespace
        .map(String::from)
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config)?;
    Ok((client, ns))
}

/// The cluster `name`, or [`PluginError::NotFound`].
pub async fn get(client: &Client, ns: &str, name: &str) -> Result<WardengateCluster, PluginError> {
    let api: Api<WardengateCluster> = Api::namespaced(client.clone(), ns);
    api.get_opt(name)
        .await?
        .ok_or_else(|| PluginError::NotFound {
            kind: "wardengatecluster",
            name: name.into(),
            namespace: ns.into(),
        })
}

async fn secret_data(
    client: &Client,
    ns: &str,
    name: &str,
) -> Result<std::collections::BTreeMap<String, k8s_openapi::ByteString>, String> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    match api.get_opt(name).await {
        Ok(Some(s)) => Ok(s.data.unwrap_or_default()),
        Ok(None) => Err(format!("Secret {name} does not exist")),
        Err(kube::Error::Api(e)) => Err(format!("cannot read Secret {name}: {}", e.message)),
        Err(e) => Err(format!("cannot read Secret {name}: {e}")),
    }
}

/// Events about the cluster, oldest first.
async fn events(client: &Client, ns: &str, name: &str) -> Result<Vec<EventRow>, PluginError> {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    let lp = ListParams::default().fields(&format!(
        "involvedObject.kind=WardengateCluster,involvedObject.name={name}"
    ));
    let mut rows: Vec<EventRow> = api
        .list(&lp)
        .await?
        .items
        .into_iter()
        .map(|e| {
            let series = e.series.as_ref();
            let last_seen = series
                .and_then(|s| s.last_observed_time.as_ref().map(|t| t.0))
                .or(e.last_timestamp.as_ref().map(|t| t.0))
                .or(e.event_time.as_ref().map(|t| t.0))
                .or(e.metadata.creation_timestamp.as_ref().map(|t| t.0));
            EventRow {
                type_: e.type_.unwrap_or_default(),
                reason: e.reason.unwrap_or_default(),
                message: e.message.unwrap_or_default(),
                last_seen,
                count: series.and_then(|s| s.count).or(e.count).unwrap_or(1),
            }
        })
        .collect();
    rows.sort_by_key(|e| e.last_seen);
    Ok(rows)
}

/// Everything the status screen shows: the cluster, its pods with what each one's
/// `GET /v1/system/status` said (asked the way the operator asks, with the observer token and the
/// cluster CA, so it works wherever pod IPs are reachable), and its Events.
pub async fn snapshot(client: &Client, ns: &str, name: &str) -> Result<Snapshot, PluginError> {
    let cluster = get(client, ns, name).await?;
    let events = events(client, ns, name).await?;
    let v = match crate::validate::validate(&cluster) {
        Ok(v) => v,
        Err(e) => {
            return Ok(Snapshot {
                cluster,
                pods: Vec::new(),
                events,
                pods_not_asked: Some(format!("the spec is invalid: {e}")),
            });
        }
    };
    let tls_name = v
        .spec
        .tls
        .secret_name
        .clone()
        .unwrap_or_else(|| names::tls_secret(name));
    let tls = secret_data(client, ns, &tls_name).await;
    let internal = secret_data(client, ns, &names::internal_secret(name)).await;
    let not_asked = tls.as_ref().err().or(internal.as_ref().err()).cloned();
    let reach = match (&tls, &internal) {
        (Ok(t), Ok(i)) => pods::reach(client, &v, Some(t), i).await,
        _ => pods::Reach {
            ca: None,
            token: None,
            server_name: pods::server_name(&v),
        },
    };
    let views = pods::observe(client, &v, &reach).await?;
    let pods = views
        .into_iter()
        .map(|p| {
            let zone = p
                .placement
                .and_then(|i| v.placements.get(i))
                .map(|(z, _)| z.clone().unwrap_or_else(|| names::deployment(name, None)));
            let (sessions, unreachable) = match &p.answer {
                Answer::Report(r) => (Some(r.owned_sessions), None),
                Answer::NoAnswer(why) if not_asked.is_none() => (None, Some(why.clone())),
                _ => (None, None),
            };
            PodRow {
                draining: p.draining(),
                name: p.name,
                zone,
                ready: p.ready,
                terminating: p.terminating,
                version: p.version,
                sessions,
                unreachable,
            }
        })
        .collect();
    Ok(Snapshot {
        cluster,
        pods,
        events,
        pods_not_asked: not_asked,
    })
}

/// Sets `spec.rollout.paused`; returns the cluster as patched and whether it changed.
pub async fn set_paused(
    client: &Client,
    ns: &str,
    name: &str,
    paused: bool,
) -> Result<(WardengateCluster, bool), PluginError> {
    let before = get(client, ns, name).await?;
    if before.spec.rollout.paused == paused {
        return Ok((before, false));
    }
    let api: Api<WardengateCluster> = Api::namespaced(client.clone(), ns);
    let patch = json!({"spec": {"rollout": {"paused": paused}}});
    let after = api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok((after, true))
}

/// How often `rollout status` reads the cluster.
pub const POLL: Duration = Duration::from_millis(500);

/// Waits until the rollout is done (Ok with the final message), failed
/// ([`PluginError::Failed`]) or `timeout` passed ([`PluginError::Timeout`]); each new waiting
/// message goes to `progress`.
pub async fn wait_rollout(
    client: &Client,
    ns: &str,
    name: &str,
    timeout: Duration,
    mut progress: impl FnMut(&str),
) -> Result<String, PluginError> {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        match verdict(&get(client, ns, name).await?) {
            Verdict::Done(m) => return Ok(m),
            Verdict::Failed(m) => return Err(PluginError::Failed(m)),
            Verdict::Waiting(m) => {
                if m != last {
                    progress(&m);
                    last = m;
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(PluginError::Timeout {
                after: humantime::format_duration(timeout).to_string(),
                last,
            });
        }
        tokio::time::sleep(POLL.min(deadline.saturating_duration_since(Instant::now()))).await;
    }
}
