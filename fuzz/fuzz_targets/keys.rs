//! Key and token files an operator hands the gateway: the internal keyring
//! (`--internal-key-file`), the Ed25519 recording keys (`--recording-key-file`, also what
//! `wgctl` rebuilds from a server's key listing) and the admin token file. Any text parses or
//! is refused with an error; an accepted file is usable (signs and verifies its own output).
#![no_main]

use libfuzzer_sys::fuzz_target;
use wardengate::recording::ManifestKeys;
use wardengate::signing::Keyring;
use wardengate::token::parse_token_file;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(ring) = Keyring::parse(text) {
        let (kid, mac) = ring.mac_detached("fuzz", data);
        assert_eq!(kid, ring.signing_key_id());
        assert!(ring.verify_detached("fuzz", data, &kid, &mac).is_ok());
    }
    if let Ok(keys) = ManifestKeys::parse(text) {
        if let Some((kid, sig)) = keys.sign(data) {
            assert!(keys.verify(&kid, data, &sig).is_ok());
        }
        let again = ManifestKeys::from_listing(&keys.listing());
        assert!(again.is_ok(), "{again:?}");
    }
    if let Ok(t) = parse_token_file(text) {
        assert!(!t.is_empty() && !t.contains(char::is_whitespace));
    }
});
