//! `wardengate dev`: the first-run experience. One process, an embedded SQLite store and
//! in-process session state under a data directory, a generated certificate and signing key kept
//! across restarts, and an admin token printed once. No external services.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::live::{Live, MemoryLive};
use crate::metrics::Metrics;
use crate::replica::Role;
use crate::server::{LiveSource, Parts, ServeError};
use crate::signing::Keyring;
use crate::store::Store;
use crate::tls::{PemPair, self_signed};

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
    /// A stored file is corrupt.
    #[error("{path}: {reason} (delete the data directory to start over)")]
    Corrupt {
        /// Which file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Serving failed.
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// The recordings directory could not be used.
    #[error(transparent)]
    Recordings(#[from] crate::recording::RecordingError),
}

/// Options of `wardengate dev`.
#[derive(Debug, Clone)]
pub struct DevOptions {
    /// Where the embedded state, certificate, key and admin token live.
    pub data_dir: PathBuf,
    /// HTTPS listen address.
    pub listen: SocketAddr,
    /// Terminating SSH listen address, if any (its keys are generated in the data directory).
    pub ssh_listen: Option<SocketAddr>,
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> DevError {
    let path = path.to_path_buf();
    move |source| DevError::Io { what, path, source }
}

/// The SSH host key, user CA and login CA of `wardengate dev`, generated on first run.
fn dev_ssh_keys(dir: &Path) -> Result<crate::ssh::SshKeys, DevError> {
    let key = |name: &str| -> Result<russh::keys::PrivateKey, DevError> {
        let path = dir.join(name);
        let (text, _) = load_or_create(&path, || {
            crate::ssh::keys::generate_key_file().unwrap_or_default()
        })?;
        russh::keys::PrivateKey::from_openssh(text.trim()).map_err(|e| DevError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })
    };
    Ok(crate::ssh::SshKeys {
        host: key("ssh-host-key")?,
        user_ca: key("ssh-user-ca")?,
        login_ca: key("ssh-login-ca")?,
    })
}

/// Reads `path`, or creates it with `make()` (mode 0600) on first run. Returns the content and
/// whether it was created now.
fn load_or_create(path: &Path, make: impl FnOnce() -> String) -> Result<(String, bool), DevError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok((s, false)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let s = make();
            write_private(path, &s).map_err(io("writing", path))?;
            Ok((s, true))
        }
        Err(e) => Err(io("reading", path)(e)),
    }
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(contents.as_bytes())
}

/// Loads the dev certificate from `dir`, generating it on first run.
pub fn load_or_create_cert(dir: &Path) -> Result<PemPair, DevError> {
    let key_path = dir.join("dev-key.pem");
    let cert_path = dir.join("dev-cert.pem");
    if key_path.exists() && cert_path.exists() {
        let key = std::fs::read_to_string(&key_path).map_err(io("reading", &key_path))?;
        let cert = std::fs::read_to_string(&cert_path).map_err(io("reading", &cert_path))?;
        return Ok(PemPair { cert, key });
    }
    let pair = self_signed(&["localhost", "127.0.0.1"]).map_err(|e| DevError::Corrupt {
        path: cert_path.clone(),
        reason: e.to_string(),
    })?;
    let _ = std::fs::remove_file(&key_path);
    let _ = std::fs::remove_file(&cert_path);
    write_private(&key_path, &pair.key).map_err(io("writing", &key_path))?;
    std::fs::write(&cert_path, &pair.cert).map_err(io("writing", &cert_path))?;
    Ok(pair)
}

/// Runs the dev server until Ctrl-C / SIGTERM.
pub async fn run(opts: DevOptions) -> Result<(), DevError> {
    std::fs::create_dir_all(&opts.data_dir).map_err(io("creating", &opts.data_dir))?;
    // Absolute from here on: the printed lines must work from any directory, and the
    // recordings URL must name an absolute path.
    let dir = &std::fs::canonicalize(&opts.data_dir).map_err(io("resolving", &opts.data_dir))?;
    let tls = load_or_create_cert(dir)?;
    let keys_path = dir.join("internal-keys");
    let (keys, _) = load_or_create(&keys_path, || Keyring::generate_file("dev1"))?;
    let keyring = Keyring::parse(&keys).map_err(|e| DevError::Corrupt {
        path: keys_path.clone(),
        reason: e.to_string(),
    })?;
    // The dev replica signs its recordings' manifests too (Ed25519, its own generated key).
    let rec_key_path = dir.join("recording-key");
    let (rec_keys, _) = load_or_create(&rec_key_path, || {
        crate::recording::ManifestKeys::generate_file("dev-rec1")
    })?;
    let manifest_keys =
        crate::recording::ManifestKeys::parse(&rec_keys).map_err(|e| DevError::Corrupt {
            path: rec_key_path.clone(),
            reason: e.to_string(),
        })?;
    let token_path = dir.join("admin-token");
    let (admin_token, new_token) = load_or_create(&token_path, crate::token::generate)?;
    let db = dir.join("wardengate.db");
    let store = Store::connect(
        &format!("sqlite://{}?mode=rwc", db.display()),
        Duration::from_secs(5),
    )
    .map_err(ServeError::from)?;
    let replica_id = format!("dev-{}", std::process::id());
    let metrics = Metrics::new(&replica_id);
    let wgctl = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("wgctl")))
        .filter(|p| p.exists())
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "wgctl".into());
    // Recordings on by default in dev: into the data directory. Opened before anything is
    // printed, so a failure never follows instructions that cannot work.
    let recordings_url =
        url::Url::from_directory_path(dir.join("recordings")).map_err(|()| DevError::Corrupt {
            path: dir.join("recordings"),
            reason: "not an absolute path".into(),
        })?;
    let recordings = crate::recording::Recordings::open(
        recordings_url.as_str(),
        dir.join("spool"),
        metrics.chunks_uploaded.clone(),
    )?
    .sealed_with(keyring.clone())
    .with_manifest_keys(manifest_keys);
    // The lines are printed once the server answers, so they work the moment they are pasted.
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let (listen, token_shown, admin_shown) = (opts.listen, token_path.clone(), admin_token.clone());
    let ca = dir.join("dev-cert.pem");
    tokio::spawn(async move {
        if ready_rx.await.is_err() {
            return;
        }
        let (token_path, admin_token) = (token_shown, admin_shown);
        println!("Wardengate dev server on https://{}", listen);
        if new_token {
            println!(
                "Admin token (shown once; saved to {}):\n  {}",
                token_path.display(),
                admin_token.trim()
            );
        } else {
            println!(
                "Admin token: saved in {} at first start",
                token_path.display()
            );
        }
        println!(
            "\nTry it:\n  export WG_ADDR=https://{addr} WG_CA_CERT={ca} WG_TOKEN_FILE={tok}\n  \
             {wgctl} targets add myserver --host 127.0.0.1 --port 22\n  \
             ssh -o ProxyCommand='{wgctl} connect %h' $USER@myserver\n",
            addr = listen,
            ca = ca.display(),
            tok = token_path.display(),
        );
    });
    let parts = Parts {
        recordings: Some(recordings),
        recording_seal_after: Duration::from_secs(60),
        replica_id,
        role: Role::All,
        store,
        live: LiveSource::Ready(Live::Memory(MemoryLive::default())),
        keyring,
        metrics,
        tls,
        listen: opts.listen,
        health_interval: Duration::from_secs(1),
        isolation_grace: Duration::from_secs(10),
        admin_token: Some(admin_token.trim().to_string()),
        observer_token_file: None,
        drain_timeout: Duration::from_secs(5),
        replica_lost_after: Duration::from_secs(15),
        live_session_ttl: crate::session::DEFAULT_LIVE_SESSION_TTL,
        limits: crate::limits::Limits::default(),
        target_policy: crate::target_policy::TargetPolicy::new(
            crate::target_policy::parse_networks(crate::target_policy::DEFAULT_DENY)
                .unwrap_or_default(),
            Vec::new(),
        )
        .with_listener(opts.listen)
        .await,
        admin_socket: None,
        metrics_listen: None,
        ready: Some(ready_tx),
        agent: Default::default(),
        ssh: match opts.ssh_listen {
            Some(listen) => Some(crate::ssh::SshParts {
                listen,
                keys: dev_ssh_keys(dir)?,
                login_grace: crate::ssh::DEFAULT_LOGIN_GRACE,
            }),
            None => None,
        },
    };
    crate::server::run(parts, crate::server::shutdown_signal()).await?;
    Ok(())
}
