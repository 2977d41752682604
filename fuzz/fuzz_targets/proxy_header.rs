//! PROXY protocol v1/v2 headers (`client_addr::parse_header`), the first bytes a trusted load
//! balancer sends: any bytes give a header, "need more" or an error, never a panic; a parsed
//! header's length lies within the bytes given, and a prefix of a header is never "complete"
//! with a different length.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wardengate::client_addr::{MAX_HEADER_BYTES, ProxyHeaderError, parse_header};

fuzz_target!(|data: &[u8]| {
    match parse_header(data) {
        Ok(Some((_, len))) => {
            assert!(len <= data.len(), "header of {len} bytes in {}", data.len());
            // The same header followed by other bytes (TLS) parses to the same length.
            let mut more = data[..len].to_vec();
            more.extend_from_slice(b"\x16\x03\x01");
            if let Ok(Some((_, again))) = parse_header(&more) {
                assert_eq!(again, len);
            }
        }
        Ok(None) => assert!(data.len() < MAX_HEADER_BYTES),
        Err(ProxyHeaderError::TooLong) => assert!(data.len() >= MAX_HEADER_BYTES),
        Err(_) => {}
    }
});
