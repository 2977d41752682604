//! Events on the Redis stream are sealed with a MAC under the internal key by the fan-out job
//! that publishes them, and every replica checks the seal before serving an event on
//! `GET /v1/events`. Whoever can write to Redis (but does not hold the internal key) therefore
//! cannot show approvers a forged `approval.requested` or hide a session behind a fake
//! `session.ended`: the forgery is dropped and logged. Postgres stays the source of truth;
//! a client that reconnects replays from it.

use serde::{Deserialize, Serialize};

use crate::signing::{Keyring, SigningError};
use crate::store::EventRow;

/// Domain of the MAC, separating it from every other use of the internal key.
pub const DOMAIN: &str = "wardengate-event-v1";

/// Why a stream entry was not served.
#[derive(Debug, thiserror::Error)]
pub enum EventSealError {
    /// Not a sealed event document (unsealed, from an older version, or garbage).
    #[error("not a sealed event: {0}")]
    Malformed(#[from] serde_json::Error),
    /// The seal does not verify under any loaded key.
    #[error("event seal does not verify: {0}")]
    Forged(#[from] SigningError),
}

/// A stream entry: the event's exact JSON and its seal.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Sealed {
    event: String,
    kid: String,
    mac: String,
}

/// The stream entry publishing `e`, sealed with the current signing key.
pub fn seal(keyring: &Keyring, e: &EventRow) -> Result<String, serde_json::Error> {
    let event = serde_json::to_string(e)?;
    let (kid, mac) = keyring.mac_detached(DOMAIN, event.as_bytes());
    serde_json::to_string(&Sealed { event, kid, mac })
}

/// The event of a stream entry, if its seal verifies under one of `keyring`'s keys.
pub fn open(keyring: &Keyring, doc: &str) -> Result<EventRow, EventSealError> {
    let s: Sealed = serde_json::from_str(doc)?;
    keyring.verify_detached(DOMAIN, s.event.as_bytes(), &s.kid, &s.mac)?;
    Ok(serde_json::from_str(&s.event)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyring(kid: &str) -> Keyring {
        Keyring::parse(&Keyring::generate_file(kid)).unwrap()
    }

    fn event() -> EventRow {
        EventRow {
            id: 7,
            at: 1,
            kind: "approval.requested".into(),
            subject: "s1".into(),
            detail: r#"{"session":"s1","target":"db"}"#.into(),
        }
    }

    #[test]
    fn a_sealed_event_opens_and_every_alteration_or_forgery_is_refused() {
        let k = keyring("k1");
        let doc = seal(&k, &event()).unwrap();
        assert_eq!(open(&k, &doc).unwrap(), event());

        // Raw, unsealed event JSON (what an older fan-out or an attacker with Redis writes).
        let raw = serde_json::to_string(&event()).unwrap();
        assert!(matches!(open(&k, &raw), Err(EventSealError::Malformed(_))));
        // An altered event under the original seal.
        let tampered = doc.replace("approval.requested", "approval.approved");
        assert!(matches!(
            open(&k, &tampered),
            Err(EventSealError::Forged(_))
        ));
        // Sealed with another key (same key id, different secret).
        let other = seal(&keyring("k1"), &event()).unwrap();
        assert!(matches!(open(&k, &other), Err(EventSealError::Forged(_))));
    }
}
