//! N `wardengate serve` replicas sharing Postgres and Redis, behind HAProxy in TCP mode with no
//! affinity (the HA guide's load balancer, checking `/healthz` over HTTPS).

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use wardengate::client::Client;
use wardengate_testkit::haproxy::{Backend, HaProxy, HealthCheck, LB_TIMING, LbOptions};
use wardengate_testkit::net::free_port;
use wardengate_testkit::process::Service;
use wardengate_testkit::process::run;
use wardengate_testkit::sandbox::Sandbox;
use wardengate_testkit::sshd::HOST_ALIAS;
use wardengate_testkit::user::RunAs;
use wardengate_testkit::{Postgres, RedisServer, Result, Sshd, wait_for, wait_until};

/// The shared dependencies of a fleet test: Postgres, Redis and an sshd target.
#[derive(Debug)]
pub struct Deps {
    /// Postgres.
    pub pg: Postgres,
    /// Redis.
    pub redis: RedisServer,
    /// The SSH target.
    pub sshd: Sshd,
}

impl Deps {
    /// Starts all three.
    pub fn start() -> Result<Self> {
        Ok(Self {
            pg: Postgres::start()?,
            redis: RedisServer::start()?,
            sshd: Sshd::start()?,
        })
    }

    /// Starts `n` replicas on these dependencies (with `extra` serve flags) and registers the
    /// sshd as target [`HOST_ALIAS`] through the load balancer.
    pub async fn fleet(&self, n: usize, extra: &[&str]) -> Result<Fleet> {
        let url = self.pg.url();
        self.fleet_each(n, &|_| url.clone(), extra).await
    }

    /// [`Deps::fleet`] behind a load balancer with `lb` options.
    pub async fn fleet_lb(&self, n: usize, extra: &[&str], lb: &LbOptions) -> Result<Fleet> {
        let url = self.pg.url();
        let fleet = Fleet::start_with_lb(n, &|_| url.clone(), &self.redis.url(), extra, lb).await?;
        fleet.add_ssh_target(&self.sshd)?;
        Ok(fleet)
    }

    /// [`Deps::fleet`] with a database URL per replica.
    pub async fn fleet_each(
        &self,
        n: usize,
        database_url: &(dyn Fn(usize) -> String + Sync),
        extra: &[&str],
    ) -> Result<Fleet> {
        let fleet = Fleet::start_each(n, database_url, &self.redis.url(), extra).await?;
        fleet.add_ssh_target(&self.sshd)?;
        Ok(fleet)
    }
}

/// One replica process.
#[derive(Debug)]
pub struct ReplicaProc {
    /// Replica id (`r0`, `r1`, …).
    pub id: String,
    /// HTTPS port on 127.0.0.1.
    pub port: u16,
    args: Vec<String>,
    service: Option<Service>,
}

/// Replicas, their shared credentials, and the load balancer.
#[derive(Debug)]
pub struct Fleet {
    /// Replicas in start order.
    pub replicas: Vec<ReplicaProc>,
    lb: HaProxy,
    ca: PathBuf,
    admin_token: String,
    token_file: PathBuf,
    sandbox: Arc<Sandbox>,
}

impl Fleet {
    /// Starts `n` replicas against `database_url` and `redis_url` (plus `extra` serve flags) and
    /// waits until each is ready and the load balancer forwards.
    pub async fn start(
        n: usize,
        database_url: &str,
        redis_url: &str,
        extra: &[&str],
    ) -> Result<Self> {
        Self::start_each(n, &|_| database_url.to_string(), redis_url, extra).await
    }

    /// Like [`Fleet::start`] with a database URL per replica (e.g. each through its own
    /// [`wardengate_testkit::proxy::TcpProxy`], to partition one replica from Postgres).
    pub async fn start_each(
        n: usize,
        database_url: &(dyn Fn(usize) -> String + Sync),
        redis_url: &str,
        extra: &[&str],
    ) -> Result<Self> {
        Self::start_with_lb(n, database_url, redis_url, extra, &LbOptions::default()).await
    }

    /// [`Fleet::start_each`] behind a load balancer with `lb` options (PROXY protocol, idle
    /// limit).
    pub async fn start_with_lb(
        n: usize,
        database_url: &(dyn Fn(usize) -> String + Sync),
        redis_url: &str,
        extra: &[&str],
        lb: &LbOptions,
    ) -> Result<Self> {
        Self::start_each_with(n, database_url, redis_url, extra, &|_| Vec::new(), lb).await
    }

    /// [`Fleet::start_with_lb`] with serve flags of its own for each replica (`own(i)`, after
    /// `extra`): e.g. each replica's `--ssh-listen` port.
    pub async fn start_each_with(
        n: usize,
        database_url: &(dyn Fn(usize) -> String + Sync),
        redis_url: &str,
        extra: &[&str],
        own: &(dyn Fn(usize) -> Vec<String> + Sync),
        lb: &LbOptions,
    ) -> Result<Self> {
        let sandbox = Arc::new(Sandbox::new("fleet")?);
        let dir = sandbox.path().to_path_buf();
        let pair = wardengate::tls::self_signed(&["localhost", "127.0.0.1"]).map_err(io)?;
        let write = |name: &str, text: &str| -> Result<PathBuf> {
            let p = dir.join(name);
            std::fs::write(&p, text).map_err(io)?;
            Ok(p)
        };
        let cert = write("cert.pem", &pair.cert)?;
        let key = write("key.pem", &pair.key)?;
        let keys = write(
            "internal-keys",
            &wardengate::signing::Keyring::generate_file("e2e1"),
        )?;
        let admin_token = wardengate::token::generate();
        let token_file = write("admin-token", &admin_token)?;
        let mut replicas = Vec::new();
        for i in 0..n {
            let port = free_port()?;
            let args: Vec<String> = [
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--agent-listen",
                &format!("127.0.0.1:{}", free_port()?),
                "--database-url",
                &database_url(i),
                "--redis-url",
                redis_url,
                "--tls-cert",
                &cert.display().to_string(),
                "--tls-key",
                &key.display().to_string(),
                "--internal-key-file",
                &keys.display().to_string(),
                "--admin-token-file",
                &token_file.display().to_string(),
                "--replica-id",
                &format!("r{i}"),
                // Per replica and kept across its restarts, like a pod's emptyDir.
                "--recordings-spool",
                &dir.join(format!("spool-r{i}")).display().to_string(),
            ]
            .iter()
            .map(|s| s.to_string())
            // The suites' fast health cycle, unless the caller sets its own.
            .chain(
                (!extra.contains(&"--health-interval"))
                    .then_some(["--health-interval", "500ms"])
                    .into_iter()
                    .flatten()
                    .map(String::from),
            )
            .chain(extra.iter().map(|s| s.to_string()))
            .chain(own(i))
            .collect();
            replicas.push(ReplicaProc {
                id: format!("r{i}"),
                port,
                args,
                service: None,
            });
        }
        let backends: Vec<Backend> = replicas
            .iter()
            .map(|r| Backend::new(r.id.clone(), r.port))
            .collect();
        let mut fleet = Self {
            lb: HaProxy::start_with(
                sandbox.clone(),
                &backends,
                &HealthCheck::Http {
                    path: "/healthz".into(),
                    tls: true,
                },
                LB_TIMING,
                lb,
            )?,
            replicas,
            ca: cert,
            admin_token,
            token_file,
            sandbox,
        };
        for i in 0..n {
            fleet.start_replica(i)?;
        }
        for i in 0..n {
            fleet.wait_ready(i, Duration::from_secs(60)).await?;
        }
        // HAProxy marks backends up only after its health checks pass: wait until it has
        // routed to every replica (round robin), so tests see the whole fleet from the start.
        let seen = std::sync::Mutex::new(std::collections::HashSet::new());
        let (_, _) = Self::eventually(
            "the load balancer to reach every replica",
            Duration::from_secs(30),
            || {
                // A new client each time: a kept-alive connection would stay on one backend.
                let (lb, seen) = (fleet.client(&fleet.lb_addr()), &seen);
                async move {
                    if let Ok(s) = lb.system_status().await {
                        seen.lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(s.replica);
                    }
                    (seen.lock().unwrap_or_else(|p| p.into_inner()).len() >= n).then_some(())
                }
            },
        )
        .await?;
        Ok(fleet)
    }

    /// (Re)starts replica `i`.
    pub fn start_replica(&mut self, i: usize) -> Result<()> {
        let r = &mut self.replicas[i];
        let mut cmd = Command::new(crate::bin("wardengate"));
        cmd.args(&r.args)
            .env("WG_LOG_FORMAT", "json")
            .env("RUST_LOG", "info");
        r.service = Some(Service::spawn(
            &self.sandbox,
            &r.id,
            cmd,
            &RunAs::current(),
        )?);
        Ok(())
    }

    /// Waits until replica `i` answers `/readyz` 200.
    pub async fn wait_ready(&mut self, i: usize, timeout: Duration) -> Result<Duration> {
        let client = self.client_for(i);
        let start = std::time::Instant::now();
        loop {
            if let Some(s) = self.replicas[i].service.as_mut() {
                s.ensure_running()?;
            }
            if client
                .readyz()
                .await
                .is_ok_and(|(code, r)| code == 200 && r.ready)
            {
                return Ok(start.elapsed());
            }
            if start.elapsed() > timeout {
                let tail = self.replicas[i]
                    .service
                    .as_ref()
                    .map(|s| s.log_tail())
                    .unwrap_or_default();
                return Err(wardengate_testkit::TestkitError::Timeout {
                    what: format!("replica {} to be ready", self.replicas[i].id),
                    waited: start.elapsed(),
                    log_tail: Some(tail),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Fault injection: SIGKILL replica `i`.
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut s) = self.replicas[i].service.take() {
            s.kill9();
        }
    }

    /// Sends `sig` to replica `i` (e.g. SIGTERM, as Kubernetes does before deleting a pod).
    pub fn signal(&self, i: usize, sig: nix::sys::signal::Signal) {
        if let Some(s) = self.replicas[i].service.as_ref() {
            s.signal_group(sig);
        }
    }

    /// Process id of replica `i`, while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.replicas[i].service.as_ref().map(|s| s.pid())
    }

    /// True while replica `i`'s process runs.
    pub fn is_running(&mut self, i: usize) -> bool {
        self.replicas[i]
            .service
            .as_mut()
            .is_some_and(|s| s.is_running())
    }

    /// Value of an unlabelled-by-us metric (`name{replica="…"}`) on replica `i`, if it answers.
    pub async fn metric(&self, i: usize, name: &str) -> Option<f64> {
        let text = self.client_for(i).get_text("/metrics").await.ok()?;
        text.lines()
            .find(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    /// Value of metric `name` whose labels include `label` (e.g. `job="cleanup"`) on replica `i`.
    pub async fn metric_labeled(&self, i: usize, name: &str, label: &str) -> Option<f64> {
        let text = self.client_for(i).get_text("/metrics").await.ok()?;
        text.lines()
            .find(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    /// The load balancer's address.
    pub fn lb_addr(&self) -> String {
        format!("https://127.0.0.1:{}", self.lb.port())
    }

    /// Replica `i`'s own address.
    pub fn replica_addr(&self, i: usize) -> String {
        format!("https://127.0.0.1:{}", self.replicas[i].port)
    }

    /// An admin API client for `addr`.
    pub fn client(&self, addr: &str) -> Client {
        let ca = std::fs::read_to_string(&self.ca).unwrap_or_default();
        match Client::new(addr, Some(&ca), Some(self.admin_token.clone())) {
            Ok(c) => c,
            Err(e) => panic!("client for {addr}: {e}"),
        }
    }

    /// An API client for `addr` with `token` instead of the admin token.
    pub fn client_with(&self, addr: &str, token: &str) -> Client {
        let ca = std::fs::read_to_string(&self.ca).unwrap_or_default();
        match Client::new(addr, Some(&ca), Some(token.to_string())) {
            Ok(c) => c,
            Err(e) => panic!("client for {addr}: {e}"),
        }
    }

    /// The CA certificate (PEM) that verifies the replicas.
    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(&self.ca).unwrap_or_default()
    }

    /// Puts a new bootstrap admin token in the shared token file (replicas read it when they
    /// start) and returns the old one; [`Fleet::client`] uses the new one from now on.
    pub fn rotate_admin_token(&mut self) -> Result<String> {
        let new = wardengate::token::generate();
        std::fs::write(&self.token_file, &new).map_err(io)?;
        Ok(std::mem::replace(&mut self.admin_token, new))
    }

    /// An admin API client for replica `i` directly.
    pub fn client_for(&self, i: usize) -> Client {
        self.client(&self.replica_addr(i))
    }

    /// Environment that points `wgctl` at the load balancer with the admin token.
    pub fn wgctl_env(&self) -> Vec<(String, String)> {
        vec![
            ("WG_ADDR".into(), self.lb_addr()),
            ("WG_CA_CERT".into(), self.ca.display().to_string()),
            (
                "WG_TOKEN_FILE".into(),
                self.token_file.display().to_string(),
            ),
        ]
    }

    /// Registers `sshd` as target [`HOST_ALIAS`] through the load balancer with `wgctl`.
    pub fn add_ssh_target(&self, sshd: &Sshd) -> Result<()> {
        let port = sshd.port().to_string();
        let out = run(
            &mut self.wgctl(&[
                "targets",
                "add",
                HOST_ALIAS,
                "--host",
                "127.0.0.1",
                "--port",
                &port,
            ]),
            Duration::from_secs(30),
        )?;
        assert!(out.contains("added"), "{out}");
        Ok(())
    }

    /// Environment that points `wgctl` at replica `i` directly (bypassing the load balancer).
    pub fn wgctl_env_for(&self, i: usize) -> Vec<(String, String)> {
        let mut env = self.wgctl_env();
        env[0].1 = self.replica_addr(i);
        env
    }

    /// Waits until replica `i` reports `n` owned sessions in `/v1/system/status`.
    pub fn wait_owned_sessions(&self, i: usize, n: i64, timeout: Duration) -> Result<Duration> {
        let addr = self.replica_addr(i);
        wait_until(
            &format!("replica {i} to own {n} session(s)"),
            timeout,
            || {
                run(
                    &mut self.wgctl(&["--addr", &addr, "-o", "json", "system", "status"]),
                    Duration::from_secs(10),
                )
                .ok()
                .and_then(|s| serde_json::from_str::<wardengate::wire::SystemStatus>(&s).ok())
                .is_some_and(|s| s.owned_sessions == n)
            },
        )
    }

    /// The internal (HMAC) key file every replica shares: what an attacker who read that
    /// Secret holds (the recordings attack tests forge legacy manifests with it).
    pub fn internal_key_file(&self) -> PathBuf {
        self.sandbox.path().join("internal-keys")
    }

    /// Replica `i`'s agent gRPC port (`--agent-listen`) on 127.0.0.1.
    pub fn agent_port(&self, i: usize) -> u16 {
        let args = &self.replicas[i].args;
        args.iter()
            .position(|a| a == "--agent-listen")
            .and_then(|p| args.get(p + 1))
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or(0)
    }

    /// The replicas' serving certificate (self-signed, so also the CA to trust), PEM file.
    pub fn cert_path(&self) -> PathBuf {
        self.ca.clone()
    }

    /// The fleet's sandbox (for extra processes and files of a test).
    pub fn sandbox(&self) -> Arc<Sandbox> {
        self.sandbox.clone()
    }

    /// `wgctl ARGS…` against the load balancer.
    pub fn wgctl(&self, args: &[&str]) -> Command {
        let mut c = Command::new(crate::bin("wgctl"));
        c.args(args).envs(self.wgctl_env());
        c
    }

    /// Waits until the newest session is `active` (a relay carries it) and returns its id.
    pub async fn wait_active_session(&self, timeout: Duration) -> Result<String> {
        Self::eventually("the newest session to be active", timeout, || async {
            let rows = self.client_for(0).sessions(Some(1)).await.ok()?;
            let row = rows.into_iter().next()?;
            (row.status == wardengate::session::SessionStatus::Active).then_some(row.id)
        })
        .await
        .map(|(id, _)| id)
    }

    /// Polls `probe` (async) until it yields, with a deadline.
    pub async fn eventually<T, F, Fut>(
        what: &str,
        timeout: Duration,
        mut probe: F,
    ) -> Result<(T, Duration)>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let start = std::time::Instant::now();
        loop {
            if let Some(v) = probe().await {
                return Ok((v, start.elapsed()));
            }
            if start.elapsed() > timeout {
                return wait_for(what, Duration::ZERO, || None);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn io(e: impl std::fmt::Display) -> wardengate_testkit::TestkitError {
    wardengate_testkit::TestkitError::Io {
        context: "preparing fleet files".into(),
        source: std::io::Error::other(e.to_string()),
    }
}
