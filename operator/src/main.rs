//! `wardengate-operator`: reconciles WardengateCluster and GatewayPool resources.

use clap::Parser;

/// Command line of the operator binary.
#[derive(Debug, Parser)]
#[command(
    name = "wardengate-operator",
    version,
    about = "Kubernetes operator for Wardengate fleets"
)]
struct Cli {}

fn main() {
    let _ = Cli::parse();
    println!(
        "wardengate-operator for {}/{}",
        wardengate_operator::GROUP,
        wardengate_operator::VERSION
    );
}
