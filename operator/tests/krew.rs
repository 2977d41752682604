//! The krew manifest (`plugins/krew/wardengate.yaml`), rendered the way krew-release-bot renders
//! it at a release, is a valid krew `Plugin`: name `wardengate`, version the workspace's, and
//! every platform installs the binary this crate builds, `kubectl-wardengate`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::path::Path;

use serde_yaml::Value;

const BIN: &str = "kubectl-wardengate";

/// krew-release-bot's rendering: `{{ .TagName }}` and `{{addURIAndSha "URL" .TagName }}`.
fn render(template: &str, tag: &str) -> String {
    let t = template.replace("{{ .TagName }}", tag);
    t.lines()
        .map(|l| {
            let Some(start) = l.find("{{addURIAndSha \"") else {
                return l.to_string();
            };
            let indent = &l[..start];
            let rest = &l[start + "{{addURIAndSha \"".len()..];
            let url = &rest[..rest.find('"').expect("the URL is quoted")];
            assert!(
                rest.trim_end().ends_with(".TagName }}"),
                "addURIAndSha takes .TagName: {l}"
            );
            format!("{indent}uri: {url}\n{indent}sha256: {}", "0".repeat(64))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_krew_manifest_installs_kubectl_wardengate_at_the_workspace_version() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/krew/wardengate.yaml");
    let template = std::fs::read_to_string(path).unwrap();
    let tag = format!("v{}", env!("CARGO_PKG_VERSION"));
    let m: Value = serde_yaml::from_str(&render(&template, &tag)).unwrap();
    assert_eq!(
        m["apiVersion"],
        "krew.googlecontainertools.github.com/v1alpha2"
    );
    assert_eq!(m["kind"], "Plugin");
    // krew runs `kubectl-<metadata.name>`: the name must match the binary.
    assert_eq!(
        format!("kubectl-{}", m["metadata"]["name"].as_str().unwrap()),
        BIN
    );
    let spec = &m["spec"];
    assert_eq!(spec["version"].as_str(), Some(tag.as_str()));
    assert!(
        semver::Version::parse(&tag[1..]).is_ok(),
        "krew wants v<semver>"
    );
    let short = spec["shortDescription"].as_str().unwrap();
    assert!(
        !short.is_empty() && short.len() <= 60,
        "krew's limit: {short:?}"
    );
    assert!(spec["homepage"].as_str().unwrap().starts_with("https://"));
    let platforms = spec["platforms"].as_sequence().unwrap();
    assert!(!platforms.is_empty());
    let mut seen = std::collections::BTreeSet::new();
    for p in platforms {
        let labels = &p["selector"]["matchLabels"];
        let (os, arch) = (
            labels["os"].as_str().unwrap(),
            labels["arch"].as_str().unwrap(),
        );
        assert!(seen.insert((os, arch)), "platform {os}/{arch} listed twice");
        assert_eq!(p["bin"], BIN, "{os}/{arch}");
        let uri = p["uri"].as_str().unwrap();
        assert!(
            uri.starts_with("https://") && uri.contains(&tag) && uri.ends_with(".tar.gz"),
            "{uri}"
        );
        assert_eq!(p["sha256"].as_str().unwrap().len(), 64);
        let files = p["files"].as_sequence().unwrap();
        assert!(
            files.iter().any(|f| f["from"] == BIN && f["to"] == "."),
            "{os}/{arch} does not unpack {BIN}"
        );
    }
    assert!(seen.contains(&("linux", "amd64")));
}

#[test]
fn the_binary_krew_installs_is_the_plugin_this_crate_builds() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kubectl-wardengate"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for cmd in ["status", "rollout", "pause", "resume", "drain", "render"] {
        assert!(help.contains(cmd), "{cmd} missing from\n{help}");
    }
    assert!(help.contains("kubectl wardengate"), "{help}");
}
