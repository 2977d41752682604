//! The web console in a real browser: headless Chromium (Debian's `chromium`, driven by
//! playwright-core from the console's npm lockfile; `gateway/console/tests/browser.mjs`) against
//! `wardengate dev`, with a real session waiting for approval: a user's `wgctl connect` to a
//! target that requires approval. The approver signs in with their token, lists targets,
//! approves the session from the queue (live over the event stream) and sees it leave; the
//! user's `wgctl connect` then carries bytes to the target. Signing out makes the old cookie
//! useless; after `wgctl tokens revoke`, the cookie of a new sign-in is refused too. Screenshots
//! are taken under the test's temp dir (one is copied to `WG_CONSOLE_SCREENSHOT` when set).
//!
//! The browser terminal against terminated SSH targets: `wardengate dev --ssh-listen` and a real
//! OpenSSH sshd trusting the dev gateway's user CA (`TrustedUserCAKeys`, the line `wgctl ssh-ca`
//! prints). A user signs in, opens the terminal, runs a command and sees its output in xterm,
//! resizes the page and sees the remote `stty size` follow, exits the shell, and plays the
//! recording in the console; the cast from `GET /v1/recordings/{id}/cast` holds the same output
//! and `wgctl recordings verify` passes. A target needing an approver shows the waiting message
//! until an admin approves with `wgctl`, then the shell appears (with what was typed while
//! waiting); a session terminated with `wgctl sessions kill` shows the reason on the page.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use wardengate::wire::{CreatedToken, SessionView};
use wardengate_e2e::bin;
use wardengate_testkit::net::{free_port, port_open};
use wardengate_testkit::process::run;
use wardengate_testkit::{Sshd, wait_until};

const TARGET: &str = "gated-echo";

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The console's npm project (sources, lockfile, node_modules, the browser script).
fn console_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../gateway/console")
}

/// A TCP echo target on loopback (threads: the test drives blocking processes).
fn echo_target() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut r = s.try_clone().unwrap();
                let mut w = s;
                let _ = std::io::copy(&mut r, &mut w);
            });
        }
    });
    port
}

struct Dev {
    _proc: Kill,
    url: String,
    env: Vec<(String, String)>,
}

impl Dev {
    fn start(dir: &Path) -> Dev {
        Self::start_with(dir, &[])
    }

    fn start_with(dir: &Path, extra: &[&str]) -> Dev {
        let port = free_port().unwrap();
        let out = dir.join("dev.stdout");
        let proc = Command::new(bin("wardengate"))
            .args(["dev", "--data-dir"])
            .arg(dir.join("state"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(extra)
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(dir.join("dev.stderr")).unwrap())
            .spawn()
            .unwrap();
        let proc = Kill(proc);
        wait_until("wardengate dev to serve", Duration::from_secs(60), || {
            port_open(port) && std::fs::read_to_string(&out).is_ok_and(|s| s.contains("Try it"))
        })
        .unwrap();
        let state = dir.join("state");
        let env = vec![
            ("WG_ADDR".into(), format!("https://127.0.0.1:{port}")),
            (
                "WG_CA_CERT".into(),
                state.join("dev-cert.pem").display().to_string(),
            ),
            (
                "WG_TOKEN_FILE".into(),
                state.join("admin-token").display().to_string(),
            ),
        ];
        Dev {
            _proc: proc,
            url: format!("https://127.0.0.1:{port}"),
            env,
        }
    }

    /// `wgctl ARGS` as the admin (or as `token`).
    fn wgctl(&self, args: &[&str], token: Option<&str>) -> Command {
        let mut c = Command::new(bin("wgctl"));
        c.args(args).envs(self.env.clone());
        if let Some(t) = token {
            c.env_remove("WG_TOKEN_FILE").env("WG_TOKEN", t);
        }
        c
    }

    fn token(&self, role: &str) -> CreatedToken {
        let out = run(
            &mut self.wgctl(
                &[
                    "-o", "json", "tokens", "create", "--role", role, "--name", role,
                ],
                None,
            ),
            Duration::from_secs(30),
        )
        .unwrap();
        serde_json::from_str(&out).unwrap()
    }
}

/// The browser script's command for one phase.
fn browser_command(dev: &Dev, out: &Path, phase: &str, vars: &[(&str, &str)]) -> Command {
    let dir = console_dir();
    assert!(
        dir.join("node_modules/playwright-core").is_dir(),
        "{}/node_modules is missing: run `./task deps` (npm ci in gateway/console)",
        dir.display()
    );
    let mut cmd = Command::new("node");
    cmd.current_dir(&dir)
        .arg("tests/browser.mjs")
        .arg(phase)
        .env("WG_URL", &dev.url)
        .env("WG_OUT", out)
        .envs(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    cmd
}

/// Runs one phase of the browser script; its JSON findings.
fn browser(dev: &Dev, out: &Path, phase: &str, vars: &[(&str, &str)]) -> serde_json::Value {
    let stdout = run(
        &mut browser_command(dev, out, phase, vars),
        Duration::from_secs(180),
    )
    .unwrap_or_else(|e| panic!("browser phase {phase} failed: {e}"));
    findings(phase, &stdout)
}

fn findings(phase: &str, stdout: &str) -> serde_json::Value {
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{phase} printed {stdout}: {e}"))
}

/// A browser phase running in the background while the test acts with `wgctl`.
struct Phase {
    name: &'static str,
    child: Kill,
    out: PathBuf,
}

impl Phase {
    fn spawn(dev: &Dev, out: &Path, name: &'static str, vars: &[(&str, &str)]) -> Phase {
        let log = out.join(format!("{name}.stdout"));
        let child = browser_command(dev, out, name, vars)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(out.join(format!("{name}.stderr"))).unwrap())
            .spawn()
            .unwrap();
        Phase {
            name,
            child: Kill(child),
            out: out.to_path_buf(),
        }
    }

    fn log(&self) -> String {
        let read = |ext: &str| {
            std::fs::read_to_string(self.out.join(format!("{}.{ext}", self.name)))
                .unwrap_or_default()
        };
        format!("stdout:\n{}\nstderr:\n{}", read("stdout"), read("stderr"))
    }

    /// Waits for the script to write `file` in the output directory (or to fail first); its
    /// content.
    fn signal(&mut self, file: &str) -> String {
        let path = self.out.join(file);
        let mut failed = None;
        wait_until(
            &format!("the browser to write {file}"),
            Duration::from_secs(120),
            || {
                if let Ok(Some(status)) = self.child.0.try_wait() {
                    failed = Some(status);
                    return true;
                }
                // The script renames the file into place whole; an empty one is not yet it.
                std::fs::read_to_string(&path).is_ok_and(|c| !c.trim().is_empty())
            },
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", self.log()));
        if let Some(status) = failed
            && !path.exists()
        {
            panic!(
                "browser phase {} exited ({status}) early\n{}",
                self.name,
                self.log()
            );
        }
        std::fs::read_to_string(path).unwrap().trim().to_string()
    }

    /// Waits for the script to finish; its findings.
    fn finish(mut self) -> serde_json::Value {
        let mut status = None;
        wait_until(
            &format!("browser phase {} to finish", self.name),
            Duration::from_secs(180),
            || {
                status = self.child.0.try_wait().unwrap();
                status.is_some()
            },
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", self.log()));
        let status = status.unwrap();
        assert!(
            status.success(),
            "browser phase {} failed ({status})\n{}",
            self.name,
            self.log()
        );
        let stdout = std::fs::read_to_string(self.out.join(format!("{}.stdout", self.name)))
            .unwrap_or_default();
        findings(self.name, &stdout)
    }
}

#[test]
fn an_approver_signs_in_approves_from_the_queue_and_loses_access_when_revoked() {
    let tmp = tempfile::tempdir().unwrap();
    let dev = Dev::start(tmp.path());
    let echo = echo_target().to_string();
    run(
        &mut dev.wgctl(
            &[
                "targets",
                "add",
                TARGET,
                "--host",
                "127.0.0.1",
                "--port",
                &echo,
                "--require-approval",
            ],
            None,
        ),
        Duration::from_secs(30),
    )
    .unwrap();
    let approver = dev.token("approver");
    let user = dev.token("user");

    // A real session waiting for approval: the user's client blocks until it is decided.
    let mut connect = dev.wgctl(&["connect", TARGET], Some(&user.token));
    connect
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut connect = Kill(connect.spawn().unwrap());
    let mut pending: Vec<SessionView> = Vec::new();
    wait_until(
        "the session to wait for approval",
        Duration::from_secs(30),
        || {
            let out = run(
                &mut dev.wgctl(&["-o", "json", "approvals", "list"], Some(&approver.token)),
                Duration::from_secs(30),
            )
            .unwrap();
            pending = serde_json::from_str(&out).unwrap();
            !pending.is_empty()
        },
    )
    .unwrap();
    assert_eq!(pending.len(), 1, "{pending:?}");
    let session = pending[0].id.clone();
    assert_eq!(pending[0].target_name, TARGET);

    let shots = tmp.path().join("shots");
    std::fs::create_dir_all(&shots).unwrap();
    let found = browser(
        &dev,
        &shots,
        "signin-approve",
        &[
            ("WG_TOKEN", &approver.token),
            ("WG_TARGET", TARGET),
            ("WG_SESSION", &session),
        ],
    );
    eprintln!("browser, phase one: {found}");
    assert_eq!(found["who"], "approver (approver)", "{found}");
    assert_eq!(found["targets"], 1, "{found}");
    assert_eq!(found["left_queue"], true, "{found}");
    assert_eq!(found["left_watching_tab_via_stream"], true, "{found}");
    assert_eq!(
        found["old_cookie_after_sign_out"]["code"],
        "console_signed_out"
    );

    // The approval was real: the user's waiting client now carries bytes to the target.
    let mut stdin = connect.0.stdin.take().unwrap();
    stdin.write_all(b"approved in the browser\n").unwrap();
    stdin.flush().unwrap();
    let mut line = String::new();
    BufReader::new(connect.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    if line.is_empty() {
        let mut err = String::new();
        let _ = connect.0.stderr.take().unwrap().read_to_string(&mut err);
        panic!("wgctl connect carried nothing after the approval: {err}");
    }
    assert_eq!(line, "approved in the browser\n");
    drop(stdin);
    let out = run(
        &mut dev.wgctl(&["-o", "json", "approvals", "list"], Some(&approver.token)),
        Duration::from_secs(30),
    )
    .unwrap();
    let left: Vec<SessionView> = serde_json::from_str(&out).unwrap();
    assert!(left.is_empty(), "still pending: {left:?}");

    // Revoking the token ends the console session made from it.
    run(
        &mut dev.wgctl(&["tokens", "revoke", &approver.id], None),
        Duration::from_secs(30),
    )
    .unwrap();
    let found = browser(&dev, &shots, "after-revoke", &[]);
    eprintln!("browser, phase two: {found}");
    assert_eq!(found["cookie_after_revoke"]["status"], 401, "{found}");
    assert_eq!(
        found["cookie_after_revoke"]["code"], "token_revoked",
        "{found}"
    );
    assert_eq!(found["page_shows_sign_in"], true);

    for shot in [
        "console-approvals.png",
        "console-approved.png",
        "console-revoked.png",
    ] {
        let len = std::fs::metadata(shots.join(shot))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(len > 10_000, "{shot}: {len} bytes, not a rendered page");
    }
    if let Some(copy) = std::env::var_os("WG_CONSOLE_SCREENSHOT") {
        std::fs::copy(shots.join("console-approvals.png"), copy).unwrap();
    }
}

/// `wardengate dev --ssh-listen` with two terminated SSH targets on a real sshd that trusts the
/// dev gateway's user CA: `shell1` (no approval) and `shell2` (needs an approver).
struct SshWorld {
    dev: Dev,
    _sshd: Sshd,
    user: CreatedToken,
    tmp: tempfile::TempDir,
}

fn ssh_world() -> SshWorld {
    let tmp = tempfile::tempdir().unwrap();
    let ssh_port = free_port().unwrap();
    let dev = Dev::start_with(
        tmp.path(),
        &["--ssh-listen", &format!("127.0.0.1:{ssh_port}")],
    );
    let line = run(&mut dev.wgctl(&["ssh-ca"], None), Duration::from_secs(30)).unwrap();
    let ca = tmp.path().join("trusted-user-ca.pub");
    std::fs::write(&ca, format!("{}\n", line.trim())).unwrap();
    let sshd = Sshd::start_with(&format!("TrustedUserCAKeys {}", ca.display())).unwrap();
    let port = sshd.port().to_string();
    for (name, approval) in [("shell1", false), ("shell2", true)] {
        let mut args = vec![
            "targets",
            "add",
            name,
            "--host",
            "127.0.0.1",
            "--port",
            &port,
            "--ssh-user",
            sshd.user(),
        ];
        if approval {
            args.push("--require-approval");
        }
        run(&mut dev.wgctl(&args, None), Duration::from_secs(30)).unwrap();
    }
    let user = dev.token("user");
    SshWorld {
        dev,
        _sshd: sshd,
        user,
        tmp,
    }
}

impl SshWorld {
    /// Runs browser `phase` on `shell1` as the user, with an approver's token for its second
    /// page; returns the approver, the screenshot directory and the findings.
    fn user_and_approver(
        &self,
        phase: &str,
        shots: &str,
    ) -> (CreatedToken, PathBuf, serde_json::Value) {
        let approver = self.dev.token("approver");
        let shots = self.shots(shots);
        let found = browser(
            &self.dev,
            &shots,
            phase,
            &[
                ("WG_TOKEN", &self.user.token),
                ("WG_TARGET", "shell1"),
                ("WG_APPROVER_TOKEN", &approver.token),
            ],
        );
        (approver, shots, found)
    }

    /// Where the browser writes the screenshots of `name`: kept under `WG_CONSOLE_SHOTS` when it
    /// is set (to look at them), in the test's temporary directory otherwise.
    fn shots(&self, name: &str) -> PathBuf {
        let base = std::env::var_os("WG_CONSOLE_SHOTS")
            .map(PathBuf::from)
            .unwrap_or_else(|| self.tmp.path().to_path_buf());
        let dir = base.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Waits for session `id` to end, and checks it ended as terminated.
    fn assert_ends_terminated(&self, id: &str) {
        wait_until(
            "the terminated session to end",
            Duration::from_secs(30),
            || self.session(id).ended_at.is_some(),
        )
        .unwrap();
        assert_eq!(
            self.session(id).end_reason.map(|r| r.as_str()),
            Some("terminated")
        );
    }

    fn session(&self, id: &str) -> SessionView {
        let out = run(
            &mut self.dev.wgctl(&["-o", "json", "sessions", "list"], None),
            Duration::from_secs(30),
        )
        .unwrap();
        let all: Vec<SessionView> = serde_json::from_str(&out).unwrap();
        all.into_iter()
            .find(|s| s.id == id)
            .unwrap_or_else(|| panic!("no session {id} in {out}"))
    }
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

#[test]
fn the_browser_terminal_reaches_a_terminated_ssh_target_and_is_recorded() {
    let w = ssh_world();
    let (_approver, shots, found) = w.user_and_approver("terminal", "terminal");
    eprintln!("browser, terminal: {found}");
    let id = found["session"].as_str().unwrap().to_string();
    assert_eq!(found["output"], "hello-42-marker", "{found}");
    assert_ne!(found["stty_before"], found["stty_after"], "{found}");
    assert_eq!(found["playback_shows_output"], true, "{found}");

    // The same output in the cast the API serves, with the resize, inside a recording that
    // verifies.
    let mut cast = String::new();
    wait_until("the cast to be complete", Duration::from_secs(30), || {
        cast = run(
            &mut w.dev.wgctl(&["recordings", "cast", &id], None),
            Duration::from_secs(30),
        )
        .unwrap_or_default();
        cast.contains("session ended")
    })
    .unwrap_or_else(|e| panic!("{e}: {cast}"));
    assert!(cast.starts_with("{\"version\":2"), "{cast}");
    assert!(output_of(&cast).contains("hello-42-marker"), "{cast}");
    assert!(cast.contains("\"m\",\"shell\""), "{cast}");
    assert!(cast.contains("\"m\",\"exit-status 7\""), "{cast}");
    // `stty size` says ROWSxCOLS; the cast's resize event says COLSxROWS.
    let after = found["stty_after"].as_str().unwrap();
    let (rows, cols) = after.split_once('x').unwrap();
    assert!(
        cast.contains(&format!("\"r\",\"{cols}x{rows}\"")),
        "the resize to {cols}x{rows} is recorded: {cast}"
    );
    eprintln!(
        "cast excerpt:\n{}",
        cast.lines()
            .filter(|l| l.contains("hello-42") || l.contains("\"r\"") || l.contains("\"m\""))
            .take(12)
            .collect::<Vec<_>>()
            .join("\n")
    );
    wait_until("the recording to verify", Duration::from_secs(30), || {
        w.dev
            .wgctl(&["recordings", "verify", &id], None)
            .output()
            .is_ok_and(|o| o.status.success())
    })
    .unwrap();
    let s = w.session(&id);
    assert_eq!(s.target_name, "shell1");
    assert_eq!(s.token_id, w.user.id, "the signed-in user owns the session");
    for shot in ["console-terminal.png", "console-playback.png"] {
        let len = std::fs::metadata(shots.join(shot))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(len > 10_000, "{shot}: {len} bytes, not a rendered page");
    }
    if let Some(copy) = std::env::var_os("WG_TERMINAL_SCREENSHOT") {
        std::fs::copy(shots.join("console-terminal.png"), copy).unwrap();
    }
}

#[test]
fn the_browser_terminal_waits_for_an_approver_and_shows_a_terminate() {
    let w = ssh_world();

    // Approval: the page waits, an admin approves with wgctl, the shell appears.
    let shots = w.shots("approval");
    let mut phase = Phase::spawn(
        &w.dev,
        &shots,
        "terminal-approval",
        &[("WG_TOKEN", &w.user.token), ("WG_TARGET", "shell2")],
    );
    let id = phase.signal("approval.waiting");
    let out = run(
        &mut w.dev.wgctl(&["-o", "json", "approvals", "list"], None),
        Duration::from_secs(30),
    )
    .unwrap();
    let pending: Vec<SessionView> = serde_json::from_str(&out).unwrap();
    assert!(
        pending
            .iter()
            .any(|s| s.id == id && s.target_name == "shell2"),
        "the page's session is in the queue: {out}"
    );
    run(
        &mut w.dev.wgctl(&["approvals", "approve", &id], None),
        Duration::from_secs(30),
    )
    .unwrap();
    let found = phase.finish();
    eprintln!("browser, approval: {found}");
    assert_eq!(found["output"], "approved-42", "{found}");
    assert_eq!(found["early_input"], "typed-while-waiting-15", "{found}");
    wait_until(
        "the disconnected session to end",
        Duration::from_secs(30),
        || w.session(&id).ended_at.is_some(),
    )
    .unwrap();
    let s = w.session(&id);
    assert_eq!(
        s.end_reason.map(|r| r.as_str()),
        Some("client_closed"),
        "{s:?}"
    );

    // Terminate: the page shows the reason.
    let shots = w.shots("terminate");
    let mut phase = Phase::spawn(
        &w.dev,
        &shots,
        "terminal-terminate",
        &[("WG_TOKEN", &w.user.token), ("WG_TARGET", "shell1")],
    );
    let id = phase.signal("terminate.ready");
    run(
        &mut w.dev.wgctl(&["sessions", "kill", &id], None),
        Duration::from_secs(30),
    )
    .unwrap();
    let found = phase.finish();
    eprintln!("browser, terminate: {found}");
    assert!(
        found["ended"]
            .as_str()
            .unwrap()
            .contains("session terminated by an operator"),
        "{found}"
    );
    w.assert_ends_terminated(&id);
}

#[test]
fn an_approver_watches_a_browser_terminal_live_and_terminates_it() {
    let w = ssh_world();
    let (approver, shots, found) = w.user_and_approver("terminal-watch", "watch");
    eprintln!("browser, watch: {found}");
    let id = found["session"].as_str().unwrap().to_string();
    assert_eq!(found["watch_earlier"], "before-watch-25", "{found}");
    assert_eq!(found["watch_live"], "live-42-seen", "{found}");
    // The user is told who ended the session; the watcher sees the end too.
    let told = found["user_ended"].as_str().unwrap();
    assert!(
        told.contains(&format!(
            "session terminated by an operator: {}",
            approver.name
        )),
        "{found}"
    );
    assert!(
        found["watch_ended"]
            .as_str()
            .unwrap()
            .contains("(terminated)"),
        "{found}"
    );
    w.assert_ends_terminated(&id);
    for shot in [
        "console-watch.png",
        "console-watch-terminated.png",
        "console-terminal-terminated-by-watcher.png",
    ] {
        let len = std::fs::metadata(shots.join(shot))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(len > 10_000, "{shot}: {len} bytes, not a rendered page");
    }
    if let Some(dir) = std::env::var_os("WG_CONSOLE_SHOTS") {
        for e in std::fs::read_dir(&shots).unwrap().flatten() {
            std::fs::copy(e.path(), PathBuf::from(&dir).join(e.file_name())).unwrap();
        }
    }
}
