//! `wgctl`: command-line client of a Wardengate server. See `wardengate::wgctl`.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    wardengate::tls::install_crypto_provider();
    match wardengate::wgctl::run(wardengate::wgctl::Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wgctl: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
