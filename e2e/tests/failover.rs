//! A replica killed with SIGKILL: its sessions end in Postgres as `replica_lost` within a bounded
//! time (the leased cleanup job), and when it held the job's lease, the lease moves.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::process::Stdio;
use std::time::{Duration, Instant};

use wardengate::session::SessionStatus;
use wardengate_e2e::{Deps, Fleet, proxy_command};
use wardengate_testkit::process::run;

/// Held per job; `wg_leader_leases_gauge` sums every job this replica leads.
const LEASES: &str = "wg_job_lease_held";
const CLEANUP: &str = "job=\"cleanup\"";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_lease_holder_loses_its_lease_and_its_sessions_end_as_replica_lost() {
    let deps = Deps::start().unwrap();
    let sshd = &deps.sshd;
    let mut fleet = deps
        .fleet(2, &["--replica-lost-after", "3s"])
        .await
        .unwrap();

    // Exactly one replica holds the cleanup lease.
    let (holder, _) = Fleet::eventually("one lease holder", Duration::from_secs(20), || {
        let f = &fleet;
        async move {
            let a = f.metric_labeled(0, LEASES, CLEANUP).await.unwrap_or(0.0);
            let b = f.metric_labeled(1, LEASES, CLEANUP).await.unwrap_or(0.0);
            match (a as i64, b as i64) {
                (1, 0) => Some(0),
                (0, 1) => Some(1),
                _ => None,
            }
        }
    })
    .await
    .unwrap();
    let other = 1 - holder;

    // A session carried by the holder.
    let mut ssh = sshd.ssh_via(&proxy_command(), "sleep 60").unwrap();
    ssh.envs(fleet.wgctl_env_for(holder))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut ssh = ssh.spawn().unwrap();
    let lb = fleet.client(&fleet.lb_addr());
    Fleet::eventually("the session to be active", Duration::from_secs(20), || {
        let lb = lb.clone();
        async move {
            let s = lb.sessions(None).await.ok()?;
            s.first()
                .filter(|s| s.status == SessionStatus::Active)
                .map(|_| ())
        }
    })
    .await
    .unwrap();

    let killed = Instant::now();
    fleet.kill9(holder);
    let (_, moved) =
        Fleet::eventually(
            "the lease to move to the survivor",
            Duration::from_secs(20),
            || {
                let f = &fleet;
                async move {
                    (f.metric_labeled(other, LEASES, CLEANUP).await? as i64 == 1).then_some(())
                }
            },
        )
        .await
        .unwrap();
    let (row, lost) = Fleet::eventually(
        "the session to end as replica_lost",
        Duration::from_secs(30),
        || {
            let lb = lb.clone();
            async move {
                let s = lb.sessions(None).await.ok()?;
                s.into_iter()
                    .next()
                    .filter(|s| s.status == SessionStatus::Ended)
            }
        },
    )
    .await
    .unwrap();
    assert_eq!(
        row.end_reason,
        Some(wardengate::session::EndReason::ReplicaLost),
        "{row:?}"
    );
    assert_eq!(row.replica, Some(format!("r{holder}")));
    eprintln!(
        "after kill -9 of the lease holder: lease moved in {moved:?}, session marked replica_lost {:?} after the kill (lost-after 3 s, lease TTL 5 s)",
        moved + lost
    );
    assert!(killed.elapsed() < Duration::from_secs(45));
    let _ = ssh.kill();
    let _ = ssh.wait();

    // The survivor keeps serving.
    let mut again = sshd.ssh_via(&proxy_command(), "echo still-here").unwrap();
    again.envs(fleet.wgctl_env());
    assert_eq!(
        run(&mut again, Duration::from_secs(60)).unwrap(),
        "still-here"
    );
}
