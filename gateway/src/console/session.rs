//! Console sign-in without a token in a URL. The browser posts its token once
//! (`POST /console/api/session`); the server answers with a random session cookie (`HttpOnly`,
//! `Secure`, `SameSite=Strict`, `__Host-` prefixed) and a CSRF value for the page's
//! state-changing requests. The live store (Redis, or in-process in dev) holds the session under
//! the cookie's SHA-256, signed with the internal key, so any replica serves it; it names the
//! token it came from, and every request re-checks that token like a bearer request does, so
//! revoking the token ends the console session within [`crate::api::TOKEN_CACHE_TTL`].
//!
//! Before authentication everything is bounded: the sign-in body (a few KiB), the per-address
//! request rate, and refused tokens and unknown cookies count as failed authentications
//! ([`crate::api::Guard`]). Requests from another origin are refused (`Origin`,
//! `Sec-Fetch-Site`); cookie-authenticated writes need the CSRF header and WebSocket upgrades
//! need a same-origin `Origin`.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::api::{ApiError, AppState, Caller, ErrorCode};
use crate::signing::Expiring;
use crate::store::now_ms;

/// Name of the session cookie. `__Host-` makes browsers insist on `Secure`, `Path=/` and no
/// `Domain`, so no sibling host can set or shadow it.
pub const COOKIE: &str = "__Host-wg_console";

/// Header carrying the CSRF value on cookie-authenticated writes.
pub const CSRF_HEADER: &str = "x-wg-csrf";

/// Longest a console session lives (less when its token expires sooner).
pub const SESSION_TTL: Duration = Duration::from_secs(3600);

/// Largest sign-in body accepted (a token is about 50 bytes).
pub const SIGN_IN_BODY_LIMIT: usize = 4096;

/// Live-store key of the session whose cookie hashes to `digest`.
fn key(digest: &str) -> String {
    format!("wg:console:{digest}")
}

fn digest(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn random() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// A console session as stored (signed) in the live store.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConsoleSession {
    /// SHA-256 of the token it was exchanged for: every request re-checks that token.
    pub token_hash: String,
    /// The token's id, for logs.
    pub token_id: String,
    /// The value the page must echo in [`CSRF_HEADER`].
    pub csrf: String,
    /// Unix ms when it ends.
    pub expires_at_ms: i64,
}

impl Expiring for ConsoleSession {
    fn expires_at_ms(&self) -> i64 {
        self.expires_at_ms
    }
}

/// Equality that takes the same time wherever the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn csrf_refused(message: impl Into<String>) -> ApiError {
    ApiError::forbidden(ErrorCode::CsrfRefused, message)
}

fn signed_out() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        ErrorCode::ConsoleSignedOut,
        "the console session ended (signed out, expired, or its token was revoked); sign in again",
    )
}

/// The host the browser addressed: HTTP/2's `:authority` (in the URI), else HTTP/1's `Host`.
fn addressed_host<'a>(uri: &'a Uri, headers: &'a HeaderMap) -> &'a str {
    uri.authority()
        .map(|a| a.as_str())
        .or_else(|| headers.get(header::HOST).and_then(|h| h.to_str().ok()))
        .unwrap_or("")
}

/// Refuses requests a browser sent on behalf of another site: an `Origin` that is not this
/// host over HTTPS, or `Sec-Fetch-Site` other than `same-origin`/`none`. `require_origin`: a
/// WebSocket upgrade must carry `Origin` (browsers always send it there).
pub fn check_origin(uri: &Uri, headers: &HeaderMap, require_origin: bool) -> Result<(), ApiError> {
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or("");
        if site != "same-origin" && site != "none" {
            return Err(csrf_refused(format!(
                "cross-site console request refused (Sec-Fetch-Site: {site})"
            )));
        }
    }
    let host = addressed_host(uri, headers);
    match headers.get(header::ORIGIN) {
        Some(origin) => {
            let origin = origin.to_str().unwrap_or("");
            if host.is_empty() || origin != format!("https://{host}") {
                return Err(csrf_refused(format!(
                    "console request from origin `{origin}` refused; this console is https://{host}"
                )));
            }
            Ok(())
        }
        None if require_origin => Err(csrf_refused("a console WebSocket needs an Origin header")),
        None => Ok(()),
    }
}

/// The value of cookie `name` in `headers`, if sent.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// The stored session for the request's cookie: `Ok(None)` when no cookie was sent,
/// [`ErrorCode::ConsoleSignedOut`] when it is unknown, expired or fails its signature.
async fn load(
    st: &AppState,
    headers: &HeaderMap,
) -> Result<Option<(String, ConsoleSession)>, ApiError> {
    let Some(secret) = cookie(headers, COOKIE) else {
        return Ok(None);
    };
    // Cookies are 43 base64url characters; anything else is not ours, and costs no lookup.
    if secret.len() != 43
        || !secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(signed_out());
    }
    let k = key(&digest(secret));
    let stored = st.live.get(&k).await?.ok_or_else(signed_out)?;
    let session: ConsoleSession = st
        .keyring
        .verify(&stored, now_ms())
        .map_err(|_| signed_out())?;
    Ok(Some((k, session)))
}

/// Authenticates a request by its console cookie, for [`Caller`]'s extractor: `Ok(None)` when
/// it carries none. Checks origin and, for anything but a read, the CSRF header; then the token
/// behind the session, exactly as a bearer token (cache, revocation, expiry).
pub(crate) async fn caller_from_cookie(
    parts: &Parts,
    st: &Arc<AppState>,
) -> Result<Option<Caller>, ApiError> {
    if cookie(&parts.headers, COOKIE).is_none() {
        return Ok(None);
    }
    let upgrade = parts
        .headers
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    check_origin(&parts.uri, &parts.headers, upgrade)?;
    let ip = crate::api::client_ip(&parts.extensions);
    st.guard.check_blocked(ip)?;
    let session = match load(st, &parts.headers).await {
        Ok(Some((_, s))) => s,
        Ok(None) => return Ok(None),
        Err(e) if e.status == StatusCode::UNAUTHORIZED => {
            return Err(st.guard.failed(ip).unwrap_or(e));
        }
        Err(e) => return Err(e),
    };
    let read = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
    if !read {
        let sent = parts
            .headers
            .get(CSRF_HEADER)
            .map(HeaderValue::as_bytes)
            .unwrap_or_default();
        if !same(sent, session.csrf.as_bytes()) {
            return Err(csrf_refused(format!(
                "a console write needs the `{CSRF_HEADER}` header of this session"
            )));
        }
    }
    let caller = match st.tokens.get(&session.token_hash) {
        Some(c) => c,
        None => crate::api::lookup(st, &session.token_hash).await?,
    };
    Ok(Some(caller))
}

/// Body of `POST /console/api/session`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    /// The bearer token, pasted once.
    pub token: String,
}

/// What the page learns about its session.
#[derive(Debug, Serialize)]
pub struct SessionInfo {
    /// Token id.
    pub token_id: String,
    /// Token label.
    pub name: String,
    /// Role.
    pub role: crate::token::Role,
    /// Echo this in [`CSRF_HEADER`] on writes.
    pub csrf: String,
    /// Unix ms when the console session ends.
    pub expires_at_ms: i64,
}

fn set_cookie(value: &str, max_age: u64) -> HeaderValue {
    let v =
        format!("{COOKIE}={value}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={max_age}");
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// `POST /console/api/session`: exchanges a token for a console session cookie.
pub async fn sign_in(
    State(st): State<Arc<AppState>>,
    client: Option<axum::Extension<crate::client_addr::ClientAddr>>,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Json<SignIn>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    check_origin(&uri, &headers, false)?;
    let Json(body) =
        body.map_err(|e| ApiError::bad_request(ErrorCode::InvalidBody, e.body_text()))?;
    let ip = client.map(|axum::Extension(c)| c.addr.ip());
    st.guard.check_blocked(ip)?;
    let token_hash = crate::token::hash(&body.token);
    let caller = match crate::api::lookup(&st, &token_hash).await {
        Ok(c) => c,
        Err(e) if e.status == StatusCode::UNAUTHORIZED => {
            return Err(st.guard.failed(ip).unwrap_or(e));
        }
        Err(e) => return Err(e),
    };
    let now = now_ms();
    let ttl_ms = i64::try_from(SESSION_TTL.as_millis()).unwrap_or(i64::MAX);
    let expires_at_ms = caller
        .expires_at
        .map_or(now + ttl_ms, |e| e.min(now + ttl_ms));
    let session = ConsoleSession {
        token_hash,
        token_id: caller.token_id.clone(),
        csrf: random(),
        expires_at_ms,
    };
    let secret = random();
    let ttl = Duration::from_millis(u64::try_from(expires_at_ms - now).unwrap_or(0).max(1000));
    st.live
        .set(&key(&digest(&secret)), &st.keyring.sign(&session), ttl)
        .await?;
    tracing::info!(event = "console_signed_in", token = %caller.token_id, role = caller.role.as_str(), "console session started");
    let info = SessionInfo {
        token_id: caller.token_id,
        name: caller.name,
        role: caller.role,
        csrf: session.csrf,
        expires_at_ms,
    };
    let mut resp = (StatusCode::CREATED, Json(info)).into_response();
    resp.headers_mut()
        .insert(header::SET_COOKIE, set_cookie(&secret, ttl.as_secs()));
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// `GET /console/api/session`: who is signed in, and the CSRF value (after a page reload).
pub async fn current(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (_, session) = load(&st, &headers).await?.ok_or_else(signed_out)?;
    let info = SessionInfo {
        token_id: caller.token_id,
        name: caller.name,
        role: caller.role,
        csrf: session.csrf,
        expires_at_ms: session.expires_at_ms,
    };
    let mut resp = Json(info).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// `DELETE /console/api/session`: signs out (the stored session goes; the cookie is cleared).
pub async fn sign_out(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if let Some((k, _)) = load(&st, &headers).await? {
        st.live.del(&k).await?;
    }
    tracing::info!(event = "console_signed_out", token = %caller.token_id);
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut()
        .insert(header::SET_COOKIE, set_cookie("", 0));
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                *k,
                HeaderValue::from_str(v).unwrap_or_else(|_| HeaderValue::from_static("")),
            );
        }
        h
    }

    #[test]
    fn same_origin_passes_and_foreign_origins_do_not() {
        let ok = headers(&[("host", "gw:8443"), ("origin", "https://gw:8443")]);
        assert!(check_origin(&Uri::from_static("/"), &ok, true).is_ok());
        let foreign = headers(&[("host", "gw:8443"), ("origin", "https://evil.example")]);
        assert_eq!(
            check_origin(&Uri::from_static("/"), &foreign, false).map_err(|e| e.body.code),
            Err(ErrorCode::CsrfRefused)
        );
        let http = headers(&[("host", "gw:8443"), ("origin", "http://gw:8443")]);
        assert!(
            check_origin(&Uri::from_static("/"), &http, false).is_err(),
            "plain http origin passed"
        );
        let cross = headers(&[("host", "gw:8443"), ("sec-fetch-site", "cross-site")]);
        assert!(check_origin(&Uri::from_static("/"), &cross, false).is_err());
        let none = headers(&[("host", "gw:8443")]);
        assert!(
            check_origin(&Uri::from_static("/"), &none, false).is_ok(),
            "non-browser clients send no Origin"
        );
        assert!(
            check_origin(&Uri::from_static("/"), &none, true).is_err(),
            "a WebSocket without Origin passed"
        );
        // HTTP/2 names the host in :authority, not Host.
        let h2 = headers(&[("origin", "https://gw:8443")]);
        assert!(check_origin(&Uri::from_static("https://gw:8443/v1/targets"), &h2, true).is_ok());
        assert!(check_origin(&Uri::from_static("https://other:8443/"), &h2, true).is_err());
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let h = headers(&[("cookie", "a=1; __Host-wg_console=abc ; b=2")]);
        assert_eq!(cookie(&h, COOKIE), Some("abc"));
        let h = headers(&[("cookie", "x__Host-wg_console=abc")]);
        assert_eq!(cookie(&h, COOKIE), None);
    }

    #[test]
    fn the_cookie_has_every_protection() {
        let v = set_cookie("s3cret", 60);
        let v = v.to_str().unwrap_or("");
        for part in [
            "__Host-wg_console=s3cret",
            "Path=/",
            "Secure",
            "HttpOnly",
            "SameSite=Strict",
            "Max-Age=60",
        ] {
            assert!(v.split("; ").any(|p| p == part), "{part} missing from {v}");
        }
    }

    #[test]
    fn comparison_needs_equal_bytes() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"ab"));
        assert!(!same(b"", b"a"));
    }
}
