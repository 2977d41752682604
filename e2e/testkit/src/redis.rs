//! Redis 7 on loopback: standalone, primary + 2 replicas + 3 Sentinels, and a 3-master Cluster.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use crate::deps::require;
use crate::error::{IoContext, Result};
use crate::net::free_port;
use crate::process::{Service, run};
use crate::sandbox::Sandbox;
use crate::user::RunAs;
use crate::wait::{wait_for, wait_until, with_log};

const START_TIMEOUT: Duration = Duration::from_secs(20);
const CLI_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `redis-cli -p port [-a password] args…` and returns its trimmed output.
pub fn redis_cli(port: u16, password: Option<&str>, args: &[&str]) -> Result<String> {
    let mut cmd = Command::new(require("redis-cli")?);
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string()]);
    if let Some(pw) = password {
        cmd.args(["--no-auth-warning", "-a", pw]);
    }
    run(cmd.args(args), CLI_TIMEOUT)
}

/// One `redis-server` process.
#[derive(Debug)]
pub struct RedisServer {
    name: String,
    port: u16,
    password: Option<String>,
    extra: Vec<String>,
    service: Option<Service>,
    sandbox: Arc<Sandbox>,
}

impl RedisServer {
    /// A standalone server in its own sandbox.
    pub fn start() -> Result<Self> {
        Self::start_in(Arc::new(Sandbox::new("redis")?), "redis", None, Vec::new())
    }

    /// A server inside `sandbox` with extra `--flag value` arguments.
    pub fn start_in(
        sandbox: Arc<Sandbox>,
        name: &str,
        password: Option<&str>,
        extra: Vec<String>,
    ) -> Result<Self> {
        let mut s = Self {
            name: name.to_string(),
            port: free_port()?,
            password: password.map(str::to_string),
            extra,
            service: None,
            sandbox,
        };
        s.restart()?;
        Ok(s)
    }

    /// (Re)starts the server on its port and waits for PONG.
    pub fn restart(&mut self) -> Result<()> {
        let dir = self.sandbox.subdir(&self.name, &RunAs::current())?;
        let mut cmd = Command::new(require("redis-server")?);
        cmd.args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .arg("--dir")
            .arg(&dir)
            .args(["--save", "", "--appendonly", "no"]);
        if let Some(pw) = &self.password {
            cmd.args(["--requirepass", pw, "--masterauth", pw]);
        }
        cmd.args(&self.extra);
        let mut svc = Service::spawn(&self.sandbox, &self.name, cmd, &RunAs::current())?;
        let (port, pw) = (self.port, self.password.clone());
        let up = wait_until(
            &format!("{} to answer PING", self.name),
            START_TIMEOUT,
            || {
                svc.is_running()
                    && redis_cli(port, pw.as_deref(), &["ping"]).is_ok_and(|o| o == "PONG")
            },
        );
        with_log(up, || svc.log_tail())?;
        self.service = Some(svc);
        Ok(())
    }

    /// Port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://[:pw@]127.0.0.1:port`.
    pub fn url(&self) -> String {
        match &self.password {
            Some(pw) => format!("redis://:{pw}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// Runs a command through `redis-cli`.
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        redis_cli(self.port, self.password.as_deref(), args)
    }

    /// Fault injection: SIGKILL.
    pub fn kill9(&mut self) {
        if let Some(mut s) = self.service.take() {
            s.kill9();
        }
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        self.service.as_mut().is_some_and(|s| s.is_running())
    }
}

/// Master name the Sentinels monitor.
pub const SENTINEL_MASTER: &str = "wg";

/// A primary, two replicas and three Sentinels (quorum 2, down-after 1 s, failover-timeout 5 s).
#[derive(Debug)]
pub struct RedisSentinel {
    /// Data nodes; index 0 is the primary at start.
    pub servers: Vec<RedisServer>,
    /// Sentinel processes.
    pub sentinels: Vec<RedisServer>,
    password: Option<String>,
}

impl RedisSentinel {
    /// Starts everything and waits until all three Sentinels see both replicas and each other.
    pub fn start(password: Option<&str>) -> Result<Self> {
        let sb = Arc::new(Sandbox::new("sentinel")?);
        let primary = RedisServer::start_in(sb.clone(), "redis-0", password, Vec::new())?;
        let replica_of = vec![
            "--replicaof".into(),
            "127.0.0.1".into(),
            primary.port().to_string(),
        ];
        let mut servers = vec![primary];
        for i in 1..3 {
            servers.push(RedisServer::start_in(
                sb.clone(),
                &format!("redis-{i}"),
                password,
                replica_of.clone(),
            )?);
        }
        let mut sentinels = Vec::new();
        for i in 0..3 {
            let port = free_port()?;
            let dir = sb.subdir(&format!("sentinel-{i}"), &RunAs::current())?;
            let conf = dir.join("sentinel.conf");
            let mut text = format!(
                "bind 127.0.0.1\nport {port}\ndir {}\nsentinel resolve-hostnames no\n\
                 sentinel monitor {m} 127.0.0.1 {p} 2\nsentinel down-after-milliseconds {m} 1000\n\
                 sentinel failover-timeout {m} 5000\nsentinel parallel-syncs {m} 1\n",
                dir.display(),
                m = SENTINEL_MASTER,
                p = servers[0].port()
            );
            if let Some(pw) = password {
                text.push_str(&format!("sentinel auth-pass {SENTINEL_MASTER} {pw}\n"));
            }
            std::fs::write(&conf, text).context(|| "writing sentinel.conf".into())?;
            let mut cmd = Command::new(require("redis-sentinel")?);
            cmd.arg(&conf);
            let name = format!("sentinel-{i}");
            let mut svc = Service::spawn(&sb, &name, cmd, &RunAs::current())?;
            let up = wait_until("sentinel to answer PING", START_TIMEOUT, || {
                svc.is_running() && redis_cli(port, None, &["ping"]).is_ok_and(|o| o == "PONG")
            });
            with_log(up, || svc.log_tail())?;
            sentinels.push(RedisServer {
                name,
                port,
                password: None,
                extra: Vec::new(),
                service: Some(svc),
                sandbox: sb.clone(),
            });
        }
        let me = Self {
            servers,
            sentinels,
            password: password.map(str::to_string),
        };
        wait_until(
            "sentinels to converge (2 replicas, 2 other sentinels)",
            START_TIMEOUT,
            || {
                me.sentinels.iter().all(|s| {
                    let info = s
                        .cli(&["sentinel", "master", SENTINEL_MASTER])
                        .unwrap_or_default();
                    field(&info, "num-slaves") == Some("2")
                        && field(&info, "num-other-sentinels") == Some("2")
                })
            },
        )?;
        Ok(me)
    }

    /// `sentinel://[:pw@]127.0.0.1:s1,127.0.0.1:s2,127.0.0.1:s3/wg`, the form Wardengate parses.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port()))
            .collect();
        let auth = self
            .password
            .as_ref()
            .map(|p| format!(":{p}@"))
            .unwrap_or_default();
        format!("sentinel://{auth}{}/{SENTINEL_MASTER}", hosts.join(","))
    }

    /// The primary's port according to the first Sentinel that answers.
    pub fn master_port(&self) -> Option<u16> {
        self.sentinels.iter().find_map(|s| {
            let out = s
                .cli(&["sentinel", "get-master-addr-by-name", SENTINEL_MASTER])
                .ok()?;
            out.lines().nth(1)?.trim().parse().ok()
        })
    }

    /// Index into [`RedisSentinel::servers`] of the current primary.
    pub fn master_index(&self) -> Option<usize> {
        let port = self.master_port()?;
        self.servers.iter().position(|s| s.port() == port)
    }

    /// Fault injection: SIGKILL the current primary. Returns its index.
    pub fn kill_master(&mut self) -> Option<usize> {
        let i = self.master_index()?;
        self.servers[i].kill9();
        Some(i)
    }

    /// Waits until the Sentinels report a primary other than `old_port` that accepts a write.
    /// Returns the new primary's index and the time taken.
    pub fn wait_for_new_master(
        &self,
        old_port: u16,
        timeout: Duration,
    ) -> Result<(usize, Duration)> {
        wait_for("a new Redis primary that accepts writes", timeout, || {
            let port = self.master_port().filter(|&p| p != old_port)?;
            let i = self.servers.iter().position(|s| s.port() == port)?;
            let ok = self.servers[i]
                .cli(&["set", "wg-testkit-probe", "1"])
                .is_ok_and(|o| o == "OK");
            ok.then_some(i)
        })
    }
}

/// Value of `key` in the flat key/value line list `SENTINEL MASTER` prints.
fn field<'a>(info: &'a str, key: &str) -> Option<&'a str> {
    let lines: Vec<&str> = info.lines().collect();
    lines
        .iter()
        .position(|l| l.trim() == key)
        .and_then(|i| lines.get(i + 1))
        .map(|v| v.trim())
}

/// A Redis Cluster of `masters` nodes (no replicas unless asked), `cluster-node-timeout 1000`.
#[derive(Debug)]
pub struct RedisCluster {
    /// Nodes in creation order; the first `masters` are masters.
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Creates the cluster and waits for `cluster_state:ok`.
    pub fn start(masters: usize, replicas_per_master: usize) -> Result<Self> {
        let sb = Arc::new(Sandbox::new("rcluster")?);
        let mut nodes = Vec::new();
        for i in 0..masters * (1 + replicas_per_master) {
            let dir = sb.subdir(&format!("node-{i}"), &RunAs::current())?;
            let extra = vec![
                "--cluster-enabled".into(),
                "yes".into(),
                "--cluster-config-file".into(),
                dir.join("nodes.conf").display().to_string(),
                "--cluster-node-timeout".into(),
                "1000".into(),
            ];
            nodes.push(RedisServer::start_in(
                sb.clone(),
                &format!("node-{i}"),
                None,
                extra,
            )?);
        }
        let mut cmd = Command::new(require("redis-cli")?);
        cmd.arg("--cluster").arg("create");
        for n in &nodes {
            cmd.arg(format!("127.0.0.1:{}", n.port()));
        }
        cmd.args([
            "--cluster-replicas",
            &replicas_per_master.to_string(),
            "--cluster-yes",
        ]);
        run(&mut cmd, Duration::from_secs(30))?;
        let me = Self { nodes };
        me.wait_ok(START_TIMEOUT)?;
        Ok(me)
    }

    /// Waits until every running node reports `cluster_state:ok`.
    pub fn wait_ok(&self, timeout: Duration) -> Result<Duration> {
        wait_until("cluster_state:ok on every node", timeout, || {
            self.nodes.iter().all(|n| {
                n.cli(&["cluster", "info"])
                    .is_ok_and(|i| i.contains("cluster_state:ok"))
            })
        })
    }

    /// `redis://127.0.0.1:<first node>?cluster=true`, the cluster-aware form Wardengate parses.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}?cluster=true", self.nodes[0].port())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_reads_sentinel_key_value_lines() {
        let info = "name\nwg\nnum-slaves\n2\nnum-other-sentinels\n1\n";
        assert_eq!(field(info, "num-slaves"), Some("2"));
        assert_eq!(field(info, "num-other-sentinels"), Some("1"));
        assert_eq!(field(info, "missing"), None);
    }
}
