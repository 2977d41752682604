//! Bearer-token authentication: `Authorization: Bearer <token>`, looked up by hash, with a
//! short-lived cache of successful lookups ([`TokenCache`]).
//!
//! Expired and revoked tokens get their own codes (`token_expired`, `token_revoked`) rather
//! than `unauthorized`: only a caller holding the exact 256-bit secret can ever see them, so
//! they reveal nothing to someone guessing, and they tell a legitimate holder what to do (ask
//! for a new token, not check for a typo). Revocation reaches every replica within
//! [`TOKEN_CACHE_TTL`] (nothing to lose in a Redis failover: Postgres is the truth); the
//! revoking replica drops its own cached entry at once. Expiry is exact, cache or not.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{StatusCode, header};

use super::AppState;
use super::error::{ApiError, ErrorCode};
use crate::store::now_ms;
use crate::token::{Role, hash};
use crate::ttl_map::TtlMap;

/// How long a successful token lookup is reused without asking Postgres again. This is the
/// bound on how long a revoked token keeps working on a replica that had just seen it, and how
/// often open event streams re-check their token.
pub const TOKEN_CACHE_TTL: Duration = Duration::from_secs(2);

/// Most tokens remembered at once; beyond it, expired entries go, then everything.
pub const TOKEN_CACHE_MAX: usize = 4096;

/// Token hash → caller for successful lookups, for [`TOKEN_CACHE_TTL`]: a session setup
/// (`POST /v1/sessions`, then the relay open) queries the token once instead of twice, and a
/// busy client not at all within the TTL. Unknown tokens are never cached, so a new token
/// works at once and garbage tokens cannot fill the cache.
#[derive(Debug)]
pub struct TokenCache(TtlMap<Caller>);

impl Default for TokenCache {
    fn default() -> Self {
        Self(TtlMap::new(TOKEN_CACHE_TTL, TOKEN_CACHE_MAX))
    }
}

impl TokenCache {
    /// The caller cached for `token_hash`, unless older than [`TOKEN_CACHE_TTL`] or past its
    /// token's expiry.
    pub fn get(&self, token_hash: &str) -> Option<Caller> {
        self.0.get_valid(token_hash, |c| !c.expired(now_ms()))
    }

    /// Remembers a successful lookup.
    pub fn put(&self, token_hash: String, caller: Caller) {
        self.0.put(token_hash, caller);
    }

    /// Forgets every entry of token `token_id` (it was just revoked here).
    pub fn forget(&self, token_id: &str) {
        self.0.retain(|c| c.token_id != token_id);
    }

    /// Entries held (expired ones included until touched).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Token id.
    pub token_id: String,
    /// Token label.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Unix ms after which the token is refused, if it expires.
    pub expires_at: Option<i64>,
    /// SHA-256 of the secret, so a long-lived stream can re-check its token.
    pub token_hash: String,
}

impl Caller {
    /// True once the token is past its expiry at `now` (unix ms).
    pub fn expired(&self, now: i64) -> bool {
        self.expires_at.is_some_and(|e| e <= now)
    }

    /// 403 unless the caller has at least `role`.
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.role.allows(role) {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                ErrorCode::Forbidden,
                format!(
                    "this action needs the {} role; the token `{}` has {}",
                    role.as_str(),
                    self.name,
                    self.role.as_str()
                ),
            ))
        }
    }
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            // The web console authenticates by its session cookie instead (never a token in
            // a URL); it re-checks the token behind the session like this path does.
            if let Some(caller) = crate::console::session::caller_from_cookie(parts, state).await? {
                return Ok(caller);
            }
            return Err(ApiError::unauthorized(
                "missing Authorization: Bearer <token> header",
            ));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::unauthorized("malformed Authorization header; expected `Bearer <token>`")
            })?;
        let token_hash = hash(token);
        if let Some(caller) = state.tokens.get(&token_hash) {
            return Ok(caller);
        }
        // Not cached: this costs a database lookup, which an address that keeps sending
        // refused tokens does not get.
        let ip = super::guard::client_ip(&parts.extensions);
        state.guard.check_blocked(ip)?;
        match lookup(state, &token_hash).await {
            Err(e) if e.status == StatusCode::UNAUTHORIZED => {
                Err(state.guard.failed(ip).unwrap_or(e))
            }
            other => other,
        }
    }
}

/// A token lookup in Postgres, bypassing the cache (and refreshing it); refuses unknown,
/// expired and revoked tokens. Long-lived
/// streams re-check with it, so a revocation anywhere ends them within their re-check period.
pub async fn lookup(state: &AppState, token_hash: &str) -> Result<Caller, ApiError> {
    let row = state
        .store
        .token_by_hash(token_hash)
        .await?
        .ok_or_else(|| ApiError::unauthorized("unknown token"))?;
    let role = Role::parse(&row.role)
        .ok_or_else(|| ApiError::unauthorized("token has an unknown role"))?;
    if row.revoked_at.is_some() {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::TokenRevoked,
            format!(
                "the token `{}` was revoked; ask an admin for a new one",
                row.id
            ),
        ));
    }
    let caller = Caller {
        token_id: row.id,
        name: row.name,
        role,
        expires_at: row.expires_at,
        token_hash: token_hash.to_string(),
    };
    if caller.expired(now_ms()) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::TokenExpired,
            format!(
                "the token `{}` expired; ask an admin for a new one",
                caller.token_id
            ),
        ));
    }
    state.tokens.put(token_hash.to_string(), caller.clone());
    let (store, h) = (state.store.clone(), token_hash.to_string());
    tokio::spawn(async move {
        let _ = store.touch_token(&h).await;
    });
    Ok(caller)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn caller(name: &str) -> Caller {
        Caller {
            token_id: format!("id-{name}"),
            name: name.into(),
            role: Role::Admin,
            expires_at: None,
            token_hash: format!("h-{name}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_cached_token_expires_after_the_ttl() {
        let cache = TokenCache::default();
        assert!(cache.get("h1").is_none());
        cache.put("h1".into(), caller("a"));
        tokio::time::advance(TOKEN_CACHE_TTL - Duration::from_millis(1)).await;
        assert_eq!(cache.get("h1").unwrap().name, "a");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(cache.get("h1").is_none(), "served past its TTL");
        assert!(cache.is_empty(), "an expired entry stays");
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_token_is_not_served_from_the_cache() {
        let cache = TokenCache::default();
        let mut c = caller("soon");
        c.expires_at = Some(now_ms() - 1);
        cache.put("h".into(), c);
        assert!(cache.get("h").is_none(), "served past the token's expiry");
    }

    #[tokio::test(start_paused = true)]
    async fn a_revoked_token_is_forgotten_at_once() {
        let cache = TokenCache::default();
        cache.put("h1".into(), caller("a"));
        cache.put("h2".into(), caller("b"));
        cache.forget("id-a");
        assert!(cache.get("h1").is_none());
        assert_eq!(cache.get("h2").unwrap().name, "b");
    }

    #[tokio::test(start_paused = true)]
    async fn the_cache_stays_bounded() {
        let cache = TokenCache::default();
        for i in 0..TOKEN_CACHE_MAX {
            cache.put(format!("h{i}"), caller("x"));
        }
        assert_eq!(cache.len(), TOKEN_CACHE_MAX);
        cache.put("one-more".into(), caller("y"));
        assert!(cache.len() <= TOKEN_CACHE_MAX);
        assert_eq!(cache.get("one-more").unwrap().name, "y");
        // Expired entries go first.
        tokio::time::advance(TOKEN_CACHE_TTL).await;
        cache.put("fresh".into(), caller("z"));
        assert!(cache.len() < TOKEN_CACHE_MAX);
    }
}
