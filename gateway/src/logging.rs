//! Structured logs with `tracing`: human-readable on a terminal, JSON otherwise (production).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Initialises the global subscriber. `RUST_LOG` filters (default `info`); `WG_LOG_FORMAT=json`
/// or `text` forces a format, otherwise JSON is used unless stderr is a terminal.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match std::env::var("WG_LOG_FORMAT").as_deref() {
        Ok("json") => true,
        Ok("text") => false,
        _ => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
