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
//! - **Ends** when either side ends or when the `stop` future completes, and reports which
//!   ([`Ended`]) with the bytes moved each way ([`Counts`]).
//!
//! No axum or tungstenite types here: callers adapt their WebSocket to a [`Stream`] of
//! [`Frame`] results and a [`Sink`] of [`Frame`]s.

use std::future::Future;
use std::io;

use bytes::{BufMut, Bytes, BytesMut};
use futures::{Sink, SinkExt, Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;

pub use crate::relay_protocol::HALF_CLOSE;

/// Default largest frame the pump sends: bounds the WebSocket layers' buffers on both sides
/// (each keeps about one frame of capacity) while keeping frames large enough for throughput.
pub const DEFAULT_CHUNK: usize = 16 * 1024;

/// One relay message, independent of the WebSocket library.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Relayed bytes (a binary message).
    Data(Bytes),
    /// The sender's input ended ([`HALF_CLOSE`] text message).
    HalfClose,
    /// A close frame, with its code and reason when it had them.
    Close(Option<CloseInfo>),
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
    let inbound = async {
        loop {
            match socket_rx.next().await {
                Some(Ok(Frame::Data(b))) => {
                    if let Some(h) = hook {
                        h(Flow::FromSocket, &b);
                    }
                    if let Err(e) = write_chunk(&mut dest, &b).await {
                        return Ended::StreamFailed(e);
                    }
                    from_socket += b.len() as u64;
                }
                Some(Ok(Frame::HalfClose)) => {
                    let _ = dest.shutdown().await;
                }
                Some(Ok(Frame::Close(c))) => {
                    let _ = dest.flush().await;
                    return Ended::SocketClosed(c);
                }
                Some(Err(e)) => return Ended::SocketLost(e.to_string()),
                None => return Ended::SocketLost("connection lost".into()),
            }
        }
    };
    // `None` when this direction is done but the pump goes on: the input ended and the peer
    // was told, or the socket refused a send (the inbound direction then reports how the
    // socket ended, with its close code).
    let outbound = async {
        loop {
            match source.next_chunk(chunk).await {
                Ok(Some(b)) => {
                    if let Some(h) = hook {
                        h(Flow::ToSocket, &b);
                    }
                    let n = b.len() as u64;
                    if socket_tx.send(Frame::Data(b)).await.is_err() {
                        return None;
                    }
                    to_socket += n;
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
    let ended = {
        tokio::pin!(inbound, outbound, stop);
        let mut outbound_done = false;
        loop {
            tokio::select! {
                biased;
                s = &mut stop => break Ended::Stopped(s),
                e = &mut inbound => break e,
                e = &mut outbound, if !outbound_done => match e {
                    Some(e) => break e,
                    None => outbound_done = true,
                },
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

async fn write_chunk<W: AsyncWrite + Unpin>(dest: &mut W, b: &[u8]) -> io::Result<()> {
    dest.write_all(b).await?;
    dest.flush().await
}

#[cfg(test)]
mod tests;
