//! The relay pump: copies bytes between a WebSocket carrying binary frames and a byte stream,
//! used by the server's relay (WebSocket ↔ target) and by `wgctl` (WebSocket ↔ local input and
//! output), so both ends share one implementation of the relay protocol
//! ([`crate::relay_protocol`]).
//!
//! - **Two independent directions.** Reading the socket and reading the stream run as two
//!   futures polled side by side: a send waiting for the peer to drain never stops the other
//!   direction from reading. (A pump that awaited a send inside a `select!` arm deadlocked under
//!   two-way bulk traffic against an echo: every buffer on the path filled.)
//! - **Half-close.** The text message [`HALF_CLOSE`] shuts down the stream's write side; when the
//!   stream's input ends, the pump either sends [`HALF_CLOSE`] and keeps relaying the other way
//!   ([`OnSourceEof::HalfClose`], the client) or ends ([`OnSourceEof::End`], the server).
//! - **Memory.** A [`TcpSource`] holds no read buffer while its socket is idle: it waits for
//!   readiness first and takes a buffer only to read what is there. Frames never exceed
//!   [`Config::chunk`], which bounds what the WebSocket layers on both sides keep.
//! - **Keep-alive** ([`Keepalive`], the server): a ping every `ping_every` keeps load balancers
//!   from cutting idle sessions (ALB's idle limit is 60 s, NLB's 350 s) and proves the peer
//!   alive. The peer is unresponsive when, for three intervals, nothing came from it and no
//!   data could be handed to its connection (a busy download to a live client keeps it alive
//!   through its progress; pings alone do not, since they fit in the kernel's buffers of a dead
//!   connection). An optional idle timeout ends a session that moved no data either way.
//! - **Ends** when either side ends or when the `stop` future completes, and reports which
//!   ([`Ended`]) with the bytes moved each way ([`Counts`]).
//!
//! No axum or tungstenite types here: callers adapt their WebSocket to a [`Stream`] of
//! [`Frame`] results and a [`Sink`] of [`Frame`]s.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};
use futures::{Sink, SinkExt, Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;

pub use crate::relay_protocol::HALF_CLOSE;

pub mod websocket;

/// Default largest frame the pump sends: bounds the WebSocket layers' buffers on both sides
/// (each keeps about one frame of capacity) while keeping frames large enough for throughput.
/// A frame's header (at most 8 bytes at this size, masked) and payload fit one TLS record
/// (16 KiB of plaintext): a 16 KiB payload would spill 4–8 bytes into a second record, costing
/// the sender an extra seal and the receiver an extra record and buffer for every frame.
pub const DEFAULT_CHUNK: usize = 16 * 1024 - 16;

/// One relay message, independent of the WebSocket library.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Relayed bytes (a binary message).
    Data(Bytes),
    /// The sender's input ended ([`HALF_CLOSE`] text message).
    HalfClose,
    /// A close frame, with its code and reason when it had them.
    Close(Option<CloseInfo>),
    /// A keep-alive ping (sent by the pump with [`Keepalive::ping_every`]).
    Ping,
    /// A ping's answer (received; it only proves the peer alive).
    Pong,
}

/// Code and reason of a close frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseInfo {
    /// Close code (see [`crate::relay_protocol`]).
    pub code: u16,
    /// Close reason.
    pub reason: String,
}

/// Which way a chunk travelled, for the hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Received from the WebSocket, written to the stream.
    FromSocket,
    /// Read from the stream, sent on the WebSocket.
    ToSocket,
}

/// What the pump does when the stream's input ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnSourceEof {
    /// End the pump ([`Ended::StreamEof`]): the server, whose target closed.
    End,
    /// Send [`Frame::HalfClose`] and keep relaying the other way: the client, whose input ended
    /// while the target may still answer.
    HalfClose,
}

/// How a pump runs.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Largest frame sent, and largest read from the stream.
    pub chunk: usize,
    /// Behaviour at the end of the stream's input.
    pub on_source_eof: OnSourceEof,
    /// Pings and idle timeout (none by default).
    pub keepalive: Keepalive,
}

/// Keep-alive of a relay: see the module documentation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Keepalive {
    /// Send a ping this often; the peer is unresponsive after three intervals without a sign
    /// of life.
    pub ping_every: Option<Duration>,
    /// End the relay when no data moved either way for this long.
    pub idle_after: Option<Duration>,
}

impl Keepalive {
    /// How long the peer may give no sign of life.
    pub fn unresponsive_after(&self) -> Option<Duration> {
        self.ping_every.map(|p| p * 3)
    }
}

/// Bytes moved by a pump.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Received from the WebSocket and written to the stream.
    pub from_socket: u64,
    /// Read from the stream and sent on the WebSocket.
    pub to_socket: u64,
}

/// Which side ended the pump.
#[derive(Debug)]
pub enum Ended<S> {
    /// The WebSocket peer sent a close frame.
    SocketClosed(Option<CloseInfo>),
    /// The WebSocket failed or vanished without a close frame.
    SocketLost(String),
    /// The stream's input ended (only with [`OnSourceEof::End`]).
    StreamEof,
    /// Reading or writing the stream failed.
    StreamFailed(io::Error),
    /// The peer gave no sign of life for this long ([`Keepalive::ping_every`]).
    Unresponsive(Duration),
    /// No data moved either way for this long ([`Keepalive::idle_after`]).
    Idle(Duration),
    /// The stop future completed with this value.
    Stopped(S),
}

/// Result of [`run`].
#[derive(Debug)]
pub struct Outcome<S> {
    /// Why the pump ended.
    pub ended: Ended<S>,
    /// Bytes moved each way until then.
    pub counts: Counts,
}

/// A hook called with every chunk before it is passed on (the server records sessions).
pub type Hook<'a> = &'a (dyn Fn(Flow, &[u8]) + Sync);

/// Where the pump reads the stream's bytes from.
pub trait Source {
    /// The next chunk of at most `max` bytes; `Ok(None)` at the end of input.
    fn next_chunk(&mut self, max: usize) -> impl Future<Output = io::Result<Option<Bytes>>>;
}

/// A TCP read half that holds no buffer while idle: it waits until the socket is readable,
/// then reads into a buffer it drops again as soon as the socket has nothing more to give.
/// While data keeps coming, the buffer is reused (the previous chunk has been sent and dropped
/// by then), so a busy relay does not allocate per read.
#[derive(Debug)]
pub struct TcpSource {
    half: OwnedReadHalf,
    buf: BytesMut,
}

impl TcpSource {
    /// Wraps the read half of a TCP connection.
    pub fn new(half: OwnedReadHalf) -> Self {
        Self {
            half,
            buf: BytesMut::new(),
        }
    }

    /// Bytes of read buffer currently held (zero while waiting for data).
    pub fn held(&self) -> usize {
        self.buf.capacity()
    }
}

impl Source for TcpSource {
    async fn next_chunk(&mut self, max: usize) -> io::Result<Option<Bytes>> {
        loop {
            // Reclaims the buffer of the previous chunk when it has been dropped.
            self.buf.reserve(max);
            let read = self.half.try_read_buf(&mut (&mut self.buf).limit(max));
            match read {
                Ok(0) => {
                    self.buf = BytesMut::new();
                    return Ok(None);
                }
                Ok(_) => return Ok(Some(self.buf.split().freeze())),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.buf = BytesMut::new();
                    self.half.readable().await?;
                }
                Err(e) => {
                    self.buf = BytesMut::new();
                    return Err(e);
                }
            }
        }
    }
}

/// Any [`AsyncRead`] as a [`Source`] (stdin, a test stream); keeps one chunk of buffer.
#[derive(Debug)]
pub struct ReadSource<R> {
    inner: R,
    buf: BytesMut,
}

impl<R> ReadSource<R> {
    /// Wraps a reader.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            buf: BytesMut::new(),
        }
    }
}

impl<R: AsyncRead + Unpin> Source for ReadSource<R> {
    async fn next_chunk(&mut self, max: usize) -> io::Result<Option<Bytes>> {
        self.buf.reserve(max);
        let n = self.inner.read_buf(&mut (&mut self.buf).limit(max)).await?;
        if n == 0 {
            return Ok(None);
        }
        Ok(Some(self.buf.split().freeze()))
    }
}

/// Relays until one side ends or `stop` completes; see the module documentation.
///
/// `socket_rx`/`socket_tx` are the two halves of the WebSocket; they are borrowed so the caller
/// can still send a close frame afterwards. `dest` receives what the socket sends and is shut
/// down on [`Frame::HalfClose`].
pub async fn run<Rx, Tx, E, Src, Dst, Stop>(
    socket_rx: &mut Rx,
    socket_tx: &mut Tx,
    mut source: Src,
    mut dest: Dst,
    stop: Stop,
    hook: Option<Hook<'_>>,
    cfg: Config,
) -> Outcome<Stop::Output>
where
    Rx: Stream<Item = Result<Frame, E>> + Unpin,
    E: std::fmt::Display,
    Tx: Sink<Frame> + Unpin,
    Src: Source,
    Dst: AsyncWrite + Unpin,
    Stop: Future,
{
    let chunk = cfg.chunk.max(1);
    let (mut from_socket, mut to_socket) = (0u64, 0u64);
    // Signs of life of the peer, and the last data either way (see the module documentation).
    let start = Instant::now();
    let (alive, moved) = (Moment::new(start), Moment::new(start));
    let inbound = async {
        loop {
            let frame = socket_rx.next().await;
            if let Some(Ok(_)) = frame {
                alive.touch();
            }
            match frame {
                Some(Ok(Frame::Data(b))) => {
                    if let Some(h) = hook {
                        h(Flow::FromSocket, &b);
                    }
                    if let Err(e) = write_chunk(&mut dest, &b).await {
                        return Ended::StreamFailed(e);
                    }
                    from_socket += b.len() as u64;
                    moved.touch();
                }
                Some(Ok(Frame::HalfClose)) => {
                    let _ = dest.shutdown().await;
                }
                Some(Ok(Frame::Close(c))) => {
                    let _ = dest.flush().await;
                    return Ended::SocketClosed(c);
                }
                Some(Ok(Frame::Ping | Frame::Pong)) => {}
                Some(Err(e)) => return Ended::SocketLost(e.to_string()),
                None => return Ended::SocketLost("connection lost".into()),
            }
        }
    };
    // `None` when this direction is done but the pump goes on: the input ended and the peer
    // was told, or the socket refused a send (the inbound direction then reports how the
    // socket ended, with its close code).
    let outbound = async {
        let mut pings = cfg.keepalive.ping_every.map(|every| {
            let mut t = tokio::time::interval_at(Instant::now() + every, every);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        loop {
            // A due ping goes first, so a busy download still carries pings.
            let next = match pings.as_mut() {
                Some(pings) => tokio::select! {
                    biased;
                    _ = pings.tick() => None,
                    r = source.next_chunk(chunk) => Some(r),
                },
                None => Some(source.next_chunk(chunk).await),
            };
            let Some(next) = next else {
                if socket_tx.send(Frame::Ping).await.is_err() {
                    return None;
                }
                continue;
            };
            match next {
                Ok(Some(b)) => {
                    if let Some(h) = hook {
                        h(Flow::ToSocket, &b);
                    }
                    let n = b.len() as u64;
                    if socket_tx.send(Frame::Data(b)).await.is_err() {
                        return None;
                    }
                    to_socket += n;
                    // Handed to the peer's connection: it is reading.
                    alive.touch();
                    moved.touch();
                }
                Ok(None) if cfg.on_source_eof == OnSourceEof::End => {
                    return Some(Ended::StreamEof);
                }
                Err(e) if cfg.on_source_eof == OnSourceEof::End => {
                    return Some(Ended::StreamFailed(e));
                }
                Ok(None) | Err(_) => {
                    let _ = socket_tx.send(Frame::HalfClose).await;
                    return None;
                }
            }
        }
    };
    let (unresponsive, idle) = (cfg.keepalive.unresponsive_after(), cfg.keepalive.idle_after);
    // The next moment a keep-alive limit could be reached, if any applies.
    let next_check = || {
        let a = unresponsive.map(|d| alive.get() + d);
        let m = idle.map(|d| moved.get() + d);
        a.into_iter().chain(m).min()
    };
    let ended = {
        tokio::pin!(inbound, outbound, stop);
        let mut outbound_done = false;
        loop {
            let check = next_check();
            tokio::select! {
                biased;
                s = &mut stop => break Ended::Stopped(s),
                e = &mut inbound => break e,
                e = &mut outbound, if !outbound_done => match e {
                    Some(e) => break e,
                    None => outbound_done = true,
                },
                _ = tokio::time::sleep_until(check.unwrap_or_else(Instant::now)), if check.is_some() => {
                    // Signs of life or data since the check was set move it on.
                    let now = Instant::now();
                    if let Some(d) = unresponsive.filter(|d| now >= alive.get() + *d) {
                        break Ended::Unresponsive(d);
                    }
                    if let Some(d) = idle.filter(|d| now >= moved.get() + *d) {
                        break Ended::Idle(d);
                    }
                }
            }
        }
    };
    Outcome {
        ended,
        counts: Counts {
            from_socket,
            to_socket,
        },
    }
}

/// The last time something happened, shared by the pump's two directions (the pump's future
/// must stay `Send`, so no `Cell`).
struct Moment {
    base: Instant,
    since_base_ms: AtomicU64,
}

impl Moment {
    fn new(base: Instant) -> Self {
        Self {
            base,
            since_base_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.since_base_ms.store(ms, Ordering::Relaxed);
    }

    fn get(&self) -> Instant {
        self.base + Duration::from_millis(self.since_base_ms.load(Ordering::Relaxed))
    }
}

async fn write_chunk<W: AsyncWrite + Unpin>(dest: &mut W, b: &[u8]) -> io::Result<()> {
    dest.write_all(b).await?;
    dest.flush().await
}

#[cfg(test)]
mod tests;
