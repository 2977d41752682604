//! The observer identity: a bearer secret from `--observer-token-file` that reads
//! `GET /v1/system/status` and `GET /metrics` and nothing else. The operator needs to read each
//! pod's status (sessions, drain, dependencies) to roll a fleet, but admin tokens live in
//! Postgres, which the operator cannot write; so it generates a random secret per cluster into
//! the cluster's internal Secret, and the pods read it from the mounted file.
//!
//! The file holds one token per line (`#` comments and blank lines ignored); every listed token
//! is accepted, so a rotation lists the new and the old one until every reader uses the new. The
//! file is re-read at most every [`RELOAD_EVERY`] (a mounted Secret changes in place). Tokens are
//! compared as SHA-256 digests in constant time. An observer token is never a [`Caller`]: every
//! other endpoint (including `/readyz` details and drain) refuses it as an unknown token.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};

use super::{ApiError, AppState, Caller};

/// How often the token file is re-read at most.
pub const RELOAD_EVERY: Duration = Duration::from_secs(10);
/// Shortest accepted observer token.
pub const MIN_TOKEN_LEN: usize = 24;

/// Why an observer token file is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObserverFileError {
    /// No token in the file.
    #[error("no token in the file (one per line)")]
    Empty,
    /// A token is too short to be a secret.
    #[error("line {0}: a token must be at least {MIN_TOKEN_LEN} characters")]
    TooShort(usize),
}

/// The tokens of an observer file, in order.
pub fn parse_file(text: &str) -> Result<Vec<String>, ObserverFileError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        if t.len() < MIN_TOKEN_LEN {
            return Err(ObserverFileError::TooShort(i + 1));
        }
        out.push(t.to_string());
    }
    if out.is_empty() {
        return Err(ObserverFileError::Empty);
    }
    Ok(out)
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Equality of two digests in time independent of where they differ.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Debug)]
struct Loaded {
    at: Instant,
    digests: Vec<[u8; 32]>,
}

/// The accepted observer tokens (none without `--observer-token-file`).
#[derive(Debug, Clone, Default)]
pub struct ObserverTokens {
    path: Option<PathBuf>,
    loaded: Arc<Mutex<Option<Loaded>>>,
}

impl ObserverTokens {
    /// Tokens read from `path` (re-read every [`RELOAD_EVERY`]); none when `path` is `None`.
    pub fn new(path: Option<PathBuf>) -> Self {
        Self {
            path,
            loaded: Arc::default(),
        }
    }

    /// Fixed tokens, for tests.
    pub fn fixed(tokens: &[&str]) -> Self {
        Self {
            path: None,
            loaded: Arc::new(Mutex::new(Some(Loaded {
                at: Instant::now(),
                digests: tokens.iter().map(|t| digest(t)).collect(),
            }))),
        }
    }

    fn current(&self) -> Vec<[u8; 32]> {
        let mut g = self
            .loaded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(path) = &self.path else {
            return g.as_ref().map(|l| l.digests.clone()).unwrap_or_default();
        };
        if let Some(l) = g.as_ref()
            && l.at.elapsed() < RELOAD_EVERY
        {
            return l.digests.clone();
        }
        let digests = match std::fs::read_to_string(path).map(|t| parse_file(&t)) {
            Ok(Ok(tokens)) => tokens.iter().map(|t| digest(t)).collect(),
            Ok(Err(e)) => {
                tracing::warn!(path = %path.display(), error = %e, "observer token file refused; keeping the previous tokens");
                g.as_ref().map(|l| l.digests.clone()).unwrap_or_default()
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "observer token file unreadable; keeping the previous tokens");
                g.as_ref().map(|l| l.digests.clone()).unwrap_or_default()
            }
        };
        *g = Some(Loaded {
            at: Instant::now(),
            digests: digests.clone(),
        });
        digests
    }

    /// Whether `token` is one of the observer tokens.
    pub fn accepts(&self, token: &str) -> bool {
        let d = digest(token);
        // Every digest is compared, so the time does not tell which one matched.
        self.current()
            .iter()
            .fold(false, |hit, known| constant_time_eq(known, &d) | hit)
    }
}

/// Who may read the read-only status endpoints: the observer, or any valid token.
#[derive(Debug, Clone)]
pub enum Reader {
    /// The operator's observer token.
    Observer,
    /// A token from Postgres (any role).
    Token(Caller),
}

impl FromRequestParts<Arc<AppState>> for Reader {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let bearer = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        if let Some(t) = bearer
            && !t.is_empty()
            && state.observer.accepts(t)
        {
            return Ok(Reader::Observer);
        }
        Caller::from_request_parts(parts, state)
            .await
            .map(Reader::Token)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const A: &str = "obs_aaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "obs_bbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn the_file_lists_tokens_and_refuses_short_or_none() {
        assert_eq!(
            parse_file(&format!("# rotation\n{A}\n\n  {B}  \n")).unwrap(),
            [A, B]
        );
        assert_eq!(parse_file("# only\n\n"), Err(ObserverFileError::Empty));
        assert_eq!(
            parse_file(&format!("{A}\nshort\n")),
            Err(ObserverFileError::TooShort(2))
        );
    }

    #[test]
    fn every_listed_token_is_accepted_and_nothing_else() {
        let o = ObserverTokens::fixed(&[A, B]);
        assert!(o.accepts(A));
        assert!(o.accepts(B));
        assert!(!o.accepts(&A[..A.len() - 1]));
        assert!(!o.accepts(""));
        assert!(
            !ObserverTokens::default().accepts(A),
            "no file, no observer"
        );
    }

    #[test]
    fn a_rotated_file_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("observer");
        std::fs::write(&p, format!("{A}\n")).unwrap();
        let o = ObserverTokens::new(Some(p.clone()));
        assert!(o.accepts(A));
        assert!(!o.accepts(B));
        std::fs::write(&p, format!("{B}\n{A}\n")).unwrap();
        // Age the cache instead of sleeping.
        o.loaded.lock().unwrap().as_mut().unwrap().at -= RELOAD_EVERY;
        assert!(o.accepts(B), "the new token after the reload");
        assert!(o.accepts(A), "the old one during the rotation");
        std::fs::write(&p, "").unwrap();
        o.loaded.lock().unwrap().as_mut().unwrap().at -= RELOAD_EVERY;
        assert!(o.accepts(B), "an emptied file keeps the previous tokens");
    }
}
