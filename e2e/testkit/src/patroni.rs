//! Patroni 3 with a single-node etcd, two or more members in synchronous mode, and HAProxy routing
//! to whichever member Patroni's REST API reports as `/primary`.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::deps::require;
use crate::error::{IoContext, Result};
use crate::haproxy::{Backend, HaProxy, HealthCheck, PATRONI_TIMING};
use crate::http::get_status;
use crate::net::{free_port, port_open};
use crate::postgres::psql;
use crate::process::Service;
use crate::sandbox::Sandbox;
use crate::user::RunAs;
use crate::wait::{wait_for, wait_until, with_log};

const BOOT_TIMEOUT: Duration = Duration::from_secs(60);

/// DCS timing. Failover takes about `ttl` seconds (the leader key must expire).
#[derive(Debug, Clone, Copy)]
pub struct PatroniTiming {
    /// Leader key TTL in seconds.
    pub ttl: u32,
    /// Patroni loop interval in seconds.
    pub loop_wait: u32,
    /// DCS/Postgres retry timeout in seconds.
    pub retry_timeout: u32,
}

impl Default for PatroniTiming {
    /// ttl 5 / loop_wait 1 / retry_timeout 2: measured ~5 s failover here.
    fn default() -> Self {
        Self {
            ttl: 5,
            loop_wait: 1,
            retry_timeout: 2,
        }
    }
}

/// One Patroni member (patroni process plus the postmaster it manages).
#[derive(Debug)]
pub struct PatroniMember {
    /// Member name (`node1`, …).
    pub name: String,
    /// Postgres port on 127.0.0.1.
    pub pg_port: u16,
    /// Patroni REST API port on 127.0.0.1.
    pub rest_port: u16,
    config: PathBuf,
    data_dir: PathBuf,
    service: Option<Service>,
}

impl PatroniMember {
    /// Status code of `GET path` on the REST API (`/primary`, `/replica`, `/sync`, `/health`).
    pub fn rest(&self, path: &str) -> Option<u16> {
        get_status(self.rest_port, path)
    }

    fn postmaster_pid(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.data_dir.join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }
}

/// The cluster: etcd, members, and HAProxy in front routing to the primary.
#[derive(Debug)]
pub struct PatroniCluster {
    /// Members in start order; `members[0]` bootstraps and is the first leader.
    pub members: Vec<PatroniMember>,
    haproxy: HaProxy,
    user: RunAs,
    _etcd: Service,
    sandbox: Arc<Sandbox>,
}

impl PatroniCluster {
    /// Starts etcd, `n` members (synchronous mode) and HAProxy, and waits until one member is
    /// primary, the others are sync/replica, and HAProxy routes writes to the primary.
    pub fn start(n: usize, timing: PatroniTiming) -> Result<Self> {
        let sandbox = Arc::new(Sandbox::new("patroni")?);
        let user = RunAs::postgres()?;
        let root = sandbox.subdir("patroni", &user)?;
        let (client, peer) = (free_port()?, free_port()?);
        let mut cmd = Command::new(require("etcd")?);
        cmd.args(["--name", "e1", "--data-dir"])
            .arg(root.join("etcd"))
            .args([
                "--listen-client-urls",
                &format!("http://127.0.0.1:{client}"),
            ])
            .args([
                "--advertise-client-urls",
                &format!("http://127.0.0.1:{client}"),
            ])
            .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
            .args([
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{peer}"),
            ])
            .args([
                "--initial-cluster",
                &format!("e1=http://127.0.0.1:{peer}"),
                "--enable-v2=true",
            ]);
        let mut etcd = Service::spawn(&sandbox, "etcd", cmd, &user)?;
        let up = wait_until("etcd to accept clients", BOOT_TIMEOUT, || {
            etcd.is_running() && get_status(client, "/health") == Some(200)
        });
        with_log(up, || etcd.log_tail())?;

        let mut members = Vec::new();
        for i in 1..=n {
            let name = format!("node{i}");
            let (pg_port, rest_port) = (free_port()?, free_port()?);
            let data_dir = root.join(format!("data{i}"));
            let config = root.join(format!("{name}.yml"));
            let yaml = member_yaml(&name, pg_port, rest_port, client, &root, &data_dir, timing);
            std::fs::write(&config, yaml).context(|| "writing patroni config".into())?;
            user.chown(&config)?;
            members.push(PatroniMember {
                name,
                pg_port,
                rest_port,
                config,
                data_dir,
                service: None,
            });
        }
        let backends: Vec<Backend> = members
            .iter()
            .map(|m| Backend {
                name: m.name.clone(),
                port: m.pg_port,
                check_port: Some(m.rest_port),
            })
            .collect();
        let haproxy = HaProxy::start(
            sandbox.clone(),
            &backends,
            &HealthCheck::Http {
                path: "/primary".into(),
                tls: false,
            },
            PATRONI_TIMING,
        )?;
        let mut me = Self {
            members,
            haproxy,
            user,
            _etcd: etcd,
            sandbox,
        };
        // Bootstrap the first member alone so it deterministically becomes the leader.
        me.start_member(0)?;
        me.wait_role(0, "/primary", BOOT_TIMEOUT)?;
        for i in 1..n {
            me.start_member(i)?;
        }
        for i in 1..n {
            me.wait_role(i, "/replica", BOOT_TIMEOUT)?;
        }
        if n > 1 {
            wait_until("a synchronous standby", BOOT_TIMEOUT, || {
                me.members.iter().any(|m| m.rest("/sync") == Some(200))
            })?;
        }
        me.wait_writable(BOOT_TIMEOUT)?;
        Ok(me)
    }

    /// (Re)starts member `i`'s patroni process (a stopped ex-leader rejoins via pg_rewind).
    pub fn start_member(&mut self, i: usize) -> Result<()> {
        let m = &mut self.members[i];
        let mut cmd = Command::new(require("patroni")?);
        cmd.arg(&m.config).env("HOME", self.sandbox.path());
        let svc = Service::spawn(
            &self.sandbox,
            &format!("patroni-{}", m.name),
            cmd,
            &self.user,
        )?;
        m.service = Some(svc);
        Ok(())
    }

    /// Waits until member `i` answers 200 on the REST `path`.
    pub fn wait_role(&mut self, i: usize, path: &str, timeout: Duration) -> Result<Duration> {
        let m = &mut self.members[i];
        let rest_port = m.rest_port;
        let svc = m.service.as_mut();
        let log = svc.as_ref().map(|s| s.log_path().to_path_buf());
        let r = wait_until(&format!("{} to report {path}", m.name), timeout, || {
            get_status(rest_port, path) == Some(200)
        });
        with_log(r, || {
            log.map(|l| crate::process::tail(&l, 40))
                .unwrap_or_default()
        })
    }

    /// Index of the member whose REST API reports `/primary` 200, if any.
    pub fn leader(&self) -> Option<usize> {
        self.members
            .iter()
            .position(|m| m.rest("/primary") == Some(200))
    }

    /// Fault injection: SIGKILL member `i`'s patroni and its postmaster (which Patroni starts in
    /// a session of its own, so the group kill alone would not reach it).
    pub fn kill_member(&mut self, i: usize) {
        let m = &mut self.members[i];
        let postmaster = m.postmaster_pid();
        if let Some(mut s) = m.service.take() {
            s.kill9();
        }
        if let Some(pid) = postmaster {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }

    /// Waits until a member other than `old` is primary and a write through HAProxy commits.
    /// Returns the new leader and the time taken.
    pub fn wait_for_failover(&self, old: usize, timeout: Duration) -> Result<(usize, Duration)> {
        wait_for(
            "a new Patroni primary writable through HAProxy",
            timeout,
            || {
                let l = self.leader().filter(|&l| l != old)?;
                self.try_write().then_some(l)
            },
        )
    }

    /// Waits until a write through HAProxy commits.
    pub fn wait_writable(&self, timeout: Duration) -> Result<Duration> {
        wait_until("a write through HAProxy", timeout, || self.try_write())
    }

    fn try_write(&self) -> bool {
        psql(
            self.haproxy.port(),
            "create table if not exists wg_testkit_probe(at timestamptz); \
             insert into wg_testkit_probe values (now())",
        )
        .is_ok()
    }

    /// Read-write endpoint (HAProxy → current primary) on 127.0.0.1.
    pub fn rw_port(&self) -> u16 {
        self.haproxy.port()
    }

    /// `postgres://postgres:pw@127.0.0.1:<rw>/postgres` through HAProxy.
    pub fn rw_url(&self) -> String {
        format!(
            "postgres://postgres:pw@127.0.0.1:{}/postgres",
            self.haproxy.port()
        )
    }

    /// True when member `i`'s postgres accepts TCP connections.
    pub fn member_pg_up(&self, i: usize) -> bool {
        port_open(self.members[i].pg_port)
    }

    /// Runs SQL through HAProxy on the current primary.
    pub fn sql(&self, sql: &str) -> Result<String> {
        psql(self.haproxy.port(), sql)
    }
}

fn member_yaml(
    name: &str,
    pg_port: u16,
    rest_port: u16,
    etcd_port: u16,
    root: &std::path::Path,
    data_dir: &std::path::Path,
    t: PatroniTiming,
) -> String {
    format!(
        r#"scope: wg-test
namespace: /service/
name: {name}
restapi: {{listen: "127.0.0.1:{rest_port}", connect_address: "127.0.0.1:{rest_port}"}}
etcd3: {{hosts: "127.0.0.1:{etcd_port}"}}
bootstrap:
  dcs:
    ttl: {ttl}
    loop_wait: {loop_wait}
    retry_timeout: {retry}
    maximum_lag_on_failover: 1048576
    synchronous_mode: true
    postgresql:
      use_pg_rewind: true
      parameters: {{wal_level: replica, hot_standby: "on", wal_log_hints: "on", max_wal_senders: 10, max_replication_slots: 10, fsync: "off"}}
  initdb: [{{encoding: UTF8}}, {{locale: C.UTF-8}}, {{auth: trust}}]
  pg_hba:
    - host replication replicator 127.0.0.1/32 trust
    - host all all 127.0.0.1/32 trust
postgresql:
  listen: "127.0.0.1:{pg_port}"
  connect_address: "127.0.0.1:{pg_port}"
  data_dir: {data}
  bin_dir: {bin}
  pgpass: {root}/pgpass-{name}
  parameters: {{unix_socket_directories: "{root}"}}
  authentication:
    superuser: {{username: postgres, password: pw}}
    replication: {{username: replicator, password: rpw}}
    rewind: {{username: rewinder, password: wpw}}
tags: {{nofailover: false, noloadbalance: false, clonefrom: false, nosync: false}}
"#,
        ttl = t.ttl,
        loop_wait = t.loop_wait,
        retry = t.retry_timeout,
        data = data_dir.display(),
        bin = crate::deps::PG_BIN_DIR,
        root = root.display(),
    )
}
