//! PgBouncer on loopback in transaction mode: the connection pooler the HA guide recommends, in
//! the mode that breaks session state (settings, session advisory locks, named prepared
//! statements), so tests prove the gateway does not rely on any of it.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use crate::deps::require;
use crate::error::{IoContext, Result};
use crate::net::free_port;
use crate::process::Service;
use crate::sandbox::Sandbox;
use crate::user::RunAs;

/// A running PgBouncer (`pool_mode = transaction`) in front of one Postgres.
#[derive(Debug)]
pub struct PgBouncer {
    port: u16,
    _service: Service,
    _sandbox: Arc<Sandbox>,
}

impl PgBouncer {
    /// Pools database `postgres` on 127.0.0.1:`pg_port` (as user `postgres`) in transaction mode,
    /// with `server_pool` server connections. PgBouncer refuses to run as root: it runs as the
    /// Postgres user.
    pub fn transaction_mode(pg_port: u16, server_pool: u32) -> Result<Self> {
        let bin = require("pgbouncer")?;
        let sandbox = Arc::new(Sandbox::new("pgbouncer")?);
        let user = RunAs::postgres()?;
        let dir = sandbox.subdir("pgbouncer", &user)?;
        let port = free_port()?;
        let config = dir.join("pgbouncer.ini");
        std::fs::write(
            &config,
            format!(
                "[databases]\n\
                 postgres = host=127.0.0.1 port={pg_port} dbname=postgres user=postgres\n\n\
                 [pgbouncer]\n\
                 listen_addr = 127.0.0.1\n\
                 listen_port = {port}\n\
                 unix_socket_dir =\n\
                 auth_type = any\n\
                 pool_mode = transaction\n\
                 default_pool_size = {server_pool}\n\
                 max_client_conn = 1000\n\
                 server_reset_query =\n\
                 ignore_startup_parameters = extra_float_digits\n\
                 server_login_retry = 1\n\
                 pidfile =\n"
            ),
        )
        .context(|| "writing pgbouncer.ini".into())?;
        user.chown(&config)?;
        let mut cmd = Command::new(bin);
        cmd.arg(&config);
        let svc = Service::spawn_listening(
            &sandbox,
            &format!("pgbouncer-{port}"),
            cmd,
            &user,
            port,
            Duration::from_secs(10),
        )?;
        Ok(Self {
            port,
            _service: svc,
            _sandbox: sandbox,
        })
    }

    /// The pooler's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A database URL through the pooler.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}
