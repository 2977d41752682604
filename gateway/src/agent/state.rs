//! What a remote gateway knows without Postgres or Redis, shared by its link and its relays:
//! whether the link is up (and since when not), the grant keys, which grants were used, which
//! sessions the control plane terminated, and the event queue.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

use super::events::EventQueue;
use super::grant::{GrantError, GrantVerifier, RemoteGrant};
use super::proto::SessionEvent;
use crate::store::now_ms;

/// Default `--offline-grace`: how long live sessions outlive a lost link.
pub const DEFAULT_OFFLINE_GRACE: &str = "5m";

/// Grant keys' public halves as `(kid, 32 bytes)`, newest first.
type GrantKeys = Vec<(String, Vec<u8>)>;

/// Most grant keys a gateway keeps (the newest).
pub const MAX_GRANT_KEYS: usize = 8;

/// How long a terminated session id is remembered (longer than any grant's validity).
const TERMINATED_KEPT_MS: i64 = 30 * 60_000;

/// How live and new sessions behave while the link is down.
#[derive(Debug, Clone, Copy)]
pub struct OfflinePolicy {
    /// Live sessions close (recoverably) this long after the link dropped.
    pub grace: Duration,
    /// Accept new sessions with already-signed grants while offline (revocation cannot reach
    /// the gateway then).
    pub accept_signed_grants: bool,
}

/// The shared state.
#[derive(Debug)]
pub struct RemoteState {
    online: watch::Sender<Option<Instant>>,
    verifier: RwLock<(GrantKeys, GrantVerifier)>,
    gateway_id: RwLock<Option<String>>,
    used: Mutex<HashMap<String, i64>>,
    terminated: Mutex<HashMap<String, i64>>,
    terminate_tx: broadcast::Sender<String>,
    /// Session events waiting for the control plane.
    pub events: EventQueue,
    /// Offline behaviour.
    pub policy: OfflinePolicy,
    keys_file: Option<PathBuf>,
}

/// Why a relay request was refused before it started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The grant did not verify.
    #[error("{0}")]
    Grant(#[from] GrantError),
    /// A valid grant, but not for this gateway or this session.
    #[error("the grant is for {0}")]
    Elsewhere(String),
    /// The grant was used before (grants start one relay).
    #[error("the grant was already used")]
    Used,
    /// The control plane terminated the session (or revoked its token).
    #[error("the session was terminated")]
    Terminated,
    /// The link is down and offline grants are not accepted.
    #[error(
        "this gateway lost its control-plane link {0:?} ago and accepts no new sessions (revocation cannot reach it); retry"
    )]
    Offline(Duration),
}

impl RemoteState {
    /// Starts offline, with the grant keys saved in `state_dir` (if any).
    pub fn new(
        state_dir: Option<PathBuf>,
        policy: OfflinePolicy,
        queued: prometheus::IntGauge,
    ) -> Self {
        let keys_file = state_dir.as_ref().map(|d| d.join("grant-keys.json"));
        let keys: Vec<(String, Vec<u8>)> = keys_file
            .as_ref()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Self {
            online: watch::channel(Some(Instant::now())).0,
            verifier: RwLock::new((keys.clone(), GrantVerifier::new(&keys))),
            gateway_id: RwLock::new(None),
            used: Mutex::new(HashMap::new()),
            terminated: Mutex::new(HashMap::new()),
            terminate_tx: broadcast::channel(64).0,
            events: EventQueue::open(state_dir, queued),
            policy,
            keys_file,
        }
    }

    /// The link is up.
    pub fn set_online(&self) {
        self.online.send_replace(None);
    }

    /// The link is down (from now, unless it already was).
    pub fn set_offline(&self) {
        self.online.send_if_modified(|s| {
            if s.is_none() {
                *s = Some(Instant::now());
                true
            } else {
                false
            }
        });
    }

    /// When the link went down (None while up).
    pub fn offline_since(&self) -> Option<Instant> {
        *self.online.borrow()
    }

    /// Changes of [`RemoteState::offline_since`].
    pub fn watch_link(&self) -> watch::Receiver<Option<Instant>> {
        self.online.subscribe()
    }

    /// This gateway's id (from its certificate).
    pub fn set_gateway_id(&self, id: &str) {
        *self.gateway_id.write().unwrap_or_else(|p| p.into_inner()) = Some(id.to_string());
    }

    /// The grant keys a control-plane replica sent, added to those known (newest first, at
    /// most [`MAX_GRANT_KEYS`]): during a key rotation replicas still on the old keyring send
    /// fewer keys, and a gateway must keep verifying what the rolled ones sign. Saved for a
    /// restart while offline.
    pub fn set_grant_keys(&self, keys: Vec<(String, Vec<u8>)>) {
        let mut v = self.verifier.write().unwrap_or_else(|p| p.into_inner());
        let mut all = keys;
        for k in v.0.iter() {
            if !all.iter().any(|(kid, _)| *kid == k.0) {
                all.push(k.clone());
            }
        }
        all.truncate(MAX_GRANT_KEYS);
        *v = (all.clone(), GrantVerifier::new(&all));
        drop(v);
        if let Some(p) = &self.keys_file
            && let Err(e) = std::fs::write(p, serde_json::to_vec(&all).unwrap_or_default())
        {
            tracing::warn!(error = %e, "grant keys not saved");
        }
    }

    /// Checks a relay request for session `id` with `signed`, and marks the grant used.
    pub fn admit(&self, id: &str, signed: &str) -> Result<RemoteGrant, Refusal> {
        let now = now_ms();
        let grant = self
            .verifier
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .verify(signed, now)?;
        let me = self
            .gateway_id
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if me.as_deref() != Some(grant.gateway_id.as_str()) {
            return Err(Refusal::Elsewhere(format!("gateway {}", grant.gateway_id)));
        }
        if grant.session_id != id {
            return Err(Refusal::Elsewhere(format!("session {}", grant.session_id)));
        }
        if self.is_terminated(id) {
            return Err(Refusal::Terminated);
        }
        if let Some(since) = self.offline_since()
            && !self.policy.accept_signed_grants
        {
            return Err(Refusal::Offline(since.elapsed()));
        }
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        used.retain(|_, exp| *exp > now);
        if used.insert(id.to_string(), grant.expires_at_ms).is_some() {
            return Err(Refusal::Used);
        }
        Ok(grant)
    }

    /// The control plane terminated `id`: a relay carrying it ends, an unused grant for it is
    /// refused.
    pub fn terminate(&self, id: &str) {
        let now = now_ms();
        let mut t = self.terminated.lock().unwrap_or_else(|p| p.into_inner());
        t.retain(|_, until| *until > now);
        t.insert(id.to_string(), now + TERMINATED_KEPT_MS);
        drop(t);
        let _ = self.terminate_tx.send(id.to_string());
    }

    /// True when the control plane terminated `id`.
    pub fn is_terminated(&self, id: &str) -> bool {
        self.terminated
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(id)
    }

    /// Terminations as they arrive.
    pub fn terminations(&self) -> broadcast::Receiver<String> {
        self.terminate_tx.subscribe()
    }

    /// Queues a session event for the control plane.
    pub fn event(&self, ev: SessionEvent) {
        self.events.push(ev);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::agent::grant::GrantSigner;
    use crate::signing::Keyring;

    fn state(accept: bool) -> (RemoteState, GrantSigner) {
        let signer =
            GrantSigner::from_keyring(&Keyring::parse(&Keyring::generate_file("k")).unwrap());
        let s = RemoteState::new(
            None,
            OfflinePolicy {
                grace: Duration::from_secs(1),
                accept_signed_grants: accept,
            },
            prometheus::IntGauge::new("q", "q").unwrap(),
        );
        s.set_grant_keys(signer.public());
        s.set_gateway_id("gw-1");
        (s, signer)
    }

    fn grant(session: &str, gateway: &str) -> RemoteGrant {
        RemoteGrant {
            session_id: session.into(),
            token_id: "t".into(),
            target: "db".into(),
            host: "127.0.0.1".into(),
            port: 22,
            region: "eu".into(),
            gateway_id: gateway.into(),
            expires_at_ms: now_ms() + 60_000,
        }
    }

    #[test]
    fn a_grant_starts_one_relay_on_its_gateway_while_online_unless_terminated() {
        let (s, signer) = state(false);
        let g = signer.sign(&grant("s1", "gw-1"));
        // Offline from the start: refused as retryable.
        assert!(matches!(s.admit("s1", &g), Err(Refusal::Offline(_))));
        s.set_online();
        assert!(matches!(s.admit("s2", &g), Err(Refusal::Elsewhere(_))));
        let other = signer.sign(&grant("s1", "gw-2"));
        assert!(matches!(s.admit("s1", &other), Err(Refusal::Elsewhere(_))));
        assert!(s.admit("s1", &g).is_ok());
        assert_eq!(s.admit("s1", &g), Err(Refusal::Used));
        s.terminate("s3");
        let g3 = signer.sign(&grant("s3", "gw-1"));
        assert_eq!(s.admit("s3", &g3), Err(Refusal::Terminated));
    }

    #[test]
    fn keys_from_a_replica_not_yet_rolled_do_not_drop_the_new_key() {
        let (s, old) = state(false);
        s.set_online();
        let new =
            GrantSigner::from_keyring(&Keyring::parse(&Keyring::generate_file("k2")).unwrap());
        s.set_grant_keys(new.public());
        // Relinked to a replica still on the old keyring: it sends only the old key.
        s.set_grant_keys(old.public());
        assert!(s.admit("s1", &new.sign(&grant("s1", "gw-1"))).is_ok());
        assert!(s.admit("s2", &old.sign(&grant("s2", "gw-1"))).is_ok());
    }

    #[test]
    fn offline_grants_are_accepted_only_when_opted_in() {
        let (s, signer) = state(true);
        s.set_online();
        s.set_offline();
        assert!(s.offline_since().is_some());
        assert!(s.admit("s1", &signer.sign(&grant("s1", "gw-1"))).is_ok());
    }
}
