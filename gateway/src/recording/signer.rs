//! Ed25519 keys of recording manifests. Only the replicas that run the manifest-signing job
//! hold the private key (`--recording-key-file` / `WG_RECORDING_KEY_FILE`); relay-only pools
//! never see it, and the public keys are published (`GET /v1/recordings/public-keys`,
//! `wgctl recordings public-keys`) so auditors verify manifests offline.
//!
//! Key file: one key per line, `#` comments:
//! `<key-id> private <base64 32-byte seed>` (at most one: the key that signs) and any number of
//! `<key-id> public <base64 32-byte public key>` (retired keys still trusted for old manifests).
//! Rotation: generate a new private line (`wardengate keys generate --recording --kid rk2`),
//! move the old key's public line (`wardengate keys public FILE`) below it, roll out.
//!
//! What is signed: [`MANIFEST_TAG`], the key id, a NUL, then the manifest body (canonical JSON),
//! so a signature over anything else (another protocol, another key id) never verifies here.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use crate::wire::{RecordingKey, RecordingKeys};

/// Domain-separation prefix of every manifest signature.
pub const MANIFEST_TAG: &[u8] = b"wardengate-recording-manifest-v1\0";
/// The `format` field of an Ed25519-signed manifest document.
pub const FORMAT: &str = "wardengate-recording-manifest-v1";
/// Algorithm name in documents and key listings.
pub const ALGORITHM: &str = "ed25519";

/// Why a recording key file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyFileError {
    /// Nothing usable in the file.
    #[error("no key found: expected lines of `<key-id> private|public <base64 key>`")]
    NoKeys,
    /// A malformed line.
    #[error("line {line}: {reason}")]
    BadLine {
        /// 1-based line.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

/// Why a manifest signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestSigError {
    /// No trusted key has this id.
    #[error("unknown key id `{0}`")]
    UnknownKey(String),
    /// The signature is malformed or does not verify.
    #[error("signature does not verify")]
    BadSignature,
}

/// Trusted manifest keys: at most one private key that signs, every public key verifies.
#[derive(Clone, Default)]
pub struct ManifestKeys {
    signer: Option<(String, SigningKey)>,
    public: Vec<(String, VerifyingKey)>,
}

impl std::fmt::Debug for ManifestKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.public.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("ManifestKeys")
            .field("signing", &self.signing_key_id())
            .field("trusted", &ids)
            .finish()
    }
}

fn message(kid: &str, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(MANIFEST_TAG.len() + kid.len() + 1 + body.len());
    m.extend_from_slice(MANIFEST_TAG);
    m.extend_from_slice(kid.as_bytes());
    m.push(0);
    m.extend_from_slice(body);
    m
}

fn key32(text: &str) -> Result<[u8; 32], String> {
    let bytes = STANDARD
        .decode(text)
        .or_else(|_| URL_SAFE_NO_PAD.decode(text))
        .map_err(|_| "key is not base64".to_string())?;
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| format!("key is {} bytes; Ed25519 keys are 32", bytes.len()))
}

impl ManifestKeys {
    /// Parses a key file (see the module doc).
    pub fn parse(text: &str) -> Result<Self, KeyFileError> {
        let mut keys = Self::default();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |reason: String| KeyFileError::BadLine {
                line: i + 1,
                reason,
            };
            let mut parts = line.split_whitespace();
            let (Some(kid), Some(kind), Some(key), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(bad("expected `<key-id> private|public <base64 key>`".into()));
            };
            if !kid
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(bad(
                    "key id may only contain letters, digits, '-' and '_'".into()
                ));
            }
            if keys.public.iter().any(|(k, _)| k == kid) {
                return Err(bad(format!("duplicate key id `{kid}`")));
            }
            let bytes = key32(key).map_err(bad)?;
            let public = match kind {
                "private" => {
                    if keys.signer.is_some() {
                        return Err(bad(
                            "a second private key: only one key signs; keep retired keys as \
                             `public` lines"
                                .into(),
                        ));
                    }
                    let sk = SigningKey::from_bytes(&bytes);
                    let vk = sk.verifying_key();
                    keys.signer = Some((kid.to_string(), sk));
                    vk
                }
                "public" => VerifyingKey::from_bytes(&bytes)
                    .map_err(|_| bad("not a valid Ed25519 public key".into()))?,
                other => {
                    return Err(bad(format!("kind `{other}`: use `private` or `public`")));
                }
            };
            keys.public.push((kid.to_string(), public));
        }
        if keys.public.is_empty() {
            return Err(KeyFileError::NoKeys);
        }
        // The signing key first, so listings show it first.
        if let Some((kid, _)) = &keys.signer
            && let Some(pos) = keys.public.iter().position(|(k, _)| k == kid)
        {
            let k = keys.public.remove(pos);
            keys.public.insert(0, k);
        }
        Ok(keys)
    }

    /// A fresh key file with one private key `kid`.
    pub fn generate_file(kid: &str) -> String {
        let seed: [u8; 32] = rand::random();
        format!(
            "# Wardengate recording-manifest signing key (Ed25519). Give it only to the replicas \
             that sign manifests.\n{kid} private {}\n",
            STANDARD.encode(seed)
        )
    }

    /// The public half of every key, in the key-file format (what `--public-key` reads).
    pub fn public_file(&self) -> String {
        self.public
            .iter()
            .map(|(kid, vk)| format!("{kid} public {}\n", STANDARD.encode(vk.to_bytes())))
            .collect()
    }

    /// The key listing served at `GET /v1/recordings/public-keys`.
    pub fn listing(&self) -> RecordingKeys {
        RecordingKeys {
            keys: self
                .public
                .iter()
                .map(|(kid, vk)| RecordingKey {
                    kid: kid.clone(),
                    algorithm: ALGORITHM.into(),
                    public_key: STANDARD.encode(vk.to_bytes()),
                    signing: self.signing_key_id() == Some(kid.as_str()),
                })
                .collect(),
        }
    }

    /// Parses a listing back (what `wgctl` received) into verification keys.
    pub fn from_listing(listing: &RecordingKeys) -> Result<Self, KeyFileError> {
        let text: String = listing
            .keys
            .iter()
            .map(|k| format!("{} public {}\n", k.kid, k.public_key))
            .collect();
        Self::parse(&text)
    }

    /// The id of the key that signs, if this replica holds one.
    pub fn signing_key_id(&self) -> Option<&str> {
        self.signer.as_ref().map(|(k, _)| k.as_str())
    }

    /// Whether this replica may run the signing job.
    pub fn can_sign(&self) -> bool {
        self.signer.is_some()
    }

    /// Signs `body` (the manifest's canonical JSON): `(key id, base64 signature)`.
    pub fn sign(&self, body: &[u8]) -> Option<(String, String)> {
        let (kid, sk) = self.signer.as_ref()?;
        let sig: Signature = sk.sign(&message(kid, body));
        Some((kid.clone(), STANDARD.encode(sig.to_bytes())))
    }

    /// Verifies a signature made by [`ManifestKeys::sign`] with the trusted key `kid`
    /// (strict verification: no malleable or small-order signatures).
    pub fn verify(&self, kid: &str, body: &[u8], sig: &str) -> Result<(), ManifestSigError> {
        let vk = self
            .public
            .iter()
            .find(|(k, _)| k == kid)
            .map(|(_, vk)| vk)
            .ok_or_else(|| ManifestSigError::UnknownKey(kid.to_string()))?;
        let bytes = STANDARD
            .decode(sig)
            .map_err(|_| ManifestSigError::BadSignature)?;
        let sig = Signature::from_slice(&bytes).map_err(|_| ManifestSigError::BadSignature)?;
        vk.verify_strict(&message(kid, body), &sig)
            .map_err(|_| ManifestSigError::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(kid: &str) -> ManifestKeys {
        ManifestKeys::parse(&ManifestKeys::generate_file(kid)).unwrap()
    }

    #[test]
    fn signs_and_verifies_with_the_public_half_only() {
        let k = keys("rk1");
        let (kid, sig) = k.sign(b"{\"a\":1}").unwrap();
        assert_eq!(kid, "rk1");
        let public = ManifestKeys::parse(&k.public_file()).unwrap();
        assert!(!public.can_sign());
        assert!(public.sign(b"x").is_none());
        assert_eq!(public.verify(&kid, b"{\"a\":1}", &sig), Ok(()));
        assert_eq!(
            public.verify(&kid, b"{\"a\":2}", &sig),
            Err(ManifestSigError::BadSignature)
        );
        // The listing round-trips to the same trust.
        let again = ManifestKeys::from_listing(&k.listing()).unwrap();
        assert_eq!(again.verify(&kid, b"{\"a\":1}", &sig), Ok(()));
        assert!(k.listing().keys[0].signing);
    }

    #[test]
    fn the_domain_tag_and_key_id_are_part_of_what_is_signed() {
        let k = keys("rk1");
        let (_, sig) = k.sign(b"body").unwrap();
        // A raw Ed25519 signature over the body alone (another protocol's use of the same key)
        // does not verify as a manifest signature.
        let Some((_, sk)) = &k.signer else {
            unreachable!()
        };
        let raw = STANDARD.encode(sk.sign(b"body").to_bytes());
        assert_eq!(
            k.verify("rk1", b"body", &raw),
            Err(ManifestSigError::BadSignature)
        );
        // The same key under another id: the id is signed too.
        let renamed = ManifestKeys::parse(&k.public_file().replace("rk1", "rk9")).unwrap();
        assert_eq!(
            renamed.verify("rk9", b"body", &sig),
            Err(ManifestSigError::BadSignature)
        );
    }

    #[test]
    fn another_key_under_the_same_id_is_a_forgery_and_unknown_ids_are_named() {
        let real = keys("rk1");
        let forged = keys("rk1");
        let (kid, sig) = forged.sign(b"body").unwrap();
        assert_eq!(
            real.verify(&kid, b"body", &sig),
            Err(ManifestSigError::BadSignature)
        );
        assert_eq!(
            real.verify("other", b"body", &sig),
            Err(ManifestSigError::UnknownKey("other".into()))
        );
        assert_eq!(
            real.verify(&kid, b"body", "not base64!"),
            Err(ManifestSigError::BadSignature)
        );
    }

    #[test]
    fn rotation_signs_with_the_new_key_and_still_trusts_the_old_one() {
        let old = keys("rk1");
        let (_, old_sig) = old.sign(b"old manifest").unwrap();
        let new_file = format!(
            "{}{}",
            ManifestKeys::generate_file("rk2"),
            old.public_file()
        );
        let rotated = ManifestKeys::parse(&new_file).unwrap();
        assert_eq!(rotated.signing_key_id(), Some("rk2"));
        assert_eq!(rotated.verify("rk1", b"old manifest", &old_sig), Ok(()));
        let (kid, _) = rotated.sign(b"new").unwrap();
        assert_eq!(kid, "rk2");
        let ids: Vec<String> = rotated.listing().keys.into_iter().map(|k| k.kid).collect();
        assert_eq!(ids, ["rk2", "rk1"]);
    }

    #[test]
    fn bad_key_files_name_the_line() {
        assert_eq!(
            ManifestKeys::parse("# nothing\n").unwrap_err(),
            KeyFileError::NoKeys
        );
        let two = format!(
            "{}{}",
            ManifestKeys::generate_file("a"),
            ManifestKeys::generate_file("b")
        );
        assert!(matches!(
            ManifestKeys::parse(&two).unwrap_err(),
            KeyFileError::BadLine { line: 4, reason } if reason.contains("second private")
        ));
        assert!(matches!(
            ManifestKeys::parse(&format!("k1 private {}", STANDARD.encode([1u8; 16]))).unwrap_err(),
            KeyFileError::BadLine { line: 1, reason } if reason.contains("16 bytes")
        ));
        assert!(matches!(
            ManifestKeys::parse(&format!("k1 secret {}", STANDARD.encode([1u8; 32]))).unwrap_err(),
            KeyFileError::BadLine { line: 1, reason } if reason.contains("secret")
        ));
        let k = keys("k1").public_file();
        assert!(matches!(
            ManifestKeys::parse(&format!("{k}{k}")).unwrap_err(),
            KeyFileError::BadLine { line: 2, reason } if reason.contains("duplicate")
        ));
    }
}
