//! Recording documents as read back from object storage (or a downloaded directory for
//! `wgctl recordings verify`): `meta.json`, chunk indexes, `end.json` and `manifest.json`
//! (Ed25519 or legacy HMAC), checked by the pure `verify::check` with and without the internal
//! keyring, against each thing Postgres may have recorded.
//!
//! Input: a mode byte (which keys are trusted, what Postgres recorded), then sections
//! separated by `0xFF` (never in UTF-8): the listing (one key per line), then the bytes of
//! `meta.json`, `end.json`, `manifest.json`, `chunk-000001.json`, `chunk-000001.bin`,
//! `chunk-000002.json`, `chunk-000002.bin` (an empty section: the object is absent). Never a
//! panic; a recording with problems is never reported ok.
#![no_main]

use std::sync::OnceLock;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use wardengate::recording::verify::{self, Obj, parse_manifest};
use wardengate::recording::{ManifestKeys, Recorded, Snapshot, Trust};
use wardengate::signing::Keyring;

const NAMES: &[&str] = &[
    "meta.json",
    "end.json",
    "manifest.json",
    "chunk-000001.json",
    "chunk-000001.bin",
    "chunk-000002.json",
    "chunk-000002.bin",
];

fn keys() -> &'static (Keyring, ManifestKeys) {
    static K: OnceLock<(Keyring, ManifestKeys)> = OnceLock::new();
    K.get_or_init(|| {
        (
            Keyring::parse("k1 q2vGIdaPSWq/+6F6Bgzr2Ymn3k7cQ1U1bqsuQNgqd9M=\n").expect("keyring"),
            ManifestKeys::parse("m1 private AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n")
                .expect("manifest keys"),
        )
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut sections = rest.split(|b| *b == 0xFF);
    let listing: Vec<String> = sections
        .next()
        .map(|l| String::from_utf8_lossy(l).lines().map(String::from).collect())
        .unwrap_or_default();
    let mut snap = Snapshot {
        listing,
        objects: Default::default(),
    };
    for (name, bytes) in NAMES.iter().zip(sections) {
        if !bytes.is_empty() {
            snap.objects
                .insert((*name).to_string(), Obj::new(name, Bytes::copy_from_slice(bytes)));
        }
    }
    let _ = snap.second_fetch();
    if let Some(o) = snap.objects.get("manifest.json")
        && let Some(d) = &o.doc
    {
        let _ = parse_manifest(d);
    }
    let (ring, manifest_keys) = keys();
    let recorded = match mode & 3 {
        0 => Recorded::Unknown,
        1 => Recorded::NotSigned,
        2 => Recorded::Signed(
            snap.objects
                .get("manifest.json")
                .map(|o| o.sha256.clone())
                .unwrap_or_default(),
        ),
        _ => Recorded::Signed("0".repeat(64)),
    };
    let server = mode & 4 != 0;
    let trust = Trust {
        seals: server.then_some(ring),
        keys: manifest_keys,
        legacy: server.then_some(ring),
    };
    let v = verify::check("s-1", &snap, trust, &recorded);
    assert_eq!(v.ok, v.findings.is_empty());
    assert_eq!(v.problems.len(), v.findings.len());
});
