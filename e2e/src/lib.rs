//! End-to-end suites for Wardengate live in `tests/`. This library holds what they share beyond
//! the harness ([`wardengate_testkit`]): locating the built binaries, and a [`Fleet`] of real
//! `wardengate serve` replicas behind an L4 HAProxy.

pub mod fleet;

pub use fleet::{Deps, Fleet};
pub use wardengate_testkit as testkit;

use std::path::PathBuf;

/// Path of a binary of this workspace (`wardengate`, `wgctl`), built next to the test binary.
/// `cargo test --workspace` / `cargo nextest run --workspace` build them.
/// `WG_BIN_DIR` overrides the directory (the benchmark runs release binaries).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = match std::env::var_os("WG_BIN_DIR") {
        // Processes start in their sandbox: the path must not be relative.
        Some(d) => std::path::absolute(PathBuf::from(d)).unwrap_or_default(),
        None => exe
            .parent()
            .and_then(|d| d.parent())
            .map(PathBuf::from)
            .unwrap_or_default(),
    };
    let p = dir.join(name);
    assert!(
        p.is_file(),
        "{} not built: run `cargo build -p wardengate` (or test with --workspace)",
        p.display()
    );
    p
}

/// `wgctl connect %h`, the ProxyCommand a stock `ssh` uses to reach a target through Wardengate.
pub fn proxy_command() -> String {
    format!("{} connect %h", bin("wgctl").display())
}

/// A TCP echo server on a free loopback port, for tests and benchmarks that need a target
/// which writes back while it reads. Runs on the current tokio runtime.
pub async fn echo_server() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("binding an echo server: {e}"));
    let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    port
}
