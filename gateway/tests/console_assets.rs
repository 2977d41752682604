//! The console's built assets (`gateway/console/dist/`, embedded in the binary and checked in so
//! a clone builds without node) are exactly what its TypeScript sources build: this type-checks
//! the sources and rebuilds them with the locked esbuild into a temporary directory, and fails
//! on any difference. Fix a failure with `./task console` and commit `dist/`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::path::Path;
use std::process::Command;

#[test]
fn checked_in_console_assets_match_the_sources() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("console");
    assert!(
        dir.join("node_modules/esbuild").is_dir(),
        "{}/node_modules is missing: run `./task deps` (npm ci from the lockfile)",
        dir.display()
    );
    let out = Command::new("node")
        .current_dir(&dir)
        .args(["build.mjs", "--check"])
        .output()
        .expect("running node (install Node.js: ./task deps)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("dist/ matches the sources"), "{text}");
}
