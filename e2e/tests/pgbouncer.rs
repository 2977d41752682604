//! A fleet behind the pooler the HA guide recommends: every replica's database URL points at a
//! real PgBouncer in transaction mode (`--database-pool-mode transaction`), in front of a
//! Patroni cluster. Migrations by two replicas at once, sessions, an approval, the leased jobs,
//! and a kill -9 of the Postgres leader behind the pooler.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::time::{Duration, Instant};

use wardengate::client::Client;
use wardengate::session::SessionStatus;
use wardengate::store::Decision;
use wardengate::token::Role;
use wardengate::wire::{NewTarget, NewToken};
use wardengate_e2e::{Fleet, proxy_command};
use wardengate_testkit::process::run;
use wardengate_testkit::{PatroniCluster, PatroniTiming, PgBouncer, RedisServer, Sshd};

fn ssh_echo(fleet: &Fleet, sshd: &Sshd, word: &str) -> Option<String> {
    let mut ssh = sshd
        .ssh_via(&proxy_command(), &format!("echo {word}"))
        .unwrap();
    ssh.envs(fleet.wgctl_env());
    run(&mut ssh, Duration::from_secs(60)).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fleet_behind_pgbouncer_in_transaction_mode() {
    let mut patroni = PatroniCluster::start(2, PatroniTiming::default()).unwrap();
    // Fewer server connections than the fleet's clients: every server connection is shared by
    // both replicas, so any session state would leak between them.
    let bouncer = PgBouncer::transaction_mode(patroni.rw_port(), 4).unwrap();
    let redis = RedisServer::start().unwrap();
    let sshd = Sshd::start().unwrap();
    // Two replicas migrate at once through the pooler (transaction-scoped advisory lock).
    let fleet = Fleet::start(
        2,
        &bouncer.url(),
        &redis.url(),
        &[
            "--database-pool-mode",
            "transaction",
            "--statement-timeout",
            "2s",
        ],
    )
    .await
    .unwrap();
    fleet.add_ssh_target(&sshd).unwrap();

    // Sessions through the load balancer, many in a row (statements on shared connections).
    for i in 0..6 {
        assert_eq!(
            ssh_echo(&fleet, &sshd, &format!("s{i}")).as_deref(),
            Some(format!("s{i}").as_str())
        );
    }

    // An approval: requested by one token, decided by another, durable through the pooler.
    let lb = fleet.client(&fleet.lb_addr());
    let gated = lb
        .add_target(&NewTarget {
            name: "gated".into(),
            host: "127.0.0.1".into(),
            port: sshd.port(),
            require_approval: true,
            region: None,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(gated.require_approval);
    let mk = |role: Role| {
        let lb = lb.clone();
        async move {
            lb.create_token(&NewToken {
                role,
                name: Some(role.as_str().into()),
                ttl_seconds: None,
            })
            .await
            .unwrap()
            .token
        }
    };
    let (user, approver) = (mk(Role::User).await, mk(Role::Approver).await);
    let ca = std::fs::read_to_string(&fleet.wgctl_env()[1].1).unwrap();
    let as_user = Client::new(&fleet.lb_addr(), Some(&ca), Some(user)).unwrap();
    let as_approver = Client::new(&fleet.lb_addr(), Some(&ca), Some(approver)).unwrap();
    let pending = as_user.create_session("gated").await.unwrap();
    assert_eq!(pending.status, SessionStatus::Pending);
    let id = pending.id.as_str();
    let decided = as_approver.approve(id, "").await.unwrap();
    assert_eq!(
        (decided.session.status, decided.decision),
        (SessionStatus::Authorized, Decision::Approved),
        "{decided:?}"
    );
    let row = as_user.session(id).await.unwrap();
    assert_eq!(row.status, SessionStatus::Authorized);

    // The leased jobs run: exactly one replica holds the cleanup lease.
    let (held, _) = Fleet::eventually(
        "one cleanup lease holder",
        Duration::from_secs(20),
        || async {
            let mut n = 0.0;
            for i in 0..2 {
                n += fleet
                    .metric_labeled(i, "wg_job_lease_held", "cleanup")
                    .await
                    .unwrap_or_default();
            }
            (n == 1.0).then_some(n)
        },
    )
    .await
    .unwrap();
    assert_eq!(held, 1.0);

    // kill -9 of the Postgres leader behind the pooler: sessions work again after the failover.
    let leader = patroni.leader().unwrap();
    patroni.kill_member(leader);
    let killed = Instant::now();
    let mut attempts = 0;
    loop {
        attempts += 1;
        if ssh_echo(&fleet, &sshd, "after").as_deref() == Some("after") {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(90),
            "no session after the failover behind PgBouncer"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!(
        "behind PgBouncer: sessions work {:?} after kill -9 of the Patroni leader ({attempts} attempt(s))",
        killed.elapsed()
    );
    // History survived: the earlier sessions are all there and ended. The last one's end is
    // written when its relay sees ssh's ProxyCommand go, which may be just after ssh returns.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let rows = lb.sessions(Some(100)).await.unwrap();
        let ended = rows
            .iter()
            .filter(|r| r.status == SessionStatus::Ended)
            .count();
        if ended >= 7 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{rows:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
