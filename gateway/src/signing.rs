//! Signed session state. Everything Wardengate keeps in Redis about a live session is wrapped in
//! an envelope carrying a key id and an HMAC-SHA256 over the key id and body, made with the
//! control plane's internal key. A replica refuses state that was tampered with, signed with a
//! key it does not hold, or has expired. Several keys may be loaded at once so keys can rotate:
//! the first signs, all verify.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Shortest accepted key: 256 bits.
pub const MIN_KEY_BYTES: usize = 32;

/// Why a key file or a signed value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigningError {
    /// The key file has no usable key.
    #[error(
        "no key found: expected lines of `<key-id> <base64 secret>`, or one bare base64 secret"
    )]
    NoKeys,
    /// A key line is malformed.
    #[error("line {line}: {reason}")]
    BadKeyLine {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The value is not a signed envelope at all.
    #[error("not a signed envelope: {0}")]
    Malformed(String),
    /// Signed with a key id this replica does not hold (foreign or rotated-out key).
    #[error("signed with unknown key id `{0}`")]
    UnknownKey(String),
    /// The MAC does not match: the value was altered.
    #[error("signature mismatch (tampered state)")]
    BadSignature,
    /// The state's lifetime is over.
    #[error("expired at {expired_at_ms} (now {now_ms})")]
    Expired {
        /// Expiry, unix milliseconds.
        expired_at_ms: i64,
        /// Now, unix milliseconds.
        now_ms: i64,
    },
}

/// Signing keys, the first of which signs.
#[derive(Clone)]
pub struct Keyring {
    keys: Vec<(String, Vec<u8>)>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("Keyring").field("key_ids", &ids).finish()
    }
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    kid: String,
    body: String,
    sig: String,
}

/// Anything with an expiry can be signed.
pub trait Expiring {
    /// Unix milliseconds after which the value is refused.
    fn expires_at_ms(&self) -> i64;
}

impl Keyring {
    /// Parses the internal key file: one key per line, `<key-id> <base64 secret>`, `#` comments.
    /// The first key signs; every key verifies. A file of one bare base64 secret (what
    /// `openssl rand -base64 32` prints; wrapped lines are joined) is one key whose id is derived
    /// from the secret, so every replica given the same file agrees on it.
    pub fn parse(text: &str) -> Result<Self, SigningError> {
        if let Some(ring) = Self::parse_bare(text)? {
            return Ok(ring);
        }
        let mut keys = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |reason: &str| SigningError::BadKeyLine {
                line: i + 1,
                reason: reason.to_string(),
            };
            let mut parts = line.split_whitespace();
            let (Some(kid), Some(secret), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(bad(
                    "expected `<key-id> <base64 secret>` (or a file of one bare base64 secret)",
                ));
            };
            if !kid
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(bad("key id may only contain letters, digits, '-' and '_'"));
            }
            let secret = decode_secret(secret).map_err(|reason| bad(&reason))?;
            if keys.iter().any(|(k, _)| k == kid) {
                return Err(bad(&format!("duplicate key id `{kid}`")));
            }
            keys.push((kid.to_string(), secret));
        }
        if keys.is_empty() {
            return Err(SigningError::NoKeys);
        }
        Ok(Self { keys })
    }

    /// A file whose key lines are all a single word holds one bare secret, possibly wrapped over
    /// several lines: `Ok(None)` when the file is in the `<key-id> <secret>` format instead.
    fn parse_bare(text: &str) -> Result<Option<Self>, SigningError> {
        let lines: Vec<(usize, &str)> = text
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.trim()))
            .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
            .collect();
        let Some(&(first, _)) = lines.first() else {
            return Ok(None);
        };
        if lines.iter().any(|(_, l)| l.contains(char::is_whitespace)) {
            return Ok(None);
        }
        let joined: String = lines.iter().map(|(_, l)| *l).collect();
        let secret = decode_secret(&joined).map_err(|reason| SigningError::BadKeyLine {
            line: first,
            reason: format!(
                "{reason} (a file of one word per line is read as one bare base64 secret; \
                 use `<key-id> <base64 secret>` lines for several keys)"
            ),
        })?;
        Ok(Some(Self {
            keys: vec![(derived_key_id(&secret), secret)],
        }))
    }

    /// A fresh key file text with one random key, for `wardengate dev` and the operator.
    pub fn generate_file(kid: &str) -> String {
        let secret: [u8; 32] = rand::random();
        format!("{kid} {}\n", STANDARD.encode(secret))
    }

    /// 32 bytes per key, derived one-way (HMAC-SHA256 under the key, over `domain`), signing
    /// key first: seeds for other keys that must rotate with this keyring (the Ed25519 grant
    /// keys of remote gateways) without revealing its secrets.
    pub fn derive(&self, domain: &str) -> Vec<(String, [u8; 32])> {
        self.keys
            .iter()
            .map(|(kid, key)| {
                let mac = Self::mac(key, kid, domain).finalize().into_bytes();
                let mut seed = [0u8; 32];
                seed.copy_from_slice(&mac);
                (kid.clone(), seed)
            })
            .collect()
    }

    /// The id of the signing key.
    pub fn signing_key_id(&self) -> &str {
        &self.keys[0].0
    }

    fn mac(key: &[u8], kid: &str, body: &str) -> HmacSha256 {
        let Ok(mut m) = HmacSha256::new_from_slice(key) else {
            unreachable!("HMAC accepts keys of any length")
        };
        m.update(kid.as_bytes());
        m.update(b".");
        m.update(body.as_bytes());
        m
    }

    /// Signs `value` with the first key.
    pub fn sign<T: Serialize>(&self, value: &T) -> String {
        let (kid, key) = &self.keys[0];
        let body = serde_json::to_string(value).unwrap_or_default();
        let sig = URL_SAFE_NO_PAD.encode(Self::mac(key, kid, &body).finalize().into_bytes());
        serde_json::to_string(&Envelope {
            kid: kid.clone(),
            body,
            sig,
        })
        .unwrap_or_default()
    }

    /// A detached MAC of `message` under the signing key, for documents that carry their own
    /// seal (recording chunk indexes): `(key id, base64url MAC)`. `domain` separates uses.
    pub fn mac_detached(&self, domain: &str, message: &[u8]) -> (String, String) {
        let (kid, key) = &self.keys[0];
        let mut m = Self::mac(key, kid, domain);
        m.update(b"\0");
        m.update(message);
        (
            kid.clone(),
            URL_SAFE_NO_PAD.encode(m.finalize().into_bytes()),
        )
    }

    /// Checks a MAC made by [`Keyring::mac_detached`] with any loaded key, in constant time.
    pub fn verify_detached(
        &self,
        domain: &str,
        message: &[u8],
        kid: &str,
        mac: &str,
    ) -> Result<(), SigningError> {
        let key = self
            .keys
            .iter()
            .find(|(k, _)| k == kid)
            .map(|(_, key)| key)
            .ok_or_else(|| SigningError::UnknownKey(kid.to_string()))?;
        let sig = URL_SAFE_NO_PAD
            .decode(mac)
            .map_err(|_| SigningError::BadSignature)?;
        let mut m = Self::mac(key, kid, domain);
        m.update(b"\0");
        m.update(message);
        m.verify_slice(&sig).map_err(|_| SigningError::BadSignature)
    }

    /// Verifies the envelope (key id known, MAC correct in constant time, not expired at
    /// `now_ms`) and returns the value.
    pub fn verify<T: DeserializeOwned + Expiring>(
        &self,
        signed: &str,
        now_ms: i64,
    ) -> Result<T, SigningError> {
        let env: Envelope =
            serde_json::from_str(signed).map_err(|e| SigningError::Malformed(e.to_string()))?;
        let key = self
            .keys
            .iter()
            .find(|(k, _)| *k == env.kid)
            .map(|(_, key)| key)
            .ok_or_else(|| SigningError::UnknownKey(env.kid.clone()))?;
        let sig = URL_SAFE_NO_PAD
            .decode(&env.sig)
            .map_err(|_| SigningError::BadSignature)?;
        Self::mac(key, &env.kid, &env.body)
            .verify_slice(&sig)
            .map_err(|_| SigningError::BadSignature)?;
        let value: T =
            serde_json::from_str(&env.body).map_err(|e| SigningError::Malformed(e.to_string()))?;
        let exp = value.expires_at_ms();
        if now_ms >= exp {
            return Err(SigningError::Expired {
                expired_at_ms: exp,
                now_ms,
            });
        }
        Ok(value)
    }
}

/// Decodes a base64 (standard or URL-safe) secret of at least [`MIN_KEY_BYTES`] bytes.
fn decode_secret(secret: &str) -> Result<Vec<u8>, String> {
    let bytes = STANDARD
        .decode(secret)
        .or_else(|_| URL_SAFE_NO_PAD.decode(secret))
        .map_err(|_| "secret is not base64".to_string())?;
    if bytes.len() < MIN_KEY_BYTES {
        return Err(format!(
            "secret is {} bytes; at least {MIN_KEY_BYTES} required",
            bytes.len()
        ));
    }
    Ok(bytes)
}

/// The key id of a bare secret: `sha256-` and the first 16 hex digits of the SHA-256 of the
/// decoded secret (`base64 -d key | sha256sum | cut -c1-16`), so the id is the same on every
/// replica and can be written out when the file moves to the two-column form for a rotation.
/// A hash of a ≥ 256-bit random secret reveals nothing usable about it.
fn derived_key_id(secret: &[u8]) -> String {
    use sha2::Digest;
    let digest = Sha256::digest(secret);
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256-{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Grant {
        session: String,
        exp: i64,
    }
    impl Expiring for Grant {
        fn expires_at_ms(&self) -> i64 {
            self.exp
        }
    }

    fn ring(kid: &str) -> Keyring {
        Keyring::parse(&Keyring::generate_file(kid)).unwrap()
    }

    #[test]
    fn round_trip() {
        let k = ring("k1");
        let g = Grant {
            session: "s1".into(),
            exp: 2_000,
        };
        let signed = k.sign(&g);
        assert_eq!(k.verify::<Grant>(&signed, 1_000).unwrap(), g);
    }

    #[test]
    fn tampered_body_is_refused() {
        let k = ring("k1");
        let signed = k.sign(&Grant {
            session: "s1".into(),
            exp: 2_000,
        });
        let tampered = signed.replace("s1", "s2");
        assert_eq!(
            k.verify::<Grant>(&tampered, 1_000).unwrap_err(),
            SigningError::BadSignature
        );
        // Changing the key id to another valid one breaks the MAC too.
        let mut env: serde_json::Value = serde_json::from_str(&signed).unwrap();
        env["sig"] = serde_json::Value::String("AAAA".into());
        assert_eq!(
            k.verify::<Grant>(&env.to_string(), 1_000).unwrap_err(),
            SigningError::BadSignature
        );
    }

    #[test]
    fn foreign_key_is_refused() {
        let signed = ring("other").sign(&Grant {
            session: "s1".into(),
            exp: 2_000,
        });
        assert_eq!(
            ring("k1").verify::<Grant>(&signed, 1_000).unwrap_err(),
            SigningError::UnknownKey("other".into())
        );
        // Same key id, different secret: a forged signature.
        let forged = ring("k1").sign(&Grant {
            session: "s1".into(),
            exp: 2_000,
        });
        assert_eq!(
            ring("k1").verify::<Grant>(&forged, 1_000).unwrap_err(),
            SigningError::BadSignature
        );
    }

    #[test]
    fn detached_macs_bind_domain_message_and_key() {
        let k = ring("k1");
        let (kid, mac) = k.mac_detached("d1", b"hello");
        assert_eq!(kid, "k1");
        assert_eq!(k.verify_detached("d1", b"hello", &kid, &mac), Ok(()));
        assert_eq!(
            k.verify_detached("d1", b"hellO", &kid, &mac),
            Err(SigningError::BadSignature)
        );
        assert_eq!(
            k.verify_detached("d2", b"hello", &kid, &mac),
            Err(SigningError::BadSignature)
        );
        assert_eq!(
            ring("k1").verify_detached("d1", b"hello", &kid, &mac),
            Err(SigningError::BadSignature)
        );
        assert_eq!(
            k.verify_detached("d1", b"hello", "k2", &mac),
            Err(SigningError::UnknownKey("k2".into()))
        );
    }

    #[test]
    fn expired_is_refused() {
        let k = ring("k1");
        let signed = k.sign(&Grant {
            session: "s1".into(),
            exp: 2_000,
        });
        assert_eq!(
            k.verify::<Grant>(&signed, 2_000).unwrap_err(),
            SigningError::Expired {
                expired_at_ms: 2_000,
                now_ms: 2_000
            }
        );
    }

    #[test]
    fn rotation_verifies_with_any_loaded_key() {
        let old = Keyring::generate_file("old");
        let new = Keyring::generate_file("new");
        let before = Keyring::parse(&old).unwrap();
        let during = Keyring::parse(&format!("{new}{old}")).unwrap();
        let signed_by_old = before.sign(&Grant {
            session: "s".into(),
            exp: 10,
        });
        assert!(during.verify::<Grant>(&signed_by_old, 1).is_ok());
        assert_eq!(during.signing_key_id(), "new");
    }

    #[test]
    fn key_file_errors_name_the_line() {
        assert_eq!(
            Keyring::parse("# only a comment\n").unwrap_err(),
            SigningError::NoKeys
        );
        let short = format!("k1 {}", STANDARD.encode([0u8; 16]));
        assert!(
            matches!(Keyring::parse(&short).unwrap_err(), SigningError::BadKeyLine { line: 1, reason } if reason.contains("16 bytes"))
        );
        assert!(matches!(
            Keyring::parse("\nk1 !!!").unwrap_err(),
            SigningError::BadKeyLine { line: 2, .. }
        ));
        let k = Keyring::generate_file("k1");
        assert!(
            matches!(Keyring::parse(&format!("{k}{k}")).unwrap_err(), SigningError::BadKeyLine { line: 2, reason } if reason.contains("duplicate"))
        );
    }

    #[test]
    fn bare_secret_file_is_one_key_with_a_derived_stable_id() {
        let secret: [u8; 32] = rand::random();
        let file = format!("{}\n", STANDARD.encode(secret));
        let a = Keyring::parse(&file).unwrap();
        let b =
            Keyring::parse(&format!("# generated with openssl rand -base64 32\n{file}")).unwrap();
        assert!(a.signing_key_id().starts_with("sha256-"), "{a:?}");
        assert_eq!(a.signing_key_id().len(), "sha256-".len() + 16);
        // The documented recipe: `head -c 32 /dev/zero | sha256sum | cut -c1-16`.
        let zeros = Keyring::parse(&STANDARD.encode([0u8; 32])).unwrap();
        assert_eq!(zeros.signing_key_id(), "sha256-66687aadf862bd77");
        // Two replicas reading the same secret agree on the id and verify each other's state.
        assert_eq!(a.signing_key_id(), b.signing_key_id());
        let signed = a.sign(&Grant {
            session: "s".into(),
            exp: 10,
        });
        assert_eq!(b.verify::<Grant>(&signed, 1).unwrap().session, "s");
        // A different secret is a different key.
        let other = Keyring::parse(&Keyring::generate_file("x").replace("x ", "")).unwrap();
        assert_ne!(other.signing_key_id(), a.signing_key_id());
        assert!(matches!(
            other.verify::<Grant>(&signed, 1).unwrap_err(),
            SigningError::UnknownKey(_)
        ));
        // The same secret written as a `<key-id> <secret>` line verifies only under its own id.
        let named = Keyring::parse(&format!("k1 {file}")).unwrap();
        assert_eq!(named.signing_key_id(), "k1");
    }

    #[test]
    fn wrapped_bare_secret_is_joined() {
        // `openssl rand -base64 64` wraps at 64 columns.
        let secret: [u8; 64] = rand::random();
        let text = STANDARD.encode(secret);
        let wrapped = format!("{}\n{}\n", &text[..64], &text[64..]);
        let ring = Keyring::parse(&wrapped).unwrap();
        let whole = Keyring::parse(&text).unwrap();
        assert_eq!(ring.signing_key_id(), whole.signing_key_id());
    }

    #[test]
    fn bad_bare_secrets_say_what_is_wrong() {
        let short = STANDARD.encode([7u8; 16]);
        assert!(
            matches!(Keyring::parse(&short).unwrap_err(), SigningError::BadKeyLine { line: 1, reason } if reason.contains("16 bytes") && reason.contains("bare"))
        );
        assert!(
            matches!(Keyring::parse("\nnot*base64\n").unwrap_err(), SigningError::BadKeyLine { line: 2, reason } if reason.contains("not base64"))
        );
        // A lone word among `<key-id> <secret>` lines is a malformed line, not a bare secret.
        let k = Keyring::generate_file("k1");
        let mixed = format!("{k}{}\n", STANDARD.encode([1u8; 32]));
        assert!(
            matches!(Keyring::parse(&mixed).unwrap_err(), SigningError::BadKeyLine { line: 2, reason } if reason.contains("bare base64 secret"))
        );
    }
}
