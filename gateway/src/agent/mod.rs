//! The agent link between remote gateways and the control plane (issue 15): gRPC (tonic) with
//! mutual TLS on `--agent-listen` (8444).
//!
//! | module | what it owns |
//! |---|---|
//! | `proto` | the messages and the generated client/server |
//! | `ca` | the agent CA shared by every control-plane replica: signing and trusting client certs |
//! | `server` | the control plane's end: join, renew, and holding links (heartbeats → Postgres) |
//! | `link` | the gateway's end: join once, keep credentials, hold the link, reconnect, renew |
//!
//! A front end like the others: commands that reach a gateway go through the replica's drain
//! path and the session core; nothing here writes session rows.

pub mod ca;
pub mod link;
pub mod proto;
pub mod server;

pub use ca::AgentCa;
pub use link::{GatewayLink, LinkConfig};
pub use server::AgentService;

/// Default lifetime of a gateway client certificate (`--agent-cert-ttl`); gateways renew after
/// two thirds of it.
pub const DEFAULT_CERT_TTL: &str = "24h";
