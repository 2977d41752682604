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
