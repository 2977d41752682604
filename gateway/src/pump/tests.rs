//! The pump between real WebSockets (tokio-tungstenite over an in-memory duplex) and real TCP
//! targets on loopback: the server half is [`run`] with a [`TcpSource`] as the relay uses it,
//! the client half is `wgctl`'s [`crate::client::pump`].

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::*;
use crate::client::{ClientError, frames, pump as client_pump};

/// Small socket buffers, so that a stuck pump shows within a few MiB.
const SOCK_BUF: u32 = 16 * 1024;

async fn ws_pair() -> (WebSocketStream<DuplexStream>, WebSocketStream<DuplexStream>) {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let client = WebSocketStream::from_raw_socket(a, Role::Client, None).await;
    let server = WebSocketStream::from_raw_socket(b, Role::Server, None).await;
    (client, server)
}

fn small_socket() -> TcpSocket {
    let s = TcpSocket::new_v4().unwrap();
    s.set_recv_buffer_size(SOCK_BUF).unwrap();
    s.set_send_buffer_size(SOCK_BUF).unwrap();
    s
}

/// A target that serves one connection with `serve`, on loopback.
async fn target<F, Fut>(serve: F) -> SocketAddr
where
    F: FnOnce(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let sock = small_socket();
    sock.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = sock.listen(4).unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        serve(s).await;
    });
    addr
}

/// A TCP echo that closes once its input ended and everything was written back.
async fn echo_target() -> SocketAddr {
    target(|mut s| async move {
        let (mut r, mut w) = s.split();
        tokio::io::copy(&mut r, &mut w).await.unwrap();
        w.shutdown().await.unwrap();
    })
    .await
}

/// The server half as the relay runs it: dial the target, pump, then close with 1000 (or
/// `stopped_code` when `stop` ended it).
async fn serve<Stop: Future<Output = u16>>(
    ws: WebSocketStream<DuplexStream>,
    target: SocketAddr,
    stop: Stop,
    hook: Option<Hook<'_>>,
    chunk: usize,
) -> Outcome<u16> {
    let cfg = Config {
        chunk,
        on_source_eof: OnSourceEof::End,
        keepalive: Default::default(),
    };
    serve_with(ws, target, stop, hook, cfg).await
}

/// [`serve`] with any pump configuration.
async fn serve_with<Stop: Future<Output = u16>>(
    ws: WebSocketStream<DuplexStream>,
    target: SocketAddr,
    stop: Stop,
    hook: Option<Hook<'_>>,
    cfg: Config,
) -> Outcome<u16> {
    let tcp = small_socket().connect(target).await.unwrap();
    let (r, w) = tcp.into_split();
    let (mut tx, mut rx) = frames(ws);
    let out = run(&mut rx, &mut tx, TcpSource::new(r), w, stop, hook, cfg).await;
    let code = match out.ended {
        Ended::Stopped(code) => code,
        _ => 1000,
    };
    let reason = "bye".to_string();
    let _ = tx
        .send(Frame::Close(Some(CloseInfo { code, reason })))
        .await;
    let _ = tx.close().await;
    out
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

const BULK: usize = 8 * 1024 * 1024;

#[tokio::test]
async fn two_way_bulk_through_an_echo_completes_with_exact_counts() {
    let (client, server) = ws_pair().await;
    let echo = echo_target().await;
    let data = pattern(BULK);
    let mut got = Vec::with_capacity(BULK);
    let work = async {
        let server = serve(server, echo, std::future::pending(), None, DEFAULT_CHUNK);
        let client = client_pump(client, std::io::Cursor::new(data.clone()), &mut got);
        tokio::join!(server, client)
    };
    let (server, client) = tokio::time::timeout(Duration::from_secs(60), work)
        .await
        .expect("two-way bulk transfer stuck: a direction waits on the other");
    let client = client.unwrap();
    assert_eq!(client.up, BULK as u64);
    assert_eq!(client.down, BULK as u64);
    assert!(got == data, "echoed bytes differ");
    assert!(
        matches!(server.ended, Ended::StreamEof),
        "{:?}",
        server.ended
    );
    assert_eq!(
        server.counts,
        Counts {
            from_socket: BULK as u64,
            to_socket: BULK as u64
        }
    );
}

/// The pattern `wgctl` had: one loop that awaits a send inside a `select!` arm, so it stops
/// reading the socket while the send waits.
async fn one_loop_pump(ws: WebSocketStream<DuplexStream>, data: Vec<u8>) -> usize {
    let (mut tx, mut rx) = ws.split();
    let mut input = std::io::Cursor::new(data);
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0;
    let mut input_done = false;
    loop {
        tokio::select! {
            n = input.read(&mut buf), if !input_done => {
                let n = n.unwrap();
                if n == 0 {
                    input_done = true;
                    tx.send(Message::Text(HALF_CLOSE.into())).await.unwrap();
                } else {
                    tx.send(Message::Binary(buf[..n].to_vec().into())).await.unwrap();
                }
            }
            m = rx.next() => match m {
                Some(Ok(Message::Binary(b))) => got += b.len(),
                _ => return got,
            }
        }
    }
}

/// The scenario above is one that catches a pump whose directions wait on each other.
#[tokio::test]
async fn the_same_echo_deadlocks_a_pump_that_awaits_sends_in_one_loop() {
    let (client, server) = ws_pair().await;
    let echo = echo_target().await;
    let work = async {
        let server = serve(server, echo, std::future::pending(), None, DEFAULT_CHUNK);
        tokio::join!(server, one_loop_pump(client, pattern(BULK)))
    };
    assert!(
        tokio::time::timeout(Duration::from_secs(3), work)
            .await
            .is_err(),
        "the one-loop pump finished: the bulk test would not catch the deadlock"
    );
}

#[tokio::test]
async fn half_close_reaches_the_target_which_still_answers() {
    let (client, server) = ws_pair().await;
    let target = target(|mut s| async move {
        let mut all = Vec::new();
        s.read_to_end(&mut all).await.unwrap();
        s.write_all(format!("seen {} bytes", all.len()).as_bytes())
            .await
            .unwrap();
    })
    .await;
    let mut got = Vec::new();
    let (server, client) = tokio::time::timeout(Duration::from_secs(30), async {
        tokio::join!(
            serve(server, target, std::future::pending(), None, DEFAULT_CHUNK),
            client_pump(client, &b"hello"[..], &mut got)
        )
    })
    .await
    .unwrap();
    assert_eq!(String::from_utf8_lossy(&got), "seen 5 bytes");
    assert_eq!(client.unwrap(), crate::client::Pumped { up: 5, down: 12 });
    assert!(
        matches!(server.ended, Ended::StreamEof),
        "{:?}",
        server.ended
    );
    assert_eq!(
        server.counts,
        Counts {
            from_socket: 5,
            to_socket: 12
        }
    );
}

#[tokio::test]
async fn the_stop_future_ends_the_relay_and_the_client_sees_its_code() {
    let (client, server) = ws_pair().await;
    let echo = echo_target().await;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<u16>();
    // The local side stays open: only the stop future can end this relay.
    let (mut local, local_peer) = tokio::io::duplex(1024);
    let (peer_r, peer_w) = tokio::io::split(local_peer);
    let server = serve(
        server,
        echo,
        async { stop_rx.await.unwrap() },
        None,
        DEFAULT_CHUNK,
    );
    let client = client_pump(client, peer_r, peer_w);
    let driver = async {
        local.write_all(b"ping").await.unwrap();
        let mut back = [0u8; 4];
        local.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"ping");
        stop_tx.send(4002).unwrap();
    };
    let (server, client, ()) = tokio::time::timeout(Duration::from_secs(30), async {
        tokio::join!(server, client, driver)
    })
    .await
    .unwrap();
    assert!(
        matches!(server.ended, Ended::Stopped(4002)),
        "{:?}",
        server.ended
    );
    assert_eq!(
        server.counts,
        Counts {
            from_socket: 4,
            to_socket: 4
        }
    );
    match client {
        Err(ClientError::RelayClosed { code: 4002, reason }) => assert_eq!(reason, "bye"),
        other => panic!("expected the stop code, got {other:?}"),
    }
}

#[tokio::test]
async fn the_hook_sees_every_byte_each_way_in_bounded_chunks() {
    let (client, server) = ws_pair().await;
    // A target that answers with different bytes than it got: the hook must not mix them up.
    let reply = pattern(300_000).into_iter().rev().collect::<Vec<_>>();
    let sent_back = reply.clone();
    let target = target(|mut s| async move {
        let mut all = Vec::new();
        s.read_to_end(&mut all).await.unwrap();
        s.write_all(&sent_back).await.unwrap();
    })
    .await;
    let seen: Mutex<(Vec<u8>, Vec<u8>, usize)> = Mutex::new(Default::default());
    let hook = |flow: Flow, b: &[u8]| {
        let mut s = seen.lock().unwrap();
        match flow {
            Flow::FromSocket => s.0.extend_from_slice(b),
            Flow::ToSocket => {
                s.1.extend_from_slice(b);
                s.2 = s.2.max(b.len());
            }
        }
    };
    let data = pattern(1_000_000);
    let mut got = Vec::new();
    let chunk = 1000;
    let (server, client) = tokio::time::timeout(Duration::from_secs(30), async {
        tokio::join!(
            serve(server, target, std::future::pending(), Some(&hook), chunk),
            client_pump(client, &data[..], &mut got)
        )
    })
    .await
    .unwrap();
    client.unwrap();
    assert!(got == reply);
    let (up, down, largest) = std::mem::take(&mut *seen.lock().unwrap());
    assert!(
        up == data,
        "hook saw {} of {} bytes up",
        up.len(),
        data.len()
    );
    assert!(
        down == reply,
        "hook saw {} of {} bytes down",
        down.len(),
        reply.len()
    );
    assert!(largest <= chunk, "a frame of {largest} bytes");
    assert_eq!(server.counts.from_socket, data.len() as u64);
    assert_eq!(server.counts.to_socket, reply.len() as u64);
}

#[tokio::test]
async fn a_tcp_source_holds_no_buffer_while_its_socket_is_idle() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut writer = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (reader, _) = listener.accept().await.unwrap();
    let (r, _w) = reader.into_split();
    let mut src = TcpSource::new(r);
    writer.write_all(&[1u8; 100]).await.unwrap();
    let first = src.next_chunk(DEFAULT_CHUNK).await.unwrap().unwrap();
    assert_eq!(first.len(), 100);
    assert!(
        tokio::time::timeout(Duration::from_millis(200), src.next_chunk(DEFAULT_CHUNK))
            .await
            .is_err(),
        "nothing was sent, yet a chunk came"
    );
    assert_eq!(src.held(), 0, "an idle source keeps its read buffer");
    writer.write_all(&[2u8; 10]).await.unwrap();
    drop(writer);
    let second = src.next_chunk(DEFAULT_CHUNK).await.unwrap().unwrap();
    assert_eq!(&second[..], &[2u8; 10]);
    assert!(src.next_chunk(DEFAULT_CHUNK).await.unwrap().is_none());
    assert_eq!(src.held(), 0);
}

fn keepalive(ping_ms: u64, idle_ms: Option<u64>) -> Config {
    Config {
        chunk: DEFAULT_CHUNK,
        on_source_eof: OnSourceEof::End,
        keepalive: Keepalive {
            ping_every: Some(Duration::from_millis(ping_ms)),
            idle_after: idle_ms.map(Duration::from_millis),
        },
    }
}

/// A target that never sends and never closes (an idle shell).
async fn silent_target() -> SocketAddr {
    target(|mut s| async move {
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink).await;
    })
    .await
}

/// Client input that never ends and never sends: a user who stepped away.
fn idle_input() -> impl tokio::io::AsyncRead + Unpin {
    let (a, b) = tokio::io::duplex(64);
    // Keeps the writing half alive for as long as the test runs.
    std::mem::forget(a);
    b
}

#[tokio::test]
async fn pings_keep_an_idle_relay_with_a_live_client_going() {
    let (client, server) = ws_pair().await;
    let target = silent_target().await;
    // Ten ping intervals, i.e. over three times the unresponsive limit, without data.
    let stop = async {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        4321
    };
    let mut out = Vec::new();
    let (server, _client) = tokio::join!(
        serve_with(server, target, stop, None, keepalive(100, None)),
        client_pump(client, idle_input(), &mut out)
    );
    assert!(
        matches!(server.ended, Ended::Stopped(4321)),
        "an idle session with a live client ended: {:?}",
        server.ended
    );
}

#[tokio::test]
async fn a_client_that_answers_nothing_is_unresponsive_after_three_intervals() {
    let (client, server) = ws_pair().await;
    let target = silent_target().await;
    let started = std::time::Instant::now();
    let stop = async {
        tokio::time::sleep(Duration::from_secs(10)).await;
        4321
    };
    // The client's socket stays open but is never read: no pongs.
    let server = serve_with(server, target, stop, None, keepalive(100, None)).await;
    drop(client);
    assert!(
        matches!(server.ended, Ended::Unresponsive(d) if d == Duration::from_millis(300)),
        "{:?}",
        server.ended
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn the_idle_timeout_ends_a_quiet_relay_but_not_a_busy_one() {
    // Quiet: ends after the idle timeout although the client answers every ping.
    let (client, server) = ws_pair().await;
    let target = silent_target().await;
    let stop = async {
        tokio::time::sleep(Duration::from_secs(10)).await;
        4321
    };
    let mut out = Vec::new();
    let (server, _client) = tokio::join!(
        serve_with(server, target, stop, None, keepalive(100, Some(400))),
        client_pump(client, idle_input(), &mut out)
    );
    assert!(
        matches!(server.ended, Ended::Idle(d) if d == Duration::from_millis(400)),
        "{:?}",
        server.ended
    );

    // Busy: a byte every 100 ms for 1.2 s (three idle timeouts) keeps it going.
    let (client, server) = ws_pair().await;
    let target = silent_target().await;
    let stop = async {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        4321
    };
    let (mut w, r) = tokio::io::duplex(64);
    let typing = async move {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if w.write_all(b"k").await.is_err() {
                break;
            }
        }
    };
    let mut out = Vec::new();
    let server = tokio::select! {
        (server, _) = async {
            tokio::join!(
                serve_with(server, target, stop, None, keepalive(100, Some(400))),
                client_pump(client, r, &mut out)
            )
        } => server,
        () = typing => unreachable!("typing never ends"),
    };
    assert!(
        matches!(server.ended, Ended::Stopped(4321)),
        "a session moving data timed out: {:?}",
        server.ended
    );
}
