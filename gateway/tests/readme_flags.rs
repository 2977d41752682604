//! Every `wardengate serve` flag is documented in the README's configuration table with its
//! variable and default, so a user reading the README sees every knob the binary has.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use clap::{Args, Command};
use wardengate::config::ServeArgs;

#[test]
fn every_serve_flag_is_in_the_readme_table_with_its_variable_and_default() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let cmd = ServeArgs::augment_args(Command::new("serve"));
    let mut missing = Vec::new();
    for arg in cmd.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        let flag = format!("`--{long}`");
        let Some(row) = readme
            .lines()
            .find(|l| l.starts_with('|') && l.contains(&flag))
        else {
            missing.push(format!("{flag}: no table row"));
            continue;
        };
        if let Some(env) = arg.get_env() {
            let env = format!("`{}`", env.to_string_lossy());
            if !row.contains(&env) {
                missing.push(format!("{flag}: row does not name {env}"));
            }
        }
        for default in arg.get_default_values() {
            let d = default.to_string_lossy();
            if !d.is_empty() && !row.contains(&format!("`{d}`")) {
                missing.push(format!("{flag}: row does not show its default `{d}`"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "README.md is missing:\n{}",
        missing.join("\n")
    );
}

/// Every flag that carries a secret or key material is covered by SECURITY.md (what to protect,
/// how to rotate it), and every limit flag by its threat-model section.
#[test]
fn security_md_covers_every_secret_and_limit_flag() {
    let security =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../SECURITY.md")).unwrap();
    let cmd = ServeArgs::augment_args(Command::new("serve"));
    let secret = |l: &str| {
        l.ends_with("-file")
            || l.ends_with("-url")
            || l == "tls-key"
            || l.starts_with("max-")
            || l.ends_with("-per-ip")
            || l.ends_with("-per-token")
            || l.ends_with("-timeout")
            || l.starts_with("proxy-protocol")
            || l.starts_with("target-")
            || l == "metrics-listen"
            || l == "admin-socket"
    };
    let missing: Vec<String> = cmd
        .get_arguments()
        .filter_map(|a| a.get_long())
        .filter(|l| {
            secret(l)
                && *l != "recordings-url"
                && *l != "drain-timeout"
                && *l != "statement-timeout"
        })
        .filter(|l| !security.contains(&format!("`--{l}`")))
        .map(String::from)
        .collect();
    assert!(
        missing.is_empty(),
        "SECURITY.md does not mention: {missing:?}"
    );
}
