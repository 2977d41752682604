//! `config/`: the kustomize bases resolve (every listed resource exists), `default` assembles
//! CRDs, RBAC and the manager into one namespace, and the manager runs what the binary offers.
//! (Strict schema validation of these files is in `services_schema`.)

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::path::{Path, PathBuf};

mod support;

use support::kustomize::build;

fn config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config")
}

#[test]
fn default_assembles_crds_rbac_and_the_manager_in_one_namespace() {
    let objs = build(&config().join("default"));
    let kinds: Vec<&str> = objs.iter().map(|o| o["kind"].as_str().unwrap()).collect();
    for want in [
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Namespace",
        "Deployment",
    ] {
        assert!(
            kinds.contains(&want),
            "config/default lacks a {want}: {kinds:?}"
        );
    }
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == "CustomResourceDefinition")
            .count(),
        2
    );
    let ns = objs.iter().find(|o| o["kind"] == "Namespace").unwrap()["metadata"]["name"].clone();
    for o in &objs {
        if o["kind"] == "ClusterRoleBinding" || o["kind"] == "RoleBinding" {
            assert_eq!(
                o["subjects"][0]["namespace"], ns,
                "binding subject in the operator namespace"
            );
        }
        if o["metadata"]["namespace"].is_string() {
            assert_eq!(o["metadata"]["namespace"], ns);
        }
    }
}

#[test]
fn the_manager_uses_flags_the_binary_has_and_probes_it_serves() {
    let objs = build(&config().join("manager"));
    let d = objs.iter().find(|o| o["kind"] == "Deployment").unwrap();
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<&str> = c["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args[0], "run");
    let bin = env!("CARGO_BIN_EXE_wardengate-operator");
    let help = std::process::Command::new(bin)
        .args(["run", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for a in &args[1..] {
        let flag = a.split('=').next().unwrap();
        assert!(help.contains(flag), "`run` has no {flag}:\n{help}");
    }
    assert!(
        args.iter().any(|a| a.contains("0.0.0.0:8080")),
        "kubelet probes reach the pod IP"
    );
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    let env: Vec<&str> = c["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert!(
        env.contains(&"POD_NAME") && env.contains(&"POD_NAMESPACE"),
        "Lease identity and namespace"
    );
    assert!(
        d["spec"]["replicas"].as_i64().unwrap() >= 2,
        "a standby replica"
    );
}

/// The namespaced mode grants exactly the cluster mode's rules, as a Role in the operator's
/// namespace (no ClusterRole at all), its other RBAC files are the same as `config/rbac`'s, and
/// its overlay points the operator at its own namespace through a flag the binary reads.
#[test]
fn the_namespaced_mode_grants_the_same_rules_in_one_namespace_only() {
    let cluster = build(&config().join("rbac"));
    let namespaced = build(&config().join("rbac-namespaced"));
    let rules = |objs: &[serde_yaml::Value], kind: &str| {
        objs.iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == "wardengate-operator")
            .unwrap()["rules"]
            .clone()
    };
    assert_eq!(
        rules(&namespaced, "Role"),
        rules(&cluster, "ClusterRole"),
        "config/rbac-namespaced/role.yaml drifted from config/rbac/role.yaml"
    );
    assert!(
        !namespaced
            .iter()
            .any(|o| o["kind"].as_str().is_some_and(|k| k.starts_with("Cluster"))),
        "the namespaced mode must not grant anything cluster-wide"
    );
    for f in [
        "service_account.yaml",
        "leader_election_role.yaml",
        "leader_election_role_binding.yaml",
    ] {
        assert_eq!(
            std::fs::read_to_string(config().join("rbac").join(f)).unwrap(),
            std::fs::read_to_string(config().join("rbac-namespaced").join(f)).unwrap(),
            "{f} differs between the two RBAC modes"
        );
    }
    let overlay = std::fs::read_to_string(config().join("namespaced/kustomization.yaml")).unwrap();
    assert!(
        overlay.contains("name: WG_OPERATOR_NAMESPACE") && overlay.contains("metadata.namespace")
    );
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_wardengate-operator"))
        .args(["run", "--help"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&help.stdout).contains("WG_OPERATOR_NAMESPACE"),
        "the overlay sets a variable `run` does not read"
    );
}
