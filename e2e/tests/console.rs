//! The web console in a real browser: headless Chromium (Debian's `chromium`, driven by
//! playwright-core from the console's npm lockfile; `gateway/console/tests/browser.mjs`) against
//! `wardengate dev`, with a real session waiting for approval: a user's `wgctl connect` to a
//! target that requires approval. The approver signs in with their token, lists targets,
//! approves the session from the queue (live over the event stream) and sees it leave; the
//! user's `wgctl connect` then carries bytes to the target. Signing out makes the old cookie
//! useless; after `wgctl tokens revoke`, the cookie of a new sign-in is refused too. Screenshots
//! are taken under the test's temp dir (one is copied to `WG_CONSOLE_SCREENSHOT` when set).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use wardengate::wire::{CreatedToken, SessionView};
use wardengate_e2e::bin;
use wardengate_testkit::net::{free_port, port_open};
use wardengate_testkit::process::run;
use wardengate_testkit::wait_until;

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
        let port = free_port().unwrap();
        let out = dir.join("dev.stdout");
        let proc = Command::new(bin("wardengate"))
            .args(["dev", "--data-dir"])
            .arg(dir.join("state"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
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

/// Runs one phase of the browser script; its JSON findings.
fn browser(dev: &Dev, out: &Path, phase: &str, vars: &[(&str, &str)]) -> serde_json::Value {
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
    let stdout = run(&mut cmd, Duration::from_secs(180))
        .unwrap_or_else(|e| panic!("browser phase {phase} failed: {e}"));
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{phase} printed {stdout}: {e}"))
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
