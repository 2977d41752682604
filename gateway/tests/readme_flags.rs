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
