//! The checked-in OpenAPI document (`gateway/openapi.json`, what users generate clients from)
//! is exactly what the code generates. After an API change, regenerate it with
//! `UPDATE_OPENAPI=1 cargo test -p wardengate --test openapi` and commit the result.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::path::PathBuf;

fn checked_in() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("openapi.json")
}

#[test]
fn checked_in_document_matches_the_code() {
    let generated = wardengate::openapi::json();
    let path = checked_in();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, generated).unwrap();
        eprintln!("wrote {}", path.display());
        return;
    }
    let stored = std::fs::read_to_string(&path).unwrap_or_default();
    if stored != generated {
        let first = stored
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| stored.lines().count().min(generated.lines().count()));
        panic!(
            "{} is out of date with the API types (first difference at line {}: \
             checked in {:?}, generated {:?}).\nRegenerate it with \
             `UPDATE_OPENAPI=1 cargo test -p wardengate --test openapi` and commit it.",
            path.display(),
            first + 1,
            stored.lines().nth(first).unwrap_or("<end>"),
            generated.lines().nth(first).unwrap_or("<end>"),
        );
    }
}

#[test]
fn document_describes_the_api_from_its_types() {
    let doc: serde_json::Value = serde_json::from_str(wardengate::openapi::json()).unwrap();
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/v1/sessions",
        "/v1/sessions/{id}",
        "/v1/sessions/{id}/relay",
        "/v1/targets",
        "/v1/approvals/{id}/approve",
        "/v1/openapi.json",
        "/healthz",
    ] {
        assert!(paths.contains_key(p), "{p} missing");
    }
    let schemas = &doc["components"]["schemas"];
    // The view, not the row: require_approval is a boolean.
    assert_eq!(
        schemas["TargetView"]["properties"]["require_approval"]["type"],
        "boolean"
    );
    assert!(schemas.get("TargetRow").is_none() && schemas.get("SessionRow").is_none());
    // Session status is the closed set the server writes.
    let status: Vec<&str> = schemas["SessionStatus"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(
        status.contains(&"pending") && status.contains(&"ended"),
        "{status:?}"
    );
    // Error codes are an open set: described, not an enum a generated client would enforce.
    let code = &schemas["ErrorCode"];
    assert_eq!(code["type"], "string");
    assert!(code.get("enum").is_none(), "{code}");
    assert!(
        code["description"]
            .as_str()
            .is_some_and(|d| d.contains("target_unreachable")),
        "{code}"
    );
    // Authenticated operations name the bearer scheme; the probes do not.
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert!(
        doc["paths"]["/v1/sessions"]["post"]["security"][0]
            .get("bearer")
            .is_some()
    );
    assert!(doc["paths"]["/healthz"]["get"].get("security").is_none());
    // Every response says what it means (OpenAPI requires a description).
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            for (code, resp) in op["responses"].as_object().unwrap() {
                assert!(
                    resp["description"].as_str().is_some_and(|d| !d.is_empty()),
                    "{method} {path} {code} has no description"
                );
            }
        }
    }
}
