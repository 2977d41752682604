//! The hash chain that makes a recording tamper-evident from its first chunk, before any
//! manifest exists. Each link names the SHA-256 of the previous link's stored bytes (`prev`):
//! chunk 1's `prev` is the hash of `meta.json`, chunk N's the hash of `chunk-(N-1).json`, and
//! `end.json`'s the hash of the last chunk index (or of `meta.json` when there was no chunk). A
//! chunk index carries its bytes' SHA-256, so the chain covers every object written so far.
//!
//! Each link is also sealed by the relaying replica: an HMAC under the internal key over the
//! link's canonical JSON (without the seal), its session and its object name. A writer with
//! object-store access but without that key can neither alter a link nor rebuild the chain
//! after altering one; a holder of the internal key could (it is shared by every replica), which
//! is why the Ed25519 manifest, whose hash Postgres keeps, is what finally settles a recording.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::signing::Keyring;

/// Domain separating chain seals from every other use of the internal key.
pub const CHAIN_DOMAIN: &str = "wardengate-recording-chain-v1";

/// The HMAC seal a replica puts on a link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seal {
    /// Internal key id.
    pub kid: String,
    /// Base64url HMAC-SHA256.
    pub mac: String,
}

/// SHA-256 of a link's stored bytes, lowercase hex: what the next link's `prev` holds.
pub fn link_hash(doc: &[u8]) -> String {
    Sha256::digest(doc)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn message(session: &str, name: &str, canonical: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(session.len() + name.len() + 2 + canonical.len());
    m.extend_from_slice(session.as_bytes());
    m.push(0);
    m.extend_from_slice(name.as_bytes());
    m.push(0);
    m.extend_from_slice(canonical);
    m
}

/// Seals link `name` of `session` whose JSON without its seal is `canonical`.
pub fn seal(keyring: &Keyring, session: &str, name: &str, canonical: &[u8]) -> Seal {
    let (kid, mac) = keyring.mac_detached(CHAIN_DOMAIN, &message(session, name, canonical));
    Seal { kid, mac }
}

/// Checks the seal of link `name`; the error says why it is refused.
pub fn check(
    keyring: &Keyring,
    session: &str,
    name: &str,
    canonical: &[u8],
    seal: Option<&Seal>,
) -> Result<(), String> {
    let Some(s) = seal else {
        return Err("no seal".into());
    };
    keyring
        .verify_detached(
            CHAIN_DOMAIN,
            &message(session, name, canonical),
            &s.kid,
            &s.mac,
        )
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> Keyring {
        Keyring::parse(&Keyring::generate_file("k1")).unwrap()
    }

    #[test]
    fn a_seal_binds_session_name_body_and_key() {
        let k = ring();
        let s = seal(&k, "s1", "chunk-000001.json", b"{}");
        assert_eq!(
            check(&k, "s1", "chunk-000001.json", b"{}", Some(&s)),
            Ok(())
        );
        assert!(check(&k, "s2", "chunk-000001.json", b"{}", Some(&s)).is_err());
        assert!(check(&k, "s1", "chunk-000002.json", b"{}", Some(&s)).is_err());
        assert!(check(&k, "s1", "chunk-000001.json", b"{ }", Some(&s)).is_err());
        assert!(check(&ring(), "s1", "chunk-000001.json", b"{}", Some(&s)).is_err());
        assert_eq!(
            check(&k, "s1", "chunk-000001.json", b"{}", None),
            Err("no seal".to_string())
        );
    }

    #[test]
    fn link_hash_is_sha256_hex() {
        assert_eq!(
            link_hash(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
