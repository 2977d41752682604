//! Grants for regional sessions: the control plane signs them with Ed25519, a remote gateway
//! verifies them with the public halves it received over the agent link, without Postgres or
//! Redis. The signing keys are derived one-way from the internal keyring, so they rotate with
//! it: the first key signs, every key's public half verifies, and every control-plane replica
//! (holding the same keyring) derives the same keys. A remote gateway never holds the keyring.
//!
//! Wire form: `<kid>.<base64url body JSON>.<base64url signature over "kid.body">`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::signing::Keyring;

/// Domain of the key derivation: a new domain would be new keys.
const DOMAIN: &str = "wardengate remote grant v1";

/// What a remote gateway may relay, for whom, until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteGrant {
    /// Session id (the relay path names it too).
    pub session_id: String,
    /// Token the session was authorised for.
    pub token_id: String,
    /// Target name.
    pub target: String,
    /// Host to dial.
    pub host: String,
    /// Port to dial.
    pub port: u16,
    /// Region of the target.
    pub region: String,
    /// The one gateway that may carry it.
    pub gateway_id: String,
    /// Unix ms after which it may no longer start a relay.
    pub expires_at_ms: i64,
}

/// Why a grant was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    /// Not in the wire form.
    #[error("malformed grant")]
    Malformed,
    /// Signed with a key this gateway does not know (not linked yet, or rotated out).
    #[error("grant signed with unknown key `{0}`")]
    UnknownKey(String),
    /// The signature does not verify.
    #[error("grant signature does not verify")]
    BadSignature,
    /// Past its expiry.
    #[error("grant expired")]
    Expired,
}

/// The control plane's grant keys (derived from its keyring).
#[derive(Clone)]
pub struct GrantSigner {
    keys: Vec<(String, SigningKey)>,
}

impl std::fmt::Debug for GrantSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("GrantSigner")
            .field("key_ids", &ids)
            .finish()
    }
}

impl GrantSigner {
    /// The keys of `keyring`, signing key first.
    pub fn from_keyring(keyring: &Keyring) -> Self {
        Self {
            keys: keyring
                .derive(DOMAIN)
                .into_iter()
                .map(|(kid, seed)| (kid, SigningKey::from_bytes(&seed)))
                .collect(),
        }
    }

    /// Signs `grant` with the first key.
    pub fn sign(&self, grant: &RemoteGrant) -> String {
        let (kid, key) = &self.keys[0];
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(grant).unwrap_or_default());
        let sig = key.sign(format!("{kid}.{body}").as_bytes());
        format!("{kid}.{body}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
    }

    /// Every key's public half, `(kid, 32 bytes)`, for the gateways.
    pub fn public(&self) -> Vec<(String, Vec<u8>)> {
        self.keys
            .iter()
            .map(|(kid, k)| (kid.clone(), k.verifying_key().to_bytes().to_vec()))
            .collect()
    }
}

/// A remote gateway's view of the grant keys: public halves only.
#[derive(Debug, Clone, Default)]
pub struct GrantVerifier {
    keys: Vec<(String, VerifyingKey)>,
}

impl GrantVerifier {
    /// From `(kid, 32-byte public key)` pairs; malformed ones are skipped.
    pub fn new(keys: &[(String, Vec<u8>)]) -> Self {
        Self {
            keys: keys
                .iter()
                .filter_map(|(kid, b)| {
                    let bytes: [u8; 32] = b.as_slice().try_into().ok()?;
                    Some((kid.clone(), VerifyingKey::from_bytes(&bytes).ok()?))
                })
                .collect(),
        }
    }

    /// True when no key is known yet (the gateway never linked).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Verifies `signed` at `now_ms` and returns the grant.
    pub fn verify(&self, signed: &str, now_ms: i64) -> Result<RemoteGrant, GrantError> {
        let mut parts = signed.trim().split('.');
        let (Some(kid), Some(body), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(GrantError::Malformed);
        };
        let key = self
            .keys
            .iter()
            .find(|(k, _)| k == kid)
            .map(|(_, k)| k)
            .ok_or_else(|| GrantError::UnknownKey(kid.to_string()))?;
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .ok()
            .and_then(|b| Signature::from_slice(&b).ok())
            .ok_or(GrantError::Malformed)?;
        key.verify(format!("{kid}.{body}").as_bytes(), &sig)
            .map_err(|_| GrantError::BadSignature)?;
        let grant: RemoteGrant = URL_SAFE_NO_PAD
            .decode(body)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(GrantError::Malformed)?;
        if now_ms >= grant.expires_at_ms {
            return Err(GrantError::Expired);
        }
        Ok(grant)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn grant(exp: i64) -> RemoteGrant {
        RemoteGrant {
            session_id: "s1".into(),
            token_id: "t".into(),
            target: "db".into(),
            host: "10.0.0.1".into(),
            port: 22,
            region: "eu".into(),
            gateway_id: "gw-1".into(),
            expires_at_ms: exp,
        }
    }

    #[test]
    fn a_grant_verifies_with_the_public_half_only_and_refuses_tampering_expiry_and_foreign_keys() {
        let ring = Keyring::parse(&Keyring::generate_file("k1")).unwrap();
        let signer = GrantSigner::from_keyring(&ring);
        let verifier = GrantVerifier::new(&signer.public());
        let signed = signer.sign(&grant(2_000));
        assert_eq!(verifier.verify(&signed, 1_000).unwrap(), grant(2_000));
        assert_eq!(verifier.verify(&signed, 2_000), Err(GrantError::Expired));
        // A body swapped for another grant's does not verify under the first's signature.
        let other = signer.sign(&RemoteGrant {
            gateway_id: "gw-2".into(),
            ..grant(2_000)
        });
        let mut p: Vec<&str> = signed.split('.').collect();
        let q: Vec<&str> = other.split('.').collect();
        p[1] = q[1];
        assert_eq!(
            verifier.verify(&p.join("."), 1_000),
            Err(GrantError::BadSignature)
        );
        let foreign =
            GrantSigner::from_keyring(&Keyring::parse(&Keyring::generate_file("k1")).unwrap());
        assert_eq!(
            verifier.verify(&foreign.sign(&grant(2_000)), 1_000),
            Err(GrantError::BadSignature)
        );
        let k9 = GrantSigner::from_keyring(&Keyring::parse(&Keyring::generate_file("k9")).unwrap());
        assert_eq!(
            verifier.verify(&k9.sign(&grant(2_000)), 1_000),
            Err(GrantError::UnknownKey("k9".into()))
        );
        assert_eq!(verifier.verify("x.y", 1_000), Err(GrantError::Malformed));
    }

    #[test]
    fn grant_keys_rotate_with_the_keyring() {
        let old = Keyring::generate_file("k1");
        let new = Keyring::generate_file("k2");
        let before = GrantSigner::from_keyring(&Keyring::parse(&old).unwrap());
        let after = GrantSigner::from_keyring(&Keyring::parse(&format!("{new}{old}")).unwrap());
        // Every replica derives the same keys from the same file.
        assert_eq!(
            before.public(),
            GrantSigner::from_keyring(&Keyring::parse(&old).unwrap()).public()
        );
        let verifier = GrantVerifier::new(&after.public());
        assert!(verifier.verify(&before.sign(&grant(2_000)), 1_000).is_ok());
        assert!(after.sign(&grant(2_000)).starts_with("k2."));
        assert!(verifier.verify(&after.sign(&grant(2_000)), 1_000).is_ok());
    }
}
