//! Limits before authentication, per client address: a general request rate (probes and
//! `/metrics` exempt), and a rate of refused tokens past which a client's uncached tokens are
//! answered 429 without asking Postgres. A valid token already in the cache still works from a
//! blocked address: that costs nothing, and a flood from a shared address (NAT) does not lock
//! out its users who are already signed in.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::Extensions;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState, ErrorCode};
use crate::limits::Limits;
use crate::ratelimit::{KeyedLimit, retry_after_secs};

/// Blocked addresses kept before expired blocks are swept.
const MAX_BLOCKED: usize = 100_000;

/// Paths never rate limited: probes and scraping must work during a flood.
const EXEMPT: &[&str] = &["/healthz", "/readyz", "/metrics"];

/// The client address of a request: the connection's [`crate::client_addr::ClientAddr`] (the
/// real client behind a balancer that sends the PROXY protocol), else the TCP peer.
pub fn client_ip(ext: &Extensions) -> Option<IpAddr> {
    ext.get::<crate::client_addr::ClientAddr>()
        .map(|c| c.addr.ip())
        .or_else(|| ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()))
}

/// Per-address limits of this replica.
#[derive(Debug)]
pub struct Guard {
    requests: KeyedLimit<IpAddr>,
    failures: KeyedLimit<IpAddr>,
    blocked: Mutex<HashMap<IpAddr, Instant>>,
    limited: prometheus::IntCounterVec,
}

impl Guard {
    /// Enforces `limits`' per-address rates, counting refusals in `limited` (by limit).
    pub fn new(limits: &Limits, limited: prometheus::IntCounterVec) -> Self {
        Self {
            requests: KeyedLimit::new(limits.requests_per_ip),
            failures: KeyedLimit::new(limits.auth_failures_per_ip),
            blocked: Mutex::new(HashMap::new()),
            limited,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Instant>> {
        self.blocked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn refuse(&self, limit: &str, code: ErrorCode, message: String, wait: Duration) -> ApiError {
        self.limited.with_label_values(&[limit]).inc();
        ApiError::too_many(code, message, retry_after_secs(wait))
    }

    /// 429 while `ip` is blocked for refused tokens.
    pub fn check_blocked(&self, ip: Option<IpAddr>) -> Result<(), ApiError> {
        let Some(ip) = ip else { return Ok(()) };
        let now = Instant::now();
        let wait = match self.lock().get(&ip) {
            Some(until) if *until > now => *until - now,
            _ => return Ok(()),
        };
        Err(self.blocked_error(wait))
    }

    fn blocked_error(&self, wait: Duration) -> ApiError {
        self.refuse(
            "auth_failures",
            ErrorCode::TooManyFailedAuth,
            "too many refused tokens from this address; retry later".into(),
            wait,
        )
    }

    /// Counts a refused token from `ip`: `Some(429)` once the address is over its rate (it is
    /// then blocked until the rate allows another attempt).
    pub fn failed(&self, ip: Option<IpAddr>) -> Option<ApiError> {
        let ip = ip?;
        let wait = self.failures.check(&ip).err()?;
        let now = Instant::now();
        let mut map = self.lock();
        if map.len() >= MAX_BLOCKED {
            map.retain(|_, until| *until > now);
        }
        map.insert(ip, now + wait);
        drop(map);
        tracing::warn!(event = "auth_failures_limited", client = %ip, retry_after = ?wait);
        Some(self.blocked_error(wait))
    }

    fn request(&self, ip: Option<IpAddr>) -> Result<(), ApiError> {
        let Some(ip) = ip else { return Ok(()) };
        self.requests.check(&ip).map_err(|wait| {
            self.refuse(
                "requests",
                ErrorCode::TooManyRequests,
                "too many requests from this address; retry later".into(),
                wait,
            )
        })
    }
}

/// Middleware: the per-address request rate, before anything else runs.
pub async fn per_address(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if !EXEMPT.contains(&req.uri().path())
        && let Err(e) = st.guard.request(client_ip(req.extensions()))
    {
        return e.into_response();
    }
    next.run(req).await
}
