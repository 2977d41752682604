//! `wardengate serve` configuration: flags with `WG_*` environment equivalents (flags win), and
//! validation that stops start-up with a message naming the flag and variable at fault.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::redis_url::RedisTarget;
use crate::replica::Role;
use crate::signing::Keyring;
use crate::store::PoolMode;
use crate::tls::PemPair;

/// Raw `serve` arguments as given (strings, so errors can name the variable, not only the flag).
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Which role this process serves.
    #[arg(long, env = "WG_ROLE", value_enum, default_value_t = Role::All)]
    pub role: Role,
    /// HTTPS listen address (API, relay, health, metrics).
    #[arg(long, env = "WG_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: String,
    /// Agent gRPC listen address for remote gateways.
    #[arg(long, env = "WG_AGENT_LISTEN", default_value = "0.0.0.0:8444")]
    pub agent_listen: String,
    /// Terminating SSH listen address (`ssh -p 2222 USER:TARGET@gateway`); served only when
    /// the three SSH key files below are given.
    #[arg(long, env = "WG_SSH_LISTEN", default_value = "0.0.0.0:2222")]
    pub ssh_listen: String,
    /// How long an SSH connection may take to log in (from accept) before it is disconnected:
    /// a bound on what unauthenticated clients can hold on the SSH port.
    #[arg(long, env = "WG_SSH_LOGIN_GRACE", default_value = "30s")]
    pub ssh_login_grace: String,
    /// SSH host key users' clients see (OpenSSH private key; `wardengate keys generate
    /// --ssh-key` prints one). Same file on every replica, so clients pin one key.
    #[arg(long, env = "WG_SSH_HOST_KEY_FILE")]
    pub ssh_host_key_file: Option<PathBuf>,
    /// SSH user CA (OpenSSH private key, from a Secret): signs the per-session certificates
    /// targets trust with `TrustedUserCAKeys` (`wgctl ssh-ca` prints that line).
    #[arg(long, env = "WG_SSH_CA_KEY_FILE")]
    pub ssh_ca_key_file: Option<PathBuf>,
    /// SSH login CA (OpenSSH private key, from a Secret): signs the short-lived certificates
    /// `wgctl ssh` logs in with; only those are accepted by the SSH front end.
    #[arg(long, env = "WG_SSH_LOGIN_CA_KEY_FILE")]
    pub ssh_login_ca_key_file: Option<PathBuf>,
    /// Postgres URL, e.g. postgres://user:pw@db:5432/wardengate?sslmode=require
    #[arg(long, env = "WG_DATABASE_URL")]
    pub database_url: Option<String>,
    /// How the database URL reaches Postgres: `session` (directly, or a pooler in session mode)
    /// or `transaction` (PgBouncer `pool_mode = transaction`, pgcat, RDS Proxy): every call
    /// then runs in a transaction that sets statement_timeout locally, without named statements.
    #[arg(long, env = "WG_DATABASE_POOL_MODE", value_enum, default_value_t = PoolMode::Session)]
    pub database_pool_mode: PoolMode,
    /// Redis URL: redis://, rediss://, sentinel://…/master or …?cluster=true
    #[arg(long, env = "WG_REDIS_URL")]
    pub redis_url: Option<String>,
    /// PEM certificate chain for HTTPS.
    #[arg(long, env = "WG_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for HTTPS.
    #[arg(long, env = "WG_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Internal signing keys, one `<key-id> <base64 secret>` per line; the first signs.
    #[arg(long, env = "WG_INTERNAL_KEY_FILE")]
    pub internal_key_file: Option<PathBuf>,
    /// Ed25519 recording-manifest keys: one `<key-id> private <base64 seed>` line (only on the
    /// replicas that should sign manifests; never on relay-only pools) and `<key-id> public
    /// <base64 key>` lines for retired keys still trusted. `wardengate keys generate --recording`
    /// writes one. Unset: this replica neither signs manifests nor can verify them.
    #[arg(long, env = "WG_RECORDING_KEY_FILE")]
    pub recording_key_file: Option<PathBuf>,
    /// File holding the bootstrap admin token (at least 24 characters).
    #[arg(long, env = "WG_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// File of observer tokens (one per line, at least 24 characters each; list two while
    /// rotating): each reads GET /v1/system/status and /metrics only. The operator generates
    /// one per cluster. Re-read every 10 s.
    #[arg(long, env = "WG_OBSERVER_TOKEN_FILE")]
    pub observer_token_file: Option<PathBuf>,
    /// Where recordings go: file:///path or s3://bucket/prefix (S3 credentials and region from
    /// the usual AWS_* variables). Unset: sessions are not recorded.
    #[arg(long, env = "WG_RECORDINGS_URL")]
    pub recordings_url: Option<String>,
    /// Local spool for recording chunks not yet uploaded; per replica, kept across restarts
    /// (default: <temp dir>/wardengate-spool/<replica id>).
    #[arg(long, env = "WG_RECORDINGS_SPOOL")]
    pub recordings_spool: Option<PathBuf>,
    /// A recording whose replica died before finishing its upload is signed as incomplete
    /// after this long.
    #[arg(long, env = "WG_RECORDING_SEAL_AFTER", default_value = "10m")]
    pub recording_seal_after: String,
    /// Postgres statement_timeout for every connection (also bounds calls client-side).
    #[arg(long, env = "WG_STATEMENT_TIMEOUT", default_value = "5s")]
    pub statement_timeout: String,
    /// Replica id; defaults to the host name (the pod name in Kubernetes).
    #[arg(long, env = "WG_REPLICA_ID")]
    pub replica_id: Option<String>,
    /// Health-check cycle of the background checker.
    #[arg(long, env = "WG_HEALTH_INTERVAL", default_value = "1s")]
    pub health_interval: String,
    /// On SIGTERM, how long owned sessions may continue before they are closed recoverably.
    #[arg(long, env = "WG_DRAIN_TIMEOUT", default_value = crate::replica::DEFAULT_DRAIN_TIMEOUT_FLAG)]
    pub drain_timeout: String,
    /// Heartbeat age after which a replica counts as lost and its sessions end as replica_lost.
    #[arg(long, env = "WG_REPLICA_LOST_AFTER", default_value = "15s")]
    pub replica_lost_after: String,
    /// How long Postgres may be unreachable (while peers reach it) before /healthz fails; also
    /// how long Postgres or Redis may fail before /readyz does.
    #[arg(long, env = "WG_ISOLATION_GRACE", default_value = "10s")]
    pub isolation_grace: String,
    /// How long a live session's state stays valid without its relay renewing it (the relay
    /// renews it every health interval for as long as the session lasts).
    #[arg(long, env = "WG_LIVE_SESSION_TTL", default_value = "60s")]
    pub live_session_ttl: String,
    /// Local Unix socket for `wgctl system drain --local` (no token, no TLS; mode 0600). Off
    /// unless set; the operator sets it for the preStop hook.
    #[arg(long, env = "WG_ADMIN_SOCKET")]
    pub admin_socket: Option<PathBuf>,
    /// Open connections this replica accepts at once on 8443 (more are closed at accept). A
    /// relayed session holds one; its process needs about three file descriptors per session.
    #[arg(long, env = "WG_MAX_CONNECTIONS", default_value_t = crate::limits::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Deadline for a client's TLS handshake, its first request, and each request's headers.
    #[arg(long, env = "WG_HEADER_READ_TIMEOUT", default_value = "10s")]
    pub header_read_timeout: String,
    /// Deadline for a non-streaming API request (relays and event streams are exempt).
    #[arg(long, env = "WG_REQUEST_TIMEOUT", default_value = "30s")]
    pub request_timeout: String,
    /// How often a relay pings its client (`off` to never): keeps load balancers from cutting
    /// idle sessions — stay below their idle limit (AWS ALB 60 s, NLB 350 s) — and ends a
    /// session whose client gave no sign of life for three intervals.
    #[arg(long, env = "WG_RELAY_PING_INTERVAL", default_value = "20s")]
    pub relay_ping_interval: String,
    /// End a relayed session when no data moved either way for this long (`off`, the default,
    /// to let sessions idle for as long as their users).
    #[arg(long, env = "WG_RELAY_IDLE_TIMEOUT", default_value = "off")]
    pub relay_idle_timeout: String,
    /// Load balancer addresses (comma-separated CIDRs or IPs) allowed to send a PROXY protocol
    /// v1/v2 header before TLS, naming the real client for sessions, events and logs. From
    /// other peers, or when unset, a PROXY header closes the connection.
    #[arg(long, env = "WG_PROXY_PROTOCOL_FROM", default_value = "")]
    pub proxy_protocol_from: String,
    /// Networks targets may not point at (CIDRs or IPs, comma-separated): by default cloud
    /// metadata and other link-local, multicast and reserved addresses. The replica's own
    /// Postgres, Redis and listeners are always refused too.
    #[arg(long, env = "WG_TARGET_DENY", default_value = crate::target_policy::DEFAULT_DENY)]
    pub target_deny: String,
    /// Networks targets may point at even when denied (CIDRs or IPs): the explicit way to
    /// allow, say, a link-local appliance.
    #[arg(long, env = "WG_TARGET_ALLOW", default_value = "")]
    pub target_allow: String,
    /// Plain-HTTP address serving only `/metrics`, without a token (e.g. `0.0.0.0:9090` for an
    /// in-cluster Prometheus; keep it off the public network). On 8443 `/metrics` needs a token.
    #[arg(long, env = "WG_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// Requests per client address, as COUNT/UNIT:BURST (UNIT s, m or h) or `off`; 429 with
    /// Retry-After beyond it. /healthz, /readyz and /metrics are exempt. Behind a load balancer
    /// without the PROXY protocol every client shares the balancer's address: raise it or turn
    /// it off there.
    #[arg(long, env = "WG_REQUESTS_PER_IP", default_value = crate::limits::DEFAULT_REQUESTS_PER_IP)]
    pub requests_per_ip: String,
    /// Refused tokens per client address (COUNT/UNIT:BURST or `off`). Past it, requests from
    /// that address whose token is not cached get 429 without a database lookup.
    #[arg(long, env = "WG_AUTH_FAILURES_PER_IP", default_value = crate::limits::DEFAULT_AUTH_FAILURES_PER_IP)]
    pub auth_failures_per_ip: String,
    /// New sessions per token on this replica (POST /v1/sessions and the one-request relay),
    /// COUNT/UNIT:BURST or `off`.
    #[arg(long, env = "WG_SESSION_RATE_PER_TOKEN", default_value = crate::limits::DEFAULT_SESSION_RATE_PER_TOKEN)]
    pub session_rate_per_token: String,
    /// Sessions one token may hold at once across the fleet (pending, authorised, relayed);
    /// 0 turns the cap off.
    #[arg(long, env = "WG_MAX_SESSIONS_PER_TOKEN", default_value_t = crate::limits::DEFAULT_MAX_SESSIONS_PER_TOKEN)]
    pub max_sessions_per_token: u32,
    /// Relays this replica carries at once (503 replica_at_capacity beyond, so the client
    /// retries through the load balancer); 0 turns the cap off.
    #[arg(long, env = "WG_MAX_RELAYS", default_value_t = crate::limits::DEFAULT_MAX_RELAYS)]
    pub max_relays: usize,
    /// Control plane: the agent CA (PEM: signing CA certificate, its key, then older CA
    /// certificates still trusted), the same file on every replica (a mounted Secret;
    /// `wardengate keys generate --agent-ca` writes one). Unset: the agent port is not served.
    #[arg(long, env = "WG_AGENT_CA_FILE")]
    pub agent_ca_file: Option<PathBuf>,
    /// Control plane: lifetime of the gateway client certificates it signs (gateways renew
    /// after two thirds of it).
    #[arg(long, env = "WG_AGENT_CERT_TTL", default_value = crate::agent::DEFAULT_CERT_TTL)]
    pub agent_cert_ttl: String,
    /// Gateway: the control plane's agent endpoint to dial, `https://HOST:8444` (needs
    /// `--role gateway` and `--region`).
    #[arg(long, env = "WG_CONTROL_PLANE")]
    pub control_plane: Option<String>,
    /// Gateway: PEM CA certificates trusted for the control plane's serving certificate
    /// (default: the system roots).
    #[arg(long, env = "WG_CONTROL_PLANE_CA")]
    pub control_plane_ca: Option<PathBuf>,
    /// Gateway: file holding the one-time join token (`wgctl gateways join-token`); needed
    /// only until the gateway holds a certificate in its state dir.
    #[arg(long, env = "WG_JOIN_TOKEN_FILE")]
    pub join_token_file: Option<PathBuf>,
    /// Gateway: the region it serves (must match its join token's).
    #[arg(long, env = "WG_REGION")]
    pub region: Option<String>,
    /// Gateway: where its agent key and certificate are kept across restarts (default:
    /// <temp dir>/wardengate-agent/<replica id>).
    #[arg(long, env = "WG_AGENT_STATE_DIR")]
    pub agent_state_dir: Option<PathBuf>,
    /// Gateway: how long live sessions outlive a lost control-plane link before they close
    /// with the recoverable code 4004 (`replica_isolated`).
    #[arg(long, env = "WG_OFFLINE_GRACE", default_value = crate::agent::state::DEFAULT_OFFLINE_GRACE)]
    pub offline_grace: String,
    /// Gateway: accept new sessions with already-signed grants while the link is down. Risk:
    /// a terminate or token revocation cannot reach a cut-off gateway, so a grant signed before
    /// it stays usable until it expires (10 minutes).
    #[arg(long, env = "WG_OFFLINE_ACCEPT_SIGNED_GRANTS")]
    pub offline_accept_signed_grants: bool,
    /// Gateway: the `HOST:PORT` clients reach its relay at, reported to the control plane
    /// (default: --listen; set it when listening on 0.0.0.0 or behind a load balancer).
    #[arg(long, env = "WG_PUBLIC_ADDRESS")]
    pub public_address: Option<String>,
}

/// A configuration error naming what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting}: {reason}")]
pub struct ConfigError {
    /// `--flag / WG_VARIABLE`.
    pub setting: String,
    /// What is wrong and how to fix it.
    pub reason: String,
}

fn err(flag: &str, var: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        setting: format!("--{flag} / {var}"),
        reason: reason.into(),
    }
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Role.
    pub role: Role,
    /// HTTPS listen address.
    pub listen: SocketAddr,
    /// Agent listen address.
    pub agent_listen: SocketAddr,
    /// Postgres URL (empty on a remote gateway, which has none).
    pub database_url: String,
    /// How that URL reaches Postgres.
    pub database_pool_mode: PoolMode,
    /// Parsed Redis target (None on a remote gateway, which has none).
    pub redis: Option<RedisTarget>,
    /// Server certificate and key.
    pub tls: PemPair,
    /// Signing keys.
    pub keyring: Keyring,
    /// Bootstrap admin token, if given.
    pub admin_token: Option<String>,
    /// Observer token file (checked readable and well-formed at start-up), if given.
    pub observer_token_file: Option<PathBuf>,
    /// Ed25519 recording-manifest keys, if given.
    pub recording_keys: Option<crate::recording::ManifestKeys>,
    /// Recordings destination.
    pub recordings_url: Option<String>,
    /// Recording spool directory.
    pub recordings_spool: PathBuf,
    /// Grace before an unfinished recording is signed as incomplete.
    pub recording_seal_after: Duration,
    /// statement_timeout.
    pub statement_timeout: Duration,
    /// Replica id.
    pub replica_id: String,
    /// Checker cycle.
    pub health_interval: Duration,
    /// Isolation grace.
    pub isolation_grace: Duration,
    /// SIGTERM drain window.
    pub drain_timeout: Duration,
    /// Heartbeat age that makes a replica lost.
    pub replica_lost_after: Duration,
    /// Validity of a live session's state between renewals.
    pub live_session_ttl: Duration,
    /// Local admin socket.
    pub admin_socket: Option<PathBuf>,
    /// Connection and request bounds of 8443.
    pub limits: crate::limits::Limits,
    /// Plain-HTTP `/metrics` listener.
    pub metrics_listen: Option<SocketAddr>,
    /// Networks targets may not point at.
    pub target_deny: Vec<ipnet::IpNet>,
    /// Networks targets may point at even when denied.
    pub target_allow: Vec<ipnet::IpNet>,
    /// Control plane: the agent CA (the agent port is served only with one).
    pub agent_ca: Option<std::sync::Arc<crate::agent::AgentCa>>,
    /// Control plane: lifetime of signed gateway certificates.
    pub agent_cert_ttl: Duration,
    /// Gateway: how to reach the control plane over the agent link, if it should.
    pub agent_link: Option<crate::agent::LinkConfig>,
    /// Gateway: live and new sessions while the link is down.
    pub offline: crate::agent::state::OfflinePolicy,
    /// The terminating SSH front end, when its key files are given.
    pub ssh: Option<crate::ssh::SshParts>,
}

impl ServeConfig {
    /// The target rules of this replica: the configured networks, plus its own Postgres,
    /// Redis and listeners (host names resolved now).
    pub async fn target_policy(&self) -> crate::target_policy::TargetPolicy {
        let mut p = crate::target_policy::TargetPolicy::new(
            self.target_deny.clone(),
            self.target_allow.clone(),
        );
        if let Ok(u) = url::Url::parse(&self.database_url)
            && let Some(host) = u.host_str()
        {
            p = p.with_own("Postgres", host, u.port().unwrap_or(5432)).await;
        }
        for hp in self.redis.iter().flat_map(|r| r.endpoints()) {
            p = p.with_own("Redis", &hp.host, hp.port).await;
        }
        p.with_listener(self.listen)
            .await
            .with_listener(self.agent_listen)
            .await
    }
}

/// Like [`parse_duration`], with `off` (or `0`) for none.
pub fn optional_duration(
    flag: &str,
    var: &str,
    s: &str,
    min: Duration,
    max: Duration,
) -> Result<Option<Duration>, ConfigError> {
    match s.trim() {
        "off" | "0" => Ok(None),
        s => parse_duration(flag, var, s, min, max).map(Some),
    }
}

/// Parses a human duration (`5s`, `250ms`, `10m`) bounded to `[min, max]`.
pub fn parse_duration(
    flag: &str,
    var: &str,
    s: &str,
    min: Duration,
    max: Duration,
) -> Result<Duration, ConfigError> {
    let d = humantime::parse_duration(s.trim()).map_err(|e| {
        err(
            flag,
            var,
            format!("`{s}` is not a duration ({e}); use e.g. 5s, 250ms, 10m"),
        )
    })?;
    if d < min || d > max {
        return Err(err(flag, var, format!("{s} is outside {min:?}..={max:?}")));
    }
    Ok(d)
}

fn read(flag: &str, var: &str, path: &PathBuf) -> Result<String, ConfigError> {
    std::fs::read_to_string(path)
        .map_err(|e| err(flag, var, format!("cannot read {}: {e}", path.display())))
}

fn rate(flag: &str, var: &str, s: &str) -> Result<crate::ratelimit::Rate, ConfigError> {
    crate::ratelimit::Rate::parse(s).map_err(|e| err(flag, var, e.to_string()))
}

fn addr(flag: &str, var: &str, s: &str) -> Result<SocketAddr, ConfigError> {
    s.parse().map_err(|_| {
        err(
            flag,
            var,
            format!("`{s}` is not an address; use ip:port, e.g. 0.0.0.0:8443"),
        )
    })
}

/// Checks `--database-url`: a URL with the `postgres` or `postgresql` scheme. A function of its
/// own so the fuzz targets (`fuzz/`) reach it without building a whole [`ServeArgs`].
pub fn parse_database_url(s: &str) -> Result<url::Url, ConfigError> {
    let parsed = url::Url::parse(s)
        .map_err(|e| err("database-url", "WG_DATABASE_URL", format!("not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "postgres" | "postgresql") {
        return Err(err(
            "database-url",
            "WG_DATABASE_URL",
            format!(
                "scheme `{}` is not supported; use postgres://",
                parsed.scheme()
            ),
        ));
    }
    Ok(parsed)
}

impl ServeArgs {
    /// The SSH front end: all three key files, or none (not served).
    fn ssh(&self) -> Result<Option<crate::ssh::SshParts>, ConfigError> {
        let files = [
            (
                "ssh-host-key-file",
                "WG_SSH_HOST_KEY_FILE",
                &self.ssh_host_key_file,
            ),
            (
                "ssh-ca-key-file",
                "WG_SSH_CA_KEY_FILE",
                &self.ssh_ca_key_file,
            ),
            (
                "ssh-login-ca-key-file",
                "WG_SSH_LOGIN_CA_KEY_FILE",
                &self.ssh_login_ca_key_file,
            ),
        ];
        if files.iter().all(|(_, _, f)| f.is_none()) {
            return Ok(None);
        }
        let mut keys = Vec::new();
        for (flag, var, file) in files {
            let path = file.as_ref().ok_or_else(|| {
                err(flag, var, "the SSH front end needs all three of --ssh-host-key-file, --ssh-ca-key-file and --ssh-login-ca-key-file")
            })?;
            keys.push(crate::ssh::keys::read_key(path).map_err(|e| err(flag, var, e.to_string()))?);
        }
        let listen = addr("ssh-listen", "WG_SSH_LISTEN", &self.ssh_listen)?;
        let login_grace = parse_duration(
            "ssh-login-grace",
            "WG_SSH_LOGIN_GRACE",
            &self.ssh_login_grace,
            Duration::from_secs(1),
            Duration::from_secs(600),
        )?;
        let mut keys = keys.into_iter();
        match (keys.next(), keys.next(), keys.next()) {
            (Some(host), Some(user_ca), Some(login_ca)) => Ok(Some(crate::ssh::SshParts {
                listen,
                login_grace,
                keys: crate::ssh::SshKeys {
                    host,
                    user_ca,
                    login_ca,
                },
            })),
            _ => Ok(None),
        }
    }

    /// Validates everything, reading the files it names.
    pub fn validate(&self) -> Result<ServeConfig, ConfigError> {
        let listen = addr("listen", "WG_LISTEN", &self.listen)?;
        let agent_listen = addr("agent-listen", "WG_AGENT_LISTEN", &self.agent_listen)?;
        // A remote gateway (`--control-plane`) has no Postgres and no Redis.
        let remote = self
            .control_plane
            .as_deref()
            .is_some_and(|s| !s.trim().is_empty());
        let database_url = match (&self.database_url, remote) {
            (Some(u), _) => {
                parse_database_url(u)?;
                u.clone()
            }
            (None, true) => String::new(),
            (None, false) => {
                return Err(err(
                    "database-url",
                    "WG_DATABASE_URL",
                    "required: the Postgres URL",
                ));
            }
        };
        let redis = match (&self.redis_url, remote) {
            (Some(u), _) => Some(
                RedisTarget::parse(u)
                    .map_err(|e| err("redis-url", "WG_REDIS_URL", e.to_string()))?,
            ),
            (None, true) => None,
            (None, false) => {
                return Err(err("redis-url", "WG_REDIS_URL", "required: the Redis URL"));
            }
        };
        let cert_path = self.tls_cert.as_ref().ok_or_else(|| {
            err(
                "tls-cert",
                "WG_TLS_CERT",
                "required: a PEM certificate file",
            )
        })?;
        let key_path = self
            .tls_key
            .as_ref()
            .ok_or_else(|| err("tls-key", "WG_TLS_KEY", "required: a PEM private key file"))?;
        let tls = PemPair {
            cert: read("tls-cert", "WG_TLS_CERT", cert_path)?,
            key: read("tls-key", "WG_TLS_KEY", key_path)?,
        };
        crate::tls::server_config(&tls)
            .map_err(|e| err("tls-cert", "WG_TLS_CERT", e.to_string()))?;
        let keyring = match (&self.internal_key_file, remote) {
            (Some(key_path), _) => Keyring::parse(&read(
                "internal-key-file",
                "WG_INTERNAL_KEY_FILE",
                key_path,
            )?)
            .map_err(|e| {
                err(
                    "internal-key-file",
                    "WG_INTERNAL_KEY_FILE",
                    format!("{}: {e}", key_path.display()),
                )
            })?,
            // A remote gateway signs nothing: it verifies grants with the public keys it gets
            // over the link, and must not hold the control plane's secret.
            (None, true) => Keyring::parse(&Keyring::generate_file("remote-unused"))
                .map_err(|e| err("internal-key-file", "WG_INTERNAL_KEY_FILE", e.to_string()))?,
            (None, false) => {
                return Err(err(
                    "internal-key-file",
                    "WG_INTERNAL_KEY_FILE",
                    "required: the internal signing key file",
                ));
            }
        };
        let recording_keys = match &self.recording_key_file {
            Some(p) => Some(
                crate::recording::ManifestKeys::parse(&read(
                    "recording-key-file",
                    "WG_RECORDING_KEY_FILE",
                    p,
                )?)
                .map_err(|e| {
                    err(
                        "recording-key-file",
                        "WG_RECORDING_KEY_FILE",
                        format!("{}: {e}", p.display()),
                    )
                })?,
            ),
            None => None,
        };
        let admin_token = match &self.admin_token_file {
            Some(p) => Some(
                crate::token::parse_token_file(&read(
                    "admin-token-file",
                    "WG_ADMIN_TOKEN_FILE",
                    p,
                )?)
                .map_err(|e| {
                    err(
                        "admin-token-file",
                        "WG_ADMIN_TOKEN_FILE",
                        format!("{}: {e}", p.display()),
                    )
                })?,
            ),
            None => None,
        };
        if let Some(p) = &self.observer_token_file {
            crate::api::observer::parse_file(&read(
                "observer-token-file",
                "WG_OBSERVER_TOKEN_FILE",
                p,
            )?)
            .map_err(|e| {
                err(
                    "observer-token-file",
                    "WG_OBSERVER_TOKEN_FILE",
                    format!("{}: {e}", p.display()),
                )
            })?;
        }
        if let Some(r) = &self.recordings_url
            && !(r.starts_with("file:///") || r.starts_with("s3://"))
        {
            return Err(err(
                "recordings-url",
                "WG_RECORDINGS_URL",
                format!("`{r}`: use file:///path or s3://bucket/prefix"),
            ));
        }
        let statement_timeout = parse_duration(
            "statement-timeout",
            "WG_STATEMENT_TIMEOUT",
            &self.statement_timeout,
            Duration::from_millis(100),
            Duration::from_secs(600),
        )?;
        let health_interval = parse_duration(
            "health-interval",
            "WG_HEALTH_INTERVAL",
            &self.health_interval,
            Duration::from_millis(100),
            Duration::from_secs(60),
        )?;
        let isolation_grace = parse_duration(
            "isolation-grace",
            "WG_ISOLATION_GRACE",
            &self.isolation_grace,
            health_interval,
            Duration::from_secs(600),
        )?;
        let drain_timeout = parse_duration(
            "drain-timeout",
            "WG_DRAIN_TIMEOUT",
            &self.drain_timeout,
            Duration::ZERO,
            Duration::from_secs(86_400),
        )?;
        let replica_lost_after = parse_duration(
            "replica-lost-after",
            "WG_REPLICA_LOST_AFTER",
            &self.replica_lost_after,
            health_interval * 3,
            Duration::from_secs(3600),
        )?;
        // A relay renews every health interval (at least every 500 ms): leave room for
        // three missed renewals.
        let live_session_ttl = parse_duration(
            "live-session-ttl",
            "WG_LIVE_SESSION_TTL",
            &self.live_session_ttl,
            (health_interval.max(Duration::from_millis(500)) * 3).max(Duration::from_secs(2)),
            Duration::from_secs(3600),
        )?;
        let limits = crate::limits::Limits {
            max_connections: match self.max_connections {
                0 => {
                    return Err(err(
                        "max-connections",
                        "WG_MAX_CONNECTIONS",
                        "must be at least 1",
                    ));
                }
                n => n,
            },
            header_read_timeout: parse_duration(
                "header-read-timeout",
                "WG_HEADER_READ_TIMEOUT",
                &self.header_read_timeout,
                Duration::from_millis(100),
                Duration::from_secs(600),
            )?,
            request_timeout: parse_duration(
                "request-timeout",
                "WG_REQUEST_TIMEOUT",
                &self.request_timeout,
                Duration::from_millis(100),
                Duration::from_secs(3600),
            )?,
            relay: crate::pump::Keepalive {
                ping_every: optional_duration(
                    "relay-ping-interval",
                    "WG_RELAY_PING_INTERVAL",
                    &self.relay_ping_interval,
                    Duration::from_millis(100),
                    Duration::from_secs(3600),
                )?,
                idle_after: optional_duration(
                    "relay-idle-timeout",
                    "WG_RELAY_IDLE_TIMEOUT",
                    &self.relay_idle_timeout,
                    Duration::from_secs(1),
                    Duration::from_secs(7 * 24 * 3600),
                )?,
            },
            proxy_protocol: crate::client_addr::ProxyProtocol::parse(&self.proxy_protocol_from)
                .map_err(|reason| err("proxy-protocol-from", "WG_PROXY_PROTOCOL_FROM", reason))?,
            requests_per_ip: rate(
                "requests-per-ip",
                "WG_REQUESTS_PER_IP",
                &self.requests_per_ip,
            )?,
            auth_failures_per_ip: rate(
                "auth-failures-per-ip",
                "WG_AUTH_FAILURES_PER_IP",
                &self.auth_failures_per_ip,
            )?,
            session_rate_per_token: rate(
                "session-rate-per-token",
                "WG_SESSION_RATE_PER_TOKEN",
                &self.session_rate_per_token,
            )?,
            max_sessions_per_token: self.max_sessions_per_token,
            max_relays: self.max_relays,
        };
        let replica_id = match &self.replica_id {
            Some(id) if !id.trim().is_empty() => id.trim().to_string(),
            Some(_) => return Err(err("replica-id", "WG_REPLICA_ID", "must not be empty")),
            None => default_replica_id(),
        };
        let recording_seal_after = parse_duration(
            "recording-seal-after",
            "WG_RECORDING_SEAL_AFTER",
            &self.recording_seal_after,
            Duration::from_secs(1),
            Duration::from_secs(7 * 86_400),
        )?;
        let recordings_spool = self.recordings_spool.clone().unwrap_or_else(|| {
            std::env::temp_dir()
                .join("wardengate-spool")
                .join(&replica_id)
        });
        let agent_ca = match &self.agent_ca_file {
            Some(p) => Some(std::sync::Arc::new(
                crate::agent::AgentCa::from_pem(&read("agent-ca-file", "WG_AGENT_CA_FILE", p)?)
                    .map_err(|e| err("agent-ca-file", "WG_AGENT_CA_FILE", e.to_string()))?,
            )),
            None => None,
        };
        let agent_cert_ttl = parse_duration(
            "agent-cert-ttl",
            "WG_AGENT_CERT_TTL",
            &self.agent_cert_ttl,
            Duration::from_secs(60),
            Duration::from_secs(366 * 86_400),
        )?;
        let agent_link = self.agent_link(listen, health_interval, &replica_id)?;
        let offline = crate::agent::state::OfflinePolicy {
            grace: parse_duration(
                "offline-grace",
                "WG_OFFLINE_GRACE",
                &self.offline_grace,
                Duration::from_secs(1),
                Duration::from_secs(7 * 86_400),
            )?,
            accept_signed_grants: self.offline_accept_signed_grants,
        };
        let ssh = self.ssh()?;
        Ok(ServeConfig {
            offline,
            ssh,
            agent_ca,
            agent_cert_ttl,
            agent_link,
            role: self.role,
            listen,
            agent_listen,
            database_url,
            database_pool_mode: self.database_pool_mode,
            redis,
            tls,
            keyring,
            admin_token,
            observer_token_file: self.observer_token_file.clone(),
            recording_keys,
            recordings_url: self.recordings_url.clone(),
            recordings_spool,
            recording_seal_after,
            statement_timeout,
            replica_id,
            health_interval,
            isolation_grace,
            drain_timeout,
            replica_lost_after,
            live_session_ttl,
            admin_socket: self.admin_socket.clone(),
            limits,
            metrics_listen: match &self.metrics_listen {
                Some(a) if !a.trim().is_empty() => {
                    Some(addr("metrics-listen", "WG_METRICS_LISTEN", a)?)
                }
                _ => None,
            },
            target_deny: crate::target_policy::parse_networks(&self.target_deny)
                .map_err(|reason| err("target-deny", "WG_TARGET_DENY", reason))?,
            target_allow: crate::target_policy::parse_networks(&self.target_allow)
                .map_err(|reason| err("target-allow", "WG_TARGET_ALLOW", reason))?,
        })
    }
}

impl ServeArgs {
    /// The gateway's side of the agent link, when `--control-plane` is set.
    fn agent_link(
        &self,
        listen: SocketAddr,
        interval: Duration,
        replica_id: &str,
    ) -> Result<Option<crate::agent::LinkConfig>, ConfigError> {
        let Some(cp) = self
            .control_plane
            .as_deref()
            .filter(|s| !s.trim().is_empty())
        else {
            return Ok(None);
        };
        let e = |reason: String| err("control-plane", "WG_CONTROL_PLANE", reason);
        let url = url::Url::parse(cp.trim()).map_err(|x| e(format!("`{cp}` is not a URL: {x}")))?;
        if url.scheme() != "https" || url.host_str().is_none() {
            return Err(e(format!("`{cp}`: use https://HOST:8444")));
        }
        if self.role != Role::Gateway {
            return Err(e(
                "only a `--role gateway` replica dials the control plane".into()
            ));
        }
        let region = self
            .region
            .as_deref()
            .map(str::trim)
            .filter(|r| !r.is_empty() && r.len() <= 63)
            .ok_or_else(|| {
                err(
                    "region",
                    "WG_REGION",
                    "required with --control-plane: 1 to 63 characters",
                )
            })?;
        let control_plane_ca = match &self.control_plane_ca {
            Some(p) => Some(read("control-plane-ca", "WG_CONTROL_PLANE_CA", p)?),
            None => None,
        };
        Ok(Some(crate::agent::LinkConfig {
            control_plane: url,
            control_plane_ca,
            join_token_file: self.join_token_file.clone(),
            region: region.to_string(),
            state_dir: self.agent_state_dir.clone().unwrap_or_else(|| {
                std::env::temp_dir()
                    .join("wardengate-agent")
                    .join(replica_id)
            }),
            address: match self.public_address.as_deref().map(str::trim) {
                Some(a) if !a.is_empty() => a.to_string(),
                _ => listen.to_string(),
            },
            interval,
        }))
    }
}

/// Host name (the pod name in Kubernetes), else a random id.
pub fn default_replica_id() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| {
            format!(
                "replica-{}",
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ServeArgs,
    }

    struct Files {
        _dir: tempfile::TempDir,
        cert: String,
        key: String,
        keys: String,
        admin: String,
    }

    fn files() -> Files {
        let dir = tempfile::tempdir().unwrap();
        let pair = crate::tls::self_signed(&["localhost"]).unwrap();
        let p = |n: &str| dir.path().join(n).display().to_string();
        std::fs::write(p("cert.pem"), &pair.cert).unwrap();
        std::fs::write(p("key.pem"), &pair.key).unwrap();
        std::fs::write(p("keys"), Keyring::generate_file("k1")).unwrap();
        std::fs::write(p("admin"), crate::token::generate()).unwrap();
        Files {
            cert: p("cert.pem"),
            key: p("key.pem"),
            keys: p("keys"),
            admin: p("admin"),
            _dir: dir,
        }
    }

    /// A valid command line with `extra` flag/value pairs replacing (or adding to) the defaults.
    fn args(f: &Files, extra: &[&str]) -> Vec<String> {
        let mut pairs: Vec<(String, String)> = [
            ("--database-url", "postgres://u@db/wg"),
            ("--redis-url", "redis://r:6379"),
            ("--tls-cert", f.cert.as_str()),
            ("--tls-key", f.key.as_str()),
            ("--internal-key-file", f.keys.as_str()),
            ("--admin-token-file", f.admin.as_str()),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for kv in extra.chunks(2) {
            pairs.retain(|(k, _)| k != kv[0]);
            pairs.push((kv[0].to_string(), kv[1].to_string()));
        }
        std::iter::once("x".to_string())
            .chain(pairs.into_iter().flat_map(|(k, v)| [k, v]))
            .collect()
    }

    fn validate(f: &Files, extra: &[&str]) -> Result<ServeConfig, ConfigError> {
        Cli::try_parse_from(args(f, extra)).unwrap().args.validate()
    }

    #[test]
    fn valid_configuration_with_defaults() {
        let f = files();
        let c = validate(&f, &[]).unwrap();
        assert_eq!(c.listen, "0.0.0.0:8443".parse().unwrap());
        assert_eq!(c.agent_listen, "0.0.0.0:8444".parse().unwrap());
        assert_eq!(c.statement_timeout, Duration::from_secs(5));
        assert_eq!(c.role, Role::All);
        assert!(c.admin_token.is_some());
        assert_eq!(c.live_session_ttl, crate::session::DEFAULT_LIVE_SESSION_TTL);
        assert_eq!(c.database_pool_mode, PoolMode::Session);
        assert_eq!(c.admin_socket, None);
    }

    #[test]
    fn the_ssh_login_grace_flag_defaults_to_the_front_ends_default() {
        let f = files();
        let a = Cli::try_parse_from(args(&f, &[])).unwrap().args;
        let grace = parse_duration(
            "ssh-login-grace",
            "WG_SSH_LOGIN_GRACE",
            &a.ssh_login_grace,
            Duration::from_secs(1),
            Duration::from_secs(600),
        )
        .unwrap();
        assert_eq!(grace, crate::ssh::DEFAULT_LOGIN_GRACE);
    }

    #[test]
    fn live_session_ttl_leaves_room_for_three_missed_renewals() {
        let f = files();
        let c = validate(
            &f,
            &["--live-session-ttl", "2s", "--health-interval", "500ms"],
        )
        .unwrap();
        assert_eq!(c.live_session_ttl, Duration::from_secs(2));
        let e = validate(&f, &["--live-session-ttl", "2s", "--health-interval", "1s"]).unwrap_err();
        assert_eq!(e.setting, "--live-session-ttl / WG_LIVE_SESSION_TTL");
        let e = validate(&f, &["--live-session-ttl", "1s"]).unwrap_err();
        assert_eq!(e.setting, "--live-session-ttl / WG_LIVE_SESSION_TTL");
        let c = validate(
            &f,
            &[
                "--database-pool-mode",
                "transaction",
                "--admin-socket",
                "/run/wg.sock",
            ],
        )
        .unwrap();
        assert_eq!(c.database_pool_mode, PoolMode::Transaction);
        assert_eq!(
            c.admin_socket.as_deref(),
            Some(std::path::Path::new("/run/wg.sock"))
        );
    }

    #[test]
    fn internal_key_file_may_hold_one_bare_secret() {
        use base64::Engine;
        let f = files();
        // What `openssl rand -base64 32 > internal-key` writes.
        let bare = f._dir.path().join("bare");
        let secret: [u8; 32] = rand::random();
        let text = base64::engine::general_purpose::STANDARD.encode(secret);
        std::fs::write(&bare, format!("{text}\n")).unwrap();
        let c = validate(&f, &["--internal-key-file", bare.to_str().unwrap()]).unwrap();
        assert!(c.keyring.signing_key_id().starts_with("sha256-"));
        std::fs::write(&bare, &text[..20]).unwrap();
        let e = validate(&f, &["--internal-key-file", bare.to_str().unwrap()]).unwrap_err();
        assert_eq!(
            e.setting, "--internal-key-file / WG_INTERNAL_KEY_FILE",
            "{e}"
        );
    }

    #[test]
    fn bad_values_name_flag_and_variable() {
        let f = files();
        let cases: &[(&[&str], &str)] = &[
            (&["--listen", "8443"], "--listen / WG_LISTEN"),
            (&["--redis-url", "http://x"], "--redis-url / WG_REDIS_URL"),
            (
                &["--database-url", "mysql://x/y"],
                "--database-url / WG_DATABASE_URL",
            ),
            (
                &["--statement-timeout", "soon"],
                "--statement-timeout / WG_STATEMENT_TIMEOUT",
            ),
            (
                &["--statement-timeout", "0s"],
                "--statement-timeout / WG_STATEMENT_TIMEOUT",
            ),
            (&["--tls-cert", "/nonexistent"], "--tls-cert / WG_TLS_CERT"),
            (&["--tls-cert", &f.keys], "--tls-cert / WG_TLS_CERT"),
            (
                &["--internal-key-file", &f.cert],
                "--internal-key-file / WG_INTERNAL_KEY_FILE",
            ),
            (
                &["--recordings-url", "ftp://x"],
                "--recordings-url / WG_RECORDINGS_URL",
            ),
            (
                &["--isolation-grace", "10ms"],
                "--isolation-grace / WG_ISOLATION_GRACE",
            ),
        ];
        for (extra, setting) in cases {
            let e = validate(&f, extra).unwrap_err();
            assert_eq!(e.setting, *setting, "{extra:?}: {e}");
        }
        let short = f._dir.path().join("short");
        std::fs::write(&short, "abc").unwrap();
        let e = validate(&f, &["--admin-token-file", short.to_str().unwrap()]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("--admin-token-file / WG_ADMIN_TOKEN_FILE")
                && e.reason.contains("at least 24"),
            "{e}"
        );
    }

    #[test]
    fn missing_required_settings_are_named() {
        let e = Cli::try_parse_from(["x"])
            .unwrap()
            .args
            .validate()
            .unwrap_err();
        assert_eq!(e.setting, "--database-url / WG_DATABASE_URL");
    }
}
