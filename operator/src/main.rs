//! `wardengate-operator`: runs the controllers (`run`), prints its CRDs (`crds`) and renders
//! what it would own (`render`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Kubernetes operator for Wardengate fleets.
#[derive(Debug, Parser)]
#[command(name = "wardengate-operator", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the controllers against the current kubeconfig (or in-cluster config).
    Run(RunArgs),
    /// Print the CRDs as YAML (install them with kubectl or GitOps; the operator never does).
    Crds,
    /// Print every object the operator would create for the resources in a file; no cluster.
    Render {
        /// YAML file with WardengateCluster / GatewayPool documents (`-` for stdin).
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
    },
}

/// Flags of `run`.
#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Watch only this namespace (pair with a namespaced Role); default: all namespaces.
    #[arg(long, env = "WG_OPERATOR_NAMESPACE")]
    watch_namespace: Option<String>,
    /// Maximum reconciles in parallel.
    #[arg(long, env = "WG_OPERATOR_CONCURRENCY", default_value_t = 4)]
    concurrency: u16,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "WG_OPERATOR_PROBE_ADDR", default_value = "127.0.0.1:8080")]
    probe_addr: std::net::SocketAddr,
    /// Namespace of the leader-election Lease (in a pod: its own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "wardengate-system")]
    lease_namespace: String,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "wardengate-operator")]
    lease_name: String,
    /// This replica's identity in the Lease (in a pod: its name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Log format: `json` (production) or `text`.
    #[arg(long, env = "WG_LOG_FORMAT", default_value = "json")]
    log_format: String,
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt().with_env_filter(filter);
    if format == "text" {
        b.init();
    } else {
        b.json().flatten_event(true).init();
    }
}

fn run(args: RunArgs) -> ExitCode {
    init_logging(&args.log_format);
    // Other crates in a workspace build may enable a second rustls provider; choose one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("wardengate-operator: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let client = match kube::Client::try_default().await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "no Kubernetes configuration (in-cluster or kubeconfig)");
                return ExitCode::FAILURE;
            }
        };
        let identity = args.identity.clone().unwrap_or_else(|| {
            format!("{}-{}", std::env::var("HOSTNAME").unwrap_or_else(|_| "operator".into()), std::process::id())
        });
        let metrics = wardengate_operator::metrics::Metrics::new();
        let api_ok = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let router = wardengate_operator::run::probe_router(metrics.clone(), api_ok.clone());
        let listener = match tokio::net::TcpListener::bind(args.probe_addr).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(addr = %args.probe_addr, error = %e, "cannot listen for probes (--probe-addr)");
                return ExitCode::FAILURE;
            }
        };
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::error!(error = %e, "probe server failed");
            }
        });
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!("shutting down: releasing leadership");
            let _ = stop_tx.send(true);
        });
        let cfg = wardengate_operator::run::RunConfig {
            namespace: args.watch_namespace,
            concurrency: args.concurrency.max(1),
            lease: wardengate_operator::leader::LeaseConfig::new(&args.lease_namespace, &args.lease_name, &identity),
        };
        wardengate_operator::run::run(client, cfg, metrics, api_ok, stop).await;
        ExitCode::SUCCESS
    })
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term => {},
    }
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run(args) => run(args),
        Command::Crds => {
            print!("{}", wardengate_crds::crds_yaml());
            ExitCode::SUCCESS
        }
        Command::Render { file } => {
            let input = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())
            } else {
                std::fs::read_to_string(&file)
            };
            let input = match input {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("wardengate-operator: reading {}: {e}", file.display());
                    return ExitCode::from(2);
                }
            };
            match wardengate_operator::render::render(&input) {
                Ok(r) => {
                    for n in &r.notes {
                        eprintln!("{n}");
                    }
                    print!("{}", r.to_yaml());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("wardengate-operator: {}: {e}", file.display());
                    ExitCode::FAILURE
                }
            }
        }
    }
}
