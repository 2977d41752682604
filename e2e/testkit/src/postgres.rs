//! Ephemeral PostgreSQL 15: a single instance, and a primary with a synchronous standby.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use crate::deps::require;
use crate::error::Result;
use crate::net::free_port;
use crate::process::{Service, run, run_as};
use crate::sandbox::Sandbox;
use crate::user::RunAs;
use crate::wait::{wait_until, with_log};

/// How long a server gets to accept connections after start.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on any single `psql` call, so a stuck statement fails the test instead of hanging it.
const SQL_TIMEOUT: Duration = Duration::from_secs(15);

/// One postmaster on 127.0.0.1 with trust auth for user `postgres`.
#[derive(Debug)]
pub struct PgServer {
    name: String,
    service: Option<Service>,
    port: u16,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    settings: Vec<String>,
    user: RunAs,
    sandbox: Arc<Sandbox>,
}

impl PgServer {
    /// Runs initdb for a new data directory `<sandbox>/<name>`.
    fn init(sandbox: &Arc<Sandbox>, name: &str, user: &RunAs) -> Result<PathBuf> {
        let parent = sandbox.subdir("pg", user)?;
        let data = parent.join(name);
        run_as(
            user,
            Command::new(require("initdb")?).arg("-D").arg(&data).args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ]),
            Duration::from_secs(60),
        )?;
        Ok(data)
    }

    fn launch(
        sandbox: &Arc<Sandbox>,
        name: &str,
        data_dir: PathBuf,
        settings: Vec<String>,
        user: &RunAs,
    ) -> Result<Self> {
        let socket_dir = sandbox.subdir("pg", user)?;
        let mut s = Self {
            name: name.to_string(),
            service: None,
            port: free_port()?,
            data_dir,
            socket_dir,
            settings,
            user: user.clone(),
            sandbox: sandbox.clone(),
        };
        s.start()?;
        Ok(s)
    }

    /// Starts (or restarts) the postmaster on its port and waits until it accepts connections.
    pub fn start(&mut self) -> Result<()> {
        let mut cmd = Command::new(require("postgres")?);
        cmd.arg("-D")
            .arg(&self.data_dir)
            .args([
                "-p",
                &self.port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
                "-k",
            ])
            .arg(&self.socket_dir)
            .args(["-c", "fsync=off", "-c", "full_page_writes=off"]);
        for s in &self.settings {
            cmd.args(["-c", s]);
        }
        let mut svc = Service::spawn(&self.sandbox, &self.name, cmd, &self.user)?;
        let port = self.port;
        let ready = wait_until(
            &format!("postgres {} on :{port}", self.name),
            START_TIMEOUT,
            || svc.is_running() && pg_isready(port),
        );
        let ready = with_log(ready, || svc.log_tail());
        svc.ensure_running()?;
        ready?;
        self.service = Some(svc);
        Ok(())
    }

    /// TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Connection URL for user `postgres`, database `postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Runs SQL through `psql -At` and returns its trimmed output.
    pub fn sql(&self, sql: &str) -> Result<String> {
        psql(self.port, sql)
    }

    /// Fault injection: SIGKILL the postmaster (and its backends, same process group).
    pub fn kill9(&mut self) {
        if let Some(mut s) = self.service.take() {
            s.kill9();
        }
    }

    /// Fast shutdown (SIGINT to the postmaster's group: rolls back open transactions, checkpoints
    /// and exits), bounded by 20 s before SIGKILL.
    pub fn stop(&mut self) {
        if let Some(mut s) = self.service.take() {
            s.stop_with(nix::sys::signal::Signal::SIGINT, Duration::from_secs(20));
        }
    }

    /// True while the postmaster runs.
    pub fn is_running(&mut self) -> bool {
        self.service.as_mut().is_some_and(|s| s.is_running())
    }
}

/// Runs `sql` against 127.0.0.1:`port` as `postgres` with a hard timeout.
pub fn psql(port: u16, sql: &str) -> Result<String> {
    run(
        Command::new(require("psql")?)
            .args([
                "-X",
                "-v",
                "ON_ERROR_STOP=1",
                "-At",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
            ])
            .args(["-p", &port.to_string(), "-d", "postgres", "-c", sql])
            .env("PGCONNECT_TIMEOUT", "2"),
        SQL_TIMEOUT,
    )
}

/// True when the server on `port` accepts connections.
pub fn pg_isready(port: u16) -> bool {
    let Ok(bin) = require("pg_isready") else {
        return false;
    };
    run(
        Command::new(bin).args(["-q", "-h", "127.0.0.1", "-t", "1", "-p", &port.to_string()]),
        Duration::from_secs(3),
    )
    .is_ok()
}

/// A single ephemeral Postgres 15 instance.
#[derive(Debug)]
pub struct Postgres {
    server: PgServer,
}

impl Postgres {
    /// initdb + start on a random port; ~1 s.
    pub fn start() -> Result<Self> {
        let sandbox = Arc::new(Sandbox::new("pg")?);
        let user = RunAs::postgres()?;
        let data = PgServer::init(&sandbox, "main", &user)?;
        Ok(Self {
            server: PgServer::launch(&sandbox, "main", data, Vec::new(), &user)?,
        })
    }

    /// The server, for fault injection.
    pub fn server(&mut self) -> &mut PgServer {
        &mut self.server
    }

    /// Connection URL.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// TCP port.
    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// Runs SQL and returns `psql -At` output.
    pub fn sql(&self, sql: &str) -> Result<String> {
        self.server.sql(sql)
    }
}

/// Name the standby reports as `application_name` (via `cluster_name`).
pub const STANDBY_NAME: &str = "replica1";

/// A primary with one streaming standby in synchronous mode (`FIRST 1 (replica1)`).
#[derive(Debug)]
pub struct PostgresPair {
    /// The primary at start; after [`PostgresPair::promote_standby`] it is the old primary.
    pub primary: PgServer,
    /// The synchronous standby at start.
    pub standby: PgServer,
}

impl PostgresPair {
    /// Starts both and waits until the standby reports `sync`.
    pub fn start() -> Result<Self> {
        let sandbox = Arc::new(Sandbox::new("pgpair")?);
        let user = RunAs::postgres()?;
        let data = PgServer::init(&sandbox, "primary", &user)?;
        let primary = PgServer::launch(
            &sandbox,
            "primary",
            data,
            vec![
                "wal_level=replica".into(),
                "max_wal_senders=10".into(),
                format!("synchronous_standby_names=FIRST 1 ({STANDBY_NAME})"),
            ],
            &user,
        )?;
        let standby_dir = sandbox.path().join("pg").join("standby");
        run_as(
            &user,
            Command::new(require("pg_basebackup")?)
                .args([
                    "-h",
                    "127.0.0.1",
                    "-U",
                    "postgres",
                    "-p",
                    &primary.port().to_string(),
                ])
                .arg("-D")
                .arg(&standby_dir)
                .args(["-R", "-X", "stream", "-c", "fast", "--no-sync"]),
            Duration::from_secs(60),
        )?;
        let standby = PgServer::launch(
            &sandbox,
            "standby",
            standby_dir,
            vec![
                format!("cluster_name={STANDBY_NAME}"),
                "hot_standby=on".into(),
            ],
            &user,
        )?;
        let pair = Self { primary, standby };
        pair.wait_sync(START_TIMEOUT)?;
        Ok(pair)
    }

    /// Waits until the primary reports the standby as `streaming|sync`.
    pub fn wait_sync(&self, timeout: Duration) -> Result<Duration> {
        let q = format!(
            "select state || '|' || sync_state from pg_stat_replication where application_name = '{STANDBY_NAME}'"
        );
        wait_until("standby to become synchronous", timeout, || {
            self.primary.sql(&q).is_ok_and(|s| s == "streaming|sync")
        })
    }

    /// Promotes the standby and clears its inherited `synchronous_standby_names` (a promoted
    /// standby with no standby of its own would otherwise block every commit). Returns the time
    /// until it accepts writes.
    pub fn promote_standby(&self) -> Result<Duration> {
        let start = std::time::Instant::now();
        self.standby.sql("select pg_promote(true, 30)")?;
        wait_until("standby to leave recovery", Duration::from_secs(30), || {
            self.standby
                .sql("select pg_is_in_recovery()")
                .is_ok_and(|s| s == "f")
        })?;
        self.standby
            .sql("alter system set synchronous_standby_names = ''")?;
        self.standby.sql("select pg_reload_conf()")?;
        Ok(start.elapsed())
    }
}
