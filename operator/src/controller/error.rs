//! Why a reconcile fails. Every variant is retried with the per-object backoff; conditions the
//! user must fix (invalid or undecodable specs, missing Secrets) are not errors but statuses.

use crate::material;

/// Why a reconcile failed; all of these are retried with exponential backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or failed a request.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// TLS material could not be generated.
    #[error(transparent)]
    Material(#[from] material::MaterialError),
    /// The object has no namespace or uid (never true for objects from the API).
    #[error("{0} lacks metadata.{1}")]
    Metadata(String, &'static str),
}
