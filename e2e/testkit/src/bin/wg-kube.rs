//! `./task kube`: a real Kubernetes control plane (etcd, apiserver, controller-manager,
//! scheduler, six kwok nodes in zones a/b/c) in the foreground, for trying the operator without a
//! cluster. Prints `export KUBECONFIG=…` once it is ready; Ctrl-C stops everything.

use std::process::ExitCode;
use std::time::Instant;

use nix::sys::signal::{SigSet, Signal};
use wardengate_testkit::KubeCluster;

fn main() -> ExitCode {
    // Blocked before anything starts, then awaited: Ctrl-C (or SIGTERM) during start-up is
    // handled once the cluster is up, so the fixture's Drop always runs and kills every process.
    let mut signals = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        signals.add(s);
    }
    if let Err(e) = signals.thread_block() {
        eprintln!("wg-kube: blocking signals: {e}");
        return ExitCode::FAILURE;
    }
    eprintln!("wg-kube: starting etcd, kube-apiserver, controller-manager, scheduler and kwok …");
    let started = Instant::now();
    let cluster = match KubeCluster::start() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("wg-kube: the control plane did not start: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "wg-kube: ready in {:.0?}: {} (nodes node-a1 … node-c2 in zones a, b, c); logs in {}",
        started.elapsed(),
        cluster.api_url(),
        cluster.dir().display()
    );
    eprintln!("wg-kube: Ctrl-C stops everything and removes the directory");
    println!("export KUBECONFIG={}", cluster.kubeconfig().display());
    match signals.wait() {
        Ok(sig) => eprintln!("wg-kube: {sig}: stopping"),
        Err(e) => eprintln!("wg-kube: waiting for a signal failed ({e}): stopping"),
    }
    drop(cluster);
    ExitCode::SUCCESS
}
