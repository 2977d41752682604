//! What a client may send the relay's own server-side WebSocket (`pump::websocket`): arbitrary
//! header bytes through `frame::parse` under both masking rules, and arbitrary byte streams
//! through the server socket's reading half. Never a panic; a parsed header always re-encodes
//! to the same bytes, stays within the limit and never claims more bytes than it was given; no
//! frame or message the socket hands on is larger than its limits.
#![no_main]

use std::sync::OnceLock;

use futures::StreamExt;
use libfuzzer_sys::fuzz_target;
use wardengate::pump::Frame;
use wardengate::pump::websocket::frame::{self, MAX_HEADER, Masking};
use wardengate::pump::websocket::{Limits, server};

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
    })
}

fn header(bytes: &[u8], max: usize) {
    for masking in [Masking::Required, Masking::Forbidden] {
        let Ok(Some((h, n))) = frame::parse(bytes, masking, max) else {
            continue;
        };
        assert!(n <= bytes.len() && n <= MAX_HEADER, "header of {n} bytes from {}", bytes.len());
        assert_eq!(n, frame::header_len([bytes[0], bytes[1]]));
        assert!(h.len <= max, "length {} over the limit {max}", h.len);
        // The shortest form is the only one `encode` writes; parse accepts longer ones too, so
        // compare after re-parsing what encode wrote.
        let mut out = [0u8; MAX_HEADER];
        let m = frame::encode(h.fin, h.opcode, h.mask, h.len, &mut out);
        let again = frame::parse(&out[..m], masking, max);
        assert_eq!(again, Ok(Some((h, m))), "encode/parse disagree");
    }
}

fn stream(bytes: &[u8], limits: Limits) {
    runtime().block_on(async {
        let io = tokio::io::join(bytes, tokio::io::sink());
        let (mut rx, _tx) = server(io, limits);
        while let Some(item) = rx.next().await {
            match item {
                Ok(Frame::Data(b)) => assert!(b.len() <= limits.max_message),
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    // Small limits so the fuzzer reaches them: a frame up to 64..=1087 bytes, a message up to
    // four frames.
    let max_frame = 64 + usize::from(mode >> 2) * 16;
    let limits = Limits {
        max_frame,
        max_message: max_frame * 4,
    };
    match mode & 1 {
        0 => header(rest, max_frame),
        _ => stream(rest, limits),
    }
});
