//! Attacks against a real replica (TLS, Postgres, Redis), each refused or bounded.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

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

/// A TLS connection to replica 0 of `fleet`, handshake done, nothing sent yet.
async fn tls_connect(fleet: &Fleet) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let ca = std::fs::read_to_string(&fleet.wgctl_env()[1].1).unwrap();
    let config = wardengate::tls::client_config(&ca).unwrap();
    let addr = fleet.replica_addr(0);
    let hostport = addr.trim_start_matches("https://");
    let tcp = tokio::net::TcpStream::connect(hostport).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .unwrap()
}

/// How long until the server closes `s` (reads until EOF or error), at most `within`.
async fn closed_within<S: tokio::io::AsyncRead + Unpin>(
    s: &mut S,
    within: Duration,
) -> Option<Duration> {
    use tokio::io::AsyncReadExt;
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(within.saturating_sub(start.elapsed()), s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

/// Slowloris: connections that never finish the TLS handshake, that dribble a request's headers
/// one byte a second, or that sit idle after a request are all closed within the header-read
/// timeout, while a legitimate client is served throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_clients_are_cut_at_the_header_read_timeout() {
    use tokio::io::AsyncWriteExt;
    let pg = Postgres::start().unwrap();
    let redis = RedisServer::start().unwrap();
    let fleet = Fleet::start(1, &pg.url(), &redis.url(), &["--header-read-timeout", "2s"])
        .await
        .unwrap();
    let hostport = fleet
        .replica_addr(0)
        .trim_start_matches("https://")
        .to_string();
    let bound = Duration::from_secs(6);

    // No handshake at all.
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(tokio::net::TcpStream::connect(&hostport).await.unwrap());
    }
    // Headers dribbled one byte a second.
    let dribbler = tokio::spawn({
        let mut s = tls_connect(&fleet).await;
        async move {
            let start = Instant::now();
            for b in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaa" {
                if s.write_all(&[*b]).await.is_err() || s.flush().await.is_err() {
                    return Some(start.elapsed());
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            None
        }
    });
    // Idle after one request on a kept-alive connection.
    let mut idle = tls_connect(&fleet).await;
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();

    // A legitimate client is served meanwhile.
    let client = fleet.client_for(0);
    for _ in 0..5 {
        let health = client.get_text("/healthz").await.unwrap();
        assert!(health.contains("\"ok\""), "{health}");
    }
    for s in &mut silent {
        let t = closed_within(s, bound).await;
        assert!(
            t.is_some(),
            "a connection without a handshake was kept open"
        );
    }
    let t = closed_within(&mut idle, bound).await;
    assert!(t.is_some(), "an idle kept-alive connection was kept open");
    let cut = tokio::time::timeout(Duration::from_secs(40), dribbler)
        .await
        .unwrap()
        .unwrap();
    assert!(
        cut.is_some_and(|t| t <= bound),
        "a client dribbling headers was served for {cut:?}"
    );
}

/// The connection cap: beyond `--max-connections` a new connection is closed at accept (at
/// once, not after the handshake timeout), counted in `wg_connections_refused_total`, and
/// service resumes as soon as held connections go.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_beyond_the_cap_are_closed_at_accept() {
    let pg = Postgres::start().unwrap();
    let redis = RedisServer::start().unwrap();
    let fleet = Fleet::start(
        1,
        &pg.url(),
        &redis.url(),
        &["--max-connections", "8", "--header-read-timeout", "30s"],
    )
    .await
    .unwrap();
    let hostport = fleet
        .replica_addr(0)
        .trim_start_matches("https://")
        .to_string();
    let client = fleet.client_for(0);
    // Open connections that never handshake (kept by the 30 s deadline) until one is closed at
    // once: that must happen by the cap's 9th connection (the harness may hold a few places).
    let mut held = Vec::new();
    let mut refused_at = None;
    for i in 0..9 {
        let mut s = tokio::net::TcpStream::connect(&hostport).await.unwrap();
        if closed_within(&mut s, Duration::from_millis(500))
            .await
            .is_some()
        {
            refused_at = Some(i);
            break;
        }
        held.push(s);
    }
    assert!(
        refused_at.is_some(),
        "nine connections were accepted with --max-connections 8"
    );
    // While the cap is full, every new connection is closed at once.
    for _ in 0..3 {
        let mut extra = tokio::net::TcpStream::connect(&hostport).await.unwrap();
        let t = closed_within(&mut extra, Duration::from_secs(2)).await;
        assert!(
            t.is_some_and(|t| t < Duration::from_secs(1)),
            "a connection over the cap was not closed at accept: {t:?}"
        );
    }
    drop(held);
    // Places free again: served.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match client.get_text("/healthz").await {
            Ok(t) if t.contains("\"ok\"") => break,
            other => assert!(Instant::now() < deadline, "not served again: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let refused = fleet
        .metric(0, "wg_connections_refused_total")
        .await
        .unwrap_or_default();
    assert!(refused >= 1.0, "refusals not counted: {refused}");
}

/// A request that outlives `--request-timeout` (here: the targets table locked by another
/// transaction) is answered 503 `request_timeout` with `Retry-After` at the deadline, while the
/// long-lived routes (the event stream) are exempt and stay open past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_requests_end_at_the_request_timeout_but_streams_do_not() {
    let pg = Postgres::start().unwrap();
    let redis = RedisServer::start().unwrap();
    let fleet = Fleet::start(1, &pg.url(), &redis.url(), &["--request-timeout", "1s"])
        .await
        .unwrap();
    let client = fleet.client_for(0);
    let _: Value = client.get("/v1/targets").await.unwrap();

    let port = pg.port();
    let locker = std::thread::spawn(move || {
        wardengate_testkit::postgres::psql(
            port,
            "BEGIN; LOCK TABLE targets IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(4); COMMIT;",
        )
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pg
        .sql("SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation WHERE c.relname = 'targets' AND l.mode = 'AccessExclusiveLock' AND l.granted")
        .unwrap()
        .contains('1')
    {
        assert!(Instant::now() < deadline, "the lock was never taken");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let start = Instant::now();
    let e = client.get::<Value>("/v1/targets").await.unwrap_err();
    let took = start.elapsed();
    match e {
        wardengate::client::ClientError::Api {
            status,
            code,
            retry_after,
            ..
        } => {
            assert_eq!((status, code.as_str()), (503, "request_timeout"));
            assert!(retry_after.is_some());
        }
        other => panic!("{other}"),
    }
    assert!(
        took < Duration::from_millis(2500),
        "answered after {took:?}"
    );

    // The event stream outlives the request timeout: still open after 2.5 s.
    let r = tokio::time::timeout(
        Duration::from_millis(2500),
        client.events("/v1/events", None, |_| true),
    )
    .await;
    assert!(r.is_err(), "the event stream ended: {r:?}");
    locker.join().unwrap().unwrap();
}

/// Strangers on 8443 read neither metrics nor status, nor the dependencies' error text in
/// `/readyz` (host names, addresses, driver messages): those need a token. Prometheus can
/// scrape `--metrics-listen` (plain HTTP, `/metrics` only) instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn strangers_see_no_metrics_status_or_dependency_errors() {
    let pg = Postgres::start().unwrap();
    let mut redis = RedisServer::start().unwrap();
    let metrics_port = wardengate_testkit::net::free_port().unwrap();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let fleet = Fleet::start(
        1,
        &pg.url(),
        &redis.url(),
        &["--metrics-listen", &metrics_addr],
    )
    .await
    .unwrap();
    let ca = std::fs::read_to_string(&fleet.wgctl_env()[1].1).unwrap();
    let stranger =
        wardengate::client::Client::new(&fleet.replica_addr(0), Some(&ca), None).unwrap();
    let admin = fleet.client_for(0);
    for path in ["/metrics", "/v1/system/status"] {
        match stranger.get_text(path).await {
            Err(wardengate::client::ClientError::Api { status: 401, .. }) => {}
            other => panic!("{path} without a token: {other:?}"),
        }
        assert!(admin.get_text(path).await.is_ok(), "{path} with a token");
    }
    let plain = reqwest::get(format!("http://{metrics_addr}/metrics"))
        .await
        .unwrap();
    assert_eq!(plain.status(), 200);
    assert!(plain.text().await.unwrap().contains("wg_replica_up"));
    let other = reqwest::get(format!("http://{metrics_addr}/v1/system/status"))
        .await
        .unwrap();
    assert_eq!(other.status(), 404, "the metrics port serves metrics only");

    // Redis gone: the admin reads why, a stranger only that it is unavailable.
    redis.kill9();
    let (detail, _) = Fleet::eventually(
        "/readyz to name the Redis failure",
        Duration::from_secs(20),
        || async {
            let (_, r) = admin.readyz().await.ok()?;
            r.checks?
                .redis
                .error
                .filter(|e| e != wardengate::api::REDACTED)
        },
    )
    .await
    .unwrap();
    let (_, seen) = stranger.readyz().await.unwrap();
    let seen = seen.checks.unwrap().redis;
    assert!(!seen.ok || seen.error.is_some());
    assert_eq!(
        seen.error.as_deref(),
        Some(wardengate::api::REDACTED),
        "a stranger read the error text ({detail})"
    );
}

/// The operator's observer token (`--observer-token-file`, two listed during a rotation) reads
/// `/v1/system/status` (with the dependency verdicts) and `/metrics`, and nothing else: every
/// other endpoint refuses it as an unknown token, and `/readyz` shows it no error text.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_observer_token_reads_status_and_metrics_only() {
    let pg = Postgres::start().unwrap();
    let redis = RedisServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("observer-token");
    let (new, old) = (
        "obs_new_0123456789abcdefghijklmnop",
        "obs_old_0123456789abcdefghijklmnop",
    );
    std::fs::write(&file, format!("{new}\n{old}\n")).unwrap();
    let fleet = Fleet::start(
        1,
        &pg.url(),
        &redis.url(),
        &["--observer-token-file", file.to_str().unwrap()],
    )
    .await
    .unwrap();
    let ca = std::fs::read_to_string(&fleet.wgctl_env()[1].1).unwrap();
    for token in [new, old] {
        let observer = wardengate::client::Client::new(
            &fleet.replica_addr(0),
            Some(&ca),
            Some(token.to_string()),
        )
        .unwrap();
        let status: Value = observer.get("/v1/system/status").await.unwrap();
        assert_eq!(status["owned_sessions"], 0, "{status}");
        assert_eq!(
            status["dependencies"],
            serde_json::json!({"postgres": true, "redis": true}),
            "{status}"
        );
        assert!(
            observer
                .get_text("/metrics")
                .await
                .unwrap()
                .contains("wg_replica_up")
        );
        for (method, path) in [
            (Method::GET, "/v1/targets"),
            (Method::GET, "/v1/sessions"),
            (Method::GET, "/v1/tokens"),
            (Method::GET, "/v1/approvals"),
            (Method::GET, "/v1/targets/anything"),
            (Method::POST, "/v1/system/drain"),
        ] {
            match observer
                .call::<Value, Value>(method.clone(), path, None)
                .await
            {
                Err(wardengate::client::ClientError::Api { status: 401, .. }) => {}
                other => panic!("{method} {path} with the observer token: {other:?}"),
            }
        }
    }
    let near = wardengate::client::Client::new(
        &fleet.replica_addr(0),
        Some(&ca),
        Some("obs_new_0123456789abcdefghijklmnoq".to_string()),
    )
    .unwrap();
    match near.get_text("/v1/system/status").await {
        Err(wardengate::client::ClientError::Api { status: 401, .. }) => {}
        other => panic!("a token one character off: {other:?}"),
    }
    let status: Value = fleet.client_for(0).get("/v1/system/status").await.unwrap();
    assert_eq!(status["draining"], false, "the drain attempts were refused");
}
