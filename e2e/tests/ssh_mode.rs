//! The terminating SSH mode end to end: a real `wardengate serve` with its SSH front end, a real
//! OpenSSH sshd that trusts the gateway's user CA (`TrustedUserCAKeys`, the line `wgctl ssh-ca`
//! prints), and stock OpenSSH clients: `wgctl ssh` running a command (exit status passed back)
//! and an interactive shell on a pty (driven through `script`), `scp` and `sftp` with
//! `User=USER:TARGET`; the cast recording holds the output, the exit status and the file names;
//! expired and wrong-principal login certificates and a target host-key mismatch are refused;
//! a session held longer than every shortened internal TTL stays up; connections that never log
//! in are cut at the login grace; port forwards go only where the target allows, input is
//! recorded only when it asks, agent and X11 forwarding never reach it, piped exec streams
//! (rsync/ansible style) arrive whole, and a drain waits for a terminated SSH session.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use wardengate::wire::SessionView;
use wardengate_e2e::{Fleet, bin};
use wardengate_testkit::net::free_port;
use wardengate_testkit::process::run;
use wardengate_testkit::{Postgres, RedisServer, Sshd, wait_for};

struct World {
    fleet: Fleet,
    sshd: Sshd,
    port: u16,
    dir: PathBuf,
    login_ca: PathBuf,
    _pg: Postgres,
    _redis: RedisServer,
}

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

async fn world() -> World {
    let pg = Postgres::start().unwrap();
    let redis = RedisServer::start().unwrap();
    let keys = tempfile::tempdir().unwrap().keep();
    let host = keygen(&keys, "host");
    let ca = keygen(&keys, "user-ca");
    let login_ca = keygen(&keys, "login-ca");
    let port = free_port().unwrap();
    let rec = format!("file://{}", keys.join("rec").display());
    let rkey = keys.join("recording-key");
    std::fs::write(
        &rkey,
        wardengate::recording::ManifestKeys::generate_file("rk1"),
    )
    .unwrap();
    let listen = format!("127.0.0.1:{port}");
    let fleet = Fleet::start(
        1,
        &pg.url(),
        &redis.url(),
        &[
            "--ssh-listen",
            &listen,
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
            // Every internal TTL short, so a session of a few seconds outlives them all.
            "--live-session-ttl",
            "2s",
            // Short, so the refusal test sees silent connections cut; real logins take far less.
            "--ssh-login-grace",
            "4s",
        ],
    )
    .await
    .unwrap();
    // The CA line targets trust is the user CA's public key.
    let line = run(&mut fleet.wgctl(&["ssh-ca"]), Duration::from_secs(30)).unwrap();
    let expected = run(
        Command::new("ssh-keygen").arg("-y").arg("-f").arg(&ca),
        Duration::from_secs(10),
    )
    .unwrap();
    let key_of = |s: &str| s.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    assert_eq!(
        key_of(&line),
        key_of(&expected),
        "wgctl ssh-ca prints the user CA"
    );
    let ca_pub = keys.join("trusted-user-ca.pub");
    std::fs::write(&ca_pub, format!("{line}\n")).unwrap();
    let sshd = Sshd::start_with(&format!(
        "TrustedUserCAKeys {}\nAcceptEnv WG_E2E_*",
        ca_pub.display()
    ))
    .unwrap();
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
    World {
        fleet,
        sshd,
        port,
        dir: keys,
        login_ca,
        _pg: pg,
        _redis: redis,
    }
}

impl World {
    /// `wgctl ssh TARGET -- COMMAND` (batch mode), its whole output.
    fn wgctl_ssh(&self, target: &str, command: &[&str]) -> Output {
        self.wgctl_ssh_with(target, &[], command)
    }

    /// [`World::wgctl_ssh`] with more `wgctl ssh` options.
    fn wgctl_ssh_with(&self, target: &str, options: &[&str], command: &[&str]) -> Output {
        let mut args = vec![
            "ssh".to_string(),
            target.into(),
            "--ssh-host".into(),
            "127.0.0.1".into(),
            "--ssh-port".into(),
            self.port.to_string(),
            "--ssh-arg=-oBatchMode=yes".into(),
            "--ssh-arg=-oLogLevel=ERROR".into(),
        ];
        args.extend(options.iter().map(|s| s.to_string()));
        args.push("--".into());
        args.extend(command.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut c = self.fleet.wgctl(&args);
        timed_output(&mut c, Duration::from_secs(60))
    }

    /// `wgctl targets add NAME --host 127.0.0.1 --port PORT --ssh-user LOGIN EXTRA…`, its output.
    fn add_target(&self, name: &str, port: u16, login: &str, extra: &[&str]) -> Output {
        let port = port.to_string();
        let mut args = vec![
            "targets",
            "add",
            name,
            "--host",
            "127.0.0.1",
            "--port",
            &port,
            "--ssh-user",
            login,
        ];
        args.extend_from_slice(extra);
        timed_output(&mut self.fleet.wgctl(&args), Duration::from_secs(30))
    }

    /// An interactive `wgctl ssh TARGET` on a real pty (`script` gives ssh a terminal, `-tt` one
    /// on the target), and the stdin the test types into.
    fn pty_shell(&self, target: &str) -> (std::process::Child, std::process::ChildStdin) {
        let inner = format!(
            "{} ssh {target} --ssh-host 127.0.0.1 --ssh-port {} --ssh-arg=-tt --ssh-arg=-oBatchMode=yes",
            bin("wgctl").display(),
            self.port
        );
        let mut child = Command::new("script")
            .args(["-q", "-e", "-c", &inner, "/dev/null"])
            .envs(self.fleet.wgctl_env())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        (child, stdin)
    }

    /// `wgctl ssh TARGET -- COMMAND` running in the background, its stdin at end of file.
    fn spawn_ssh(&self, target: &str, command: &[&str]) -> std::process::Child {
        let mut child = piped_ssh(self, target, &[], command);
        drop(child.stdin.take());
        child
    }

    /// An ephemeral key with a login certificate from the API (what `wgctl ssh` does), for
    /// `scp` and `sftp`; returns (key, `-o` options).
    async fn credentials(&self, name: &str) -> (PathBuf, Vec<String>) {
        let key = self.dir.join(name);
        run(
            Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(&key),
            Duration::from_secs(10),
        )
        .unwrap();
        let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
        let client = self.fleet.client(&self.fleet.lb_addr());
        let cert = client.ssh_certificate(public.trim()).await.unwrap();
        std::fs::write(
            self.dir.join(format!("{name}-cert.pub")),
            format!("{}\n", cert.certificate),
        )
        .unwrap();
        let known = self.dir.join("known_hosts");
        std::fs::write(
            &known,
            format!("[127.0.0.1]:{} {}\n", self.port, cert.host_key),
        )
        .unwrap();
        let opts = vec![
            "-i".into(),
            key.display().to_string(),
            "-o".into(),
            format!("User={}:db1", cert.user),
            "-o".into(),
            format!("UserKnownHostsFile={}", known.display()),
            "-o".into(),
            "StrictHostKeyChecking=yes".into(),
            "-o".into(),
            "IdentitiesOnly=yes".into(),
            "-o".into(),
            "BatchMode=yes".into(),
        ];
        (key, opts)
    }

    fn latest_session(&self) -> SessionView {
        let out = run(
            &mut self
                .fleet
                .wgctl(&["-o", "json", "sessions", "list", "--limit", "1"]),
            Duration::from_secs(30),
        )
        .unwrap();
        let v: Vec<SessionView> = serde_json::from_str(&out).unwrap();
        v.into_iter().next().unwrap()
    }

    /// The cast of session `id` once it holds every one of `needles`.
    fn cast_with(&self, id: &str, needles: &[&str]) -> String {
        let mut last = String::new();
        let found = wait_for(
            "the cast to hold what was done",
            Duration::from_secs(30),
            || {
                let out = self
                    .fleet
                    .wgctl(&["recordings", "cast", id])
                    .output()
                    .ok()?;
                last = String::from_utf8_lossy(&out.stdout).into_owned();
                needles
                    .iter()
                    .all(|n| last.contains(n))
                    .then(|| last.clone())
            },
        );
        found
            .map(|(c, _)| c)
            .unwrap_or_else(|e| panic!("{e}: {needles:?} not all in\n{last}"))
    }
}

fn timed_output(c: &mut Command, timeout: Duration) -> Output {
    let mut child = c
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + timeout;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{c:?} did not finish: {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `ssh` arguments through `wgctl ssh TARGET` to the world's front end, with `extra` options
/// before `--` and `command` after it; stdin, stdout and stderr piped.
fn piped_ssh(w: &World, target: &str, extra: &[&str], command: &[&str]) -> std::process::Child {
    piped_ssh_env(w, target, extra, command, &[])
}

/// [`piped_ssh`] with `env` set for `wgctl` and the `ssh` it runs.
fn piped_ssh_env(
    w: &World,
    target: &str,
    extra: &[&str],
    command: &[&str],
    env: &[(&str, &str)],
) -> std::process::Child {
    let port = w.port.to_string();
    let mut args = vec![
        "ssh",
        target,
        "--ssh-host",
        "127.0.0.1",
        "--ssh-port",
        &port,
        "--ssh-arg=-oBatchMode=yes",
    ];
    args.extend_from_slice(extra);
    args.push("--");
    args.extend_from_slice(command);
    w.fleet
        .wgctl(&args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Asserts a `wgctl ssh … -- echo should-not-run` was refused before the command ran: exit 255,
/// nothing run, and stderr saying `says`.
fn assert_refused(out: &Output, says: &str) {
    assert_eq!(out.status.code(), Some(255), "{}", text(&out.stderr));
    assert!(!text(&out.stdout).contains("should-not-run"));
    assert!(text(&out.stderr).contains(says), "{}", text(&out.stderr));
}

/// Each `o` event's data of a cast, concatenated.
fn output_of(cast: &str) -> String {
    cast.lines()
        .skip(1)
        .filter_map(|l| serde_json::from_str::<(f64, String, String)>(l).ok())
        .filter(|(_, c, _)| c == "o")
        .map(|(_, _, d)| d)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stock_openssh_reaches_a_target_through_the_terminating_front_end_and_it_is_recorded() {
    let w = world().await;

    // A command: its output and its exit status come back; the cast holds both.
    let out = w.wgctl_ssh("db1", &["echo", "hello-from-$(whoami)", ";", "exit", "3"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "exit status passed back: {}",
        text(&out.stderr)
    );
    let user = w.sshd.user().to_string();
    assert!(
        text(&out.stdout).contains(&format!("hello-from-{user}")),
        "{}",
        text(&out.stdout)
    );
    let s = w.latest_session();
    assert_eq!(s.target_name, "db1");
    let cast = w.cast_with(&s.id, &["exit-status 3", "session ended"]);
    assert!(cast.starts_with("{\"version\":2"), "{cast}");
    assert!(
        output_of(&cast).contains(&format!("hello-from-{user}")),
        "{cast}"
    );
    assert!(
        cast.contains("\"m\",\"exec echo hello-from-$(whoami) ; exit 3\""),
        "{cast}"
    );
    // The cast is inside the signed chunk stream: verification covers it.
    wait_for(
        "the cast's recording to verify",
        Duration::from_secs(30),
        || {
            let v = w
                .fleet
                .wgctl(&["recordings", "verify", &s.id])
                .output()
                .ok()?;
            v.status.success().then_some(())
        },
    )
    .unwrap();

    // An interactive shell on a real pty (script gives ssh a terminal; -tt a pty remotely).
    let (mut child, mut stdin) = w.pty_shell("db1");
    // Kept open until the shell exits, as a terminal would be.
    stdin
        .write_all(b"stty size; echo pty-$((6*7)); tty; exit 5\n")
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "interactive session hung"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let shown = text(&out.stdout);
    assert!(shown.contains("pty-42"), "{shown}\n{}", text(&out.stderr));
    assert!(shown.contains("/dev/pts/"), "a pty on the target: {shown}");
    assert_eq!(status.code(), Some(5), "{shown}");
    let s = w.latest_session();
    let cast = w.cast_with(&s.id, &["pty-42", "exit-status 5"]);
    assert!(cast.contains("\"m\",\"shell\""), "{cast}");
    assert!(cast.contains("\"r\","), "the pty size is recorded: {cast}");
    assert!(
        !cast.contains(",\"i\","),
        "input is not recorded unless the target asks for it: {cast}"
    );
    // The cast plays back in a terminal, its waits capped and sped up.
    let played = timed_output(
        &mut w.fleet.wgctl(&[
            "recordings",
            "play",
            &s.id,
            "--speed",
            "50",
            "--idle-limit",
            "0.1",
        ]),
        Duration::from_secs(30),
    );
    assert!(played.status.success(), "{}", text(&played.stderr));
    assert!(
        text(&played.stdout).contains("pty-42"),
        "{}",
        text(&played.stdout)
    );

    // scp (SFTP protocol) and sftp: the files' names are in the cast.
    let (_key, opts) = w.credentials("scp-key").await;
    let local = w.dir.join("upload.txt");
    std::fs::write(&local, "payload\n".repeat(100)).unwrap();
    let remote = format!("/tmp/wg-ssh-mode-{}.txt", std::process::id());
    let out = timed_output(
        Command::new("scp")
            .args(&opts)
            .args(["-P", &w.port.to_string()])
            .arg(&local)
            .arg(format!("127.0.0.1:{remote}")),
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "scp: {}", text(&out.stderr));
    let s = w.latest_session();
    let cast = w.cast_with(
        &s.id,
        &[
            &format!("sftp open {remote} (write,create"),
            "wrote 800 bytes",
        ],
    );
    assert!(cast.contains("subsystem sftp"), "{cast}");
    let batch = w.dir.join("sftp-batch");
    std::fs::write(
        &batch,
        format!(
            "get {remote} {}\nrm {remote}\n",
            w.dir.join("back.txt").display()
        ),
    )
    .unwrap();
    let out = timed_output(
        Command::new("sftp")
            .args(&opts)
            .args(["-P", &w.port.to_string(), "-b"])
            .arg(&batch)
            .arg("127.0.0.1"),
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "sftp: {}", text(&out.stderr));
    assert_eq!(
        std::fs::read(w.dir.join("back.txt")).unwrap(),
        std::fs::read(&local).unwrap()
    );
    let s = w.latest_session();
    w.cast_with(&s.id, &[&format!("sftp remove {remote}"), "read 800 bytes"]);

    // A session held longer than every (shortened) internal TTL stays up.
    let started = Instant::now();
    let out = w.wgctl_ssh("db1", &["sleep", "7;", "echo", "still-here"]);
    assert!(started.elapsed() >= Duration::from_secs(7));
    assert!(
        out.status.success() && text(&out.stdout).contains("still-here"),
        "{}",
        text(&out.stderr)
    );

    // Terminate through the session core: the user is told why and ssh ends.
    let mut held = w.spawn_ssh("db1", &["sleep", "60"]);
    let id = w
        .fleet
        .wait_active_session(Duration::from_secs(30))
        .await
        .unwrap();
    run(
        &mut w.fleet.wgctl(&["sessions", "kill", &id]),
        Duration::from_secs(30),
    )
    .unwrap();
    let out = wait_exit(&mut held, Duration::from_secs(20));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("session terminated by an operator"),
        "{}",
        text(&out.stderr)
    );

    // A target that needs an approval: the client waits, told which session; an approver
    // (another token) approves; the command runs.
    let p = w.sshd.port().to_string();
    run(
        &mut w.fleet.wgctl(&[
            "targets",
            "add",
            "db1-approval",
            "--host",
            "127.0.0.1",
            "--port",
            &p,
            "--require-approval",
            "--ssh-user",
            w.sshd.user(),
        ]),
        Duration::from_secs(30),
    )
    .unwrap();
    let approver: wardengate::wire::CreatedToken = serde_json::from_str(
        &run(
            &mut w
                .fleet
                .wgctl(&["-o", "json", "tokens", "create", "--role", "approver"]),
            Duration::from_secs(30),
        )
        .unwrap(),
    )
    .unwrap();
    let mut waiting = w.spawn_ssh("db1-approval", &["echo", "approved-run"]);
    let pending = wait_for("the approval request", Duration::from_secs(30), || {
        let out = run(
            &mut w.fleet.wgctl(&["-o", "json", "approvals", "list"]),
            Duration::from_secs(30),
        )
        .ok()?;
        let v: Vec<SessionView> = serde_json::from_str(&out).ok()?;
        v.into_iter().next().map(|s| s.id)
    })
    .unwrap()
    .0;
    let mut approve = w.fleet.wgctl(&["approvals", "approve", &pending]);
    approve
        .env_remove("WG_TOKEN_FILE")
        .env("WG_TOKEN", &approver.token);
    run(&mut approve, Duration::from_secs(30)).unwrap();
    let out = wait_exit(&mut waiting, Duration::from_secs(30));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("approved-run"));
    assert!(
        text(&out.stderr).contains(&format!(
            "waiting for an approver to decide session {pending}"
        )),
        "{}",
        text(&out.stderr)
    );
}

fn wait_exit(child: &mut std::process::Child, timeout: Duration) -> Output {
    let deadline = Instant::now() + timeout;
    while child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the ssh client did not end in time"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    use std::io::Read;
    if let Some(mut o) = child.stdout.take() {
        o.read_to_end(&mut stdout).unwrap();
    }
    if let Some(mut e) = child.stderr.take() {
        e.read_to_end(&mut stderr).unwrap();
    }
    Output {
        status: child.wait().unwrap(),
        stdout,
        stderr,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expired_certificates_wrong_principals_and_changed_host_keys_are_refused() {
    let w = world().await;
    // Before authentication nothing is held for long: a client that connects and says nothing,
    // and one that sends its version and stalls in the key exchange, are both disconnected at
    // the login grace (4 s here), not before and not never.
    let silent = |hello: &'static [u8]| {
        let port = w.port;
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let t = Instant::now();
            let mut c = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap();
            c.write_all(hello).await.unwrap();
            let mut buf = vec![0u8; 4096];
            let closed = tokio::time::timeout(Duration::from_secs(30), async {
                loop {
                    match c.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
            })
            .await;
            assert!(closed.is_ok(), "a silent SSH connection was held past 30 s");
            t.elapsed()
        })
    };
    let (idle, stalled) = (silent(b""), silent(b"SSH-2.0-stalled\r\n"));
    for (what, held) in [
        ("idle", idle.await.unwrap()),
        ("stalled", stalled.await.unwrap()),
    ] {
        assert!(
            held >= Duration::from_millis(3500),
            "{what}: cut after {held:?}, before the login grace"
        );
        eprintln!("{what} pre-auth connection cut after {held:?} (grace 4 s)");
    }
    let (key, opts) = w.credentials("good").await;
    let ssh = |opts: &[String], extra: &[&str]| {
        timed_output(
            Command::new("ssh").args(opts).args(extra).args([
                "-p",
                &w.port.to_string(),
                "127.0.0.1",
                "echo",
                "in",
            ]),
            Duration::from_secs(60),
        )
    };
    // The API's certificate works…
    let ok = ssh(&opts, &[]);
    assert!(
        ok.status.success() && text(&ok.stdout).contains("in"),
        "{}",
        text(&ok.stderr)
    );
    // …its key id is the token id; re-sign the same key with the login CA ourselves.
    let cert = std::fs::read_to_string(w.dir.join("good-cert.pub")).unwrap();
    let listing = run(
        Command::new("ssh-keygen")
            .args(["-L", "-f"])
            .arg(w.dir.join("good-cert.pub")),
        Duration::from_secs(10),
    )
    .unwrap();
    let key_id = listing
        .lines()
        .find_map(|l| l.trim().strip_prefix("Key ID: "))
        .unwrap()
        .trim_matches('"')
        .to_string();
    let user = opts
        .iter()
        .find_map(|o| o.strip_prefix("User="))
        .and_then(|u| u.split(':').next())
        .unwrap()
        .to_string();
    assert!(!cert.is_empty());
    // Signs the key again with the login CA: key id (the token id), principal, validity.
    let resign = |id: &str, principal: &str, validity: &str| {
        let _ = std::fs::remove_file(w.dir.join("good-cert.pub"));
        run(
            Command::new("ssh-keygen")
                .arg("-q")
                .arg("-s")
                .arg(&w.login_ca)
                .args(["-I", id, "-n", principal, "-V", validity])
                .arg(key.with_extension("pub")),
            Duration::from_secs(10),
        )
        .unwrap();
    };
    resign(&key_id, &user, "-10m:+10m");
    let ok = ssh(&opts, &[]);
    assert!(
        ok.status.success(),
        "a valid self-signed-by-login-CA cert logs in: {}",
        text(&ok.stderr)
    );
    resign(&key_id, &user, "20200101:20200102");
    let expired = ssh(&opts, &[]);
    assert!(
        !expired.status.success(),
        "an expired certificate is refused"
    );
    assert!(
        text(&expired.stderr).contains("Permission denied"),
        "{}",
        text(&expired.stderr)
    );
    resign(&key_id, "somebody-else", "-10m:+10m");
    let wrong = ssh(&opts, &[]);
    assert!(
        !wrong.status.success(),
        "a certificate for another principal is refused"
    );
    assert!(
        text(&wrong.stderr).contains("Permission denied"),
        "{}",
        text(&wrong.stderr)
    );

    // A certificate stops working the moment its token is revoked: every login checks the token.
    let admin = w.fleet.client(&w.fleet.lb_addr());
    let t = admin
        .create_token(&wardengate::wire::NewToken {
            role: wardengate::token::Role::User,
            name: Some("ssh-revoked".into()),
            ttl_seconds: None,
        })
        .await
        .unwrap();
    resign(&t.id, "ssh-revoked", "-10m:+10m");
    let as_user: Vec<String> = opts
        .iter()
        .map(|o| match o.strip_prefix("User=") {
            Some(u) => format!("User=ssh-revoked:{}", u.split(':').nth(1).unwrap()),
            None => o.clone(),
        })
        .collect();
    let before = ssh(&as_user, &[]);
    assert!(
        before.status.success(),
        "the user's certificate logs in while its token lives: {}",
        text(&before.stderr)
    );
    admin.revoke_token(&t.id).await.unwrap();
    let after = ssh(&as_user, &[]);
    assert!(
        !after.status.success() && text(&after.stderr).contains("Permission denied"),
        "a revoked token's certificate is refused at once: {}",
        text(&after.stderr)
    );

    // A target whose pinned host key is not the one it presents is refused, naming both.
    let other = run(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(w.dir.join("not-the-host-key")),
        Duration::from_secs(10),
    );
    other.unwrap();
    let pinned = std::fs::read_to_string(w.dir.join("not-the-host-key.pub")).unwrap();
    let added = w.add_target(
        "db1-pinned",
        w.sshd.port(),
        w.sshd.user(),
        &["--ssh-host-key", pinned.trim()],
    );
    assert!(added.status.success(), "{}", text(&added.stderr));
    let out = w.wgctl_ssh("db1-pinned", &["echo", "should-not-run"]);
    assert_refused(&out, "does not match the pinned key");
    // The first target was pinned on first use and still works.
    let out = w.wgctl_ssh("db1", &["echo", "pinned-ok"]);
    assert!(
        text(&out.stdout).contains("pinned-ok"),
        "{}",
        text(&out.stderr)
    );

    // Pinned on first use, then the address answers with another sshd (another host key): the
    // second session is refused naming both keys. A switchable TCP forwarder stands in for a
    // target whose machine was replaced.
    let other_sshd = Sshd::start_with(&format!(
        "TrustedUserCAKeys {}",
        w.dir.join("trusted-user-ca.pub").display()
    ))
    .unwrap();
    let backend = std::sync::Arc::new(std::sync::atomic::AtomicU16::new(w.sshd.port()));
    let front = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let front_port = front.local_addr().unwrap().port();
    {
        let backend = backend.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = front.accept().await {
                let port = backend.load(std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    if let Ok(mut up) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
                    }
                });
            }
        });
    }
    let added = w.add_target("db1-tofu", front_port, w.sshd.user(), &[]);
    assert!(added.status.success(), "{}", text(&added.stderr));
    let first = w.wgctl_ssh("db1-tofu", &["echo", "first-use"]);
    assert!(
        text(&first.stdout).contains("first-use"),
        "{}",
        text(&first.stderr)
    );
    backend.store(other_sshd.port(), std::sync::atomic::Ordering::SeqCst);
    let replaced = w.wgctl_ssh("db1-tofu", &["echo", "should-not-run"]);
    assert_refused(&replaced, "does not match the pinned key");

    // The target refuses a login it does not allow (the certificate's principal is a user it
    // does not have): the user is told which login was refused and what to check.
    let added = w.add_target("db1-nobody", w.sshd.port(), "wg-no-such-login", &[]);
    assert!(added.status.success(), "{}", text(&added.stderr));
    let refused = w.wgctl_ssh("db1-nobody", &["echo", "should-not-run"]);
    assert_refused(
        &refused,
        "refused the gateway's certificate for login `wg-no-such-login`",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn binary_exec_streams_environment_and_source_bound_certificates() {
    let w = world().await;

    // A binary exec stream (text, then gzip's bytes): the client gets it whole, and the
    // recording keeps it byte for byte (`b` events), not as replacement characters.
    let out = w.wgctl_ssh(
        "db1",
        &[
            "echo",
            "text-first;",
            "seq",
            "1",
            "5000",
            "|",
            "gzip",
            "-c",
            "-n",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        out.stdout.starts_with(b"text-first\n\x1f\x8b"),
        "{:?}",
        &out.stdout[..16.min(out.stdout.len())]
    );
    assert!(
        std::str::from_utf8(&out.stdout).is_err(),
        "the stream is binary"
    );
    let s = w.latest_session();
    let cast = w.cast_with(&s.id, &["exit-status 0", "session ended"]);
    assert!(
        cast.contains(",\"b\","),
        "raw bytes are recorded as b events: {cast}"
    );
    assert!(!cast.contains('\u{FFFD}'), "nothing replaced: {cast}");
    let recorded = w
        .fleet
        .wgctl(&["recordings", "output", &s.id])
        .output()
        .unwrap();
    assert!(recorded.status.success(), "{}", text(&recorded.stderr));
    assert_eq!(
        recorded.stdout.len(),
        out.stdout.len(),
        "the recording holds exactly what the client got"
    );
    assert!(recorded.stdout == out.stdout, "the recorded bytes differ");
    eprintln!(
        "cast excerpt:\n{}",
        cast.lines()
            .skip(1)
            .map(|l| l.chars().take(120).collect::<String>())
            .take(8)
            .collect::<Vec<_>>()
            .join("\n")
    );
    eprintln!(
        "binary exec stream: {} bytes received and recorded identically",
        out.stdout.len()
    );

    // Environment the client sends is passed on for the target's AcceptEnv; the cast names
    // the variable, never its value.
    let out = w.wgctl_ssh_with(
        "db1",
        &["--ssh-arg=-oSetEnv=WG_E2E_COLOUR=teal-4242"],
        &["echo", "colour-is-$WG_E2E_COLOUR"],
    );
    assert!(
        text(&out.stdout).contains("colour-is-teal-4242"),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let s = w.latest_session();
    let cast = w.cast_with(&s.id, &["\"m\",\"env WG_E2E_COLOUR\"", "session ended"]);
    assert!(!cast.contains("WG_E2E_COLOUR=teal"), "{cast}");

    // Certificates bound to a source address: the address the replica dials from works…
    let p = w.sshd.port().to_string();
    let add = |name: &str, bound: &str| {
        w.fleet
            .wgctl(&[
                "targets",
                "add",
                name,
                "--host",
                "127.0.0.1",
                "--port",
                &p,
                "--ssh-user",
                w.sshd.user(),
                "--ssh-source-address",
                bound,
            ])
            .output()
            .unwrap()
    };
    let bad = add("db1-bad", "the-gateway");
    assert!(!bad.status.success());
    assert!(
        text(&bad.stderr).contains("ssh_source_address: `the-gateway` is not `dial`"),
        "{}",
        text(&bad.stderr)
    );
    assert!(add("db1-dial", "dial").status.success());
    let out = w.wgctl_ssh("db1-dial", &["echo", "bound-ok"]);
    assert!(
        text(&out.stdout).contains("bound-ok"),
        "{}",
        text(&out.stderr)
    );
    // …and a certificate bound elsewhere is refused by the target, with the reason named.
    assert!(add("db1-far", "192.0.2.0/24").status.success());
    let out = w.wgctl_ssh("db1-far", &["echo", "should-not-run"]);
    assert_eq!(out.status.code(), Some(255), "{}", text(&out.stderr));
    assert!(!text(&out.stdout).contains("should-not-run"));
    assert!(
        text(&out.stderr).contains("bound to source-address 192.0.2.0/24"),
        "{}",
        text(&out.stderr)
    );

    // Sessions by mode: the four sessions here (the refused one was still a session, ended
    // when its channel was refused) were terminated SSH from an SSH client.
    let by_mode = |mode: &str| {
        let label = format!("mode=\"{mode}\"");
        let fleet = &w.fleet;
        async move {
            fleet
                .metric_labeled(0, "wg_sessions_started_total", &label)
                .await
                .unwrap_or(-1.0)
        }
    };
    assert_eq!(by_mode("ssh").await, 4.0, "ssh sessions counted by mode");
    assert_eq!(by_mode("relay").await, 0.0);
    assert_eq!(by_mode("console").await, 0.0);
}

/// Port forwarding (`direct-tcpip`), allowed only to what the target lists; input recorded
/// when the target asks for it; agent and X11 forwarding refused; an rsync/ansible-style exec
/// (a server that speaks first, stdin piped to EOF); and a drain that waits for a terminated
/// SSH session while refusing new ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forwards_input_recording_refused_forwarding_piped_exec_and_a_drain() {
    let w = world().await;
    let echo = wardengate_e2e::echo_server().await;
    let allowed = format!("127.0.0.1:{echo}");
    let add = |extra: &[&str]| w.add_target("db2", w.sshd.port(), w.sshd.user(), extra);
    // A malformed rule is refused with an example, and nothing is added.
    let bad = add(&["--ssh-forward-to", "localhost"]);
    assert!(!bad.status.success());
    assert!(
        text(&bad.stderr).contains("ssh_forward_to: `localhost` is not a comma-separated list"),
        "{}",
        text(&bad.stderr)
    );
    let ok = add(&["--ssh-forward-to", &allowed, "--ssh-record-input"]);
    assert!(ok.status.success(), "{}", text(&ok.stderr));

    // `ssh -W` to the listed destination: the target's sshd opens it, bytes go both ways.
    let mut child = piped_ssh(&w, "db2", &[&format!("--ssh-arg=-W{allowed}")], &[]);
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"forwarded-ping\n").unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut got = [0u8; 15];
    std::io::Read::read_exact(&mut stdout, &mut got).unwrap();
    assert_eq!(&got, b"forwarded-ping\n");
    drop(stdin);
    let out = wait_exit(&mut child, Duration::from_secs(30));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = w.latest_session();
    let cast = w.cast_with(
        &s.id,
        &[
            &format!("direct-tcpip {allowed} opened"),
            &format!("direct-tcpip {allowed} closed: 15 bytes up, 15 down"),
        ],
    );
    eprintln!("cast of a forwarded session:\n{cast}");

    // A destination the target does not list, and a target that lists none: refused, and the
    // user reads why.
    for (target, dest, why) in [
        (
            "db2",
            "127.0.0.1:1",
            format!(
                "port forwarding to 127.0.0.1:1 is not allowed for this target (allowed: {allowed})"
            ),
        ),
        (
            "db1",
            allowed.as_str(),
            "port forwarding is not allowed to this target".to_string(),
        ),
    ] {
        let mut child = piped_ssh(&w, target, &[&format!("--ssh-arg=-W{dest}")], &[]);
        drop(child.stdin.take());
        let out = wait_exit(&mut child, Duration::from_secs(30));
        assert_eq!(out.status.code(), Some(255), "{}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains("administratively prohibited")
                && text(&out.stderr).contains(&why),
            "{target} → {dest}: {}",
            text(&out.stderr)
        );
    }

    // Input is recorded on the target that asks for it (`i` events).
    let (mut child, mut stdin) = w.pty_shell("db2");
    stdin.write_all(b"echo typed-$((3*5)); exit\n").unwrap();
    let out = wait_exit(&mut child, Duration::from_secs(60));
    drop(stdin);
    assert!(
        text(&out.stdout).contains("typed-15"),
        "{}",
        text(&out.stdout)
    );
    let s = w.latest_session();
    let cast = w.cast_with(&s.id, &["typed-15", "exit-status 0"]);
    let input: String = cast
        .lines()
        .skip(1)
        .filter_map(|l| serde_json::from_str::<(f64, String, String)>(l).ok())
        .filter(|(_, c, _)| c == "i")
        .map(|(_, _, d)| d)
        .collect();
    assert!(
        input.contains("echo typed-$((3*5))"),
        "input events: {input:?}\n{cast}"
    );

    // Agent and X11 forwarding are refused: the target sees neither (the client asks for both:
    // it has an agent socket and a display to offer).
    let agent = w.dir.join("agent.sock").display().to_string();
    let mut child = piped_ssh_env(
        &w,
        "db1",
        &["--ssh-arg=-A", "--ssh-arg=-X"],
        &[
            "echo",
            "agent=${SSH_AUTH_SOCK:-none}",
            "display=${DISPLAY:-none}",
        ],
        &[
            ("SSH_AUTH_SOCK", agent.as_str()),
            ("DISPLAY", "127.0.0.1:99"),
        ],
    );
    drop(child.stdin.take());
    let out = wait_exit(&mut child, Duration::from_secs(30));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("agent=none display=none"),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );

    // rsync/ansible style: the remote speaks first, reads a line, then takes stdin to EOF.
    let mut child = piped_ssh(
        &w,
        "db1",
        &[],
        &[
            "echo first; read x; echo got-$x; cat > /tmp/wg-piped-$$; wc -c < /tmp/wg-piped-$$; rm -f /tmp/wg-piped-$$",
        ],
    );
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    assert_eq!(line, "first\n", "the remote spoke first, before any input");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"hello\n").unwrap();
    line.clear();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    assert_eq!(line, "got-hello\n");
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    stdin.write_all(&payload).unwrap();
    drop(stdin);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    let out = wait_exit(&mut child, Duration::from_secs(60));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        rest.trim(),
        "300000",
        "every byte piped in reached the target"
    );

    // Early data: stdin is written and closed before ssh even connects, so it arrives on the
    // channel (accepted at once) while the gateway is still opening the target's: it is kept
    // and delivered, not dropped.
    let mut child = piped_ssh(&w, "db1", &[], &["read x; echo early-got-$x"]);
    {
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"sent-early\n").unwrap();
    }
    let out = wait_exit(&mut child, Duration::from_secs(30));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "early-got-sent-early");

    // A drain waits for a terminated SSH session and refuses new ones meanwhile.
    let mut held = w.spawn_ssh("db1", &["sleep 3; echo held-to-the-end"]);
    wait_for(
        "the held session to be active",
        Duration::from_secs(30),
        || (w.latest_session().status.as_str() == "active").then_some(()),
    )
    .unwrap();
    let addr = w.fleet.replica_addr(0);
    let t = Instant::now();
    let mut drain = w
        .fleet
        .wgctl(&["--addr", &addr, "system", "drain", "--timeout", "30s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the replica to drain", Duration::from_secs(10), || {
        let out = w
            .fleet
            .wgctl(&["--addr", &addr, "-o", "json", "system", "status"])
            .output()
            .ok()?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        (v["draining"] == serde_json::Value::Bool(true)).then_some(())
    })
    .unwrap();
    let refused = w.wgctl_ssh("db1", &["echo", "should-not-run"]);
    assert_eq!(refused.status.code(), Some(255));
    assert!(
        text(&refused.stderr).contains("not taking new sessions"),
        "{}",
        text(&refused.stderr)
    );
    let out = wait_exit(&mut held, Duration::from_secs(30));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("held-to-the-end"));
    let drained = wait_exit(&mut drain, Duration::from_secs(40));
    assert!(drained.status.success(), "{}", text(&drained.stderr));
    let took = t.elapsed();
    assert!(
        took >= Duration::from_secs(2),
        "the drain returned after {took:?}, before the 3 s session ended"
    );
    eprintln!("drain with one terminated SSH session took {took:?}");
}
