//! The relay's WebSocket handshake (RFC 6455 §4.2, HTTP/1.1 `Upgrade`), done here rather than by
//! axum's `WebSocketUpgrade` so the upgraded connection goes to the pump's own framing
//! ([`crate::pump::websocket`]), which holds no buffers while a session is idle. Refusals keep
//! axum's statuses: 405 for a method other than GET, 400 for missing or wrong upgrade headers,
//! 426 when the connection cannot be upgraded.

use std::future::Future;

use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;

/// The upgraded connection handed to the relay.
pub type Upgraded = TokioIo<hyper::upgrade::Upgraded>;

/// A request that asked for a WebSocket; [`WsUpgrade::on_upgrade`] answers it with 101.
pub struct WsUpgrade {
    on_upgrade: hyper::upgrade::OnUpgrade,
    accept: HeaderValue,
}

/// Why a request cannot be upgraded (answered in plain text, like axum's rejections).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UpgradeRejection {
    /// Not a GET.
    #[error("request method must be `GET`")]
    MethodNotGet,
    /// `Connection` lacks the `upgrade` token.
    #[error("Connection header did not include 'upgrade'")]
    Connection,
    /// `Upgrade` is not `websocket`.
    #[error("`Upgrade` header did not include 'websocket'")]
    Upgrade,
    /// `Sec-WebSocket-Version` is not 13.
    #[error("`Sec-WebSocket-Version` header did not include '13'")]
    Version,
    /// No `Sec-WebSocket-Key`.
    #[error("`Sec-WebSocket-Key` header missing")]
    Key,
    /// The server connection cannot be upgraded (e.g. HTTP/2).
    #[error("WebSocket request couldn't be upgraded since no upgrade state was present")]
    NotUpgradable,
}

impl IntoResponse for UpgradeRejection {
    fn into_response(self) -> Response {
        let status = match self {
            Self::MethodNotGet => StatusCode::METHOD_NOT_ALLOWED,
            Self::NotUpgradable => StatusCode::UPGRADE_REQUIRED,
            _ => StatusCode::BAD_REQUEST,
        };
        (status, self.to_string()).into_response()
    }
}

/// True when the comma-separated header `name` has the token `token` (case-insensitive).
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

impl<S: Send + Sync> FromRequestParts<S> for WsUpgrade {
    type Rejection = UpgradeRejection;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, UpgradeRejection> {
        if parts.method != Method::GET {
            return Err(UpgradeRejection::MethodNotGet);
        }
        let h = &parts.headers;
        if !has_token(h, header::CONNECTION, "upgrade") {
            return Err(UpgradeRejection::Connection);
        }
        if !has_token(h, header::UPGRADE, "websocket") {
            return Err(UpgradeRejection::Upgrade);
        }
        if h.get(header::SEC_WEBSOCKET_VERSION).map(|v| v.as_bytes()) != Some(b"13") {
            return Err(UpgradeRejection::Version);
        }
        let key = h
            .get(header::SEC_WEBSOCKET_KEY)
            .ok_or(UpgradeRejection::Key)?;
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        let accept = HeaderValue::from_str(&accept).map_err(|_| UpgradeRejection::Key)?;
        let on_upgrade = parts
            .extensions
            .remove::<hyper::upgrade::OnUpgrade>()
            .ok_or(UpgradeRejection::NotUpgradable)?;
        Ok(Self { on_upgrade, accept })
    }
}

impl WsUpgrade {
    /// Answers 101 and, once the connection is handed over, runs `relay` on it (or `failed`
    /// when the upgrade does not complete).
    pub fn on_upgrade<R, RF, F>(self, relay: R, failed: F) -> Response
    where
        R: FnOnce(Upgraded) -> RF + Send + 'static,
        RF: Future<Output = ()> + Send + 'static,
        F: FnOnce(hyper::Error) + Send + 'static,
    {
        let on_upgrade = self.on_upgrade;
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(up) => relay(TokioIo::new(up)).await,
                Err(e) => failed(e),
            }
        });
        let mut resp = Response::new(Body::empty());
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = resp.headers_mut();
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::SEC_WEBSOCKET_ACCEPT, self.accept);
        resp
    }
}
