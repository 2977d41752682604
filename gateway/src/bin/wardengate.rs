//! `wardengate`: the server binary (every role) and the zero-dependency dev mode.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use wardengate::config::ServeArgs;
use wardengate::metrics::Metrics;
use wardengate::server::{LiveSource, Parts, shutdown_signal};
use wardengate::store::Store;

/// Wardengate access gateway.
#[derive(Debug, Parser)]
#[command(name = "wardengate", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve a replica against shared Postgres and Redis.
    Serve(Box<ServeArgs>),
    /// Generate key files.
    Keys {
        /// Subcommand.
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Everything in one process with an embedded store: no services needed.
    Dev {
        /// Directory for the embedded state, the generated certificate, key and admin token.
        #[arg(long, env = "WG_DATA_DIR", default_value = ".wardengate-dev")]
        data_dir: PathBuf,
        /// HTTPS listen address.
        #[arg(long, env = "WG_LISTEN", default_value = "127.0.0.1:8443")]
        listen: SocketAddr,
        /// Terminating SSH listen address (off unless given); keys are generated in the data
        /// directory.
        #[arg(long, env = "WG_SSH_LISTEN")]
        ssh_listen: Option<SocketAddr>,
    },
}

/// `wardengate keys …`.
#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Print a new key file: the internal HMAC keyring (default) or, with `--recording`, an
    /// Ed25519 recording-manifest key (for `--recording-key-file`).
    Generate {
        /// An Ed25519 recording-manifest key instead of an internal key.
        #[arg(long)]
        recording: bool,
        /// An agent CA (certificate and key, PEM) for `--agent-ca-file` instead.
        #[arg(long, conflicts_with = "recording")]
        agent_ca: bool,
        /// An Ed25519 SSH key (OpenSSH format) instead: for `--ssh-host-key-file`,
        /// `--ssh-ca-key-file` or `--ssh-login-ca-key-file`.
        #[arg(long, conflicts_with_all = ["recording", "agent_ca"])]
        ssh_key: bool,
        /// Key id.
        #[arg(long, default_value = "k1")]
        kid: String,
    },
    /// Print the public lines of a recording key file (to trust a retired key after a
    /// rotation, or to hand to auditors for `wgctl recordings verify --offline`).
    Public {
        /// Recording key file.
        file: PathBuf,
    },
}

fn keys(command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Generate {
            recording,
            agent_ca,
            ssh_key,
            kid,
        } => {
            if ssh_key {
                print!("{}", wardengate::ssh::keys::generate_key_file()?);
            } else if agent_ca {
                print!(
                    "{}",
                    wardengate::agent::AgentCa::generate(&format!("wardengate agent CA {kid}"))?
                );
            } else if recording {
                print!(
                    "{}",
                    wardengate::recording::ManifestKeys::generate_file(&kid)
                );
            } else {
                print!("{}", wardengate::signing::Keyring::generate_file(&kid));
            }
        }
        KeysCommand::Public { file } => {
            let text = std::fs::read_to_string(&file)?;
            let keys = wardengate::recording::ManifestKeys::parse(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            print!("{}", keys.public_file());
        }
    }
    Ok(())
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let cfg = args.validate()?;
    let target_policy = cfg.target_policy().await;
    let metrics = Metrics::new(&cfg.replica_id);
    if let Some(link) = cfg.agent_link.clone() {
        return serve_remote(cfg_remote(&cfg), link, target_policy, metrics).await;
    }
    let redis = cfg
        .redis
        .clone()
        .ok_or_else(|| anyhow::anyhow!("--redis-url / WG_REDIS_URL: required"))?;
    let store = Store::connect_with(
        &cfg.database_url,
        cfg.statement_timeout,
        cfg.database_pool_mode,
    )?;
    let recordings = match &cfg.recordings_url {
        Some(url) => Some(
            wardengate::recording::Recordings::open(
                url,
                cfg.recordings_spool.clone(),
                metrics.chunks_uploaded.clone(),
            )?
            .sealed_with(cfg.keyring.clone())
            .with_manifest_keys(cfg.recording_keys.clone().unwrap_or_default()),
        ),
        None => None,
    };
    if recordings.as_ref().is_some_and(|r| !r.can_sign()) && cfg.role.has_api() {
        tracing::warn!(
            "recordings are written but this replica has no recording private key \
             (--recording-key-file / WG_RECORDING_KEY_FILE): it will not sign manifests"
        );
    }
    let parts = Parts {
        recordings,
        recording_seal_after: cfg.recording_seal_after,
        replica_id: cfg.replica_id,
        role: cfg.role,
        store,
        live: LiveSource::Redis(redis),
        keyring: cfg.keyring,
        metrics,
        tls: cfg.tls,
        listen: cfg.listen,
        health_interval: cfg.health_interval,
        isolation_grace: cfg.isolation_grace,
        admin_token: cfg.admin_token,
        observer_token_file: cfg.observer_token_file,
        drain_timeout: cfg.drain_timeout,
        replica_lost_after: cfg.replica_lost_after,
        live_session_ttl: cfg.live_session_ttl,
        target_policy,
        limits: cfg.limits,
        admin_socket: cfg.admin_socket,
        metrics_listen: cfg.metrics_listen,
        ready: None,
        agent: wardengate::server::AgentParts {
            listen: Some(cfg.agent_listen),
            ca: cfg.agent_ca,
            cert_ttl: cfg.agent_cert_ttl,
        },
        ssh: cfg.ssh,
    };
    wardengate::server::run(parts, shutdown_signal()).await?;
    Ok(())
}

/// What a remote gateway takes from the validated configuration.
struct RemoteCfg {
    replica_id: String,
    tls: wardengate::tls::PemPair,
    listen: SocketAddr,
    metrics_listen: Option<SocketAddr>,
    drain_timeout: std::time::Duration,
    state_dir: PathBuf,
    offline: wardengate::agent::state::OfflinePolicy,
    keepalive: wardengate::pump::Keepalive,
}

fn cfg_remote(cfg: &wardengate::config::ServeConfig) -> RemoteCfg {
    RemoteCfg {
        replica_id: cfg.replica_id.clone(),
        tls: cfg.tls.clone(),
        listen: cfg.listen,
        metrics_listen: cfg.metrics_listen,
        drain_timeout: cfg.drain_timeout,
        state_dir: cfg
            .agent_link
            .as_ref()
            .map(|l| l.state_dir.clone())
            .unwrap_or_default(),
        offline: cfg.offline,
        keepalive: cfg.limits.relay,
    }
}

/// A remote gateway: no Postgres, no Redis; the relay, authenticated by grants, and the link.
async fn serve_remote(
    cfg: RemoteCfg,
    link: wardengate::agent::LinkConfig,
    target_policy: wardengate::target_policy::TargetPolicy,
    metrics: Metrics,
) -> anyhow::Result<()> {
    use std::sync::Arc;
    use wardengate::agent::remote::{Remote, RemoteParts};
    let state = Arc::new(wardengate::agent::state::RemoteState::new(
        Some(cfg.state_dir),
        cfg.offline,
        metrics.agent_events_queued.clone(),
    ));
    let replica = wardengate::replica::Replica::new(
        cfg.replica_id,
        wardengate::replica::Role::Gateway,
        metrics.clone(),
    );
    let remote = Arc::new(Remote {
        state,
        replica,
        metrics,
        target_policy,
        keepalive: cfg.keepalive,
        dial_timeout: std::time::Duration::from_secs(10),
    });
    wardengate::agent::remote::run(
        RemoteParts {
            remote,
            link,
            tls: cfg.tls,
            listen: cfg.listen,
            metrics_listen: cfg.metrics_listen,
            drain_timeout: cfg.drain_timeout,
        },
        shutdown_signal(),
    )
    .await?;
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    wardengate::logging::init();
    wardengate::tls::install_crypto_provider();
    let result = match Cli::parse().command {
        Command::Serve(args) => serve(*args).await,
        Command::Keys { command } => keys(command),
        Command::Dev {
            data_dir,
            listen,
            ssh_listen,
        } => wardengate::dev::run(wardengate::dev::DevOptions {
            data_dir,
            listen,
            ssh_listen,
        })
        .await
        .map_err(Into::into),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wardengate: {e:#}");
            ExitCode::from(2)
        }
    }
}
