//! Signed documents read back from Redis: session grants (`Keyring::verify`) and sealed events
//! (`event_seal::open`), under a fixed keyring. The first byte picks a mode:
//!
//! - 0: the rest as a grant envelope;
//! - 1: a valid signed grant with byte edits (the rest: `(position, byte)` pairs);
//! - 2: the rest as JSON, correctly signed, so the body parser and expiry check are reached;
//! - 3: the rest as a sealed event document;
//! - 4: a valid sealed event with byte edits.
//!
//! Never a panic; an edited document verifies only if it still means the same grant/event.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use wardengate::event_seal;
use wardengate::session::{Grant, GrantState};
use wardengate::signing::Keyring;
use wardengate::store::EventRow;

const KEYS: &str = "k1 q2vGIdaPSWq/+6F6Bgzr2Ymn3k7cQ1U1bqsuQNgqd9M=\n\
                    k0 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n";

struct Fixed {
    ring: Keyring,
    grant: Grant,
    signed: String,
    event: EventRow,
    sealed: String,
}

fn fixed() -> &'static Fixed {
    static F: OnceLock<Fixed> = OnceLock::new();
    F.get_or_init(|| {
        let ring = Keyring::parse(KEYS).expect("fixed keyring");
        let grant = Grant {
            session_id: "s-1".into(),
            token_id: "t-1".into(),
            target: "db".into(),
            host: "127.0.0.1".into(),
            port: 5432,
            state: GrantState::Active,
            replica: Some("r-1".into()),
            expires_at_ms: 2_000,
            terminated_by: None,
        };
        let signed = ring.sign(&grant);
        let event = EventRow {
            id: 7,
            at: 1_000,
            kind: "session.ended".into(),
            subject: "s-1".into(),
            detail: "{\"reason\":\"client_closed\"}".into(),
        };
        let sealed = event_seal::seal(&ring, &event).expect("seal");
        Fixed {
            ring,
            grant,
            signed,
            event,
            sealed,
        }
    })
}

/// `doc` with each `(position, byte)` pair of `edits` applied.
fn edited(doc: &str, edits: &[u8]) -> Vec<u8> {
    let mut b = doc.as_bytes().to_vec();
    for pair in edits.chunks_exact(2) {
        let at = pair[0] as usize * b.len() / 256;
        b[at] = pair[1];
    }
    b
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let f = fixed();
    match mode % 5 {
        0 => {
            if let Ok(s) = std::str::from_utf8(rest) {
                let _ = f.ring.verify::<Grant>(s, 1_000);
            }
        }
        1 => {
            let b = edited(&f.signed, rest);
            if let Ok(s) = std::str::from_utf8(&b)
                && let Ok(g) = f.ring.verify::<Grant>(s, 1_000)
            {
                assert_eq!(g, f.grant, "an edited grant verified as another grant");
            }
        }
        2 => {
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(rest) {
                let now = i64::from_le_bytes(rest.get(..8).and_then(|b| b.try_into().ok()).unwrap_or_default());
                let _ = f.ring.verify::<Grant>(&f.ring.sign(&v), now);
            }
        }
        3 => {
            if let Ok(s) = std::str::from_utf8(rest) {
                let _ = event_seal::open(&f.ring, s);
            }
        }
        _ => {
            let b = edited(&f.sealed, rest);
            if let Ok(s) = std::str::from_utf8(&b)
                && let Ok(e) = event_seal::open(&f.ring, s)
            {
                assert_eq!(e, f.event, "an edited event opened as another event");
            }
        }
    }
});
