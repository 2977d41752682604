//! Token lifetime and the limits around authentication and sessions, attacked against real
//! replicas (TLS, Postgres, Redis): expired, revoked and rotated-out tokens are refused (an
//! open event stream included), a bad-token flood is rate limited without failing readiness,
//! and per-token and per-replica session limits answer with `Retry-After`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use wardengate::client::{Client, ClientError};
use wardengate_e2e::Fleet;
use wardengate_testkit::{Postgres, RedisServer};

/// The code and `Retry-After` of an API error (panics on anything else).
fn api(e: ClientError) -> (u16, String, Option<u64>) {
    match e {
        ClientError::Api {
            status,
            code,
            retry_after,
            ..
        } => (status, code.as_str().to_string(), retry_after),
        other => panic!("expected an API error, got {other}"),
    }
}

/// True when `r` is an API error with `code`.
fn refused_with<T>(r: Result<T, ClientError>, code: &str) -> bool {
    matches!(r, Err(ClientError::Api { code: c, .. }) if c.as_str() == code)
}

async fn new_token(admin: &Client, role: &str, ttl: Option<u64>) -> (String, String) {
    let mut body = json!({"role": role});
    if let Some(t) = ttl {
        body["ttl_seconds"] = json!(t);
    }
    let t: Value = admin
        .call(Method::POST, "/v1/tokens", Some(&body))
        .await
        .unwrap();
    (
        t["id"].as_str().unwrap().to_string(),
        t["token"].as_str().unwrap().to_string(),
    )
}

/// Polls `f` every 50 ms until it returns true; how long that took, or `None` after `within`.
async fn time_until<F, Fut>(within: Duration, mut f: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < within {
        if f().await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// An expired token is refused with `token_expired`; a revoked one with `token_revoked` on the
/// replica that revoked it at once and on another replica within the 2 s cache bound; the
/// event stream it holds open there ends within the bound too; `wgctl tokens` lists and
/// revokes without ever showing a secret, and a refused token makes `wgctl` exit 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expired_and_revoked_tokens_are_refused_everywhere_including_an_open_event_stream() {
    let pg = Postgres::start().unwrap();
    let redis = RedisServer::start().unwrap();
    let fleet = Fleet::start(2, &pg.url(), &redis.url(), &[]).await.unwrap();
    let r0 = fleet.client_for(0);

    // A TTL outside 1 min..366 d is refused with its own code.
    let e = r0
        .call::<Value, Value>(
            Method::POST,
            "/v1/tokens",
            Some(&json!({"role": "user", "ttl_seconds": 5})),
        )
        .await
        .unwrap_err();
    assert_eq!(api(e).1, "invalid_ttl");

    // Expiry: a token that worked stops working once its time has come (moved forward in
    // Postgres rather than waiting the one-minute minimum).
    let (exp_id, exp_secret) = new_token(&r0, "user", Some(60)).await;
    let expiring = fleet.client_with(&fleet.replica_addr(1), &exp_secret);
    expiring.targets().await.unwrap();
    pg.sql(&format!(
        "UPDATE tokens SET expires_at = 1 WHERE id = '{exp_id}'"
    ))
    .unwrap();
    let took = time_until(Duration::from_secs(6), || async {
        refused_with(expiring.targets().await, "token_expired")
    })
    .await
    .expect("an expired token kept working");
    println!("expired token refused after {took:?} (bound: the 2 s token cache)");

    // Revocation across replicas, with an event stream open on the other replica.
    let (rev_id, rev_secret) = new_token(&r0, "approver", None).await;
    let holder = fleet.client_with(&fleet.replica_addr(1), &rev_secret);
    holder.approvals().await.unwrap(); // cached on r1 now
    let stream = {
        let holder = holder.clone();
        tokio::spawn(async move {
            let r = holder.events("/v1/events", None, |_| true).await;
            (Instant::now(), r)
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!stream.is_finished(), "the event stream did not stay open");
    let on_r0 = fleet.client_with(&fleet.replica_addr(0), &rev_secret);
    on_r0.approvals().await.unwrap();

    let out = fleet
        .wgctl(&["tokens", "revoke", &rev_id])
        .envs(fleet.wgctl_env_for(0))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let revoked_at = Instant::now();
    // The replica that revoked it refuses it on the very next request.
    assert_eq!(api(on_r0.approvals().await.unwrap_err()).1, "token_revoked");
    let took = time_until(Duration::from_secs(8), || async {
        refused_with(holder.approvals().await, "token_revoked")
    })
    .await
    .expect("the other replica kept accepting a revoked token");
    let (ended, result) = tokio::time::timeout(Duration::from_secs(8), stream)
        .await
        .expect("the event stream outlived the revocation")
        .unwrap();
    let stream_took = ended - revoked_at;
    println!(
        "revoked token: refused on the other replica after {took:?}, its event stream closed after {stream_took:?} (bounds 2 s and 2.25 s)"
    );
    assert!(result.is_ok(), "{result:?}");
    assert!(took < Duration::from_secs(4), "{took:?}");
    assert!(stream_took < Duration::from_secs(5), "{stream_took:?}");

    // The list shows states and never a secret.
    let out = fleet
        .wgctl(&["tokens", "list", "-o", "json"])
        .envs(fleet.wgctl_env())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(!text.contains(&rev_secret) && !text.contains(&exp_secret));
    let list: Vec<Value> = serde_json::from_str(&text).unwrap();
    let state = |id: &str| {
        list.iter()
            .find(|t| t["id"] == id)
            .map(|t| t["state"].as_str().unwrap().to_string())
    };
    assert_eq!(state(&rev_id).as_deref(), Some("revoked"));
    assert_eq!(state(&exp_id).as_deref(), Some("expired"));
    assert!(list.iter().any(|t| t["last_used_at"].is_i64()), "{text}");

    // wgctl with a refused token exits 3.
    let out = fleet
        .wgctl(&["targets", "list"])
        .envs(fleet.wgctl_env())
        .env_remove("WG_TOKEN_FILE")
        .env("WG_TOKEN", &rev_secret)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // wgctl tokens create --ttl sets an expiry.
    let out = fleet
        .wgctl(&[
            "tokens", "create", "--role", "user", "--ttl", "2h", "-o", "json",
        ])
        .envs(fleet.wgctl_env())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    let in_ms = created["expires_at"].as_i64().unwrap() - wardengate::store::now_ms();
    assert!((7_100_000..=7_200_000).contains(&in_ms), "{created}");
}

/// Rotating the bootstrap admin token file and restarting kills the old token.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rotated_bootstrap_token_is_refused_after_restart() {
    let pg = Postgres::start().unwrap();
    let redis = RedisServer::start().unwrap();
    let mut fleet = Fleet::start(1, &pg.url(), &redis.url(), &[]).await.unwrap();
    let old = fleet.rotate_admin_token().unwrap();
    fleet.kill9(0);
    fleet.start_replica(0).unwrap();
    fleet.wait_ready(0, Duration::from_secs(60)).await.unwrap();
    let with_old = fleet.client_with(&fleet.replica_addr(0), &old);
    assert_eq!(
        api(with_old.targets().await.unwrap_err()).1,
        "token_revoked"
    );
    fleet.client_for(0).targets().await.unwrap();
}

/// A reqwest client that connects from `local` (any 127.0.0.0/8 address reaches the replica),
/// so the flood and the legitimate client are different client addresses.
fn http_from(fleet: &Fleet, local: IpAddr) -> reqwest::Client {
    let tls = wardengate::tls::client_config(&fleet.ca_pem()).unwrap();
    reqwest::Client::builder()
        .tls_backend_preconfigured((*tls).clone())
        .local_address(local)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn p50(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// 64 connections send random bearer tokens as fast as they can for 6 s from one address:
/// after its refused-token allowance that address gets 429 with `Retry-After` and no database
/// lookups, `/readyz` stays 200 throughout, and a legitimate client on another address keeps
/// its latency (database-backed requests, p50 measured before and during the flood).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bad_token_flood_is_rate_limited_while_readiness_and_legitimate_latency_hold() {
    let pg = Postgres::start().unwrap();
    let redis = RedisServer::start().unwrap();
    let fleet = Fleet::start(1, &pg.url(), &redis.url(), &[]).await.unwrap();
    let base = fleet.replica_addr(0);
    let legit = fleet.client_for(0);
    let legit_http = http_from(&fleet, "127.0.0.2".parse().unwrap());
    let admin = format!("Bearer {}", {
        let (_, t) = new_token(&legit, "admin", None).await;
        t
    });
    let timed = |http: reqwest::Client, url: String, auth: String| async move {
        let t = Instant::now();
        let r = http
            .get(url)
            .header("authorization", auth)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        t.elapsed()
    };
    let mut before = Vec::new();
    for _ in 0..30 {
        before.push(
            timed(
                legit_http.clone(),
                format!("{base}/v1/sessions"),
                admin.clone(),
            )
            .await,
        );
    }

    // 1,000 slow clients from another address hold connections through the whole flood: one
    // byte of a TLS handshake each, never the rest (cut at the 10 s header-read timeout).
    let port: u16 = base.rsplit(':').next().unwrap().parse().unwrap();
    let mut slow = Vec::new();
    for _ in 0..1000 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(([127, 0, 0, 3], 0).into()).unwrap();
        let mut s = socket.connect(([127, 0, 0, 1], port).into()).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut s, &[0x16])
            .await
            .unwrap();
        slow.push(s);
    }

    let flood_for = Duration::from_secs(6);
    let flood_http = http_from(&fleet, "127.0.0.1".parse().unwrap());
    let mut flooders = Vec::new();
    for _ in 0..64 {
        let (http, url) = (flood_http.clone(), format!("{base}/v1/targets"));
        flooders.push(tokio::spawn(async move {
            let (mut unauthorized, mut limited, mut other) = (0u64, 0u64, 0u64);
            let mut retry_after_seen = false;
            let start = Instant::now();
            while start.elapsed() < flood_for {
                let bad = wardengate::token::generate();
                match http.get(&url).bearer_auth(bad).send().await {
                    Ok(r) if r.status() == 401 => unauthorized += 1,
                    Ok(r) if r.status() == 429 => {
                        limited += 1;
                        retry_after_seen |= r.headers().contains_key("retry-after");
                    }
                    _ => other += 1,
                }
            }
            (unauthorized, limited, other, retry_after_seen)
        }));
    }
    let ready_http = flood_http.clone();
    let probe = {
        let url = format!("{base}/readyz");
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0, 0);
            let start = Instant::now();
            while start.elapsed() < flood_for {
                match ready_http.get(&url).send().await {
                    Ok(r) if r.status() == 200 => ok += 1,
                    _ => failed += 1,
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            (ok, failed)
        })
    };
    let mut during = Vec::new();
    let start = Instant::now();
    while start.elapsed() < flood_for - Duration::from_secs(1) {
        during.push(
            timed(
                legit_http.clone(),
                format!("{base}/v1/sessions"),
                admin.clone(),
            )
            .await,
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (mut unauthorized, mut limited, mut other, mut retry_after) = (0, 0, 0, true);
    for f in flooders {
        let (u, l, o, r) = f.await.unwrap();
        unauthorized += u;
        limited += l;
        other += o;
        retry_after &= r || l == 0;
    }
    let (ready_ok, ready_failed) = probe.await.unwrap();
    let (p_before, p_during) = (p50(before), p50(during.clone()));
    println!(
        "{} slow connections held and a bad-token flood, 64 connections for {flood_for:?}: {} refused as unauthorized (database lookups), {limited} rate limited (429), {other} other; /readyz {ready_ok} ok, {ready_failed} failed; legitimate GET /v1/sessions p50 {p_before:?} before, {p_during:?} during ({} samples)",
        slow.len(),
        unauthorized,
        during.len()
    );
    drop(slow);
    assert_eq!(ready_failed, 0, "/readyz failed during the flood");
    assert!(limited > 0, "the flood was never rate limited");
    assert!(retry_after, "a 429 came without Retry-After");
    // Default --auth-failures-per-ip 2/s:30: the burst plus the refill, with room for races.
    assert!(
        unauthorized <= 30 + 2 * flood_for.as_secs() + 16,
        "{unauthorized} bad tokens reached the database"
    );
    assert!(
        p_during < Duration::from_secs(1),
        "legitimate p50 {p_during:?}"
    );
    // Read from another address: 127.0.0.1 is still blocked for uncached tokens, and /metrics
    // needs one.
    let metrics = fleet
        .client_for(0)
        .bind_local("127.0.0.2".parse().unwrap())
        .unwrap()
        .get_text("/metrics")
        .await
        .unwrap();
    let counted: f64 = metrics
        .lines()
        .find(|l| l.starts_with("wg_rate_limited_total{") && l.contains("limit=\"auth_failures\""))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0);
    assert!(counted > 0.0, "refusals not counted");
}

/// Per-token cap and session rate: 429 `too_many_sessions`, then `session_rate_limited`, each
/// with `Retry-After`, on both the session API and the one-request relay; another token is
/// unaffected; a replica at its relay cap answers 503 `replica_at_capacity`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn session_caps_and_rates_answer_with_retry_after() {
    let pg = Postgres::start().unwrap();
    let redis = RedisServer::start().unwrap();
    let echo = wardengate_e2e::echo_server().await;
    let fleet = Fleet::start(
        1,
        &pg.url(),
        &redis.url(),
        &[
            "--max-sessions-per-token",
            "3",
            "--session-rate-per-token",
            "1/m:4",
            "--max-relays",
            "1",
        ],
    )
    .await
    .unwrap();
    let admin = fleet.client_for(0);
    admin
        .call::<Value, Value>(
            Method::POST,
            "/v1/targets",
            Some(&json!({"name": "echo", "host": "127.0.0.1", "port": echo})),
        )
        .await
        .unwrap();
    let (_, secret) = new_token(&admin, "user", None).await;
    let user = fleet.client_with(&fleet.replica_addr(0), &secret);
    for _ in 0..3 {
        user.create_session("echo").await.unwrap();
    }
    let (status, code, retry) = api(user.create_session("echo").await.unwrap_err());
    assert_eq!((status, code.as_str()), (429, "too_many_sessions"));
    assert!(retry.is_some());
    let (status, code, retry) = api(user.create_session("echo").await.unwrap_err());
    assert_eq!((status, code.as_str()), (429, "session_rate_limited"));
    assert!(retry.is_some_and(|s| (1..=60).contains(&s)), "{retry:?}");
    let (status, code, _) = api(user.open_target_relay("echo").await.unwrap_err());
    assert_eq!((status, code.as_str()), (429, "session_rate_limited"));

    // The replica's relay cap: the admin holds the only place.
    let (_held, _) = admin.open_target_relay("echo").await.unwrap();
    let (status, code, retry) = api(admin.open_target_relay("echo").await.unwrap_err());
    assert_eq!((status, code.as_str()), (503, "replica_at_capacity"));
    assert!(retry.is_some());
    for limit in ["token_sessions", "session_rate", "replica_relays"] {
        let n = fleet
            .metric_labeled(0, "wg_rate_limited_total", &format!("limit=\"{limit}\""))
            .await
            .unwrap_or(0.0);
        assert!(n >= 1.0, "{limit} not counted");
    }
}
