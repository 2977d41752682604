//! Attacks against a real replica (TLS, Postgres, Redis), each refused or bounded.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use reqwest::Method;
use serde_json::Value;
use wardengate_e2e::Fleet;
use wardengate_testkit::{Postgres, RedisServer};

/// Unauthenticated input must not mint metric series: 60 invented methods and 60 invented
/// paths leave `wg_http_requests_total` with labels the server defines only.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invented_methods_and_paths_create_no_metric_series() {
    let pg = Postgres::start().unwrap();
    let redis = RedisServer::start().unwrap();
    let fleet = Fleet::start(1, &pg.url(), &redis.url(), &[]).await.unwrap();
    let client = fleet.client_for(0);
    let series = |text: &str| {
        text.lines()
            .filter(|l| l.starts_with("wg_http_requests_total{"))
            .map(String::from)
            .collect::<Vec<_>>()
    };
    let before = series(&client.get_text("/metrics").await.unwrap());
    for i in 0..60 {
        let m = Method::from_bytes(format!("M{i}").as_bytes()).unwrap();
        let _ = client.call::<Value, Value>(m, "/v1/targets", None).await;
        let _ = client.get::<Value>(&format!("/v1/nope-{i}")).await;
    }
    let after = series(&client.get_text("/metrics").await.unwrap());
    for l in &after {
        assert!(
            !l.contains("method=\"M"),
            "an invented method became a label: {l}"
        );
        assert!(!l.contains("nope-"), "an invented path became a label: {l}");
    }
    assert!(
        after.iter().any(|l| l.contains("method=\"other\"")
            && l.contains("route=\"/v1/targets\"")
            && l.contains("code=\"405\"")),
        "{after:#?}"
    );
    assert!(
        after
            .iter()
            .any(|l| l.contains("route=\"unmatched\"") && l.contains("code=\"404\"")),
        "{after:#?}"
    );
    assert!(
        after.len() <= before.len() + 4,
        "series grew from {} to {}: {after:#?}",
        before.len(),
        after.len()
    );
}

/// A drain asking for an absurd window is refused with the reason, and the replica keeps
/// serving (it once panicked on `Instant` overflow).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_absurd_drain_timeout_is_refused_not_a_panic() {
    let pg = Postgres::start().unwrap();
    let redis = RedisServer::start().unwrap();
    let fleet = Fleet::start(1, &pg.url(), &redis.url(), &[]).await.unwrap();
    let client = fleet.client_for(0);
    let e = client
        .call::<Value, Value>(
            Method::POST,
            "/v1/system/drain?timeout=500000000years",
            None,
        )
        .await
        .unwrap_err();
    match e {
        wardengate::client::ClientError::Api { status, code, .. } => {
            assert_eq!((status, code.as_str()), (400, "invalid_timeout"))
        }
        other => panic!("{other}"),
    }
    let status: Value = client.get("/v1/system/status").await.unwrap();
    assert_eq!(status["draining"], false, "{status}");
}
