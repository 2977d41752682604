//! A rolling restart of all three replicas, one by one, by drain (SIGTERM, as Kubernetes sends
//! it), while a client keeps opening sessions through the load balancer. The HA guide's
//! reference setup: HAProxy (L4), Patroni-managed Postgres, Redis Sentinel, real OpenSSH.
//! Promise: no failed session attempt (wgctl retries the 503s of draining replicas), and every
//! long session that ends by itself before the drain deadline completes untouched.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wardengate::session::SessionStatus;
use wardengate_e2e::{Fleet, proxy_command};
use wardengate_testkit::process::run;
use wardengate_testkit::{PatroniCluster, PatroniTiming, RedisSentinel, Sshd};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rolling_restart_by_drain_under_continuous_session_load() {
    let patroni = PatroniCluster::start(2, PatroniTiming::default()).unwrap();
    let sentinel = RedisSentinel::start(None).unwrap();
    let sshd = Arc::new(Sshd::start().unwrap());
    let mut fleet = Fleet::start(
        3,
        &patroni.rw_url(),
        &sentinel.url(),
        &["--drain-timeout", "30s"],
    )
    .await
    .unwrap();
    fleet.add_ssh_target(&sshd).unwrap();
    // Long sessions use their own target name, so the test can tell them from the load's.
    let port = sshd.port().to_string();
    run(
        &mut fleet.wgctl(&[
            "targets",
            "add",
            "long",
            "--host",
            "127.0.0.1",
            "--port",
            &port,
        ]),
        Duration::from_secs(30),
    )
    .unwrap();
    let long_proxy = proxy_command().replace("%h", "long");

    // The client: one short session after another through the load balancer.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let load = {
        let (stop, ok, failures, sshd) = (stop.clone(), ok.clone(), failures.clone(), sshd.clone());
        let env = fleet.wgctl_env();
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let mut ssh = sshd
                    .ssh_via(&proxy_command(), &format!("echo load-{n}"))
                    .unwrap();
                ssh.envs(env.clone());
                match run(&mut ssh, Duration::from_secs(90)) {
                    Ok(out) if out == format!("load-{n}") => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(out) => failures
                        .lock()
                        .unwrap()
                        .push(format!("session {n}: wrong output {out:?}")),
                    Err(e) => failures.lock().unwrap().push(format!("session {n}: {e}")),
                }
            }
        })
    };

    let started = Instant::now();
    let mut drains = Vec::new();
    for i in 0..3 {
        // A long session owned by the replica about to restart; it ends by itself well before
        // the drain deadline, so it must complete untouched.
        let mut long = sshd
            .ssh_via(&long_proxy, &format!("sleep 4; echo long-{i}-done"))
            .unwrap();
        long.envs(fleet.wgctl_env_for(i))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let long = long.spawn().unwrap();
        let replica = format!("r{i}");
        let lb = fleet.client(&fleet.lb_addr());
        let ((), _) = Fleet::eventually(
            &format!("the long session to run on {replica}"),
            Duration::from_secs(30),
            || {
                let (lb, replica) = (lb.clone(), replica.clone());
                async move {
                    let s = lb.sessions(Some(20)).await.ok()?;
                    s.iter()
                        .any(|s| {
                            s.target_name == "long"
                                && s.status == SessionStatus::Active
                                && s.replica.as_deref() == Some(replica.as_str())
                        })
                        .then_some(())
                }
            },
        )
        .await
        .unwrap();

        let t = Instant::now();
        fleet.signal(i, nix::sys::signal::Signal::SIGTERM);
        let ((), exited) = Fleet::eventually(
            &format!("r{i} to drain and exit"),
            Duration::from_secs(60),
            || {
                let running = fleet.is_running(i);
                async move { (!running).then_some(()) }
            },
        )
        .await
        .unwrap();
        let _ = exited;
        let drained = t.elapsed();
        let long = long.wait_with_output().unwrap();
        assert!(
            long.status.success(),
            "long session on r{i}: {}",
            String::from_utf8_lossy(&long.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&long.stdout).trim(),
            format!("long-{i}-done")
        );

        fleet.start_replica(i).unwrap();
        let ready = fleet.wait_ready(i, Duration::from_secs(60)).await.unwrap();
        drains.push((drained, ready));
    }
    // Keep the load on a little longer against the fully restarted fleet.
    let before = ok.load(Ordering::Relaxed);
    let ((), _) = Fleet::eventually(
        "sessions after the restart",
        Duration::from_secs(60),
        || {
            let n = ok.load(Ordering::Relaxed);
            async move { (n >= before + 3).then_some(()) }
        },
    )
    .await
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();

    let failures = failures.lock().unwrap().clone();
    let ok = ok.load(Ordering::Relaxed);
    for (i, (drained, ready)) in drains.iter().enumerate() {
        eprintln!(
            "r{i}: SIGTERM to exit {drained:?} (one 4 s session), restart to ready {ready:?}"
        );
    }
    eprintln!(
        "rolling restart of 3 replicas in {:?}: {ok} sessions succeeded, {} failed",
        started.elapsed(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "failed session attempts: {failures:#?}"
    );
    assert!(
        ok >= 10,
        "the load kept going through the restart ({ok} sessions)"
    );
}
