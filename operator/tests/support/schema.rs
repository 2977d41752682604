//! Strict offline validation of manifests against the upstream Kubernetes 1.37 schemas with
//! `kubernetes-validate --strict` (installed into `.tools/py` by `./task deps`). A WARN (for
//! example an unknown kind) counts as a failure.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The Kubernetes version every manifest is validated against.
pub const KUBE_VERSION: &str = "1.37.0";

/// Panics, with the validator's report, unless every object in `files` is strict-valid.
pub fn kubernetes_validate(files: &[PathBuf]) {
    let py = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/py");
    let out = Command::new("python3")
        .args(["-m", "kubernetes_validate", "--strict", "-k", KUBE_VERSION])
        .args(files)
        .env("PYTHONPATH", &py)
        .output()
        .expect("python3");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !text.contains("No module named kubernetes_validate"),
        "kubernetes-validate is not installed: run `./task deps` (pip install --target .tools/py kubernetes-validate)"
    );
    assert!(
        out.status.success() && !text.contains("WARN") && !text.contains("ERROR"),
        "{text}"
    );
}
