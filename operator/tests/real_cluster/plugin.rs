//! `kubectl wardengate …` as users run it: the real kubectl finds `kubectl-wardengate` on PATH
//! and hands it its arguments; the plugin talks to the real API server (and, for status and
//! drain, to the real gateways behind kwok pods).

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

use super::{Env, repo};

/// `kubectl wardengate ARGS --kubeconfig <admin>`, with the plugin's directory first on PATH.
pub(super) fn command(env: &Env, args: &[&str]) -> Command {
    let plugin = PathBuf::from(env!("CARGO_BIN_EXE_kubectl-wardengate"));
    let dir = plugin.parent().unwrap();
    let path = std::env::join_paths(std::iter::once(dir.to_path_buf()).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))
    .unwrap();
    let mut cmd = Command::new(&env.kubectl);
    cmd.arg("wardengate")
        .args(args)
        .arg("--kubeconfig")
        .arg(&env.admin)
        .env("PATH", path)
        .env_remove("KUBECONFIG")
        .env_remove("WG_TOKEN")
        .stdin(Stdio::null());
    cmd
}

/// Runs it to the end.
pub(super) fn run(env: &Env, args: &[&str]) -> Output {
    command(env, args).output().unwrap()
}

/// Runs it; it must succeed; returns stdout.
pub(super) fn ok(env: &Env, args: &[&str]) -> String {
    let out = run(env, args);
    assert!(
        out.status.success(),
        "kubectl wardengate {args:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Starts it in the background, output captured.
pub(super) fn spawn(env: &Env, args: &[&str]) -> Child {
    command(env, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The line of `screen` whose first word is `first`.
pub(super) fn row<'a>(screen: &'a str, first: &str) -> Vec<&'a str> {
    screen
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|w| w.first() == Some(&first))
        .unwrap_or_else(|| panic!("no row {first:?} in\n{screen}"))
}

/// `render -f` through kubectl prints exactly what `wardengate-operator render -f` prints.
pub(super) fn render_matches_the_operator(env: &Env) {
    for ex in ["quickstart", "three-zone-ha"] {
        let f = repo()
            .join(format!("examples/{ex}.yaml"))
            .display()
            .to_string();
        let via_plugin = ok(env, &["render", "-f", &f]);
        let op = Command::new(env!("CARGO_BIN_EXE_wardengate-operator"))
            .args(["render", "-f", &f])
            .output()
            .unwrap();
        assert!(op.status.success());
        assert_eq!(via_plugin, String::from_utf8_lossy(&op.stdout), "{ex}");
        assert!(via_plugin.contains("kind: Deployment"), "{via_plugin}");
        let json: serde_json::Value =
            serde_json::from_str(&ok(env, &["render", "-f", &f, "-o", "json"])).unwrap();
        assert_eq!(
            json["items"].as_array().unwrap().len(),
            via_plugin.matches("\n---\n").count() + 1,
            "-o json lists the same objects"
        );
    }
    let bad = env.file(
        "bad.yaml",
        "kind: WardengateCluster\nmetadata: {name: x}\nspec: {}\n",
    );
    let out = run(env, &["render", "-f", &bad]);
    assert!(!out.status.success(), "an invalid resource rendered");
    env.step("kubectl wardengate render -f: the operator's own output, -o json the same objects");
}
