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
    wait_until("dev server to listen", Duration::from_secs(30), || {
        port_open(port)
    })
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
