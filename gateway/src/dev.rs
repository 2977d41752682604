//! `wardengate dev`: the first-run experience. One process, state under a data directory, a
//! generated certificate kept across restarts, no external services.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::api::{Replica, router};
use crate::tls::{PemPair, TlsError, self_signed, server_config};

/// Failures of the dev server.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    /// The data directory or a file in it could not be used.
    #[error("{what} {path}: {source}")]
    Io {
        /// What we were doing.
        what: &'static str,
        /// Which path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Certificate trouble.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// Options of `wardengate dev`.
#[derive(Debug, Clone)]
pub struct DevOptions {
    /// Where the embedded state and the dev certificate live.
    pub data_dir: PathBuf,
    /// HTTPS listen address.
    pub listen: SocketAddr,
}

/// Loads the dev certificate from `dir`, generating it on first run.
pub fn load_or_create_cert(dir: &Path) -> Result<PemPair, DevError> {
    let (cert_path, key_path) = (dir.join("dev-cert.pem"), dir.join("dev-key.pem"));
    let io = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| DevError::Io { what, path, source }
    };
    if cert_path.exists() && key_path.exists() {
        let cert = std::fs::read_to_string(&cert_path).map_err(io("reading", &cert_path))?;
        let key = std::fs::read_to_string(&key_path).map_err(io("reading", &key_path))?;
        return Ok(PemPair { cert, key });
    }
    std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    let pair = self_signed(&["localhost", "127.0.0.1"])?;
    std::fs::write(&cert_path, &pair.cert).map_err(io("writing", &cert_path))?;
    write_private(&key_path, &pair.key).map_err(io("writing", &key_path))?;
    Ok(pair)
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(contents.as_bytes())
}

/// Runs the dev server until the process is stopped.
pub async fn run(opts: DevOptions) -> Result<(), DevError> {
    let pair = load_or_create_cert(&opts.data_dir)?;
    let tls = axum_server::tls_rustls::RustlsConfig::from_config(std::sync::Arc::new(
        server_config(&pair)?,
    ));
    let replica = Replica::new(format!("dev-{}", std::process::id()));
    let ca = opts.data_dir.join("dev-cert.pem");
    println!("Wardengate dev server on https://{}", opts.listen);
    println!("  CA certificate: {}", ca.display());
    println!(
        "  try: curl --cacert {} https://127.0.0.1:{}/healthz",
        ca.display(),
        opts.listen.port()
    );
    tracing::info!(listen = %opts.listen, data_dir = %opts.data_dir.display(), "dev server starting");
    axum_server::bind_rustls(opts.listen, tls)
        .serve(router(replica).into_make_service())
        .await
        .map_err(|source| DevError::Io {
            what: "serving on",
            path: opts.listen.to_string().into(),
            source,
        })
}
