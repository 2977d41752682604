//! Wardengate: a stateless session broker and relay. One binary serves every role
//! (control plane, gateway, or both); `wgctl` is its command-line client.

pub mod admin_socket;
pub mod api;
pub mod client;
pub mod config;
pub mod dev;
pub mod health;
pub mod jobs;
pub mod limits;
pub mod live;
pub mod logging;
pub mod metrics;
pub mod openapi;
pub mod pump;
pub mod recording;
pub mod redis_url;
pub mod relay_protocol;
pub mod replica;
pub mod retry;
pub mod server;
pub mod session;
pub mod signing;
pub mod store;
pub mod tls;
pub mod tls_advice;
pub mod token;
pub mod wgctl;
pub mod wire;
