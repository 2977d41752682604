//! `wardengate-operator`: prints its CRDs and renders what it would own. (The `run` controller
//! loop is not implemented yet.)

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
    /// Print the CRDs as YAML (install them with kubectl or GitOps; the operator never does).
    Crds,
    /// Print every object the operator would create for the resources in a file; no cluster.
    Render {
        /// YAML file with WardengateCluster / GatewayPool documents (`-` for stdin).
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
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
