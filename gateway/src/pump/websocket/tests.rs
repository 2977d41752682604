//! The server framing against tungstenite's client (interoperability) and against raw bytes
//! (every edge RFC 6455 defines: fragments, control frames between them, the length forms,
//! masking rules, limits refused with 1009, the close handshake), plus a seeded property test
//! of the header parser.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::frame::{self, Header, MAX_HEADER, Masking, OpCode, ProtocolError};
use super::*;

const LIMITS: Limits = Limits {
    max_frame: 256 * 1024,
    max_message: 256 * 1024,
};

type Rx = SocketRx<DuplexStream>;
type Tx = SocketTx<DuplexStream>;

fn pair(limits: Limits) -> (DuplexStream, Rx, Tx) {
    let (client, server_io) = tokio::io::duplex(1024 * 1024);
    let (rx, tx) = server(server_io, limits);
    (client, rx, tx)
}

/// A masked client frame.
fn client_frame(fin: bool, opcode: OpCode, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
    let mut head = [0u8; MAX_HEADER];
    let n = frame::encode(fin, opcode, Some(key), payload.len(), &mut head);
    let mut v = head[..n].to_vec();
    let mut body = payload.to_vec();
    frame::apply_mask(&mut body, key);
    v.extend_from_slice(&body);
    v
}

fn masked(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    client_frame(true, opcode, payload, [0x12, 0x34, 0x56, 0x78])
}

/// Reads one server frame from the raw client side (servers never mask).
async fn read_server_frame(c: &mut DuplexStream) -> (Header, Vec<u8>) {
    let mut head = vec![0u8; 2];
    c.read_exact(&mut head).await.unwrap();
    let need = frame::header_len([head[0], head[1]]);
    head.resize(need, 0);
    c.read_exact(&mut head[2..]).await.unwrap();
    let (h, _) = frame::parse(&head, Masking::Forbidden, usize::MAX)
        .unwrap()
        .unwrap();
    let mut body = vec![0u8; h.len];
    c.read_exact(&mut body).await.unwrap();
    (h, body)
}

async fn expect_close(c: &mut DuplexStream, code: u16) {
    let (h, body) = read_server_frame(c).await;
    assert_eq!(h.opcode, OpCode::Close, "expected a close frame");
    assert_eq!(u16::from_be_bytes([body[0], body[1]]), code, "close code");
}

async fn next(rx: &mut Rx) -> Option<Result<Frame, WsError>> {
    tokio::time::timeout(Duration::from_secs(5), rx.next())
        .await
        .expect("a frame within 5 s")
}

async fn protocol_error(rx: &mut Rx) -> ProtocolError {
    match next(rx).await {
        Some(Err(WsError::Protocol(p))) => p,
        other => panic!("expected a protocol error, got {other:?}"),
    }
}

#[tokio::test]
async fn tungstenite_client_round_trips_every_length_form() {
    let (client_io, mut rx, mut tx) = pair(LIMITS);
    let mut client = WebSocketStream::from_raw_socket(client_io, Role::Client, None).await;
    // 7-bit, 16-bit and 64-bit length forms, and their edges.
    let sizes = [0usize, 1, 125, 126, 127, 65_535, 65_536, 200_000];
    for &n in &sizes {
        let data: Vec<u8> = (0..n).map(|i| (i * 7 + n) as u8).collect();
        client.send(Message::binary(data.clone())).await.unwrap();
        assert_eq!(
            next(&mut rx).await.unwrap().unwrap(),
            Frame::Data(data.clone().into())
        );
        tx.send(Frame::Data(data.clone().into())).await.unwrap();
        match client.next().await.unwrap().unwrap() {
            Message::Binary(b) => assert_eq!(&b[..], &data[..], "size {n}"),
            m => panic!("unexpected {m:?}"),
        }
    }
    client.send(Message::text(HALF_CLOSE)).await.unwrap();
    assert_eq!(next(&mut rx).await.unwrap().unwrap(), Frame::HalfClose);
    // Other text is not relayed: the next frame seen is the binary after it.
    client.send(Message::text("hello")).await.unwrap();
    client.send(Message::binary(vec![9u8])).await.unwrap();
    assert_eq!(
        next(&mut rx).await.unwrap().unwrap(),
        Frame::Data(vec![9u8].into())
    );
    tx.send(Frame::HalfClose).await.unwrap();
    assert_eq!(
        client.next().await.unwrap().unwrap(),
        Message::text(HALF_CLOSE)
    );
    // Nothing is held between messages.
    assert_eq!(rx.held(), 0);
}

#[tokio::test]
async fn pings_are_answered_and_reported() {
    let (client_io, mut rx, mut tx) = pair(LIMITS);
    let mut client = WebSocketStream::from_raw_socket(client_io, Role::Client, None).await;
    client
        .send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();
    assert_eq!(next(&mut rx).await.unwrap().unwrap(), Frame::Ping);
    match client.next().await.unwrap().unwrap() {
        Message::Pong(p) => assert_eq!(&p[..], b"are you there"),
        m => panic!("expected the pong, got {m:?}"),
    }
    // The server's keep-alive ping is answered by the client (tungstenite writes its pong on
    // the next flush).
    tx.send(Frame::Ping).await.unwrap();
    let m = client.next().await;
    assert!(matches!(m, Some(Ok(Message::Ping(_)))), "{m:?}");
    client.flush().await.unwrap();
    assert_eq!(next(&mut rx).await.unwrap().unwrap(), Frame::Pong);
}

#[tokio::test]
async fn fragmented_message_with_control_frames_between_fragments() {
    let (mut c, mut rx, _tx) = pair(LIMITS);
    let key = [1, 2, 3, 4];
    let mut bytes = client_frame(false, OpCode::Binary, b"ab", key);
    bytes.extend(client_frame(true, OpCode::Ping, b"p1", key));
    bytes.extend(client_frame(false, OpCode::Continuation, b"", key));
    bytes.extend(client_frame(true, OpCode::Pong, b"", key));
    bytes.extend(client_frame(true, OpCode::Continuation, b"cde", key));
    // A fragmented half-close text.
    bytes.extend(client_frame(false, OpCode::Text, b"e", key));
    bytes.extend(client_frame(true, OpCode::Continuation, b"of", key));
    c.write_all(&bytes).await.unwrap();
    assert_eq!(next(&mut rx).await.unwrap().unwrap(), Frame::Ping);
    assert_eq!(next(&mut rx).await.unwrap().unwrap(), Frame::Pong);
    assert_eq!(
        next(&mut rx).await.unwrap().unwrap(),
        Frame::Data(b"abcde".to_vec().into())
    );
    assert_eq!(next(&mut rx).await.unwrap().unwrap(), Frame::HalfClose);
    let (h, body) = read_server_frame(&mut c).await;
    assert_eq!((h.opcode, &body[..]), (OpCode::Pong, &b"p1"[..]));
    assert_eq!(rx.held(), 0);
}

#[tokio::test]
async fn a_frame_is_delivered_whatever_the_read_boundaries() {
    let (mut c, mut rx, _tx) = pair(LIMITS);
    let payload: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
    let bytes = masked(OpCode::Binary, &payload);
    let writer = tokio::spawn(async move {
        for piece in bytes.chunks(3) {
            c.write_all(piece).await.unwrap();
        }
        c
    });
    assert_eq!(
        next(&mut rx).await.unwrap().unwrap(),
        Frame::Data(payload.into())
    );
    writer.await.unwrap();
}

#[tokio::test]
async fn oversized_frame_is_refused_with_1009_before_allocating() {
    let limits = Limits {
        max_frame: 1000,
        max_message: 4000,
    };
    let (mut c, mut rx, _tx) = pair(limits);
    // Only the header of a 1001-byte frame: the refusal cannot wait for (or buffer) its payload.
    let mut head = [0u8; MAX_HEADER];
    let n = frame::encode(true, OpCode::Binary, Some([9, 9, 9, 9]), 1001, &mut head);
    c.write_all(&head[..n]).await.unwrap();
    assert_eq!(
        protocol_error(&mut rx).await,
        ProtocolError::FrameTooBig {
            len: 1001,
            max: 1000
        }
    );
    assert_eq!(rx.held(), 0);
    expect_close(&mut c, 1009).await;
    assert!(
        next(&mut rx).await.is_none(),
        "nothing is read after the error"
    );
}

#[tokio::test]
async fn huge_64_bit_lengths_are_refused() {
    let (mut c, mut rx, _tx) = pair(LIMITS);
    let mut b = vec![0x82, 0x80 | 127];
    b.extend_from_slice(&(u64::MAX >> 1).to_be_bytes());
    b.extend_from_slice(&[0, 0, 0, 0]);
    c.write_all(&b).await.unwrap();
    assert!(matches!(
        protocol_error(&mut rx).await,
        ProtocolError::FrameTooBig { .. }
    ));
    expect_close(&mut c, 1009).await;

    let (mut c, mut rx, _tx) = pair(LIMITS);
    let mut b = vec![0x82, 0x80 | 127];
    b.extend_from_slice(&u64::MAX.to_be_bytes());
    b.extend_from_slice(&[0, 0, 0, 0]);
    c.write_all(&b).await.unwrap();
    assert_eq!(protocol_error(&mut rx).await, ProtocolError::LengthOverflow);
    expect_close(&mut c, 1002).await;
}

#[tokio::test]
async fn oversized_fragmented_message_is_refused_with_1009() {
    let limits = Limits {
        max_frame: 1000,
        max_message: 2500,
    };
    let (mut c, mut rx, _tx) = pair(limits);
    let key = [5, 6, 7, 8];
    let mut bytes = client_frame(false, OpCode::Binary, &[1u8; 1000], key);
    bytes.extend(client_frame(false, OpCode::Continuation, &[2u8; 1000], key));
    bytes.extend(client_frame(true, OpCode::Continuation, &[3u8; 1000], key));
    c.write_all(&bytes).await.unwrap();
    assert_eq!(
        protocol_error(&mut rx).await,
        ProtocolError::MessageTooBig { max: 2500 }
    );
    assert_eq!(rx.held(), 0, "the partial message is released");
    expect_close(&mut c, 1009).await;
}

/// Each violation, sent raw, is reported and answered with its close code.
#[tokio::test]
async fn protocol_violations_get_their_close_codes() {
    let key = [0xA, 0xB, 0xC, 0xD];
    let unmasked = {
        let mut h = [0u8; MAX_HEADER];
        let n = frame::encode(true, OpCode::Binary, None, 3, &mut h);
        let mut v = h[..n].to_vec();
        v.extend_from_slice(b"abc");
        v
    };
    let mut rsv = masked(OpCode::Binary, b"x");
    rsv[0] |= 0x40;
    let mut reserved_op = masked(OpCode::Binary, b"x");
    reserved_op[0] = (reserved_op[0] & 0xF0) | 0x3;
    let long_ping = masked(OpCode::Ping, &[0u8; 126]);
    let fragmented_ping = client_frame(false, OpCode::Ping, b"x", key);
    let stray_continuation = masked(OpCode::Continuation, b"x");
    let mut interleaved = client_frame(false, OpCode::Binary, b"a", key);
    interleaved.extend(masked(OpCode::Binary, b"b"));
    let bad_utf8 = masked(OpCode::Text, &[0xFF, 0xFE]);
    let one_byte_close = masked(OpCode::Close, &[3]);
    let reserved_close = masked(OpCode::Close, &1005u16.to_be_bytes());
    let mut bad_reason = 1000u16.to_be_bytes().to_vec();
    bad_reason.push(0xFF);
    let bad_reason = masked(OpCode::Close, &bad_reason);
    let cases: Vec<(&str, Vec<u8>, ProtocolError, u16)> = vec![
        ("unmasked", unmasked, ProtocolError::Unmasked, 1002),
        ("rsv", rsv, ProtocolError::Reserved, 1002),
        ("opcode", reserved_op, ProtocolError::UnknownOpcode(3), 1002),
        ("long ping", long_ping, ProtocolError::BadControl, 1002),
        (
            "fragmented ping",
            fragmented_ping,
            ProtocolError::BadControl,
            1002,
        ),
        (
            "continuation",
            stray_continuation,
            ProtocolError::UnexpectedContinuation,
            1002,
        ),
        (
            "interleaved",
            interleaved,
            ProtocolError::ExpectedContinuation,
            1002,
        ),
        ("utf-8", bad_utf8, ProtocolError::InvalidUtf8, 1007),
        (
            "close 1 byte",
            one_byte_close,
            ProtocolError::BadClose,
            1002,
        ),
        ("close 1005", reserved_close, ProtocolError::BadClose, 1002),
        ("close reason", bad_reason, ProtocolError::InvalidUtf8, 1007),
    ];
    for (name, bytes, want, code) in cases {
        let (mut c, mut rx, _tx) = pair(LIMITS);
        c.write_all(&bytes).await.unwrap();
        assert_eq!(protocol_error(&mut rx).await, want, "{name}");
        expect_close(&mut c, code).await;
    }
}

#[tokio::test]
async fn client_close_is_echoed_and_ends_the_stream() {
    let (client_io, mut rx, mut tx) = pair(LIMITS);
    let mut client = WebSocketStream::from_raw_socket(client_io, Role::Client, None).await;
    client.close(None).await.unwrap();
    assert_eq!(next(&mut rx).await.unwrap().unwrap(), Frame::Close(None));
    assert!(next(&mut rx).await.is_none());
    // The relay's own close after that is not sent twice, and the connection ends.
    tx.send(Frame::Close(Some(CloseInfo {
        code: 1000,
        reason: "closed".into(),
    })))
    .await
    .unwrap();
    tx.close().await.unwrap();
    // tungstenite sees our echo (its close completes), then the end of the stream.
    // (A close without a code is answered with 1000.)
    let echo = client.next().await;
    assert!(
        matches!(&echo, Some(Ok(Message::Close(Some(c)))) if u16::from(c.code) == 1000),
        "{echo:?}"
    );
    assert!(!matches!(client.next().await, Some(Ok(_))));

    let (mut c, mut rx, _tx) = pair(LIMITS);
    let mut payload = 4002u16.to_be_bytes().to_vec();
    payload.extend_from_slice("bye ✓".as_bytes());
    c.write_all(&masked(OpCode::Close, &payload)).await.unwrap();
    assert_eq!(
        next(&mut rx).await.unwrap().unwrap(),
        Frame::Close(Some(CloseInfo {
            code: 4002,
            reason: "bye ✓".into()
        }))
    );
    expect_close(&mut c, 4002).await;
}

#[tokio::test]
async fn server_close_reaches_the_client_and_nothing_follows_it() {
    let (client_io, _rx, mut tx) = pair(LIMITS);
    let mut client = WebSocketStream::from_raw_socket(client_io, Role::Client, None).await;
    let long_reason = "x".repeat(300);
    tx.send(Frame::Close(Some(CloseInfo {
        code: 4003,
        reason: long_reason,
    })))
    .await
    .unwrap();
    assert!(matches!(
        tx.send(Frame::Data(b"late".to_vec().into())).await,
        Err(WsError::Closing)
    ));
    tx.close().await.unwrap();
    match client.next().await.unwrap().unwrap() {
        Message::Close(Some(c)) => {
            assert_eq!(u16::from(c.code), 4003);
            assert_eq!(
                c.reason.len(),
                123,
                "the reason is cut to fit a control frame"
            );
        }
        m => panic!("expected the close, got {m:?}"),
    }
}

#[tokio::test]
async fn a_truncated_frame_is_an_error_and_a_clean_end_is_none() {
    let (mut c, mut rx, _tx) = pair(LIMITS);
    let bytes = masked(OpCode::Binary, b"hello");
    c.write_all(&bytes[..bytes.len() - 2]).await.unwrap();
    drop(c);
    assert!(matches!(next(&mut rx).await, Some(Err(WsError::Truncated))));

    let (c, mut rx, _tx) = pair(LIMITS);
    drop(c);
    assert!(next(&mut rx).await.is_none());
}

/// A tiny deterministic generator, so a failing case is reproducible from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Property: any sequence of valid frames, written in arbitrary pieces, comes back as the
/// messages and control frames it encodes, in order, with nothing held afterwards.
#[tokio::test]
async fn property_valid_frames_round_trip_through_any_split() {
    for seed in 1..=40u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let (mut c, mut rx, _tx) = pair(LIMITS);
        let mut bytes = Vec::new();
        let mut want = Vec::new();
        for _ in 0..1 + rng.below(12) {
            let key = (rng.next() as u32).to_ne_bytes();
            match rng.below(4) {
                0 => {
                    want.push(Frame::Ping);
                    let p: Vec<u8> = (0..rng.below(126)).map(|_| rng.next() as u8).collect();
                    bytes.extend(client_frame(true, OpCode::Ping, &p, key));
                }
                _ => {
                    let len = [0, 1, 125, 126, 1000, 65_536, 70_000][rng.below(7)];
                    let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                    let parts = 1 + rng.below(4);
                    let mut at = 0;
                    for i in 0..parts {
                        let end = if i + 1 == parts {
                            len
                        } else {
                            at + rng.below(len - at + 1)
                        };
                        let op = if i == 0 {
                            OpCode::Binary
                        } else {
                            OpCode::Continuation
                        };
                        bytes.extend(client_frame(i + 1 == parts, op, &data[at..end], key));
                        at = end;
                        if i + 1 < parts && rng.below(3) == 0 {
                            want.push(Frame::Pong);
                            bytes.extend(client_frame(true, OpCode::Pong, b"", key));
                        }
                    }
                    want.push(Frame::Data(data.into()));
                }
            }
        }
        let cuts: Vec<usize> = (0..8).map(|_| 1 + rng.below(20_000)).collect();
        let writer = tokio::spawn(async move {
            let mut rest = &bytes[..];
            let mut i = 0;
            while !rest.is_empty() {
                let n = cuts[i % cuts.len()].min(rest.len());
                c.write_all(&rest[..n]).await.unwrap();
                rest = &rest[n..];
                i += 1;
            }
            c
        });
        for (i, w) in want.iter().enumerate() {
            let got = next(&mut rx).await.unwrap().unwrap();
            assert_eq!(&got, w, "seed {seed}, frame {i}");
        }
        assert_eq!(rx.held(), 0, "seed {seed}");
        writer.await.unwrap();
    }
}

/// Property: the header parser never panics on arbitrary bytes, never reports a header longer
/// than its input or over the limit, and agrees with [`frame::encode`] on every header it makes.
#[test]
fn property_header_parser_on_arbitrary_bytes() {
    let mut rng = Rng(0x5EED);
    for _ in 0..200_000 {
        let n = rng.below(MAX_HEADER + 2);
        let buf: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
        let max = rng.below(1 << 20);
        for masking in [Masking::Required, Masking::Forbidden] {
            if let Ok(Some((h, used))) = frame::parse(&buf, masking, max) {
                assert!(used <= buf.len());
                assert!(h.len <= max);
                assert_eq!(used, frame::header_len([buf[0], buf[1]]));
                if h.opcode.is_control() {
                    assert!(h.fin && h.len <= frame::MAX_CONTROL);
                }
            }
        }
    }
    for _ in 0..50_000 {
        let len = match rng.below(3) {
            0 => rng.below(126),
            1 => 126 + rng.below(65_536 - 126),
            _ => 65_536 + rng.below(1 << 30),
        };
        let op = [OpCode::Binary, OpCode::Text, OpCode::Continuation][rng.below(3)];
        let fin = rng.below(2) == 0;
        let key = (rng.next() as u32).to_ne_bytes();
        let mut head = [0u8; MAX_HEADER];
        let used = frame::encode(fin, op, Some(key), len, &mut head);
        let want = Header {
            fin,
            opcode: op,
            mask: Some(key),
            len,
        };
        assert_eq!(
            frame::parse(&head[..used], Masking::Required, usize::MAX),
            Ok(Some((want, used)))
        );
        // Every strict prefix asks for more bytes.
        for cut in 0..used {
            assert_eq!(
                frame::parse(&head[..cut], Masking::Required, usize::MAX),
                Ok(None)
            );
        }
    }
}

#[test]
fn masking_is_its_own_inverse_at_every_length() {
    let key = [0xDE, 0xAD, 0xBE, 0xEF];
    for len in 0..40 {
        let data: Vec<u8> = (0..len as u8).collect();
        let mut m = data.clone();
        frame::apply_mask(&mut m, key);
        for (i, (a, b)) in data.iter().zip(&m).enumerate() {
            assert_eq!(a ^ key[i % 4], *b, "len {len} byte {i}");
        }
        frame::apply_mask(&mut m, key);
        assert_eq!(m, data);
    }
}
