//! Wardengate: a stateless session broker and relay. One binary serves every role
//! (control plane, gateway, or both); `wgctl` is its command-line client.
//!
//! Where things live (a new front end calls `session` and `pump`; it never writes session rows
//! or grants itself):
//!
//! | module | what it owns |
//! |---|---|
//! | `session` | the session core: typed status, grant, end reason; authorise, decide, open, claim, watch (renew), end, terminate, mark lost/expire — their Redis, Postgres, metric and event effects |
//! | `pump`, `relay_protocol` | the one byte pump (server and `wgctl`), and the relay's WebSocket conventions (close codes, half-close) |
//! | `api` | thin HTTP handlers on 8443: auth (token cache), errors, routes, the relay upgrade |
//! | `wire`, `openapi` | every request and response body, shared with the client; the OpenAPI document generated from them |
//! | `client`, `wgctl`, `wgctl_ssh` | the typed HTTP/relay client and the `wgctl` commands (`wgctl_ssh`: `wgctl ssh`, `ssh-ca`, the cast player) |
//! | `store`, `live` | Postgres/SQLite persistence; Redis (standalone, Sentinel, Cluster) or in-process live state |
//! | `jobs`, `event_seal` | leased, fenced background jobs: cleanup, event fan-out (events sealed with the internal key), manifest signing |
//! | `recording`, `signing` | session recordings (chunks, spool, upload, verify); signed grants and manifests |
//! | `replica`, `health` | this replica's identity, the one drain path; dependency checks, readiness and isolation |
//! | `limits`, `client_addr`, `retry` | bounds before authentication (connections, deadlines, relay keep-alive); the client's address (TCP peer or PROXY header); the one retry policy (backon, jittered) |
//! | `console` | the web console at `/`: embedded assets, cookie sign-in with CSRF, the browser terminal's WebSocket and its seam to the SSH front end |
//! | `ssh` | the terminating SSH front end: russh server for stock OpenSSH clients, certificates to targets, cast recordings, and the terminal API the console uses |
//! | `agent` | the agent link: remote gateways join with a one-time token, get a client certificate from the agent CA, and hold one mTLS gRPC stream (heartbeats up, commands down) |
//! | `server`, `admin_socket`, `dev`, `config` | assembling and serving a replica; the local admin socket; `wardengate dev`; flags and env |
//! | `target_policy` | which addresses targets may point at (metadata, link-local, the replica's own dependencies refused) |
//! | `tls`, `tls_advice`, `token`, `redis_url`, `metrics`, `logging`, `ttl_map` | TLS configs and error advice; tokens and roles; Redis URLs; Prometheus metrics; JSON logs; the bounded lapsing map of the token and target caches |

pub mod admin_socket;
pub mod agent;
pub mod api;
pub mod client;
pub mod client_addr;
pub mod config;
pub mod console;
pub mod dev;
pub mod event_seal;
pub mod health;
pub mod jobs;
pub mod limits;
pub mod live;
pub mod logging;
pub mod metrics;
pub mod openapi;
pub mod pump;
pub mod ratelimit;
pub mod recording;
pub mod redis_url;
pub mod relay_protocol;
pub mod replica;
pub mod retry;
pub mod server;
pub mod session;
pub mod signing;
pub mod ssh;
pub mod store;
pub mod target_policy;
pub mod tls;
pub mod tls_advice;
pub mod token;
pub mod ttl_map;
pub mod wgctl;
pub mod wgctl_ssh;
pub mod wire;
