//! Custom resources as a user applies them: a `WardengateCluster` or `GatewayPool` from
//! arbitrary JSON or YAML bytes, then the operator's validation (the CEL admission rules run
//! client-side and the checks beyond them). Never a panic; an accepted cluster has sane derived
//! values. The first byte picks the kind (bit 0) and the format (bit 1).
#![no_main]

use libfuzzer_sys::fuzz_target;
use wardengate_crds::{GatewayPool, WardengateCluster};
use wardengate_operator::validate::{validate, validate_pool};

fn decode<T: serde::de::DeserializeOwned>(yaml: bool, bytes: &[u8]) -> Option<T> {
    if yaml {
        serde_yaml::from_slice(bytes).ok()
    } else {
        serde_json::from_slice(bytes).ok()
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let yaml = mode & 2 != 0;
    if mode & 1 == 0 {
        if let Some(c) = decode::<WardengateCluster>(yaml, rest)
            && let Ok(v) = validate(&c)
        {
            assert!(v.grace_seconds >= 0, "negative grace {}", v.grace_seconds);
            let total: i64 = v.placements.iter().map(|(_, n)| i64::from(*n)).sum();
            assert_eq!(total, i64::from(v.spec.replicas), "{:?}", v.placements);
        }
    } else if let Some(p) = decode::<GatewayPool>(yaml, rest) {
        let _ = validate_pool(&p);
    }
});
