//! `kubectl wardengate`, the kubectl plugin (binary `kubectl-wardengate`): a status screen,
//! `rollout status`, pause/resume, drain of one pod and `render`, for people who run Wardengate
//! with the operator and look at it with kubectl.
//!
//! The pure halves ([`screen`], [`wait`]) are unit-tested from status objects; [`cluster`] and
//! [`drain`] talk to the API server and the pods, and run in the real-control-plane suite.

pub mod cluster;
pub mod drain;
pub mod screen;
pub mod table;
pub mod wait;

/// Why a plugin command failed (printed as `error: …`, exit code 1).
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// No usable kubeconfig or in-cluster configuration.
    #[error("kubeconfig: {0}")]
    Config(String),
    /// The object asked for does not exist.
    #[error("{kind} {name:?} not found in namespace {namespace:?}")]
    NotFound {
        /// Kind.
        kind: &'static str,
        /// Name.
        name: String,
        /// Namespace.
        namespace: String,
    },
    /// The API server refused or failed a request.
    #[error("{0}")]
    Api(#[from] kube::Error),
    /// Talking to a pod's gateway failed.
    #[error("{0}")]
    Gateway(String),
    /// A wait ran out of time.
    #[error("timed out after {after}: {last}")]
    Timeout {
        /// The timeout (human format).
        after: String,
        /// The last state seen.
        last: String,
    },
    /// A rollout stalled.
    #[error("{0}")]
    Failed(String),
}
