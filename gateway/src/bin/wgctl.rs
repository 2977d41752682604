//! `wgctl`: command-line client of a Wardengate server.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Talk to a Wardengate server.
#[derive(Debug, Parser)]
#[command(name = "wgctl", version, about)]
struct Cli {
    /// Server address.
    #[arg(
        long,
        env = "WG_ADDR",
        default_value = "https://127.0.0.1:8443",
        global = true
    )]
    addr: String,
    /// PEM file of the CA that signed the server certificate (default: system roots).
    #[arg(long, env = "WG_CA_CERT", global = true)]
    ca_cert: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Human, global = true)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Output {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Replica-level operations.
    System {
        #[command(subcommand)]
        command: SystemCommand,
    },
}

#[derive(Debug, Subcommand)]
enum SystemCommand {
    /// Show the replica id, drain state and owned sessions of the replica that answers.
    Status,
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let ca = match &cli.ca_cert {
        Some(p) => Some(std::fs::read_to_string(p).map_err(|source| {
            wardengate::client::ClientError::CaFile {
                path: p.clone(),
                source,
            }
        })?),
        None => None,
    };
    let client = wardengate::client::Client::new(&cli.addr, ca.as_deref())?;
    match cli.command {
        Command::System {
            command: SystemCommand::Status,
        } => {
            let s = client.system_status().await?;
            match cli.output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&s)?),
                Output::Human => println!(
                    "replica {}  version {}  draining {}  owned sessions {}",
                    s.replica, s.version, s.draining, s.owned_sessions
                ),
            }
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    wardengate::tls::install_crypto_provider();
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wgctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}
