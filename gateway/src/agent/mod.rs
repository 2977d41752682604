//! The agent link between remote gateways and the control plane (issue 15): gRPC (tonic) with
//! mutual TLS on `--agent-listen` (8444).
//!
//! | module | what it owns |
//! |---|---|
//! | `proto` | the messages and the generated client/server |
//! | `ca` | the agent CA shared by every control-plane replica: signing and trusting client certs |
//! | `server` | the control plane's end: join, renew, and holding links (heartbeats → Postgres) |
//! | `link` | the gateway's end: join once, keep credentials, hold the link, reconnect, renew |
//! | `grant` | Ed25519 grants for regional sessions: signed by the control plane, verified offline |
//! | `state` | what a remote gateway knows without Postgres or Redis (link, keys, terminations) |
//! | `events` | a remote gateway's numbered session events until acknowledged (memory and file) |
//! | `remote` | a remote gateway's HTTPS port: health and the relay, authenticated by the grant |
//!
//! A front end like the others: commands that reach a gateway go through the replica's drain
//! path and the session core; nothing here writes session rows.
//!
//! ## What survives a lost link, a crash, a gateway that never returns
//!
//! - **Events up: exactly once.** Numbered per gateway, kept in the gateway's `events.json`
//!   until acknowledged, resent in order on every link; the control plane applies each
//!   sequence number once (`gateways.events_seq`) through the session core, whose end is
//!   idempotent (an already-ended session is left as it is, no second `session.ended`).
//! - **Terminates down: at least once, applied idempotently.** A terminate is queued in
//!   Postgres and sent at the gateway's next heartbeat (the fast path; the claim that marks it
//!   delivered can be lost with the link). Every heartbeat also lists the relays the gateway
//!   carries, and the holder answers with a terminate for each one the session core has
//!   ended or is terminating (`Sessions::owed_terminations`): a terminate lost in flight, one
//!   a restarted gateway forgot, or a grant reused after a restart is stopped at the next
//!   heartbeat after the link returns. Applying a terminate twice changes nothing. A drain
//!   command has the fast path only: repeat `wgctl gateways drain` if the link dropped.
//! - **A gateway that crashes** finds its open relays in `events.json` when it starts again
//!   and reports each ended (`replica_lost`, last reported bytes).
//! - **A gateway that never returns.** Each heartbeat says how long after it the gateway's
//!   sessions are over at the latest (`lost_after_ms`: its `--offline-grace` plus the time its
//!   link takes to notice a loss; kept in `gateways.lost_after_ms`). The cleanup job ends the
//!   sessions of a gateway silent for longer than that plus `--replica-lost-after` as
//!   `replica_lost` through the session core; if the gateway comes back and reports them
//!   ended, nothing changes and nothing is counted twice.

pub mod ca;
pub mod events;
pub mod grant;
pub mod link;
pub mod proto;
pub mod remote;
pub mod server;
pub mod state;

pub use ca::AgentCa;
pub use link::{GatewayLink, LinkConfig};
pub use server::AgentService;

/// Default lifetime of a gateway client certificate (`--agent-cert-ttl`); gateways renew after
/// two thirds of it.
pub const DEFAULT_CERT_TTL: &str = "24h";
