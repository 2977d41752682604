//! Live watch and terminate of a terminated SSH session across replicas: two `wardengate serve`
//! replicas sharing Postgres and Redis, each with its SSH front end; a stock OpenSSH client
//! (through `wgctl ssh`) holds a shell through replica A; an approver runs `wgctl sessions
//! watch` against replica B and sees the output of a command typed into the shell after it
//! started watching; the approver terminates the session from B; the ssh client is told who
//! ended it and exits; the watcher ends with the reason. Every watch is audited; a user token
//! cannot watch, and an ended session cannot be watched.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wardengate_e2e::{Fleet, bin};
use wardengate_testkit::haproxy::LbOptions;
use wardengate_testkit::net::free_port;
use wardengate_testkit::process::run;
use wardengate_testkit::{Postgres, RedisServer, Sshd, wait_for};

fn keygen(dir: &Path, name: &str) -> PathBuf {
    let out = Command::new(bin("wardengate"))
        .args(["keys", "generate", "--ssh-key"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let p = dir.join(name);
    std::fs::write(&p, &out.stdout).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// A child's stdout and stderr, collected as they come by reader threads.
struct Captured {
    child: Child,
    out: Arc<Mutex<Vec<u8>>>,
    err: Arc<Mutex<Vec<u8>>>,
}

impl Captured {
    fn spawn(c: &mut Command) -> Self {
        let mut child = c
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pump = |mut r: Box<dyn Read + Send>| {
            let buf = Arc::new(Mutex::new(Vec::new()));
            let b = buf.clone();
            std::thread::spawn(move || {
                let mut chunk = [0u8; 4096];
                while let Ok(n) = r.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    b.lock().unwrap().extend_from_slice(&chunk[..n]);
                }
            });
            buf
        };
        let out = pump(Box::new(child.stdout.take().unwrap()));
        let err = pump(Box::new(child.stderr.take().unwrap()));
        Self { child, out, err }
    }

    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().unwrap()).into_owned()
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.err.lock().unwrap()).into_owned()
    }

    /// Waits until stdout or stderr (`err`) holds `needle`.
    fn wait_for(&self, what: &str, err: bool, needle: &str, timeout: Duration) {
        let found = wait_for(what, timeout, || {
            let s = if err { self.stderr() } else { self.stdout() };
            s.contains(needle).then_some(())
        });
        if let Err(e) = found {
            panic!(
                "{e}: `{needle}` not seen\n--- stdout\n{}\n--- stderr\n{}",
                self.stdout(),
                self.stderr()
            );
        }
    }

    /// Waits for the exit, returning its status.
    fn wait_exit(&mut self, what: &str, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "{what} did not exit in time\n--- stdout\n{}\n--- stderr\n{}",
                    self.stdout(),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Captured {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_approver_on_another_replica_watches_a_live_ssh_session_and_terminates_it() {
    let pg = Postgres::start().unwrap();
    let redis = RedisServer::start().unwrap();
    let keys = tempfile::tempdir().unwrap().keep();
    let host = keygen(&keys, "host");
    let ca = keygen(&keys, "user-ca");
    let login_ca = keygen(&keys, "login-ca");
    let rec = format!("file://{}", keys.join("rec").display());
    let rkey = keys.join("recording-key");
    std::fs::write(
        &rkey,
        wardengate::recording::ManifestKeys::generate_file("rk1"),
    )
    .unwrap();
    let ssh_ports = [free_port().unwrap(), free_port().unwrap()];
    let url = pg.url();
    let fleet = Fleet::start_each_with(
        2,
        &|_| url.clone(),
        &redis.url(),
        &[
            "--ssh-host-key-file",
            host.to_str().unwrap(),
            "--ssh-ca-key-file",
            ca.to_str().unwrap(),
            "--ssh-login-ca-key-file",
            login_ca.to_str().unwrap(),
            "--recordings-url",
            &rec,
            "--recording-key-file",
            rkey.to_str().unwrap(),
        ],
        &|i| vec!["--ssh-listen".into(), format!("127.0.0.1:{}", ssh_ports[i])],
        &LbOptions::default(),
    )
    .await
    .unwrap();
    let ca_line = run(&mut fleet.wgctl(&["ssh-ca"]), Duration::from_secs(30)).unwrap();
    let ca_pub = keys.join("trusted-user-ca.pub");
    std::fs::write(&ca_pub, format!("{ca_line}\n")).unwrap();
    let sshd = Sshd::start_with(&format!("TrustedUserCAKeys {}", ca_pub.display())).unwrap();
    let p = sshd.port().to_string();
    run(
        &mut fleet.wgctl(&[
            "targets",
            "add",
            "db1",
            "--host",
            "127.0.0.1",
            "--port",
            &p,
            "--ssh-user",
            sshd.user(),
        ]),
        Duration::from_secs(30),
    )
    .unwrap();
    let token = |role: &str, name: &str| -> PathBuf {
        let out = run(
            &mut fleet.wgctl(&[
                "-o", "json", "tokens", "create", "--role", role, "--name", name,
            ]),
            Duration::from_secs(30),
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let f = keys.join(format!("{name}-token"));
        std::fs::write(&f, v["token"].as_str().unwrap()).unwrap();
        f
    };
    let approver = token("approver", "watcher");
    let user = token("user", "bystander");
    // `wgctl` against replica `i` with the token in `file`.
    let wgctl_at = |i: usize, file: &Path, args: &[&str]| {
        let mut c = Command::new(bin("wgctl"));
        c.args(args)
            .envs(fleet.wgctl_env_for(i))
            .env("WG_TOKEN_FILE", file)
            .stdin(Stdio::null());
        c
    };

    // A shell through replica A, its stdin a pipe: what we type is run by the remote shell.
    let mut shell = Captured::spawn(
        fleet
            .wgctl(&[
                "ssh",
                "db1",
                "--ssh-host",
                "127.0.0.1",
                "--ssh-port",
                &ssh_ports[0].to_string(),
                "--ssh-arg=-oBatchMode=yes",
                "--ssh-arg=-oLogLevel=ERROR",
            ])
            .stdin(Stdio::piped()),
    );
    let mut typing = shell.child.stdin.take().unwrap();
    let id = fleet
        .wait_active_session(Duration::from_secs(30))
        .await
        .unwrap();
    let row = fleet.client_for(0).session(&id).await.unwrap();
    assert_eq!(row.replica.as_deref(), Some("r0"), "carried by replica A");

    // Before anything is typed: an approver watches from replica B.
    let started = Instant::now();
    let mut watcher = Captured::spawn(&mut wgctl_at(1, &approver, &["sessions", "watch", &id]));
    watcher.wait_for(
        "the watcher to get the header",
        true,
        "# watching session",
        Duration::from_secs(20),
    );
    writeln!(typing, "echo watched-$((6*7))").unwrap();
    typing.flush().unwrap();
    watcher.wait_for(
        "the watcher to see the typed command's output",
        false,
        "watched-42",
        Duration::from_secs(20),
    );
    let seen_after = started.elapsed();
    shell.wait_for(
        "the user to see it too",
        false,
        "watched-42",
        Duration::from_secs(10),
    );

    // A user token may not watch; every watch is audited.
    let out = wgctl_at(1, &user, &["sessions", "watch", &id])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("forbidden"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let approver_id = pg
        .sql("SELECT id FROM tokens WHERE name = 'watcher'")
        .unwrap();
    let audited = pg
        .sql(&format!(
            "SELECT count(*) FROM audit_events WHERE action = 'session.watch' AND subject = '{id}' AND actor = '{approver_id}'"
        ))
        .unwrap();
    assert_eq!(audited, "1", "the watch is audited with who watched what");

    // The approver terminates the session from replica B (the `terminate` alias of `kill`).
    let terminated_at = Instant::now();
    let out = wgctl_at(1, &approver, &["sessions", "terminate", &id])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = shell.wait_exit("the ssh client", Duration::from_secs(20));
    let client_gone = terminated_at.elapsed();
    assert!(!status.success());
    assert!(
        shell
            .stderr()
            .contains("wardengate: session terminated by an operator: watcher"),
        "the user is told who ended it:\n{}",
        shell.stderr()
    );
    let status = watcher.wait_exit("the watcher", Duration::from_secs(20));
    assert!(status.success(), "{}", watcher.stderr());
    assert!(
        watcher
            .stderr()
            .contains("wardengate: session terminated by an operator: watcher"),
        "the watcher gets the end reason:\n{}",
        watcher.stderr()
    );
    eprintln!(
        "watch: typed output seen by the watcher on replica B {seen_after:?} after it started; \
         ssh client on replica A gone {client_gone:?} after the terminate from B"
    );

    // An ended session cannot be watched (its recording plays instead).
    let admin = fleet.client_for(1);
    Fleet::eventually(
        "the session to be recorded as ended",
        Duration::from_secs(10),
        || {
            let (admin, id) = (&admin, &id);
            async move {
                let s = admin.session(id).await.ok()?;
                (s.status == wardengate::session::SessionStatus::Ended).then_some(())
            }
        },
    )
    .await
    .unwrap();
    let out = wgctl_at(1, &approver, &["sessions", "watch", &id])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("session_not_watchable"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(typing);
}
