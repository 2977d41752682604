//! `wgctl`: the command-line client. Human-readable output by default, `-o json` for scripts.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde_json::{Value, json};

use crate::client::{Client, ClientError, pump, with_retries};
use crate::session::{EndReason, SessionStatus};
use crate::token::Role;
use crate::wire::{ErrorCode, NewTarget, NewToken, SessionView};

const EXIT_CODES: &str = "Exit codes:\n  0  success\n  1  other error\n  2  usage or configuration error (including a server certificate wgctl cannot trust)\n  \
3  authentication or permission refused (401/403)\n  4  not found (404)\n  69 target unreachable from the gateway\n  \
75 temporary failure (service unavailable, replica draining, relay closed recoverably): retry";

/// Talk to a Wardengate server.
#[derive(Debug, Parser)]
#[command(name = "wgctl", version, about, after_help = EXIT_CODES)]
pub struct Cli {
    /// Server address (the load balancer).
    #[arg(
        long,
        env = "WG_ADDR",
        default_value = "https://127.0.0.1:8443",
        global = true
    )]
    pub addr: String,
    /// Bearer token. On the command line it is visible to every user of this machine (`ps`):
    /// prefer `--token-file` / `WG_TOKEN_FILE`.
    #[arg(long, env = "WG_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// File holding the bearer token.
    #[arg(long, env = "WG_TOKEN_FILE", global = true)]
    pub token_file: Option<String>,
    /// PEM file of the CA that signed the server certificate (default: system roots).
    #[arg(long, env = "WG_CA_CERT", global = true)]
    pub ca_cert: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Human, global = true)]
    pub output: Output,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Aligned text.
    Human,
    /// JSON on stdout.
    Json,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage targets.
    Targets {
        /// Subcommand.
        #[command(subcommand)]
        command: TargetsCommand,
    },
    /// Relay stdin/stdout to a target (for `ssh -o ProxyCommand='wgctl connect %h'`).
    Connect {
        /// Target name.
        target: String,
        /// How long to keep retrying while replicas are unavailable or draining.
        #[arg(long, default_value = "30s")]
        retry_for: humantime::Duration,
    },
    /// Serve a local TCP port that relays each connection to a target (psql, RDP, …).
    Tunnel {
        /// Target name.
        target: String,
        /// Local address to listen on.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
        /// How long each connection keeps retrying while replicas are unavailable.
        #[arg(long, default_value = "30s")]
        retry_for: humantime::Duration,
    },
    /// Inspect and end sessions.
    Sessions {
        /// Subcommand.
        #[command(subcommand)]
        command: SessionsCommand,
    },
    /// Manage API tokens.
    Tokens {
        /// Subcommand.
        #[command(subcommand)]
        command: TokensCommand,
    },
    /// Replica-level operations.
    System {
        /// Subcommand.
        #[command(subcommand)]
        command: SystemCommand,
    },
    /// Session recordings (needs an approver or admin token).
    Recordings {
        /// Subcommand.
        #[command(subcommand)]
        command: RecordingsCommand,
    },
    /// Sessions waiting for an approver (needs an approver or admin token).
    Approvals {
        /// Subcommand.
        #[command(subcommand)]
        command: ApprovalsCommand,
    },
    /// Log in to terminated SSH target TARGET with the stock `ssh` client and a short-lived
    /// certificate (`wgctl ssh db1 -- uptime` runs a command). Exits with ssh's exit code.
    Ssh {
        /// Target name.
        target: String,
        /// The gateway's SSH host (default: the host of --addr).
        #[arg(long, env = "WG_SSH_HOST")]
        ssh_host: Option<String>,
        /// The gateway's SSH port (default: what the server reports, normally 2222).
        #[arg(long, env = "WG_SSH_PORT")]
        ssh_port: Option<u16>,
        /// The ssh client to run.
        #[arg(long, default_value = "ssh")]
        ssh_bin: String,
        /// Extra ssh options, e.g. `--ssh-arg=-tt` (repeatable).
        #[arg(long = "ssh-arg", allow_hyphen_values = true)]
        ssh_args: Vec<String>,
        /// Remote command (after `--`).
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Print the SSH user CA's public key as one `TrustedUserCAKeys` line for targets.
    SshCa,
    /// Remote gateways that link to the control plane (admin).
    Gateways {
        /// Subcommand.
        #[command(subcommand)]
        command: GatewaysCommand,
    },
}

/// `wgctl gateways …`.
#[derive(Debug, Subcommand)]
pub enum GatewaysCommand {
    /// Create a join token for gateways of a region (the secret is printed once).
    JoinToken {
        /// Region the gateway serves (its `--region`).
        #[arg(long)]
        region: String,
        /// Lifetime (1m to 30d).
        #[arg(long, default_value = "1h")]
        ttl: humantime::Duration,
        /// How many gateways may join with it (1 to 1000): more than one for a GatewayPool,
        /// whose every new pod joins with the token in the pool's Secret.
        #[arg(long, default_value_t = 1)]
        uses: u32,
    },
    /// Every gateway: id, region, version, address, last heartbeat, sessions, link state.
    List,
    /// Revoke a gateway: its certificate is refused and its link cut at its next heartbeat.
    Revoke {
        /// Gateway id (from `gateways list`).
        id: String,
    },
    /// Drain a gateway over its link (it refuses new relays; owned sessions get the timeout).
    Drain {
        /// Gateway id.
        id: String,
        /// How long owned sessions may continue (default: the gateway's --drain-timeout).
        #[arg(long)]
        timeout: Option<humantime::Duration>,
    },
    /// Terminate a session on a gateway over its link (through the gateway's session core).
    Terminate {
        /// Gateway id.
        id: String,
        /// Session id.
        session: String,
    },
}

/// `wgctl recordings …`.
#[derive(Debug, Subcommand)]
pub enum RecordingsCommand {
    /// Check session ID's recording: its hash chain and seals, its Ed25519-signed manifest
    /// (against the hash Postgres recorded) and every object; or, with `--offline DIR
    /// --public-key FILE`, a downloaded recording with no server. Exit code 0 when everything
    /// verifies, 1 with the findings listed otherwise.
    Verify {
        /// Session id (not with --offline).
        #[arg(required_unless_present = "offline")]
        id: Option<String>,
        /// A downloaded recording directory (`wgctl recordings download ID DIR`).
        #[arg(long, requires = "public_key", conflicts_with = "id")]
        offline: Option<std::path::PathBuf>,
        /// Trusted public keys (`wgctl recordings public-keys > FILE`, or
        /// `wardengate keys public KEYFILE`).
        #[arg(long, requires = "offline")]
        public_key: Option<std::path::PathBuf>,
    },
    /// Download every object of session ID's recording into DIR (for `verify --offline`).
    Download {
        /// Session id.
        id: String,
        /// Directory to create and fill.
        dir: std::path::PathBuf,
    },
    /// Print the public keys recording manifests are signed with, in the key-file format
    /// `verify --public-key` reads (no token needed).
    PublicKeys,
    /// Play a terminated SSH session's recording (asciicast v2) in this terminal.
    Play {
        /// Session id.
        id: String,
        /// Playback speed factor.
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        /// Longest pause shown, in seconds (longer idle gaps are shortened).
        #[arg(long)]
        idle_limit: Option<f64>,
    },
    /// Print a terminated SSH session's recording as an asciicast v2 file (for asciinema).
    Cast {
        /// Session id.
        id: String,
    },
    /// Print what a terminated SSH session's channels printed, byte for byte: terminal text,
    /// and the raw bytes of binary exec streams (`ssh … tar c dir > x.tar`), e.g. to recover
    /// a file a command sent (`wgctl recordings output ID > out`).
    Output {
        /// Session id.
        id: String,
    },
}

/// `wgctl approvals …`.
#[derive(Debug, Subcommand)]
pub enum ApprovalsCommand {
    /// Pending requests, oldest first.
    List,
    /// Let session ID connect.
    Approve {
        /// Session id.
        id: String,
        /// Why (kept in the audit log).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// End session ID without connecting.
    Deny {
        /// Session id.
        id: String,
        /// Why (shown to the requester, kept in the audit log).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Follow approval requests, decisions and session starts/ends as they happen (server-sent
    /// events; reconnects and resumes where it left off). Stops after --count events if given.
    Watch {
        /// Exit after this many events.
        #[arg(long)]
        count: Option<u64>,
        /// First replay the recorded events after this event id (0: from the beginning);
        /// without it, only events from now on.
        #[arg(long)]
        since: Option<i64>,
    },
}

/// `wgctl targets …`
#[derive(Debug, Subcommand)]
pub enum TargetsCommand {
    /// Add a target.
    Add {
        /// Unique name.
        name: String,
        /// Host the gateway dials.
        #[arg(long)]
        host: String,
        /// Port the gateway dials.
        #[arg(long)]
        port: u16,
        /// Sessions need an approver's decision first.
        #[arg(long)]
        require_approval: bool,
        /// Relayed by the remote gateways of this region (`wardengate serve --role gateway
        /// --region R`), not by the control plane.
        #[arg(long)]
        region: Option<String>,
        /// Terminated SSH: the login on the target (`wgctl ssh NAME`, `ssh -p 2222
        /// USER:NAME@gateway`); the target must trust `wgctl ssh-ca`.
        #[arg(long)]
        ssh_user: Option<String>,
        /// Terminated SSH: record terminal input too (off by default: it captures passwords
        /// typed at prompts that do not echo).
        #[arg(long, requires = "ssh_user")]
        ssh_record_input: bool,
        /// Terminated SSH: pin this host key (`ssh-ed25519 AAAA…`) instead of the first one seen.
        #[arg(long, requires = "ssh_user")]
        ssh_host_key: Option<String>,
        /// Terminated SSH: bind each session's certificate to where the target sees the gateway
        /// come from (`source-address`): `dial` (the address the replica dials from, no NAT
        /// between) or addresses and CIDR blocks, comma-separated.
        #[arg(long, requires = "ssh_user")]
        ssh_source_address: Option<String>,
        /// Terminated SSH: allow port forwards (`ssh -L`, `ssh -W`) to these destinations as the
        /// target sees them, comma-separated `HOST:PORT` (`*` for any host or port), e.g.
        /// `localhost:5432`. Refused when not set.
        #[arg(long, requires = "ssh_user")]
        ssh_forward_to: Option<String>,
    },
    /// List targets.
    List,
    /// Remove a target.
    Remove {
        /// Name.
        name: String,
    },
}

/// `wgctl sessions …`
#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// List recent sessions.
    List {
        /// How many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Terminate a session (its owner, an approver or an admin); the user is told who did.
    #[command(visible_alias = "terminate")]
    Kill {
        /// Session id.
        id: String,
    },
    /// Watch a live terminated SSH session as it happens (approver or admin); Ctrl-C stops
    /// watching, not the session. Exits 0 when the session ends (its reason on stderr).
    Watch {
        /// Session id.
        id: String,
    },
}

/// `wgctl tokens …`
#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Create a token (the secret is printed once).
    Create {
        /// Role.
        #[arg(long, value_enum)]
        role: Role,
        /// Label.
        #[arg(long)]
        name: Option<String>,
        /// Lifetime (e.g. 12h, 30d; 1m to 366d). Without it the token never expires.
        #[arg(long)]
        ttl: Option<humantime::Duration>,
    },
    /// Every token (never the secrets): id, name, role, state, expiry, last use.
    List,
    /// Revoke a token: refused on its next request (within 2 s on every replica).
    Revoke {
        /// Token id (from `tokens list`).
        id: String,
    },
}

/// `wgctl system …`
#[derive(Debug, Subcommand)]
pub enum SystemCommand {
    /// Replica id, drain state and owned sessions of the replica that answers.
    Status {
        /// Ask the replica on this machine through its admin socket (no token, no TLS).
        #[command(flatten)]
        local: LocalAdmin,
    },
    /// Drain the replica at --addr (use its own address, not the load balancer's), or with
    /// --local the one on this machine: readiness fails, new sessions go elsewhere, owned
    /// sessions get --timeout to end, then the rest are closed with a recoverable error.
    /// Returns once the replica is empty.
    Drain {
        /// Eviction window.
        #[arg(long, default_value = crate::replica::DEFAULT_DRAIN_TIMEOUT_FLAG)]
        timeout: humantime::Duration,
        /// Drain the replica on this machine through its admin socket.
        #[command(flatten)]
        local: LocalAdmin,
    },
}

/// `--local [--socket PATH]`: talk to the replica on this machine over its admin socket
/// (`wardengate serve --admin-socket`), as a Kubernetes preStop hook does.
#[derive(Debug, Clone, clap::Args)]
pub struct LocalAdmin {
    /// Use the local admin socket instead of --addr.
    #[arg(long)]
    pub local: bool,
    /// The admin socket (with --local).
    #[arg(
        long,
        env = "WG_ADMIN_SOCKET",
        default_value = "/run/wardengate/admin.sock"
    )]
    pub socket: PathBuf,
}

impl LocalAdmin {
    /// The client to use: the admin socket with --local, else `remote`.
    fn pick(&self, remote: &Client) -> Result<Client, ClientError> {
        if self.local {
            Client::local(&self.socket)
        } else {
            Ok(remote.clone())
        }
    }
}

impl Cli {
    fn client(&self) -> Result<Client, ClientError> {
        let ca = match &self.ca_cert {
            Some(p) => Some(std::fs::read_to_string(p).map_err(|e| {
                ClientError::Io(std::io::Error::new(
                    e.kind(),
                    format!("reading CA certificate {p}: {e}"),
                ))
            })?),
            None => None,
        };
        if token_in_arguments(std::env::args()) {
            eprintln!(
                "wgctl: warning: --token puts the secret in the process list, readable by every \
                 user of this machine; use --token-file or WG_TOKEN_FILE instead"
            );
        }
        let token = match (&self.token, &self.token_file) {
            (Some(t), _) => Some(t.trim().to_string()),
            (None, Some(f)) => Some(
                std::fs::read_to_string(f)
                    .map_err(|e| {
                        ClientError::Io(std::io::Error::new(
                            e.kind(),
                            format!("reading token file {f}: {e}"),
                        ))
                    })?
                    .trim()
                    .to_string(),
            ),
            (None, None) => None,
        };
        Client::new(&self.addr, ca.as_deref(), token)
    }
}

/// Whether the token was given as a command-line argument (not through the environment).
fn token_in_arguments(args: impl Iterator<Item = String>) -> bool {
    args.take_while(|a| a != "--")
        .any(|a| a == "--token" || a.starts_with("--token="))
}

fn print_json(v: &impl serde::Serialize) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// A unix-ms time as RFC 3339 (UTC, seconds).
/// The LINK cell of a gateway that is not connected: how long it has been silent, and
/// whether that is past the time its sessions outlive a lost link (the control plane ends
/// them then).
fn offline(last_heartbeat_at: Option<i64>, lost_after_ms: i64, now: i64) -> String {
    let Some(last) = last_heartbeat_at else {
        return "never connected".into();
    };
    let silent = u64::try_from(now - last).unwrap_or(0) / 1000;
    let age = humantime::format_duration(Duration::from_secs(silent));
    let lost_after = match lost_after_ms {
        0 => crate::session::DEFAULT_GATEWAY_LOST_AFTER_MS,
        ms => ms,
    };
    if now - last > lost_after {
        format!("offline {age} (past its offline grace: its sessions are ended)")
    } else {
        format!("offline {age}")
    }
}

fn when(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_seconds(t).to_string()
}

fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    let line = |cells: Vec<String>| {
        let s: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        println!("{}", s.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r);
    }
}

/// Authorises a session to `target`, waiting for approval if the target requires it.
async fn authorize(
    client: &Client,
    target: &str,
    retry_for: Duration,
    quiet: bool,
) -> Result<String, ClientError> {
    let created = with_retries(
        retry_for,
        |e| note(quiet, e),
        || client.create_session(target),
    )
    .await?;
    let id = created.id;
    if created.gateway.is_some() {
        return Err(ClientError::Api {
            status: 409,
            code: ErrorCode::RegionalTarget,
            message: format!("target {target} is regional; connect with `wgctl connect {target}`"),
            retry_after: None,
        });
    }
    if created.status == SessionStatus::Pending {
        if !quiet {
            eprintln!("wgctl: session {id} is waiting for an approver…");
        }
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let s: SessionView =
                with_retries(retry_for, |e| note(quiet, e), || client.session(&id)).await?;
            match s.status {
                SessionStatus::Pending => continue,
                SessionStatus::Authorized => break,
                _ if s.end_reason == Some(EndReason::Expired) => {
                    return Err(ClientError::Api {
                        status: 403,
                        code: ErrorCode::ApprovalExpired,
                        message: format!(
                            "session {id}: no approver decided within {} minutes, so the \
                             request expired; run the command again to ask anew",
                            crate::session::APPROVAL_WINDOW_MS / 60_000
                        ),
                        retry_after: None,
                    });
                }
                other => {
                    return Err(ClientError::Api {
                        status: 403,
                        code: ErrorCode::SessionDenied,
                        message: format!(
                            "session {id} was not approved ({other}, {})",
                            s.end_reason.map(EndReason::as_str).unwrap_or("-")
                        ),
                        retry_after: None,
                    });
                }
            }
        }
    }
    Ok(id)
}

fn note(quiet: bool, e: &ClientError) {
    if !quiet {
        eprintln!("wgctl: {e}; retrying");
    }
}

/// Authorises and relays one connection: in one request when the target needs no approval,
/// else through `POST /v1/sessions` (waiting for an approver) and the session's relay. Before
/// the relay is established, retryable failures (a replica down, draining or isolated) retry
/// through the load balancer; afterwards a broken relay is reported, since a byte stream
/// cannot resume.
async fn relay_once<R, W>(
    client: &Client,
    target: &str,
    retry_for: Duration,
    input: R,
    output: W,
) -> Result<(), ClientError>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let quiet = !std::io::stderr().is_terminal();
    let direct = with_retries(
        retry_for,
        |e| note(quiet, e),
        || client.open_target_relay(target),
    )
    .await;
    let ws = match direct {
        Ok((ws, _session)) => ws,
        // Relayed by a gateway of the target's region: authorise here, connect there with the
        // grant. A refusal worth retrying (no gateway connected, the gateway offline or
        // draining) authorises again: a fresh grant may name another gateway.
        Err(ClientError::Api {
            code: ErrorCode::RegionalTarget,
            ..
        }) => {
            with_retries(
                retry_for,
                |e| note(quiet, e),
                || regional_relay(client, target),
            )
            .await?
        }
        // Needs an approver (or an older server without the one-request relay).
        Err(ClientError::Api { code, status, .. })
            if code == ErrorCode::ApprovalRequired
                || (status == 404 && code == ErrorCode::NotFound) =>
        {
            let id = authorize(client, target, retry_for, quiet).await?;
            with_retries(retry_for, |e| note(quiet, e), || client.open_relay(&id)).await?
        }
        Err(e) => return Err(e),
    };
    pump(ws, input, output).await.map(|_| ())
}

/// Authorises a session to regional `target` and opens its relay on the gateway named.
async fn regional_relay(
    client: &Client,
    target: &str,
) -> Result<crate::client::RelayStream, ClientError> {
    let created = client.create_session(target).await?;
    let (Some(gateway), Some(grant)) = (created.gateway, created.grant) else {
        return Err(ClientError::Api {
            status: 502,
            code: ErrorCode::HttpError,
            message: format!("target {target} is regional but the control plane named no gateway"),
            retry_after: None,
        });
    };
    client
        .at(&gateway)?
        .open_granted_relay(&created.id, &grant)
        .await
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> Result<(), ClientError> {
    let json_out = cli.output == Output::Json;
    if let Command::Recordings {
        command:
            RecordingsCommand::Verify {
                offline: Some(dir),
                public_key: Some(keys),
                ..
            },
    } = &cli.command
    {
        return verify_offline(dir, keys, json_out);
    }
    let client = cli.client()?;
    match cli.command {
        Command::Targets { command } => match command {
            TargetsCommand::Add {
                name,
                host,
                port,
                require_approval,
                region,
                ssh_user,
                ssh_record_input,
                ssh_host_key,
                ssh_source_address,
                ssh_forward_to,
            } => {
                let t = client
                    .add_target(&NewTarget {
                        name,
                        host,
                        port,
                        require_approval,
                        region,
                        ssh_user,
                        ssh_record_input,
                        ssh_host_key,
                        ssh_source_address,
                        ssh_forward_to,
                    })
                    .await?;
                if json_out {
                    print_json(&t);
                } else {
                    match &t.region {
                        Some(r) => println!(
                            "target {} → {}:{} added (relayed by region {r}'s gateways)",
                            t.name, t.host, t.port
                        ),
                        None => println!("target {} → {}:{} added", t.name, t.host, t.port),
                    }
                }
            }
            TargetsCommand::List => {
                let ts = client.targets().await?;
                if json_out {
                    print_json(&ts);
                } else {
                    table(
                        &["NAME", "HOST", "PORT", "APPROVAL", "REGION"],
                        ts.into_iter()
                            .map(|t| {
                                vec![
                                    t.name,
                                    t.host,
                                    t.port.to_string(),
                                    if t.require_approval { "required" } else { "-" }.into(),
                                    t.region.unwrap_or_else(|| "-".into()),
                                ]
                            })
                            .collect(),
                    );
                }
            }
            TargetsCommand::Remove { name } => {
                client.remove_target(&name).await?;
                if !json_out {
                    println!("target {name} removed");
                }
            }
        },
        Command::Connect { target, retry_for } => {
            relay_once(
                &client,
                &target,
                *retry_for,
                tokio::io::stdin(),
                tokio::io::stdout(),
            )
            .await?;
        }
        Command::Tunnel {
            target,
            listen,
            retry_for,
        } => {
            let listener = tokio::net::TcpListener::bind(&listen).await?;
            let local = listener.local_addr()?;
            if json_out {
                println!("{}", json!({"listen": local.to_string(), "target": target}));
            } else {
                println!("tunnel to {target} listening on {local}");
            }
            loop {
                let (sock, peer) = listener.accept().await?;
                let _ = sock.set_nodelay(true);
                let (client, target) = (client.clone(), target.clone());
                tokio::spawn(async move {
                    let (r, w) = sock.into_split();
                    if let Err(e) = relay_once(&client, &target, *retry_for, r, w).await {
                        eprintln!("wgctl: tunnel connection from {peer}: {e}");
                    }
                });
            }
        }
        Command::Sessions { command } => match command {
            SessionsCommand::List { limit } => {
                let ss = client.sessions(Some(limit)).await?;
                if json_out {
                    print_json(&ss);
                } else {
                    table(
                        &[
                            "ID", "TARGET", "STATUS", "CLIENT", "REPLICA", "UP", "DOWN", "REASON",
                        ],
                        ss.into_iter()
                            .map(|s| {
                                // Who connected from where; an admin riding another user's
                                // session is named.
                                let mut client = s
                                    .connected_from
                                    .clone()
                                    .or_else(|| s.requested_from.clone())
                                    .unwrap_or_else(|| "-".into());
                                if let Some(by) =
                                    s.connected_by.as_ref().filter(|b| **b != s.token_id)
                                {
                                    client = format!("{client} (by {by})");
                                }
                                vec![
                                    s.id,
                                    s.target_name,
                                    s.status.to_string(),
                                    client,
                                    s.replica.unwrap_or_else(|| "-".into()),
                                    s.bytes_up.to_string(),
                                    s.bytes_down.to_string(),
                                    s.end_reason.map_or_else(|| "-".into(), |r| r.to_string()),
                                ]
                            })
                            .collect(),
                    );
                }
            }
            SessionsCommand::Kill { id } => {
                let s = client.terminate(&id).await?;
                if json_out {
                    print_json(&s);
                } else {
                    println!("session {} is {}", s.id, s.status.as_str());
                }
            }
            SessionsCommand::Watch { id } => {
                crate::wgctl_ssh::watch(&client, &id).await?;
            }
        },
        Command::Tokens {
            command: TokensCommand::Create { role, name, ttl },
        } => {
            let t = client
                .create_token(&NewToken {
                    role,
                    name,
                    ttl_seconds: ttl.map(|d| d.as_secs()),
                })
                .await?;
            if json_out {
                print_json(&t);
            } else {
                println!("{}", t.token);
                eprintln!(
                    "token {:?} ({:?}) created, {}; the secret above is shown only once",
                    t.id,
                    t.role.as_str(),
                    t.expires_at.map_or_else(
                        || "never expires".into(),
                        |e| format!("expires {}", when(e))
                    )
                );
            }
        }
        Command::Tokens {
            command: TokensCommand::List,
        } => {
            let ts = client.tokens().await?;
            if json_out {
                print_json(&ts);
            } else {
                table(
                    &[
                        "ID",
                        "NAME",
                        "ROLE",
                        "STATE",
                        "CREATED",
                        "EXPIRES",
                        "LAST USED",
                    ],
                    ts.into_iter()
                        .map(|t| {
                            vec![
                                t.id,
                                t.name,
                                t.role.as_str().to_string(),
                                format!("{:?}", t.state).to_lowercase(),
                                when(t.created_at),
                                t.expires_at.map_or_else(|| "never".into(), when),
                                t.last_used_at.map_or_else(|| "-".into(), when),
                            ]
                        })
                        .collect(),
                );
            }
        }
        Command::Tokens {
            command: TokensCommand::Revoke { id },
        } => {
            let t = client.revoke_token(&id).await?;
            if json_out {
                print_json(&t);
            } else {
                println!("token {} ({}) is revoked", t.id, t.name);
            }
        }
        Command::System {
            command: SystemCommand::Drain { timeout, local },
        } => {
            let client = local.pick(&client)?;
            let request = client.drain(*timeout);
            tokio::pin!(request);
            let progress = !json_out && std::io::stderr().is_terminal();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let result = loop {
                tokio::select! {
                    r = &mut request => break r,
                    _ = tick.tick(), if progress => {
                        if let Ok(s) = client.system_status().await {
                            eprint!(
                                "\rdraining {}: {} session(s) remaining, {:.0}s left   ",
                                s.replica, s.owned_sessions, s.drain_remaining_seconds.unwrap_or_default()
                            );
                        }
                    }
                }
            };
            if progress {
                eprintln!();
            }
            result?;
            let s = client.system_status().await?;
            if json_out {
                print_json(&s);
            } else {
                println!(
                    "replica {} drained ({} session(s) left)",
                    s.replica, s.owned_sessions
                );
            }
        }
        Command::Approvals { command } => approvals(&client, command, json_out).await?,
        Command::Gateways { command } => gateways(&client, command, json_out).await?,
        Command::Recordings { command } => recordings(&client, command, json_out).await?,
        Command::SshCa => print!("{}", client.ssh_ca().await?),
        Command::Ssh {
            target,
            ssh_host,
            ssh_port,
            ssh_bin,
            ssh_args,
            command,
        } => {
            let host = match ssh_host {
                Some(h) => h,
                None => url::Url::parse(&cli.addr)
                    .ok()
                    .and_then(|u| u.host_str().map(str::to_string))
                    .ok_or_else(|| ClientError::Address(cli.addr.clone()))?,
            };
            let code = crate::wgctl_ssh::ssh(
                &client, &host, ssh_port, &ssh_bin, &target, &ssh_args, &command,
            )
            .await?;
            std::process::exit(code);
        }
        Command::System {
            command: SystemCommand::Status { local },
        } => {
            let client = local.pick(&client)?;
            let s = client.system_status().await?;
            if json_out {
                print_json(&s);
            } else {
                println!(
                    "replica {}  role {}  version {}  draining {}  owned sessions {}",
                    s.replica, s.role, s.version, s.draining, s.owned_sessions
                );
            }
        }
    }
    Ok(())
}

async fn gateways(
    client: &Client,
    command: GatewaysCommand,
    json_out: bool,
) -> Result<(), ClientError> {
    use crate::wire::{CreatedJoinToken, GatewayView, NewJoinToken};
    use reqwest::Method;
    match command {
        GatewaysCommand::JoinToken { region, ttl, uses } => {
            let body = NewJoinToken {
                region,
                ttl_seconds: ttl.as_secs(),
                uses,
            };
            let t: CreatedJoinToken = client
                .call(Method::POST, "/v1/gateways/join-tokens", Some(&body))
                .await?;
            if json_out {
                print_json(&t);
            } else {
                println!("{}", t.token);
                eprintln!(
                    "join token {} for region {} created, admitting {} until {}; the secret \
                     above is shown only once",
                    t.id,
                    t.region,
                    if t.uses == 1 {
                        "one join".to_string()
                    } else {
                        format!("{} joins", t.uses)
                    },
                    when(t.expires_at)
                );
            }
        }
        GatewaysCommand::List => {
            let gs: Vec<GatewayView> = client
                .call(Method::GET, "/v1/gateways", None::<&()>)
                .await?;
            let now = crate::store::now_ms();
            if json_out {
                print_json(&gs);
            } else {
                table(
                    &[
                        "ID",
                        "REGION",
                        "VERSION",
                        "ADDRESS",
                        "LAST HEARTBEAT",
                        "SESSIONS",
                        "LINK",
                    ],
                    gs.into_iter()
                        .map(|g| {
                            let link = if g.revoked_at.is_some() {
                                "revoked".to_string()
                            } else if g.connected {
                                format!("connected ({})", g.linked_by.unwrap_or_default())
                            } else {
                                offline(g.last_heartbeat_at, g.lost_after_ms, now)
                            };
                            vec![
                                g.id,
                                g.region,
                                g.version,
                                g.address,
                                g.last_heartbeat_at.map_or_else(|| "never".into(), when),
                                g.sessions.to_string(),
                                link,
                            ]
                        })
                        .collect(),
                );
            }
        }
        GatewaysCommand::Drain { .. } | GatewaysCommand::Terminate { .. } => {
            let (id, body) = match command {
                GatewaysCommand::Drain { id, timeout } => (
                    id,
                    crate::wire::NewGatewayCommand {
                        kind: "drain".into(),
                        session_id: None,
                        timeout_seconds: timeout.map_or(0, |t| t.as_secs()),
                    },
                ),
                GatewaysCommand::Terminate { id, session } => (
                    id,
                    crate::wire::NewGatewayCommand {
                        kind: "terminate".into(),
                        session_id: Some(session),
                        timeout_seconds: 0,
                    },
                ),
                _ => return Ok(()),
            };
            let q: crate::wire::QueuedGatewayCommand = client
                .call(
                    Method::POST,
                    &format!("/v1/gateways/{id}/commands"),
                    Some(&body),
                )
                .await?;
            if json_out {
                print_json(&q);
            } else {
                println!(
                    "{} queued for gateway {} (command {}); sent at its next heartbeat",
                    q.kind, q.gateway_id, q.id
                );
            }
        }
        GatewaysCommand::Revoke { id } => {
            let g: GatewayView = client
                .call(Method::DELETE, &format!("/v1/gateways/{id}"), None::<&()>)
                .await?;
            if json_out {
                print_json(&g);
            } else {
                println!("gateway {} ({}) is revoked", g.id, g.region);
            }
        }
    }
    Ok(())
}

async fn approvals(
    client: &Client,
    command: ApprovalsCommand,
    json_out: bool,
) -> Result<(), ClientError> {
    match command {
        ApprovalsCommand::List => {
            let pending = client.approvals().await?;
            if json_out {
                print_json(&pending);
            } else {
                table(
                    &["ID", "TARGET", "REQUESTER", "WAITING"],
                    pending
                        .into_iter()
                        .map(|s| {
                            let waited = (crate::store::now_ms() - s.created_at).max(0) / 1000;
                            vec![s.id, s.target_name, s.token_id, format!("{waited}s")]
                        })
                        .collect(),
                );
            }
        }
        ApprovalsCommand::Approve { id, reason } => {
            show_decision(&id, &client.approve(&id, &reason).await?, json_out)
        }
        ApprovalsCommand::Deny { id, reason } => {
            show_decision(&id, &client.deny(&id, &reason).await?, json_out)
        }
        ApprovalsCommand::Watch { count, since } => {
            let mut seen = 0u64;
            let mut backoff = backon::BackoffBuilder::build(crate::retry::forever());
            let mut last: Option<String> = since.map(|s| s.to_string());
            let quiet = !std::io::stderr().is_terminal();
            loop {
                let resume = last.clone();
                let seen_at_start = seen;
                let r = client
                    .events("/v1/events", resume.as_deref(), |e| {
                        if e.id.is_some() {
                            last = e.id.clone();
                        }
                        if json_out {
                            println!("{}", e.data);
                        } else {
                            let (subject, detail) = match e.parse() {
                                Ok(ev) => (
                                    ev.subject,
                                    serde_json::from_str::<Value>(&ev.detail).unwrap_or_default(),
                                ),
                                Err(_) => (String::new(), Value::Null),
                            };
                            println!("{:<20} {}  {}", e.event, subject, detail);
                        }
                        seen += 1;
                        count.is_none_or(|c| seen < c)
                    })
                    .await;
                if count.is_some_and(|c| seen >= c) {
                    return Ok(());
                }
                match r {
                    // The server closed the stream (a replica restarting): resume elsewhere.
                    Ok(()) => {}
                    Err(e) if e.is_retryable() => note(quiet, &e),
                    Err(e) => return Err(e),
                }
                if seen > seen_at_start {
                    // The stream worked for a while: the next failure starts the backoff anew.
                    backoff = backon::BackoffBuilder::build(crate::retry::forever());
                }
                tokio::time::sleep(backoff.next().unwrap_or(Duration::from_secs(5))).await;
            }
        }
    }
    Ok(())
}

fn show_decision(id: &str, r: &crate::wire::DecisionResult, json_out: bool) {
    if json_out {
        print_json(r);
    } else {
        println!("session {id} {}", r.decision.as_str());
    }
}

/// Prints a verification report in plain words (or JSON) and turns a failure into exit code 1.
fn report(v: &crate::wire::Verification, json_out: bool) -> Result<(), ClientError> {
    let id = &v.session;
    if json_out {
        print_json(v);
    } else if v.ok {
        println!(
            "recording {id}: OK — signature valid ({} key {}), {} chunks chained, {} objects, \
             {} bytes, {}",
            v.signature.clone().unwrap_or_default(),
            v.key_id.clone().unwrap_or_default(),
            v.chunks,
            v.objects,
            v.bytes,
            if v.complete {
                "complete"
            } else {
                "INCOMPLETE (its replica died before finishing)"
            }
        );
        if !v.seals_checked {
            println!("  (offline: chain seals need the internal key and were not checked)");
        }
    } else if v.intact_but_unsigned() {
        println!(
            "recording {id}: NOT SIGNED YET — {} chunks so far, hash chain intact{}",
            v.chunks,
            if v.seals_checked {
                " and sealed"
            } else {
                " (seals not checked offline)"
            }
        );
    } else {
        println!("recording {id}: FAILED");
        for p in &v.problems {
            println!("  {p}");
        }
    }
    if v.ok {
        return Ok(());
    }
    Err(ClientError::Api {
        status: 422,
        code: ErrorCode::RecordingInvalid,
        message: format!("recording {id} did not verify: {}", v.problems.join("; ")),
        retry_after: None,
    })
}

fn verify_offline(
    dir: &std::path::Path,
    keys: &std::path::Path,
    json_out: bool,
) -> Result<(), ClientError> {
    let local = |what: String| ClientError::Io(std::io::Error::other(what));
    let text = std::fs::read_to_string(keys)
        .map_err(|e| local(format!("reading public keys {}: {e}", keys.display())))?;
    let keys = crate::recording::ManifestKeys::parse(&text)
        .map_err(|e| local(format!("{}: {e}", keys.display())))?;
    let v = crate::recording::verify_offline(dir, &keys)
        .map_err(|e| local(format!("{}: {e}", dir.display())))?;
    report(&v, json_out)
}

async fn recordings(
    client: &Client,
    command: RecordingsCommand,
    json_out: bool,
) -> Result<(), ClientError> {
    match command {
        RecordingsCommand::Verify { id, .. } => {
            let id = id.unwrap_or_default();
            let v = client.verify_recording(&id).await?;
            report(&v, json_out)
        }
        RecordingsCommand::Play {
            id,
            speed,
            idle_limit,
        } => {
            let cast = client.recording_cast(&id).await?;
            crate::wgctl_ssh::play(&String::from_utf8_lossy(&cast), speed, idle_limit).await
        }
        RecordingsCommand::Cast { id } => {
            let cast = client.recording_cast(&id).await?;
            use std::io::Write;
            std::io::stdout().write_all(&cast)?;
            Ok(())
        }
        RecordingsCommand::Output { id } => {
            let cast = client.recording_cast(&id).await?;
            let bytes = crate::ssh::cast::output_bytes(&String::from_utf8_lossy(&cast));
            use std::io::Write;
            std::io::stdout().write_all(&bytes)?;
            Ok(())
        }
        RecordingsCommand::PublicKeys => {
            let listing = client.recording_public_keys().await?;
            if json_out {
                print_json(&listing);
            } else {
                for k in &listing.keys {
                    println!("{} public {}", k.kid, k.public_key);
                }
            }
            Ok(())
        }
        RecordingsCommand::Download { id, dir } => {
            let listing = client.recording_objects(&id).await?;
            std::fs::create_dir_all(&dir)?;
            for key in &listing.keys {
                let parts: Vec<&str> = key.split('/').collect();
                if parts
                    .iter()
                    .any(|p| p.is_empty() || *p == "." || *p == "..")
                {
                    eprintln!("skipping unsafe key {key:?}");
                    continue;
                }
                let bytes = client.recording_object(&id, key).await?;
                let path = parts.iter().fold(dir.clone(), |p, part| p.join(part));
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::write(&path, &bytes)?;
            }
            if !json_out {
                println!(
                    "recording {id}: {} objects written to {}",
                    listing.keys.len(),
                    dir.display()
                );
            } else {
                print_json(&listing);
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod offline_tests {
    use super::offline;

    #[test]
    fn an_offline_gateway_shows_its_silence_and_whether_its_sessions_were_ended() {
        assert_eq!(offline(None, 0, 1_000), "never connected");
        assert_eq!(offline(Some(0), 60_000, 42_000), "offline 42s");
        assert_eq!(
            offline(Some(0), 60_000, 125_000),
            "offline 2m 5s (past its offline grace: its sessions are ended)"
        );
    }
}
