//! The web console, served by the gateway on 8443 at `/`: static assets embedded in the binary
//! ([`assets`]), sign-in that exchanges a token for a session cookie ([`session`]), and the
//! browser terminal's WebSocket ([`ws`]) over the seam the SSH front end implements
//! ([`terminal`]). Every other page reads and writes through the ordinary `/v1` API, which
//! accepts the console cookie in place of a bearer token.

pub mod assets;
pub mod session;
pub mod terminal;
pub mod ws;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;

use crate::api::AppState;

pub use terminal::{TerminalBackend, Terminals};

/// Routes answered within the request deadline: the page, its assets, sign-in and sign-out.
pub fn bounded_routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(assets::index))
        .route("/console/assets/{file}", get(assets::asset))
        .route(
            "/console/api/session",
            get(session::current)
                .post(session::sign_in)
                .delete(session::sign_out)
                .layer(DefaultBodyLimit::max(session::SIGN_IN_BODY_LIMIT)),
        )
}

/// Long-lived routes: the terminal WebSocket.
pub fn long_lived_routes() -> Router<Arc<AppState>> {
    Router::new().route("/console/api/terminal/{target}", get(ws::terminal))
}
