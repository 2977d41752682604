//! The server side of a relay WebSocket (RFC 6455 framing over an upgraded connection), as the
//! pump's [`Frame`] stream and sink, holding no buffer while the session is idle.
//!
//! Why not tungstenite on the server: it keeps a frame's worth of capacity in its read and
//! write buffers for the connection's life (about 2 × 16 KiB per warm idle session). Here:
//!
//! - **Reading** takes the header (at most 14 bytes, inline) first, checks every rule and the
//!   length limit ([`frame::parse`]), then reads the payload straight into a buffer of exactly
//!   its length, unmasks it in place and hands it on as [`bytes::Bytes`]: no copy, nothing kept.
//!   A fragmented message is gathered up to [`Limits::max_message`]; control frames may come
//!   between its fragments. Pings are answered with pongs (and reported as [`Frame::Ping`], a
//!   sign of life), close frames are echoed. A violation is answered with a close frame (1002,
//!   1007, or 1009 for a frame or message over the limits) and reported as an error.
//! - **Writing** sends the header (inline) and the payload (the pump's own `Bytes`) in one
//!   vectored write, so the TLS layer seals them into one record without our copying them; the
//!   frame is dropped as soon as it is written.
//!
//! The two halves ([`server`]) share the connection behind a mutex that is only held inside a
//! poll. Both must be polled by one task (the pump does): a pong or close queued by the reading
//! half is written by whichever half is polled next.

pub mod frame;

#[cfg(test)]
mod tests;

use std::io;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite};

use self::frame::{Header, MAX_HEADER, Masking, OpCode, ProtocolError};
use super::{CloseInfo, Frame, HALF_CLOSE};

/// Bounds on what a peer may send, checked before anything is allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame payload accepted.
    pub max_frame: usize,
    /// Largest message (all fragments together) accepted.
    pub max_message: usize,
}

/// Why the socket failed.
#[derive(Debug, thiserror::Error)]
pub enum WsError {
    /// The connection failed.
    #[error("connection failed: {0}")]
    Io(#[from] io::Error),
    /// The peer broke the protocol or a limit; a close frame with the matching code was sent.
    #[error("protocol violation: {0}")]
    Protocol(#[from] ProtocolError),
    /// The connection ended in the middle of a frame.
    #[error("connection lost in the middle of a frame")]
    Truncated,
    /// A frame was sent after the close frame.
    #[error("the WebSocket is closing")]
    Closing,
}

/// Splits a connection the handshake upgraded into the reading and the writing half of a
/// server-side WebSocket.
pub fn server<IO>(io: IO, limits: Limits) -> (SocketRx<IO>, SocketTx<IO>)
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let shared = Arc::new(Mutex::new(Conn {
        io,
        limits,
        rd: Reader::default(),
        wr: Writer::default(),
    }));
    (
        SocketRx {
            conn: shared.clone(),
        },
        SocketTx { conn: shared },
    )
}

/// The reading half: a stream of frames from the client.
#[derive(Debug)]
pub struct SocketRx<IO> {
    conn: Arc<Mutex<Conn<IO>>>,
}

/// The writing half: a sink of frames to the client.
#[derive(Debug)]
pub struct SocketTx<IO> {
    conn: Arc<Mutex<Conn<IO>>>,
}

impl<IO> SocketRx<IO> {
    /// Bytes of buffer this socket holds now (zero while idle): for tests and the bench.
    pub fn held(&self) -> usize {
        let c = lock(&self.conn);
        c.rd.payload.capacity()
            + c.rd.message.as_ref().map_or(0, |m| m.1.capacity())
            + c.wr.out.as_ref().map_or(0, |o| o.body.len())
    }
}

fn lock<IO>(m: &Mutex<Conn<IO>>) -> MutexGuard<'_, Conn<IO>> {
    // No poll panics while holding it; a poisoned lock still holds a consistent state.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Debug)]
struct Conn<IO> {
    io: IO,
    limits: Limits,
    rd: Reader,
    wr: Writer,
}

#[derive(Debug, Default)]
struct Reader {
    /// Header bytes read so far.
    head: [u8; MAX_HEADER],
    head_len: usize,
    /// The header of the frame whose payload is being read.
    frame: Option<Header>,
    /// Its payload (capacity exactly its length, only while it is read).
    payload: BytesMut,
    /// A fragmented message being gathered: its opcode and bytes so far.
    message: Option<(OpCode, BytesMut)>,
    /// A close frame arrived or the peer broke the protocol: nothing more is read.
    done: bool,
}

#[derive(Debug, Default)]
struct Writer {
    /// The frame being written.
    out: Option<Out>,
    /// A pong owed to the peer (payload of its latest ping).
    pong: Option<Bytes>,
    /// A close frame to send (code and reason, encoded).
    close: Option<Bytes>,
    /// The close frame was queued: nothing else is sent after it.
    closing: bool,
}

#[derive(Debug)]
struct Out {
    head: [u8; MAX_HEADER],
    head_len: usize,
    head_done: usize,
    body: Bytes,
}

impl Out {
    fn new(opcode: OpCode, body: Bytes) -> Self {
        let mut head = [0u8; MAX_HEADER];
        let head_len = frame::encode(true, opcode, None, body.len(), &mut head);
        Self {
            head,
            head_len,
            head_done: 0,
            body,
        }
    }
}

/// A close frame's payload: the code and a reason cut to fit a control frame.
fn close_payload(code: u16, reason: &str) -> Bytes {
    let mut cut = reason.len().min(frame::MAX_CONTROL - 2);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut b = BytesMut::with_capacity(2 + cut);
    b.put_u16(code);
    b.put_slice(&reason.as_bytes()[..cut]);
    b.freeze()
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Conn<IO> {
    /// Queues a close frame unless one was queued already.
    fn queue_close(&mut self, code: u16, reason: &str) {
        if !self.wr.closing {
            self.wr.closing = true;
            self.wr.pong = None;
            self.wr.close = Some(close_payload(code, reason));
        }
    }

    /// Writes the frame in progress, then owed pongs and the close frame, until all are handed
    /// to the connection.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let out = match self.wr.out.as_mut() {
                Some(out) => out,
                None => {
                    let next = if let Some(p) = self.wr.pong.take() {
                        Out::new(OpCode::Pong, p)
                    } else if let Some(c) = self.wr.close.take() {
                        Out::new(OpCode::Close, c)
                    } else {
                        return Poll::Ready(Ok(()));
                    };
                    self.wr.out.insert(next)
                }
            };
            let io = Pin::new(&mut self.io);
            if out.head_done < out.head_len {
                let head = &out.head[out.head_done..out.head_len];
                let n = if io.is_write_vectored() && !out.body.is_empty() {
                    let bufs = [IoSlice::new(head), IoSlice::new(&out.body)];
                    ready!(io.poll_write_vectored(cx, &bufs))?
                } else {
                    ready!(io.poll_write(cx, head))?
                };
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                let in_head = n.min(head.len());
                out.head_done += in_head;
                out.body.advance(n - in_head);
            } else if !out.body.is_empty() {
                let n = ready!(io.poll_write(cx, &out.body))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                out.body.advance(n);
            } else {
                self.wr.out = None;
            }
        }
    }

    /// Reads until the next complete frame; `Ok(None)` when the connection ended between frames.
    fn poll_read_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<(Header, Bytes)>, WsError>> {
        let max_frame = self.limits.max_frame;
        loop {
            let rd = &mut self.rd;
            let Some(h) = rd.frame else {
                let need = if rd.head_len < 2 {
                    2
                } else {
                    frame::header_len([rd.head[0], rd.head[1]])
                };
                if rd.head_len >= 2 {
                    // Rules the bytes so far can break are checked as soon as they arrive.
                    if let Some((h, _)) =
                        frame::parse(&rd.head[..rd.head_len], Masking::Required, max_frame)?
                    {
                        rd.head_len = 0;
                        rd.frame = Some(h);
                        // Exactly the frame's length, and only now that it is known allowed.
                        rd.payload = BytesMut::with_capacity(h.len);
                        continue;
                    }
                }
                let mut buf = tokio::io::ReadBuf::new(&mut rd.head[rd.head_len..need]);
                ready!(Pin::new(&mut self.io).poll_read(cx, &mut buf))?;
                let n = buf.filled().len();
                if n == 0 {
                    return Poll::Ready(if self.rd.head_len == 0 {
                        Ok(None)
                    } else {
                        Err(WsError::Truncated)
                    });
                }
                self.rd.head_len += n;
                continue;
            };
            if rd.payload.len() < h.len {
                let want = h.len - rd.payload.len();
                let n = ready!(tokio_util::io::poll_read_buf(
                    Pin::new(&mut self.io),
                    cx,
                    &mut (&mut self.rd.payload).limit(want),
                ))?;
                if n == 0 {
                    return Poll::Ready(Err(WsError::Truncated));
                }
                continue;
            }
            rd.frame = None;
            let mut payload = std::mem::take(&mut rd.payload);
            if let Some(key) = h.mask {
                frame::apply_mask(&mut payload, key);
            }
            return Poll::Ready(Ok(Some((h, payload.freeze()))));
        }
    }

    /// Turns a frame into what the pump sees: `None` for frames that only advance a message.
    fn on_frame(&mut self, h: Header, payload: Bytes) -> Result<Option<Frame>, WsError> {
        match h.opcode {
            OpCode::Ping => {
                if !self.wr.closing {
                    self.wr.pong = Some(payload);
                }
                Ok(Some(Frame::Ping))
            }
            OpCode::Pong => Ok(Some(Frame::Pong)),
            OpCode::Close => {
                let info = parse_close(&payload)?;
                self.rd.done = true;
                let code = info.as_ref().map_or(1000, |c| c.code);
                self.queue_close(code, "");
                Ok(Some(Frame::Close(info)))
            }
            OpCode::Text | OpCode::Binary => {
                if self.rd.message.is_some() {
                    return Err(ProtocolError::ExpectedContinuation.into());
                }
                if h.fin {
                    return message(h.opcode, payload);
                }
                let mut m = BytesMut::new();
                m.extend_from_slice(&payload);
                self.rd.message = Some((h.opcode, m));
                Ok(None)
            }
            OpCode::Continuation => {
                let max = self.limits.max_message;
                let Some((_, m)) = self.rd.message.as_mut() else {
                    return Err(ProtocolError::UnexpectedContinuation.into());
                };
                if m.len() + payload.len() > max {
                    return Err(ProtocolError::MessageTooBig { max }.into());
                }
                m.extend_from_slice(&payload);
                if !h.fin {
                    return Ok(None);
                }
                match self.rd.message.take() {
                    Some((op, m)) => message(op, m.freeze()),
                    None => Ok(None),
                }
            }
        }
    }
}

/// A whole message as a pump frame: binary data, the half-close text, or nothing (other text).
fn message(opcode: OpCode, payload: Bytes) -> Result<Option<Frame>, WsError> {
    if opcode == OpCode::Binary {
        return Ok(Some(Frame::Data(payload)));
    }
    let text = std::str::from_utf8(&payload).map_err(|_| ProtocolError::InvalidUtf8)?;
    Ok((text == HALF_CLOSE).then_some(Frame::HalfClose))
}

/// A close frame's code and reason (none when it has no payload).
fn parse_close(payload: &[u8]) -> Result<Option<CloseInfo>, ProtocolError> {
    match payload {
        [] => Ok(None),
        [_] => Err(ProtocolError::BadClose),
        [a, b, reason @ ..] => {
            let code = u16::from_be_bytes([*a, *b]);
            if !frame::valid_close_code(code) {
                return Err(ProtocolError::BadClose);
            }
            let reason = std::str::from_utf8(reason).map_err(|_| ProtocolError::InvalidUtf8)?;
            Ok(Some(CloseInfo {
                code,
                reason: reason.to_string(),
            }))
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Stream for SocketRx<IO> {
    type Item = Result<Frame, WsError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut c = lock(&self.conn);
        // Owed pongs and close frames go out as soon as the connection takes them; a failure
        // shows on the read below too.
        let _ = c.poll_write_out(cx);
        loop {
            if c.rd.done {
                return Poll::Ready(None);
            }
            let result = match ready!(c.poll_read_frame(cx)) {
                Ok(None) => {
                    c.rd.done = true;
                    return Poll::Ready(None);
                }
                Ok(Some((h, payload))) => c.on_frame(h, payload),
                Err(e) => Err(e),
            };
            match result {
                Ok(Some(f)) => {
                    if matches!(f, Frame::Ping | Frame::Close(_)) {
                        let _ = c.poll_write_out(cx);
                    }
                    return Poll::Ready(Some(Ok(f)));
                }
                Ok(None) => continue,
                Err(e) => {
                    c.rd.done = true;
                    c.rd.payload = BytesMut::new();
                    c.rd.message = None;
                    if let WsError::Protocol(p) = &e {
                        c.queue_close(p.close_code(), &p.to_string());
                        let _ = c.poll_write_out(cx);
                    }
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Sink<Frame> for SocketTx<IO> {
    type Error = WsError;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        let mut c = lock(&self.conn);
        ready!(c.poll_write_out(cx))?;
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, f: Frame) -> Result<(), WsError> {
        let mut c = lock(&self.conn);
        if let Frame::Close(info) = f {
            let (code, reason) = info.map_or((1000, String::new()), |i| (i.code, i.reason));
            c.queue_close(code, &reason);
            return Ok(());
        }
        if c.wr.closing {
            return Err(WsError::Closing);
        }
        let out = match f {
            Frame::Data(b) => Out::new(OpCode::Binary, b),
            Frame::HalfClose => Out::new(OpCode::Text, Bytes::from_static(HALF_CLOSE.as_bytes())),
            Frame::Ping => Out::new(OpCode::Ping, Bytes::new()),
            Frame::Pong => Out::new(OpCode::Pong, Bytes::new()),
            Frame::Close(_) => return Ok(()),
        };
        // `poll_ready` emptied the slot; a caller that skipped it waits for the last frame.
        if c.wr.out.is_some() {
            return Err(io::Error::other("frame sent before the socket was ready").into());
        }
        c.wr.out = Some(out);
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        let mut c = lock(&self.conn);
        ready!(c.poll_write_out(cx))?;
        ready!(Pin::new(&mut c.io).poll_flush(cx))?;
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        let mut c = lock(&self.conn);
        ready!(c.poll_write_out(cx))?;
        ready!(Pin::new(&mut c.io).poll_shutdown(cx))?;
        Poll::Ready(Ok(()))
    }
}
