//! Failovers of the dependencies under a running fleet: a Redis Sentinel promotion and a
//! Patroni leader kill, each with SIGKILL. New sessions work again within seconds; while there is
//! no Postgres primary they are refused with 503 + Retry-After, never left hanging; no history
//! is lost.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::time::{Duration, Instant};

use wardengate::client::ClientError;
use wardengate::session::SessionStatus;
use wardengate::wire::{ErrorCode, SessionView};
use wardengate_e2e::{Fleet, proxy_command};
use wardengate_testkit::process::run;
use wardengate_testkit::sshd::HOST_ALIAS;
use wardengate_testkit::{
    PatroniCluster, PatroniTiming, Postgres, RedisSentinel, RedisServer, Sshd,
};

fn ssh_echo(
    fleet: &Fleet,
    sshd: &Sshd,
    word: &str,
) -> Result<String, wardengate_testkit::TestkitError> {
    let mut ssh = sshd
        .ssh_via(&proxy_command(), &format!("echo {word}"))
        .unwrap();
    ssh.envs(fleet.wgctl_env());
    run(&mut ssh, Duration::from_secs(60))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sentinel_promotion_under_a_running_fleet() {
    let pg = Postgres::start().unwrap();
    let mut sentinel = RedisSentinel::start(Some("pw")).unwrap();
    let sshd = Sshd::start().unwrap();
    let fleet = Fleet::start(2, &pg.url(), &sentinel.url(), &[])
        .await
        .unwrap();
    fleet.add_ssh_target(&sshd).unwrap();
    assert_eq!(ssh_echo(&fleet, &sshd, "before").unwrap(), "before");

    sentinel.kill_master();
    let killed = Instant::now();
    // wgctl retries 503s for 30 s per attempt; the first session that works marks recovery.
    let mut attempts = 0;
    loop {
        attempts += 1;
        if ssh_echo(&fleet, &sshd, "after").is_ok_and(|o| o == "after") {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "no session after the promotion"
        );
    }
    let recovered = killed.elapsed();
    let (_, _) = Fleet::eventually(
        "a replica to count the failover",
        Duration::from_secs(15),
        || {
            let f = &fleet;
            async move {
                let a = f.metric(0, "wg_redis_failover_total").await.unwrap_or(0.0);
                let b = f.metric(1, "wg_redis_failover_total").await.unwrap_or(0.0);
                (a + b >= 1.0).then_some(())
            }
        },
    )
    .await
    .unwrap();
    eprintln!(
        "sentinel promotion: new sessions work {recovered:?} after kill -9 of the Redis primary ({attempts} attempt(s); down-after 1 s)"
    );
    let sessions = fleet.client(&fleet.lb_addr()).sessions(None).await.unwrap();
    assert!(
        sessions
            .iter()
            .filter(|s| s.status == SessionStatus::Ended)
            .count()
            >= 2,
        "history lost: {sessions:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn patroni_leader_kill_under_a_running_fleet() {
    let mut patroni = PatroniCluster::start(2, PatroniTiming::default()).unwrap();
    let redis = RedisServer::start().unwrap();
    let sshd = Sshd::start().unwrap();
    let fleet = Fleet::start(
        2,
        &patroni.rw_url(),
        &redis.url(),
        &["--statement-timeout", "2s"],
    )
    .await
    .unwrap();
    fleet.add_ssh_target(&sshd).unwrap();
    assert_eq!(ssh_echo(&fleet, &sshd, "before").unwrap(), "before");

    let before_kill_ms = wardengate::store::now_ms();
    let leader = patroni.leader().unwrap();
    patroni.kill_member(leader);
    let killed = Instant::now();
    // Without a primary: refused with 503 + Retry-After, within the bound (2 s + 1 s margin).
    let lb = fleet.client(&fleet.lb_addr());
    let t = Instant::now();
    let refused = lb.create_session(HOST_ALIAS).await;
    let took = t.elapsed();
    match refused {
        Err(ClientError::Api {
            status: 503,
            retry_after: Some(_),
            code,
            ..
        }) => {
            assert_eq!(code, ErrorCode::DatabaseUnavailable);
        }
        other => panic!("expected 503 + Retry-After while there is no primary, got {other:?}"),
    }
    assert!(took < Duration::from_secs(6), "refusal took {took:?}");

    let mut attempts = 0;
    loop {
        attempts += 1;
        match ssh_echo(&fleet, &sshd, "after") {
            Ok(o) if o == "after" => break,
            other => eprintln!("attempt {attempts}: {other:?}"),
        }
        assert!(
            killed.elapsed() < Duration::from_secs(90),
            "no session after the Patroni failover"
        );
    }
    eprintln!(
        "patroni failover (ttl 5): refused with 503 in {took:?}; new sessions work {:?} after kill -9 of the leader ({attempts} attempt(s))",
        killed.elapsed()
    );
    // Synchronous replication: nothing committed before the kill is lost.
    let sessions = lb.sessions(None).await.unwrap();
    let before: Vec<&SessionView> = sessions
        .iter()
        .filter(|s| s.created_at < before_kill_ms)
        .collect();
    assert_eq!(before.len(), 1, "{sessions:?}");
    assert_eq!(before[0].status, SessionStatus::Ended);
    assert!(before[0].bytes_down > 0);
    // wgctl retried the 503s inside one attempt instead of failing fast.
    assert!(
        attempts <= 2,
        "{attempts} attempts: failures during the failover were not retryable"
    );
    let targets = lb.targets().await.unwrap();
    assert_eq!(targets.len(), 1);
}
