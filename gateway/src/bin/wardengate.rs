//! `wardengate`: the server binary (every role) and the zero-dependency dev mode.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Wardengate access gateway.
#[derive(Debug, Parser)]
#[command(name = "wardengate", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Everything in one process with an embedded store: no services needed.
    Dev {
        /// Directory for the embedded state and the generated dev certificate.
        #[arg(long, env = "WG_DATA_DIR", default_value = ".wardengate-dev")]
        data_dir: PathBuf,
        /// HTTPS listen address.
        #[arg(long, env = "WG_LISTEN", default_value = "127.0.0.1:8443")]
        listen: SocketAddr,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    wardengate::logging::init();
    wardengate::tls::install_crypto_provider();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Dev { data_dir, listen } => {
            wardengate::dev::run(wardengate::dev::DevOptions { data_dir, listen }).await
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wardengate: {e}");
            ExitCode::FAILURE
        }
    }
}
