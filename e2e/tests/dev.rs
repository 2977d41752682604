//! `wardengate dev` (the README's first command): no services, and the printed ssh example works.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::process::{Command, Stdio};
use std::time::Duration;

use wardengate_e2e::{bin, proxy_command};
use wardengate_testkit::net::{free_port, port_open};
use wardengate_testkit::process::run;
use wardengate_testkit::sshd::HOST_ALIAS;
use wardengate_testkit::{Sshd, wait_until};

struct Kill(std::process::Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn dev_mode_prints_a_working_ssh_example() {
    let sshd = Sshd::start().unwrap();
    let data = tempfile::tempdir().unwrap();
    let port = free_port().unwrap();
    let out_path = data.path().join("stdout");
    let dev = Command::new(bin("wardengate"))
        .args(["dev", "--data-dir"])
        .arg(data.path().join("state"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _dev = Kill(dev);
    // A user waits for the lines to paste: they appear once the server answers.
    wait_until(
        "dev server to print its lines",
        Duration::from_secs(30),
        || {
            port_open(port)
                && std::fs::read_to_string(&out_path).is_ok_and(|s| s.contains("ProxyCommand"))
        },
    )
    .unwrap();
    let printed = std::fs::read_to_string(&out_path).unwrap();
    assert!(printed.contains("Admin token (shown once"), "{printed}");
    // The printed `export …` line configures wgctl exactly as a user would paste it.
    let export = printed
        .lines()
        .find(|l| l.trim_start().starts_with("export "))
        .unwrap();
    let env: Vec<(String, String)> = export
        .trim_start()
        .trim_start_matches("export ")
        .split_whitespace()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .unwrap()
        })
        .collect();
    assert!(printed.contains("ssh -o ProxyCommand='"), "{printed}");
    let add = run(
        Command::new(bin("wgctl"))
            .args([
                "targets",
                "add",
                HOST_ALIAS,
                "--host",
                "127.0.0.1",
                "--port",
                &sshd.port().to_string(),
            ])
            .envs(env.clone()),
        Duration::from_secs(30),
    )
    .unwrap();
    assert!(add.contains("added"));
    let mut ssh = sshd.ssh_via(&proxy_command(), "echo dev works").unwrap();
    ssh.envs(env);
    assert_eq!(run(&mut ssh, Duration::from_secs(60)).unwrap(), "dev works");
}

/// Runs `wardengate dev` the way `./task run` does (no arguments: the default data directory,
/// relative to a fresh working directory, and the default address), waits for its "Try it"
/// block, and returns the block's lines and the process.
fn start_like_task_run(cwd: &std::path::Path) -> (Vec<String>, Kill) {
    let out_path = cwd.join("dev.stdout");
    let dev = Command::new(bin("wardengate"))
        .arg("dev")
        .current_dir(cwd)
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(cwd.join("dev.stderr")).unwrap())
        .spawn()
        .unwrap();
    let mut dev = Kill(dev);
    let printed = || std::fs::read_to_string(&out_path).unwrap_or_default();
    wait_until(
        "dev server to print its lines and listen",
        Duration::from_secs(30),
        || {
            if let Ok(Some(status)) = dev.0.try_wait() {
                panic!(
                    "`wardengate dev` exited with {status}:\n{}\n{}",
                    printed(),
                    std::fs::read_to_string(cwd.join("dev.stderr")).unwrap_or_default()
                );
            }
            printed().contains("ssh -o ProxyCommand=") && port_open(8443)
        },
    )
    .unwrap();
    let lines = printed()
        .lines()
        .skip_while(|l| !l.starts_with("Try it"))
        .skip(1)
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    (lines, dev)
}

/// Pastes the printed lines into bash as a user would. Two edits a user makes too: the target's
/// port is where this test's sshd listens, and ssh gets the throwaway user's key and pinned host
/// key (a user answers the host-key prompt instead). `add_target`: false on a second run, where
/// the target exists already.
fn paste(lines: &[String], sshd: &Sshd, cwd: &std::path::Path, add_target: bool) -> String {
    assert_eq!(
        lines.len(),
        3,
        "expected export, targets add and ssh lines: {lines:?}"
    );
    assert!(
        lines[0].starts_with("export WG_ADDR=https://127.0.0.1:8443 "),
        "{lines:?}"
    );
    let add = lines[1].replace("--port 22", &format!("--port {}", sshd.port()));
    assert_ne!(
        add, lines[1],
        "targets add line without --port 22: {lines:?}"
    );
    let quoted: Vec<String> = sshd
        .client_options()
        .into_iter()
        .chain(["-o".into(), format!("HostKeyAlias={HOST_ALIAS}")])
        .map(|o| format!("'{o}'"))
        .collect();
    let ssh = lines[2]
        .replacen("ssh ", &format!("ssh {} ", quoted.join(" ")), 1)
        .replace("$USER@", &format!("{}@", sshd.user()));
    let add = if add_target { add.as_str() } else { "" };
    let script = format!(
        "set -euo pipefail\n{}\n{add}\n{ssh} 'echo pasted lines work'\n",
        lines[0]
    );
    run(
        Command::new("bash").arg("-c").arg(script).current_dir(cwd),
        Duration::from_secs(60),
    )
    .unwrap()
}

#[test]
fn task_run_lines_work_as_printed_on_first_and_second_run() {
    let sshd = Sshd::start().unwrap();
    let cwd = tempfile::tempdir().unwrap();
    let (lines, dev) = start_like_task_run(cwd.path());
    assert!(
        cwd.path().join(".wardengate-dev/admin-token").is_file(),
        "default data directory not under the working directory"
    );
    assert!(paste(&lines, &sshd, cwd.path(), true).ends_with("pasted lines work"));
    drop(dev);
    // Second run: same directory, token not shown again, the same lines still work, pasted
    // from another directory.
    let (again, _dev) = start_like_task_run(cwd.path());
    let elsewhere = tempfile::tempdir().unwrap();
    assert_eq!(
        paste(&again, &sshd, elsewhere.path(), false),
        "pasted lines work"
    );
}

/// A running server serves its OpenAPI document without a token, byte for byte what the code
/// generates (and so what `gateway/openapi.json` holds), and every operation it documents
/// reaches a route: asked without a token, each answers anything but the router's fallback
/// 404 (`not_found`) or a 405.
#[test]
fn dev_serves_its_openapi_document_and_every_documented_operation_is_routed() {
    let data = tempfile::tempdir().unwrap();
    let port = free_port().unwrap();
    let out_path = data.path().join("stdout");
    let dev = Command::new(bin("wardengate"))
        .args(["dev", "--data-dir"])
        .arg(data.path().join("state"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _dev = Kill(dev);
    wait_until("dev server to listen", Duration::from_secs(30), || {
        port_open(port) && std::fs::read_to_string(&out_path).is_ok_and(|s| s.contains("export "))
    })
    .unwrap();
    let ca = std::fs::read_to_string(data.path().join("state").join("dev-cert.pem")).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let anon =
            wardengate::client::Client::new(&format!("https://127.0.0.1:{port}"), Some(&ca), None)
                .unwrap();
        let served = anon.get_text("/v1/openapi.json").await.unwrap();
        assert!(
            served == wardengate::openapi::json(),
            "the server's document differs from the generated one"
        );
        let doc = anon.openapi().await.unwrap();
        assert!(doc.paths.paths.contains_key("/v1/sessions"));
        let post = doc.paths.paths["/v1/sessions"].post.as_ref().unwrap();
        assert!(post.request_body.is_some());

        let mut checked = 0;
        for (path, item) in &doc.paths.paths {
            let concrete = path.replace("{id}", "x").replace("{name}", "x");
            let ops = [
                (reqwest::Method::GET, item.get.is_some()),
                (reqwest::Method::POST, item.post.is_some()),
                (reqwest::Method::DELETE, item.delete.is_some()),
                (reqwest::Method::PUT, item.put.is_some()),
                (reqwest::Method::PATCH, item.patch.is_some()),
            ];
            for (method, _) in ops.into_iter().filter(|(_, documented)| *documented) {
                let answer = if method == reqwest::Method::GET {
                    anon.get_text(&concrete).await.map(|_| ())
                } else {
                    anon.call::<(), serde_json::Value>(method.clone(), &concrete, None)
                        .await
                        .map(|_| ())
                };
                match answer {
                    Ok(()) => {}
                    Err(wardengate::client::ClientError::Api { status, code, .. }) => {
                        assert!(
                            status != 405
                                && !(status == 404
                                    && code == wardengate::wire::ErrorCode::NotFound),
                            "{method} {path}: no route serves it ({status}, {code})"
                        );
                    }
                    Err(e) => panic!("{method} {path}: {e}"),
                }
                checked += 1;
            }
        }
        assert!(checked >= 20, "only {checked} operations documented");
        // The control: an undocumented path does hit the fallback.
        match anon.get_text("/v1/nothing-here").await {
            Err(wardengate::client::ClientError::Api {
                status: 404,
                code: wardengate::wire::ErrorCode::NotFound,
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
    });
}
