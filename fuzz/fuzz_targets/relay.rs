//! What the relay's server sends `wgctl`: raw WebSocket bytes (binary data, the half-close text,
//! pings, close frames with their codes and reasons) through tungstenite and `client::frames`,
//! the conversion the pump reads; and the `/v1/events` stream through `client::SseParser`, split
//! at a fuzzed point, with each event's typed parse. Never a panic; the split never changes
//! the events.
#![no_main]

use std::sync::OnceLock;

use futures::StreamExt;
use libfuzzer_sys::fuzz_target;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role;
use wardengate::client::{SseParser, frames, relay_ws_config};
use wardengate::pump::Frame;
use wardengate::relay_protocol::is_recoverable;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
    })
}

fn websocket(bytes: &[u8]) {
    runtime().block_on(async {
        let io = tokio::io::join(bytes, tokio::io::sink());
        let ws = WebSocketStream::from_raw_socket(io, Role::Client, Some(relay_ws_config())).await;
        let (_tx, mut rx) = frames(ws);
        while let Some(item) = rx.next().await {
            match item {
                Ok(Frame::Close(Some(c))) => {
                    let _ = is_recoverable(c.code);
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
}

fn sse(bytes: &[u8], split: usize) {
    let mut whole = SseParser::default();
    let all = whole.push(bytes);
    let mut parts = SseParser::default();
    let at = split.min(bytes.len());
    let mut split_events = parts.push(&bytes[..at]);
    split_events.extend(parts.push(&bytes[at..]));
    assert_eq!(all, split_events, "splitting the stream changed its events");
    for e in &all {
        let _ = e.parse();
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        websocket(rest);
    } else {
        sse(rest, usize::from(mode >> 1) * rest.len() / 128);
    }
});
