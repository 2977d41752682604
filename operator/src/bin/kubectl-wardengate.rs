//! `kubectl-wardengate`: the kubectl plugin (`kubectl wardengate …` once on PATH). See
//! [`wardengate_operator::plugin`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use serde::Serialize;
use wardengate_operator::plugin::{PluginError, cluster, drain, screen};

/// Inspect and steer Wardengate clusters run by the operator.
#[derive(Debug, Parser)]
#[command(
    name = "kubectl wardengate",
    bin_name = "kubectl wardengate",
    version,
    about
)]
struct Cli {
    /// Namespace (default: the context's).
    #[arg(short = 'n', long, global = true)]
    namespace: Option<String>,
    /// Path to the kubeconfig file (default: $KUBECONFIG, ~/.kube/config, in-cluster).
    #[arg(long, global = true)]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true)]
    context: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Output::Text)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

/// `-o`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    /// For humans.
    Text,
    /// JSON.
    Json,
    /// YAML.
    Yaml,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// One screen about a cluster: zones, pods, versions, sessions, rollout, conditions, Events.
    Status {
        /// WardengateCluster name.
        name: String,
    },
    /// Rollout commands.
    Rollout {
        #[command(subcommand)]
        command: RolloutCommand,
    },
    /// Pause the cluster's rollout (spec.rollout.paused): pending zones wait.
    Pause {
        /// WardengateCluster name.
        name: String,
    },
    /// Resume a paused rollout.
    Resume {
        /// WardengateCluster name.
        name: String,
    },
    /// Ask one control-plane pod's gateway to drain; shows sessions left until it has drained.
    Drain {
        /// Pod name.
        pod: String,
        /// Eviction window: sessions still open after it are closed (default: the cluster's
        /// spec.drain.timeoutSeconds).
        #[arg(long, value_parser = humantime::parse_duration)]
        timeout: Option<Duration>,
        /// File with an admin token (default: $WG_TOKEN, else the cluster's internal Secret).
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// Connect here instead of the pod IP (e.g. 127.0.0.1:8443 behind
        /// `kubectl port-forward pod/POD 8443`).
        #[arg(long)]
        address: Option<SocketAddr>,
    },
    /// Print every object the operator would create for the resources in a file; no cluster.
    Render {
        /// YAML file with WardengateCluster / GatewayPool documents (`-` for stdin).
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum RolloutCommand {
    /// Wait until the rollout is done; exit 1 when it stalls or the timeout passes.
    Status {
        /// WardengateCluster name.
        name: String,
        /// How long to wait (0: check once).
        #[arg(long, value_parser = humantime::parse_duration, default_value = "10m")]
        timeout: Duration,
    },
}

fn print_as<T: Serialize>(out: Output, v: &T) -> Result<(), PluginError> {
    let s = match out {
        Output::Json | Output::Text => serde_json::to_string_pretty(v)
            .map(|s| s + "\n")
            .map_err(|e| PluginError::Gateway(e.to_string()))?,
        Output::Yaml => {
            serde_yaml::to_string(v).map_err(|e| PluginError::Gateway(e.to_string()))?
        }
    };
    print!("{s}");
    Ok(())
}

async fn run(cli: Cli) -> Result<(), PluginError> {
    let connect = || {
        cluster::connect(
            cli.kubeconfig.as_deref(),
            cli.context.as_deref(),
            cli.namespace.as_deref(),
        )
    };
    let out = cli.output;
    match &cli.command {
        Command::Render { .. } => unreachable!("handled without a cluster"),
        Command::Status { name } => {
            let (client, ns) = connect().await?;
            let s = cluster::snapshot(&client, &ns, name).await?;
            match out {
                Output::Text => print!(
                    "{}",
                    screen::render(&s, k8s_openapi::jiff::Timestamp::now())
                ),
                _ => print_as(out, &s)?,
            }
        }
        Command::Rollout {
            command: RolloutCommand::Status { name, timeout },
        } => {
            let (client, ns) = connect().await?;
            let done = cluster::wait_rollout(&client, &ns, name, *timeout, |m| {
                if out == Output::Text {
                    println!("{m}");
                } else {
                    eprintln!("{m}");
                }
            })
            .await;
            match (out, done) {
                (Output::Text, Ok(m)) => println!("{m}"),
                (_, Ok(m)) => print_as(
                    out,
                    &serde_json::json!({"name": name, "done": true, "message": m}),
                )?,
                (_, Err(e)) => return Err(e),
            }
        }
        Command::Pause { name } | Command::Resume { name } => {
            let paused = matches!(cli.command, Command::Pause { .. });
            let (client, ns) = connect().await?;
            let (c, changed) = cluster::set_paused(&client, &ns, name, paused).await?;
            let verb = if paused { "paused" } else { "resumed" };
            match out {
                Output::Text if changed => {
                    println!("wardengatecluster.wardengate.io/{name} {verb}")
                }
                Output::Text => println!("wardengatecluster.wardengate.io/{name} already {verb}"),
                _ => print_as(out, &c)?,
            }
        }
        Command::Drain {
            pod,
            timeout,
            token_file,
            address,
        } => {
            let token = match token_file {
                Some(f) => Some(
                    std::fs::read_to_string(f)
                        .map_err(|e| {
                            PluginError::Config(format!("--token-file {}: {e}", f.display()))
                        })?
                        .lines()
                        .map(str::trim)
                        .find(|l| !l.is_empty())
                        .unwrap_or_default()
                        .to_string(),
                ),
                None => std::env::var("WG_TOKEN").ok().filter(|t| !t.is_empty()),
            };
            let (client, ns) = connect().await?;
            let (target, default_secs) = drain::target(&client, &ns, pod, token, *address).await?;
            let window = timeout.unwrap_or(Duration::from_secs(default_secs.max(0) as u64));
            let d = drain::drain(&target, window, |p| {
                let m = format!(
                    "pod {pod}: {}, {} session(s) left",
                    if p.draining { "draining" } else { "serving" },
                    p.sessions
                );
                if out == Output::Text {
                    println!("{m}");
                } else {
                    eprintln!("{m}");
                }
            })
            .await?;
            match out {
                Output::Text => println!("pod {pod} drained ({}) in {}s", d.outcome, d.seconds),
                _ => print_as(out, &d)?,
            }
        }
    }
    Ok(())
}

fn render(file: &PathBuf, out: Output) -> ExitCode {
    let input = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(file)
    };
    let input = match input {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: reading {}: {e}", file.display());
            return ExitCode::FAILURE;
        }
    };
    match wardengate_operator::render::render(&input) {
        Ok(r) => {
            for n in &r.notes {
                eprintln!("{n}");
            }
            let printed = match out {
                Output::Json => {
                    let list =
                        serde_json::json!({"apiVersion": "v1", "kind": "List", "items": r.objects});
                    print_as(out, &list)
                }
                _ => {
                    print!("{}", r.to_yaml());
                    Ok(())
                }
            };
            match printed {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Err(e) => {
            eprintln!("error: {}: {e}", file.display());
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Render { file } = &cli.command {
        return render(file, cli.output);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
