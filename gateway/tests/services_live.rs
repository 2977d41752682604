//! Live state against real Redis: standalone, Sentinel (with a real failover) and Cluster URLs.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::time::{Duration, Instant};

use wardengate::live::{Live, RedisLive, Swap, session_key};
use wardengate::metrics::Metrics;
use wardengate::redis_url::RedisTarget;
use wardengate::session::{Grant, GrantState};
use wardengate::signing::{Keyring, SigningError};
use wardengate::store::now_ms;
use wardengate_testkit::{RedisCluster, RedisSentinel, RedisServer};

async fn connect(url: &str) -> (Live, Metrics) {
    let m = Metrics::new("test");
    let live = RedisLive::connect(RedisTarget::parse(url).unwrap(), m.clone())
        .await
        .unwrap();
    (Live::Redis(live), m)
}

fn grant(id: &str) -> Grant {
    Grant {
        session_id: id.into(),
        token_id: "t".into(),
        target: "db".into(),
        host: "127.0.0.1".into(),
        port: 5432,
        state: GrantState::Authorized,
        replica: None,
        expires_at_ms: now_ms() + 60_000,
        terminated_by: None,
    }
}

async fn exercise(live: &Live) {
    let keys = Keyring::parse(&Keyring::generate_file("k1")).unwrap();
    for i in 0..20 {
        let id = format!("s{i}");
        live.set(
            &session_key(&id),
            &keys.sign(&grant(&id)),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    }
    for i in 0..20 {
        let id = format!("s{i}");
        let signed = live.get(&session_key(&id)).await.unwrap().unwrap();
        assert_eq!(
            keys.verify::<Grant>(&signed, now_ms()).unwrap().session_id,
            id
        );
    }
    assert!(
        live.expire(&session_key("s1"), Duration::from_secs(60))
            .await
            .unwrap()
    );
    live.del(&session_key("s1")).await.unwrap();
    assert!(live.get(&session_key("s1")).await.unwrap().is_none());
    assert!(
        !live
            .expire(&session_key("s1"), Duration::from_secs(60))
            .await
            .unwrap()
    );
    live.heartbeat("r1", "{}").await.unwrap();
    live.heartbeat("r2", "{}").await.unwrap();
    assert_eq!(live.heartbeats().await.unwrap().len(), 2);
    compare_and_set(live).await;
}

/// The relay's renewals and its authorised → active write are compare-and-set: a value written
/// meanwhile (a terminate) is reported, never overwritten.
async fn compare_and_set(live: &Live) {
    let key = session_key("cas");
    let ttl = Duration::from_secs(30);
    live.set(&key, "authorized", ttl).await.unwrap();
    assert_eq!(
        live.compare_and_set(&key, "authorized", "active-1", ttl)
            .await
            .unwrap(),
        Swap::Swapped
    );
    assert_eq!(live.get(&key).await.unwrap().as_deref(), Some("active-1"));
    // A terminate lands; the next renewal must not overwrite it.
    live.set(&key, "terminated", ttl).await.unwrap();
    assert_eq!(
        live.compare_and_set(&key, "active-1", "active-2", ttl)
            .await
            .unwrap(),
        Swap::Current(Some("terminated".into()))
    );
    assert_eq!(live.get(&key).await.unwrap().as_deref(), Some("terminated"));
    live.del(&key).await.unwrap();
    assert_eq!(
        live.compare_and_set(&key, "terminated", "x", ttl)
            .await
            .unwrap(),
        Swap::Current(None)
    );
    assert!(live.get(&key).await.unwrap().is_none());
    // The swap sets the TTL too.
    live.set(&key, "a", ttl).await.unwrap();
    live.compare_and_set(&key, "a", "b", Duration::from_millis(300))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while live.get(&key).await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "the swapped key did not expire");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn standalone_url() {
    let r = RedisServer::start().unwrap();
    let (live, _) = connect(&r.url()).await;
    exercise(&live).await;
}

#[tokio::test]
async fn tampered_state_written_behind_our_back_is_rejected() {
    let r = RedisServer::start().unwrap();
    let (live, _) = connect(&r.url()).await;
    let keys = Keyring::parse(&Keyring::generate_file("k1")).unwrap();
    let key = session_key("s1");
    live.set(&key, &keys.sign(&grant("s1")), Duration::from_secs(30))
        .await
        .unwrap();
    // Someone with Redis access points the session at another host.
    let stored = r.cli(&["get", &key]).unwrap();
    r.cli(&["set", &key, &stored.replace("127.0.0.1", "10.9.9.9")])
        .unwrap();
    let signed = live.get(&key).await.unwrap().unwrap();
    assert_eq!(
        keys.verify::<Grant>(&signed, now_ms()).unwrap_err(),
        SigningError::BadSignature
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_url_follows_a_promotion_and_counts_it() {
    let mut s = RedisSentinel::start(Some("pw")).unwrap();
    let (live, metrics) = connect(&s.url()).await;
    exercise(&live).await;
    let old = s.master_port().unwrap();
    s.kill_master();
    let start = Instant::now();
    let deadline = Duration::from_secs(30);
    // Writes fail while there is no primary, then work again once Sentinel promotes a replica.
    loop {
        let ok = live.ping().await.is_ok()
            && live
                .set("wg:probe", "1", Duration::from_secs(10))
                .await
                .is_ok();
        if ok && s.master_port().is_some_and(|p| p != old) {
            break;
        }
        assert!(
            start.elapsed() < deadline,
            "no writable primary after {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "writes through sentinel:// resumed {:?} after the primary was killed",
        start.elapsed()
    );
    assert!(
        metrics.redis_failover_total.get() >= 1,
        "failover not counted"
    );
    assert_eq!(live.get("wg:probe").await.unwrap().as_deref(), Some("1"));
}

#[tokio::test]
async fn cluster_url() {
    let c = RedisCluster::start(3, 0).unwrap();
    let (live, _) = connect(&c.url()).await;
    exercise(&live).await;
}

#[tokio::test]
async fn leases_are_exclusive_and_token_checked() {
    let r = RedisServer::start().unwrap();
    let (live, _) = connect(&r.url()).await;
    let ttl = Duration::from_secs(5);
    assert!(live.lease_acquire("wg:lease:x", "a", ttl).await.unwrap());
    assert!(
        !live.lease_acquire("wg:lease:x", "b", ttl).await.unwrap(),
        "second holder"
    );
    assert!(
        !live.lease_renew("wg:lease:x", "b", ttl).await.unwrap(),
        "renewed someone else's lease"
    );
    assert!(live.lease_renew("wg:lease:x", "a", ttl).await.unwrap());
    live.lease_release("wg:lease:x", "b").await.unwrap();
    assert!(
        !live.lease_acquire("wg:lease:x", "b", ttl).await.unwrap(),
        "released by a non-holder"
    );
    live.lease_release("wg:lease:x", "a").await.unwrap();
    assert!(live.lease_acquire("wg:lease:x", "b", ttl).await.unwrap());
}
