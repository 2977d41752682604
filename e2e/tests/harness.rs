//! The harness proves itself: every fixture starts real servers, fault injection really fails
//! them, and nothing outlives a fixture.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::process::Command;
use std::time::Duration;

use wardengate_testkit::haproxy::{Backend, HaProxy, HealthCheck};
use wardengate_testkit::net::port_open;
use wardengate_testkit::process::run;
use wardengate_testkit::{
    PatroniCluster, PatroniTiming, Postgres, PostgresPair, RedisCluster, RedisSentinel,
    RedisServer, Sshd,
};

#[test]
fn postgres_starts_answers_and_is_gone_after_drop() {
    let pg = Postgres::start().unwrap();
    assert!(
        pg.sql("select version()")
            .unwrap()
            .starts_with("PostgreSQL 15")
    );
    let port = pg.port();
    drop(pg);
    assert!(!port_open(port), "postgres still listening after drop");
}

#[test]
fn fixture_is_cleaned_up_when_the_test_panics() {
    let port = std::sync::Mutex::new(0u16);
    let outcome = std::panic::catch_unwind(|| {
        let r = RedisServer::start().unwrap();
        *port.lock().unwrap() = r.port();
        panic!("simulated test failure");
    });
    assert!(outcome.is_err());
    let port = *port.lock().unwrap();
    assert!(
        port != 0 && !port_open(port),
        "redis on {port} survived the panic"
    );
}

#[test]
fn sync_pair_replicates_and_survives_primary_kill9() {
    let mut pair = PostgresPair::start().unwrap();
    pair.primary
        .sql("create table t(v int); insert into t values (1), (2)")
        .unwrap();
    // Synchronous: the commit returned, so the standby already has the rows.
    assert_eq!(pair.standby.sql("select count(*) from t").unwrap(), "2");
    pair.primary.kill9();
    let took = pair.promote_standby().unwrap();
    pair.standby.sql("insert into t values (3)").unwrap();
    assert_eq!(
        pair.standby
            .sql("select string_agg(v::text, ',' order by v) from t")
            .unwrap(),
        "1,2,3"
    );
    eprintln!("promotion after primary kill -9 took {took:?}");
}

#[test]
fn patroni_failover_is_observed_through_haproxy() {
    let mut c = PatroniCluster::start(2, PatroniTiming::default()).unwrap();
    c.sql("create table kept(v int); insert into kept values (42)")
        .unwrap();
    let old = c.leader().expect("a leader");
    c.kill_member(old);
    let (new, took) = c.wait_for_failover(old, Duration::from_secs(40)).unwrap();
    assert_ne!(new, old);
    // Synchronous mode: the row committed before the kill is on the new primary.
    assert_eq!(c.sql("select v from kept").unwrap(), "42");
    eprintln!("patroni failover (ttl 5) to a write through haproxy took {took:?}");
}

#[test]
fn sentinel_failover_is_observed() {
    let mut s = RedisSentinel::start(Some("s3cret")).unwrap();
    let old_port = s.master_port().unwrap();
    let old = s.master_index().unwrap();
    assert_eq!(s.servers[old].cli(&["set", "kept", "yes"]).unwrap(), "OK");
    // Make sure both replicas have it before the primary dies (replication is asynchronous).
    assert_eq!(s.servers[old].cli(&["wait", "2", "5000"]).unwrap(), "2");
    s.kill_master();
    let (new, took) = s
        .wait_for_new_master(old_port, Duration::from_secs(30))
        .unwrap();
    assert_ne!(new, old);
    assert_eq!(s.servers[new].cli(&["get", "kept"]).unwrap(), "yes");
    assert!(s.url().starts_with("sentinel://:s3cret@127.0.0.1:"));
    eprintln!("sentinel promotion after kill -9 took {took:?}");
}

#[test]
fn redis_cluster_serves_keys_across_slots() {
    let c = RedisCluster::start(3, 0).unwrap();
    for k in ["a", "b", "c", "session:1", "session:2"] {
        assert_eq!(c.nodes[0].cli(&["-c", "set", k, "v"]).unwrap(), "OK");
        assert_eq!(c.nodes[1].cli(&["-c", "get", k]).unwrap(), "v");
    }
    assert!(c.url().ends_with("?cluster=true"));
}

#[test]
fn sshd_accepts_a_key_login_directly_and_through_an_l4_balancer() {
    let sshd = Sshd::start().unwrap();
    let out = run(
        &mut sshd.ssh("echo hello from $USER").unwrap(),
        Duration::from_secs(30),
    )
    .unwrap();
    assert_eq!(out, format!("hello from {}", sshd.user()));
    let lb = HaProxy::tcp(&[Backend::new("sshd", sshd.port())], HealthCheck::Tcp).unwrap();
    let out = run(
        &mut sshd.ssh_through_port(lb.port(), "echo via lb").unwrap(),
        Duration::from_secs(30),
    )
    .unwrap();
    assert_eq!(out, "via lb");
    // Another key is refused: the login really checks the key.
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other");
    run(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&other),
        Duration::from_secs(10),
    )
    .unwrap();
    let mut cmd = Command::new("ssh");
    cmd.arg("-i")
        .arg(&other)
        .args(["-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes"])
        .args([
            "-o",
            &format!("UserKnownHostsFile={}", sshd.known_hosts().display()),
        ])
        .args([
            "-p",
            &sshd.port().to_string(),
            &format!("{}@127.0.0.1", sshd.user()),
            "true",
        ]);
    assert!(run(&mut cmd, Duration::from_secs(30)).is_err());
}
