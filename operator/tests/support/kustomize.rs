//! A small `kustomize build`: resources (files or bases) and the `namespace` override — all
//! that `config/` uses.

use std::path::Path;

use serde_yaml::Value;

/// The objects `kustomize build dir` would print.
pub fn build(dir: &Path) -> Vec<Value> {
    let k: Value =
        serde_yaml::from_str(&std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap())
            .unwrap();
    let mut out = Vec::new();
    for r in k["resources"].as_sequence().unwrap() {
        let p = dir.join(r.as_str().unwrap());
        assert!(
            p.exists(),
            "{} lists {} which does not exist",
            dir.display(),
            p.display()
        );
        if p.is_dir() {
            out.extend(build(&p));
        } else {
            for doc in serde_yaml::Deserializer::from_str(&std::fs::read_to_string(&p).unwrap()) {
                let v: Value = serde::Deserialize::deserialize(doc).unwrap();
                if !v.is_null() {
                    out.push(v);
                }
            }
        }
    }
    if let Some(ns) = k["namespace"].as_str() {
        for o in &mut out {
            let cluster_scoped = matches!(
                o["kind"].as_str(),
                Some(
                    "Namespace" | "ClusterRole" | "ClusterRoleBinding" | "CustomResourceDefinition"
                )
            );
            if !cluster_scoped {
                o["metadata"]["namespace"] = Value::from(ns);
            }
        }
    }
    out
}
