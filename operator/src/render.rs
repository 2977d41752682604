//! `wardengate-operator render -f FILE`: every object the operator would own for the custom
//! resources in FILE, as a YAML stream, with no cluster. Runs the same validation as admission,
//! so a GitOps preview fails exactly where `kubectl apply` would.

use serde::Deserialize;
use wardengate_crds::{GatewayPool, WardengateCluster};

use crate::build::{Owned, SecretMaterial, cluster_objects, pool_objects, remote_pool_objects};
use crate::validate::{Invalid, ValidCluster, pool_version, validate, validate_pool};

/// Why rendering failed.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// A document is not valid YAML or does not match the schema.
    #[error("document {doc}: {message}")]
    Parse {
        /// 1-based document number.
        doc: usize,
        /// Parser message (names the field).
        message: String,
    },
    /// A resource failed validation.
    #[error("{kind}/{name}: {source}")]
    Invalid {
        /// Kind.
        kind: &'static str,
        /// Name.
        name: String,
        /// Cause, naming the field.
        source: Invalid,
    },
}

/// The rendered objects plus non-blocking notes for stderr.
#[derive(Debug, Default)]
pub struct Rendered {
    /// Objects in apply order.
    pub objects: Vec<Owned>,
    /// Warnings and notes.
    pub notes: Vec<String>,
}

impl Rendered {
    /// The objects as a YAML stream.
    pub fn to_yaml(&self) -> String {
        self.objects
            .iter()
            .map(|o| format!("---\n{}", serde_yaml::to_string(o).unwrap_or_default()))
            .collect()
    }
}

/// Renders every Wardengate resource in a YAML stream.
pub fn render(input: &str) -> Result<Rendered, RenderError> {
    let mut out = Rendered::default();
    let mut clusters: Vec<ValidCluster> = Vec::new();
    let mut pools = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(input).enumerate() {
        let n = i + 1;
        let value = serde_json::Value::deserialize(doc).map_err(|e| RenderError::Parse {
            doc: n,
            message: e.to_string(),
        })?;
        if value.is_null() {
            continue;
        }
        let parse_err = |e: serde_json::Error| RenderError::Parse {
            doc: n,
            message: e.to_string(),
        };
        match value.get("kind").and_then(|k| k.as_str()) {
            Some("WardengateCluster") => {
                let c: WardengateCluster = serde_json::from_value(value).map_err(parse_err)?;
                let name = c.metadata.name.clone().unwrap_or_default();
                let v = validate(&c).map_err(|source| RenderError::Invalid {
                    kind: "WardengateCluster",
                    name: name.clone(),
                    source,
                })?;
                out.notes.extend(
                    v.warnings
                        .iter()
                        .map(|w| format!("WardengateCluster/{name}: warning: {w}")),
                );
                out.objects
                    .extend(cluster_objects(&v, None, &SecretMaterial::default()).into_objects());
                clusters.push(v);
            }
            Some("GatewayPool") => {
                let p: GatewayPool = serde_json::from_value(value).map_err(parse_err)?;
                let name = p.metadata.name.clone().unwrap_or_default();
                let vp = validate_pool(&p).map_err(|source| RenderError::Invalid {
                    kind: "GatewayPool",
                    name: name.clone(),
                    source,
                })?;
                let reported = p.status.and_then(|s| s.control_plane_version);
                pools.push((vp, reported));
            }
            other => {
                return Err(RenderError::Parse {
                    doc: n,
                    message: format!(
                        "kind {other:?} is not a Wardengate resource (WardengateCluster, GatewayPool)"
                    ),
                });
            }
        }
    }
    // Pools after every cluster: a pool may come first in the file.
    for (p, reported) in pools {
        if let Some(r) = &p.remote {
            // With no control plane to ask, the version it reports in the file's status if
            // any, else the one asked for.
            let version = pool_version(Some(&r.version), reported.as_deref())
                .unwrap_or_else(|| r.version.clone());
            if reported.is_none() {
                out.notes.push(format!(
                    "GatewayPool/{}: rendered at spec.version {}; the operator renders nothing until status.controlPlaneVersion says what the control plane at {} runs",
                    p.name, r.version, r.url
                ));
            }
            out.objects
                .extend(remote_pool_objects(&p, r, &version, None).into_objects());
            continue;
        }
        let Some(c) = clusters
            .iter()
            .find(|c| c.name == p.cluster && c.namespace == p.namespace)
        else {
            out.notes.push(format!(
                "GatewayPool/{}: valid; its WardengateCluster {}/{} is not in this file, so nothing is rendered for it",
                p.name, p.namespace, p.cluster
            ));
            continue;
        };
        // With no cluster to ask, assume the cluster reports its spec version.
        let version = pool_version(p.spec.version.as_deref(), Some(&c.spec.version))
            .unwrap_or_else(|| c.spec.version.clone());
        out.objects
            .extend(pool_objects(&p, c, &version, None).into_objects());
    }
    Ok(out)
}
