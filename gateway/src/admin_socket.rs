//! The local admin socket (`--admin-socket` / `WG_ADMIN_SOCKET`): drain and status over a Unix
//! socket, for the pod's own preStop hook. It needs no token and no TLS — whoever can open the
//! socket file (mode 0600, the server's user) is on the replica's own machine — so a drain works
//! whatever certificate the HTTPS listener serves and whoever holds the admin tokens, and from
//! the first moment of start-up.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::Query;
use axum::routing::{get, post};

use crate::api::system::{DrainQuery, drain_response, drain_timeout, status_of};
use crate::replica::Replica;
use crate::server::ServeError;

/// Binds `path` (replacing a stale socket left by an earlier run) and serves drain and status
/// on it until the task is aborted.
pub fn serve(
    path: &Path,
    replica: Arc<Replica>,
) -> Result<tokio::task::JoinHandle<()>, ServeError> {
    let failed = |source| ServeError::AdminSocket {
        path: path.to_path_buf(),
        source,
    };
    remove_stale(path).map_err(failed)?;
    let listener = tokio::net::UnixListener::bind(path).map_err(failed)?;
    set_private(path).map_err(failed)?;
    let status_replica = replica.clone();
    let app = Router::new()
        .route(
            "/v1/system/status",
            get(move || {
                let r = status_replica.clone();
                async move { Json(status_of(&r)) }
            }),
        )
        .route(
            "/v1/system/drain",
            post(move |Query(q): Query<DrainQuery>| {
                let replica = replica.clone();
                async move {
                    let timeout = drain_timeout(&q)?;
                    tracing::info!(event = "drain_requested", via = "admin_socket", timeout = ?timeout);
                    Ok::<_, crate::api::ApiError>(drain_response(replica.drain(timeout).await))
                }
            }),
        );
    let shown: PathBuf = path.to_path_buf();
    tracing::info!(event = "admin_socket", path = %shown.display());
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(path = %shown.display(), error = %e, "admin socket stopped");
        }
    }))
}

/// Removes `path` if it is a socket (left by an earlier run); refuses to replace anything else.
fn remove_stale(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path),
        Ok(_) => Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "exists and is not a socket; refusing to replace it",
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn set_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}
