//! `wgctl`: command-line client of a Wardengate server. See `wardengate::wgctl`.

use std::io::Write;

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    wardengate::tls::install_crypto_provider();
    let code = match wardengate::wgctl::run(wardengate::wgctl::Cli::parse()).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("wgctl: {e}");
            i32::from(e.exit_code())
        }
    };
    let _ = std::io::stdout().flush();
    // Exit here rather than return: dropping the runtime would wait for tokio's blocking stdin
    // reader, which never finishes while the parent (ssh) keeps our stdin open.
    std::process::exit(code);
}
