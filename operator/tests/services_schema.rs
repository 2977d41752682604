//! Every rendered object of every example, and both CRDs, validated offline against the upstream
//! Kubernetes 1.37 schemas with `kubernetes-validate --strict` (installed by `./task deps`). A
//! WARN (for example an unknown kind) counts as a failure.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::path::{Path, PathBuf};

mod support;

use support::schema::kubernetes_validate;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn crds_pass_strict_schema_validation() {
    kubernetes_validate(&[root().join("config/crd/crds.yaml")]);
}

#[test]
fn every_example_renders_objects_that_pass_strict_schema_validation() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    let mut examples: Vec<PathBuf> = std::fs::read_dir(root().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    examples.sort();
    assert!(
        examples.len() >= 4,
        "expected the examples of issue 4, found {examples:?}"
    );
    // The pool example serves the three-zone cluster: render them together too.
    let both = dir.path().join("three-zone-ha-with-pool.yaml");
    std::fs::write(
        &both,
        format!(
            "{}\n---\n{}",
            std::fs::read_to_string(root().join("examples/three-zone-ha.yaml")).unwrap(),
            std::fs::read_to_string(root().join("examples/gateway-pool.yaml")).unwrap()
        ),
    )
    .unwrap();
    examples.push(both);
    for ex in &examples {
        let rendered = wardengate_operator::render::render(&std::fs::read_to_string(ex).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", ex.display()));
        // One file per object: kubernetes-validate reports per document.
        for (i, o) in rendered.objects.iter().enumerate() {
            let f = dir.path().join(format!(
                "{}-{i}.yaml",
                ex.file_stem().unwrap().to_string_lossy()
            ));
            std::fs::write(&f, serde_yaml::to_string(o).unwrap()).unwrap();
            files.push(f);
        }
    }
    kubernetes_validate(&files);
}

#[test]
fn config_manifests_pass_strict_schema_validation() {
    let mut files = Vec::new();
    for dir in ["rbac", "manager"] {
        for e in std::fs::read_dir(root().join("config").join(dir)).unwrap() {
            let p = e.unwrap().path();
            // Kustomizations are not Kubernetes objects.
            if p.extension().is_some_and(|x| x == "yaml")
                && p.file_name().unwrap() != "kustomization.yaml"
            {
                files.push(p);
            }
        }
    }
    assert!(files.len() >= 7, "{files:?}");
    kubernetes_validate(&files);
}
