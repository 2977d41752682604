//! Verifying a recording, the same way on the server and offline: a [`Snapshot`] of the
//! session's objects, each fetched by its exact key (a listing only tells which keys exist, so a
//! nested copy such as `ID/a/meta.json` is flagged and can never stand in for `ID/meta.json`),
//! then pure checks against what is trusted ([`Trust`]):
//!
//! 1. the listing: nested, unexpected and duplicate keys;
//! 2. the chain: `meta.json`, chunks 1..N (N from `end.json` once the session ended, else the
//!    highest index so far), `end.json`; every `prev`, every seal (server only: the seals are
//!    HMACs under the internal key), every chunk's bytes against its index;
//! 3. the manifest: present or not against what Postgres holds (a deleted manifest of a signed
//!    recording is tampering, not "not signed yet"), its hash against Postgres's, its Ed25519
//!    signature against the trusted public keys, and every object against it.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::chain::{self, link_hash};
use super::signer::{FORMAT, ManifestKeys, ManifestSigError};
use super::{ChunkIndex, End, MANIFEST, Manifest, Meta};
use crate::signing::{Keyring, SigningError};
use crate::wire::{Finding, Verification};

/// `meta.json`.
pub const META: &str = "meta.json";
/// `end.json`.
pub const END: &str = "end.json";

/// The name of chunk `seq`'s object with extension `ext` (`bin` or `json`).
pub fn chunk_name(seq: u64, ext: &str) -> String {
    format!("chunk-{seq:06}.{ext}")
}

/// Absent chunks reported one by one past the last chunk present (or fetched past the last one
/// listed). An `end.json` claiming more (tampered: its count is outside input) gets one
/// finding instead of a walk of up to 2^64 chunks.
pub const MISSING_TAIL: u64 = 1000;

/// The highest chunk sequence number among `names`, 0 when none.
fn last_chunk<'a>(names: impl IntoIterator<Item = &'a String>) -> u64 {
    names
        .into_iter()
        .filter_map(|k| parse_chunk_name(k).map(|(s, _)| s))
        .max()
        .unwrap_or(0)
}

/// `(seq, is_index)` of a chunk object name in its canonical form, else `None`.
pub fn parse_chunk_name(name: &str) -> Option<(u64, bool)> {
    let rest = name.strip_prefix("chunk-")?;
    let (num, ext) = rest.split_once('.')?;
    if !num.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let seq: u64 = num.parse().ok()?;
    let index = match ext {
        "json" => true,
        "bin" => false,
        _ => return None,
    };
    (seq >= 1 && chunk_name(seq, ext) == name).then_some((seq, index))
}

/// Whether `name` belongs to the recording layout (flat, known names only).
pub fn well_named(name: &str) -> bool {
    matches!(name, META | END | MANIFEST) || parse_chunk_name(name).is_some()
}

/// One object, fetched by its exact key.
#[derive(Debug, Clone)]
pub struct Obj {
    /// Bytes.
    pub size: u64,
    /// SHA-256, hex.
    pub sha256: String,
    /// The bytes of JSON documents (indexes, meta, end, manifest); `None` for chunk data.
    pub doc: Option<Bytes>,
}

impl Obj {
    /// Hashes `bytes`, keeping them when `name` is a JSON document.
    pub fn new(name: &str, bytes: Bytes) -> Self {
        Self {
            size: bytes.len() as u64,
            sha256: link_hash(&bytes),
            doc: name.ends_with(".json").then_some(bytes),
        }
    }
}

/// A session's objects as read for verification.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Every key below the session's prefix, relative to it (nested ones included).
    pub listing: Vec<String>,
    /// Objects fetched by their exact key; absent ones are missing.
    pub objects: BTreeMap<String, Obj>,
}

impl Snapshot {
    fn doc(&self, name: &str) -> Option<&Bytes> {
        self.objects.get(name).and_then(|o| o.doc.as_ref())
    }

    /// The flat, well-named keys worth fetching first: the fixed documents and whatever the
    /// listing shows.
    pub fn first_fetch(listing: &[String]) -> BTreeSet<String> {
        [META, END, MANIFEST]
            .into_iter()
            .map(String::from)
            .chain(listing.iter().filter(|k| well_named(k)).cloned())
            .collect()
    }

    /// Keys the chain and the manifest name that were not fetched yet (so that a key missing
    /// from the listing is still looked up by its exact name, and reported missing only if it
    /// is not there).
    pub fn second_fetch(&self) -> BTreeSet<String> {
        let mut want = BTreeSet::new();
        if let Some(end) = self
            .doc(END)
            .and_then(|d| serde_json::from_slice::<End>(d).ok())
        {
            let bound = last_chunk(&self.listing).saturating_add(MISSING_TAIL);
            for seq in 1..=end.chunks.min(bound) {
                want.insert(chunk_name(seq, "json"));
                want.insert(chunk_name(seq, "bin"));
            }
        }
        if let Some(m) = self.doc(MANIFEST).and_then(|d| parse_manifest(d).ok()) {
            let listed = match m {
                ManifestDoc::Ed25519(s) => serde_json::from_str::<Manifest>(&s.body).ok(),
                ManifestDoc::Legacy(l) => Some(l.manifest),
            };
            for e in listed.into_iter().flat_map(|m| m.objects) {
                if well_named(&e.name) {
                    want.insert(e.name);
                }
            }
        }
        want.retain(|k| !self.objects.contains_key(k));
        want
    }
}

/// What Postgres says about the recording's manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// Offline: nobody to ask.
    Unknown,
    /// Not signed yet.
    NotSigned,
    /// Signed; the manifest's SHA-256.
    Signed(String),
}

/// What verification trusts.
#[derive(Debug, Clone, Copy)]
pub struct Trust<'a> {
    /// The internal keyring, to check chain seals (server only).
    pub seals: Option<&'a Keyring>,
    /// Trusted Ed25519 manifest keys.
    pub keys: &'a ManifestKeys,
    /// The internal keyring, to accept legacy HMAC manifests whose hash Postgres recorded
    /// (server only).
    pub legacy: Option<&'a Keyring>,
}

/// An Ed25519-signed `manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignedManifest {
    /// [`FORMAT`].
    pub format: String,
    /// `ed25519`.
    pub alg: String,
    /// Key id.
    pub kid: String,
    /// The signed manifest, canonical JSON.
    pub body: String,
    /// Base64 Ed25519 signature over the tag, the key id and the body.
    pub sig: String,
    /// The same manifest, readable (not trusted: verification reads `body`).
    pub manifest: Manifest,
}

/// A manifest MACed with the shared internal key (before Ed25519 signing).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LegacyManifest {
    /// The keyring envelope (`kid`, `body`, `sig`).
    pub signed: String,
    /// The same manifest, readable.
    pub manifest: Manifest,
}

/// Either kind of manifest document.
#[derive(Debug, Clone)]
pub enum ManifestDoc {
    /// Current.
    Ed25519(SignedManifest),
    /// Legacy HMAC.
    Legacy(LegacyManifest),
}

/// Parses a `manifest.json` of either kind.
pub fn parse_manifest(doc: &[u8]) -> Result<ManifestDoc, String> {
    let v: serde_json::Value = serde_json::from_slice(doc).map_err(|e| e.to_string())?;
    if v.get("format").is_some() {
        let s: SignedManifest = serde_json::from_value(v).map_err(|e| e.to_string())?;
        if s.format != FORMAT || s.alg != super::signer::ALGORITHM {
            return Err(format!("unknown format {} / {}", s.format, s.alg));
        }
        Ok(ManifestDoc::Ed25519(s))
    } else {
        serde_json::from_value(v)
            .map(ManifestDoc::Legacy)
            .map_err(|e| e.to_string())
    }
}

/// Checks `snap` of `session` against `trust` and what Postgres `recorded`.
pub fn check(
    session: &str,
    snap: &Snapshot,
    trust: Trust<'_>,
    recorded: &Recorded,
) -> Verification {
    let mut v = Verification::new(session);
    v.seals_checked = trust.seals.is_some();
    let mut f: Vec<Finding> = Vec::new();

    // 1. The listing.
    let mut seen = HashSet::new();
    for key in &snap.listing {
        if !seen.insert(key.as_str()) {
            f.push(Finding::DuplicateKey { key: key.clone() });
        }
        if key.contains('/') {
            f.push(Finding::NestedKey { key: key.clone() });
        } else if !well_named(key) {
            f.push(Finding::UnexpectedObject { key: key.clone() });
        }
    }

    // 2. The chain.
    let mut prev: Option<String> = None;
    match snap.doc(META) {
        None => f.push(Finding::Missing { key: META.into() }),
        Some(doc) => {
            prev = Some(link_hash(doc));
            match serde_json::from_slice::<Meta>(doc) {
                Err(e) => f.push(Finding::Malformed {
                    key: META.into(),
                    reason: e.to_string(),
                }),
                Ok(m) if m.session != session => f.push(Finding::WrongSession {
                    key: META.into(),
                    found: m.session,
                }),
                Ok(_) => {}
            }
        }
    }
    let end = match snap.doc(END).map(|d| serde_json::from_slice::<End>(d)) {
        None => None,
        Some(Ok(e)) => Some(e),
        Some(Err(e)) => {
            f.push(Finding::Malformed {
                key: END.into(),
                reason: e.to_string(),
            });
            None
        }
    };
    let listed: Vec<(u64, bool, &String)> = snap
        .listing
        .iter()
        .filter_map(|k| parse_chunk_name(k).map(|(s, i)| (s, i, k)))
        .collect();
    let n = match &end {
        Some(e) => e.chunks,
        None => listed
            .iter()
            .filter(|(_, index, _)| *index)
            .map(|(s, _, _)| *s)
            .max()
            .unwrap_or(0),
    };
    v.chunks = n;
    let present = last_chunk(snap.listing.iter().chain(snap.objects.keys()));
    let walk = n.min(present.saturating_add(MISSING_TAIL));
    if walk < n {
        f.push(Finding::Malformed {
            key: END.into(),
            reason: format!("claims {n} chunks; none after chunk {present} exists"),
        });
    }
    for seq in 1..=walk {
        let jn = chunk_name(seq, "json");
        let bn = chunk_name(seq, "bin");
        let Some(doc) = snap.doc(&jn) else {
            f.push(Finding::Missing { key: jn });
            if !snap.objects.contains_key(&bn) {
                f.push(Finding::Missing { key: bn });
            }
            prev = None;
            continue;
        };
        match serde_json::from_slice::<ChunkIndex>(doc) {
            Err(e) => f.push(Finding::Malformed {
                key: jn.clone(),
                reason: e.to_string(),
            }),
            Ok(idx) => {
                if idx.seq != seq {
                    f.push(Finding::OutOfSequence {
                        key: jn.clone(),
                        expected_seq: seq,
                    });
                }
                if idx.session != session {
                    f.push(Finding::WrongSession {
                        key: jn.clone(),
                        found: idx.session.clone(),
                    });
                }
                if prev.as_ref().is_some_and(|p| *p != idx.prev) {
                    f.push(Finding::ChainBroken { key: jn.clone() });
                }
                if let Some(k) = trust.seals
                    && let Err(reason) =
                        chain::check(k, session, &jn, &idx.canonical(), idx.seal.as_ref())
                {
                    f.push(Finding::SealInvalid {
                        key: jn.clone(),
                        reason,
                    });
                }
                match snap.objects.get(&bn) {
                    None => f.push(Finding::Missing { key: bn }),
                    Some(o) if o.sha256 != idx.sha256 || o.size != idx.size as u64 => {
                        f.push(Finding::IndexMismatch { key: bn })
                    }
                    Some(_) => {}
                }
            }
        }
        prev = Some(link_hash(doc));
    }
    if let Some(e) = &end {
        for (seq, _, key) in &listed {
            if *seq > n {
                f.push(Finding::BeyondEnd {
                    key: (*key).clone(),
                    chunks: n,
                });
            }
        }
        if prev.as_ref().is_some_and(|p| *p != e.prev) {
            f.push(Finding::ChainBroken { key: END.into() });
        }
        if e.session != session {
            f.push(Finding::WrongSession {
                key: END.into(),
                found: e.session.clone(),
            });
        }
        if let Some(k) = trust.seals
            && let Err(reason) = chain::check(k, session, END, &e.canonical(), e.seal.as_ref())
        {
            f.push(Finding::SealInvalid {
                key: END.into(),
                reason,
            });
        }
    }
    v.complete = end.is_some();

    // 3. The manifest.
    check_manifest(session, snap, trust, recorded, &mut v, &mut f);

    v.problems = f.iter().map(ToString::to_string).collect();
    v.ok = f.is_empty();
    v.findings = f;
    v
}

fn check_manifest(
    session: &str,
    snap: &Snapshot,
    trust: Trust<'_>,
    recorded: &Recorded,
    v: &mut Verification,
    f: &mut Vec<Finding>,
) {
    let key = || MANIFEST.to_string();
    let Some(obj) = snap.objects.get(MANIFEST) else {
        f.push(match recorded {
            Recorded::Signed(_) => Finding::ManifestDeleted { key: key() },
            _ => Finding::NotSignedYet { key: key() },
        });
        return;
    };
    match recorded {
        Recorded::Signed(h) if *h != obj.sha256 => f.push(Finding::ManifestHashMismatch {
            key: key(),
            recorded: h.clone(),
            actual: obj.sha256.clone(),
        }),
        Recorded::NotSigned => f.push(Finding::ManifestNotRecorded { key: key() }),
        _ => {}
    }
    let doc = obj.doc.as_ref().map(|d| parse_manifest(d));
    let manifest = match doc {
        None => None,
        Some(Err(reason)) => {
            f.push(Finding::Malformed { key: key(), reason });
            None
        }
        Some(Ok(ManifestDoc::Ed25519(s))) => {
            match trust.keys.verify(&s.kid, s.body.as_bytes(), &s.sig) {
                Err(ManifestSigError::UnknownKey(kid)) => {
                    f.push(Finding::UnknownKey { key: key(), kid });
                    None
                }
                Err(e) => {
                    f.push(Finding::SignatureInvalid {
                        key: key(),
                        reason: e.to_string(),
                    });
                    None
                }
                Ok(()) => match serde_json::from_str::<Manifest>(&s.body) {
                    Ok(m) => {
                        v.key_id = Some(s.kid.clone());
                        v.signature = Some(super::signer::ALGORITHM.into());
                        Some(m)
                    }
                    Err(e) => {
                        f.push(Finding::Malformed {
                            key: key(),
                            reason: e.to_string(),
                        });
                        None
                    }
                },
            }
        }
        Some(Ok(ManifestDoc::Legacy(l))) => match trust.legacy {
            None => {
                f.push(Finding::LegacyHmacUnverifiable { key: key() });
                None
            }
            Some(ring) => match ring.verify::<Manifest>(&l.signed, 0) {
                Err(SigningError::UnknownKey(kid)) => {
                    f.push(Finding::UnknownKey { key: key(), kid });
                    None
                }
                Err(e) => {
                    f.push(Finding::SignatureInvalid {
                        key: key(),
                        reason: e.to_string(),
                    });
                    None
                }
                // Accepted only as the exact document Postgres recorded when it was signed:
                // anyone holding the shared key could MAC a new one.
                Ok(m) if *recorded == Recorded::Signed(obj.sha256.clone()) => {
                    v.key_id = serde_json::from_str::<serde_json::Value>(&l.signed)
                        .ok()
                        .and_then(|e| e["kid"].as_str().map(str::to_string));
                    v.signature = Some("legacy-hmac".into());
                    Some(m)
                }
                Ok(_) => {
                    if !f
                        .iter()
                        .any(|x| matches!(x, Finding::ManifestHashMismatch { .. }))
                    {
                        f.push(Finding::SignatureInvalid {
                            key: key(),
                            reason: "a legacy HMAC manifest that Postgres did not record".into(),
                        });
                    }
                    None
                }
            },
        },
    };
    let Some(m) = manifest else {
        return;
    };
    if m.session != session {
        f.push(Finding::WrongSession {
            key: key(),
            found: m.session.clone(),
        });
    }
    v.complete = m.complete;
    let mut names = HashSet::new();
    for e in &m.objects {
        if !names.insert(e.name.as_str()) {
            f.push(Finding::DuplicateKey {
                key: e.name.clone(),
            });
        }
        if !well_named(&e.name) || e.name == MANIFEST {
            f.push(Finding::UnexpectedObject {
                key: e.name.clone(),
            });
            continue;
        }
        match snap.objects.get(&e.name) {
            None => f.push(Finding::Missing {
                key: e.name.clone(),
            }),
            Some(o) if o.sha256 != e.sha256 || o.size != e.size => f.push(Finding::Altered {
                key: e.name.clone(),
                signed_sha256: e.sha256.clone(),
                actual_sha256: o.sha256.clone(),
                signed_size: e.size,
                actual_size: o.size,
            }),
            Some(o) => {
                v.objects += 1;
                v.bytes += o.size;
            }
        }
    }
    for k in &snap.listing {
        if well_named(k) && k != MANIFEST && !names.contains(k.as_str()) {
            f.push(Finding::NotInManifest { key: k.clone() });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_end_claiming_endless_chunks_is_one_finding_not_an_endless_walk() {
        // Found while fuzzing (fuzz/ recording): `"chunks": 1000000000000` never returned.
        let end = br#"{"session":"s-1","ended_ms":2,"reason":"x","chunks":5000000,"bytes_up":0,"bytes_down":0}"#;
        let mut snap = Snapshot {
            listing: vec![END.into()],
            objects: Default::default(),
        };
        snap.objects
            .insert(END.into(), Obj::new(END, Bytes::from_static(end)));
        assert!(snap.second_fetch().len() <= 2 * MISSING_TAIL as usize);
        let keys = ManifestKeys::default();
        let trust = Trust {
            seals: None,
            keys: &keys,
            legacy: None,
        };
        let v = check("s-1", &snap, trust, &Recorded::Unknown);
        assert!(!v.ok);
        assert_eq!(v.chunks, 5_000_000);
        assert!(
            v.findings.len() < 3 * MISSING_TAIL as usize,
            "{}",
            v.findings.len()
        );
        assert!(v.findings.iter().any(|f| matches!(
            f,
            Finding::Malformed { key, reason } if key == END && reason.contains("5000000")
        )));
        assert!(v.findings.contains(&Finding::Missing {
            key: chunk_name(1, "json")
        }));
    }
}
