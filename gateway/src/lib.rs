//! Wardengate: a stateless session broker and relay. One binary serves every role
//! (control plane, gateway, or both); `wgctl` is its command-line client.

pub mod api;
pub mod client;
pub mod dev;
pub mod logging;
pub mod tls;
