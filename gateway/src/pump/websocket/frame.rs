//! RFC 6455 frame headers: parsing (every rule checked before a payload buffer is taken),
//! encoding, and masking. Pure functions over byte slices, so the rules are tested and fuzzed
//! without any I/O.

/// Longest header: 2 bytes, an 8-byte extended length, a 4-byte masking key.
pub const MAX_HEADER: usize = 14;

/// Longest payload of a control frame (RFC 6455 §5.5).
pub const MAX_CONTROL: usize = 125;

/// A frame's opcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    /// The next fragment of a message.
    Continuation,
    /// A UTF-8 text message (or its first fragment).
    Text,
    /// A binary message (or its first fragment).
    Binary,
    /// The close handshake.
    Close,
    /// A ping, answered with a pong carrying its payload.
    Ping,
    /// A ping's answer (or an unsolicited heartbeat).
    Pong,
}

impl OpCode {
    fn from_bits(b: u8) -> Option<Self> {
        Some(match b {
            0x0 => Self::Continuation,
            0x1 => Self::Text,
            0x2 => Self::Binary,
            0x8 => Self::Close,
            0x9 => Self::Ping,
            0xA => Self::Pong,
            _ => return None,
        })
    }

    fn bits(self) -> u8 {
        match self {
            Self::Continuation => 0x0,
            Self::Text => 0x1,
            Self::Binary => 0x2,
            Self::Close => 0x8,
            Self::Ping => 0x9,
            Self::Pong => 0xA,
        }
    }

    /// Close, ping and pong: never fragmented, at most [`MAX_CONTROL`] bytes.
    pub fn is_control(self) -> bool {
        matches!(self, Self::Close | Self::Ping | Self::Pong)
    }
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Last fragment of its message.
    pub fin: bool,
    /// What the frame carries.
    pub opcode: OpCode,
    /// The masking key (every client frame has one).
    pub mask: Option<[u8; 4]>,
    /// Payload length, already checked against the limit.
    pub len: usize,
}

/// A violation of the protocol or of our limits; each maps to the close code sent to the peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// RSV1–3 set, but no extension was negotiated.
    #[error("reserved bits set without a negotiated extension")]
    Reserved,
    /// An opcode RFC 6455 reserves.
    #[error("reserved opcode {0:#x}")]
    UnknownOpcode(u8),
    /// A control frame that is fragmented or longer than 125 bytes.
    #[error("control frame fragmented or longer than 125 bytes")]
    BadControl,
    /// A client frame without a masking key.
    #[error("client frame not masked")]
    Unmasked,
    /// A server frame with a masking key (for a client reading frames).
    #[error("server frame masked")]
    Masked,
    /// A 64-bit length with its most significant bit set.
    #[error("64-bit payload length with its top bit set")]
    LengthOverflow,
    /// A frame longer than the limit: refused before any buffer is taken.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    FrameTooBig {
        /// Announced length.
        len: u64,
        /// Limit.
        max: usize,
    },
    /// A fragmented message longer than the limit.
    #[error("message exceeds the limit of {max} bytes")]
    MessageTooBig {
        /// Limit.
        max: usize,
    },
    /// A continuation frame while no message was started.
    #[error("continuation frame without a fragmented message")]
    UnexpectedContinuation,
    /// A new text or binary frame inside a fragmented message.
    #[error("new message started inside a fragmented message")]
    ExpectedContinuation,
    /// A text message or close reason that is not UTF-8.
    #[error("text is not valid UTF-8")]
    InvalidUtf8,
    /// A close frame of one byte, or with a code no endpoint may send.
    #[error("invalid close frame")]
    BadClose,
}

impl ProtocolError {
    /// The close code that reports this error to the peer (RFC 6455 §7.4.1).
    pub fn close_code(&self) -> u16 {
        match self {
            Self::FrameTooBig { .. } | Self::MessageTooBig { .. } => 1009,
            Self::InvalidUtf8 => 1007,
            _ => 1002,
        }
    }
}

/// Which masking rule applies to the frames being parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Masking {
    /// Frames from a client: every frame must be masked.
    Required,
    /// Frames from a server: no frame may be masked.
    Forbidden,
}

/// Total header length announced by a header's first two bytes.
pub fn header_len(first_two: [u8; 2]) -> usize {
    let ext = match first_two[1] & 0x7F {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if first_two[1] & 0x80 != 0 { 4 } else { 0 };
    2 + ext + mask
}

/// Parses the header at the start of `buf`: `Ok(None)` while more bytes are needed, else the
/// header and its length in bytes. Every rule (reserved bits and opcodes, control frames,
/// masking, the length's forms and `max_payload`) is checked here, before anything is allocated.
pub fn parse(
    buf: &[u8],
    masking: Masking,
    max_payload: usize,
) -> Result<Option<(Header, usize)>, ProtocolError> {
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err(ProtocolError::Reserved);
    }
    let opcode = OpCode::from_bits(b0 & 0x0F).ok_or(ProtocolError::UnknownOpcode(b0 & 0x0F))?;
    let fin = b0 & 0x80 != 0;
    let short = b1 & 0x7F;
    if opcode.is_control() && (!fin || usize::from(short) > MAX_CONTROL) {
        return Err(ProtocolError::BadControl);
    }
    let masked = b1 & 0x80 != 0;
    match (masking, masked) {
        (Masking::Required, false) => return Err(ProtocolError::Unmasked),
        (Masking::Forbidden, true) => return Err(ProtocolError::Masked),
        _ => {}
    }
    let need = header_len([b0, b1]);
    if buf.len() < need {
        return Ok(None);
    }
    let (len, at) = match short {
        126 => (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
        127 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            let len = u64::from_be_bytes(b);
            if len >> 63 != 0 {
                return Err(ProtocolError::LengthOverflow);
            }
            (len, 10)
        }
        n => (u64::from(n), 2),
    };
    let len = usize::try_from(len)
        .ok()
        .filter(|l| *l <= max_payload)
        .ok_or(ProtocolError::FrameTooBig {
            len,
            max: max_payload,
        })?;
    let mask = masked.then(|| [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
    Ok(Some((
        Header {
            fin,
            opcode,
            mask,
            len,
        },
        need,
    )))
}

/// Writes the header of a frame into `out` (length forms as short as the length allows) and
/// returns its length.
pub fn encode(
    fin: bool,
    opcode: OpCode,
    mask: Option<[u8; 4]>,
    len: usize,
    out: &mut [u8; MAX_HEADER],
) -> usize {
    out[0] = (if fin { 0x80 } else { 0 }) | opcode.bits();
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let mut at = 2;
    if len <= MAX_CONTROL {
        // Fits the 7-bit form (at most 125).
        out[1] = mask_bit | (len as u8);
    } else if let Ok(l) = u16::try_from(len) {
        out[1] = mask_bit | 126;
        out[2..4].copy_from_slice(&l.to_be_bytes());
        at = 4;
    } else {
        out[1] = mask_bit | 127;
        out[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        at = 10;
    }
    if let Some(m) = mask {
        out[at..at + 4].copy_from_slice(&m);
        at += 4;
    }
    at
}

/// XORs `buf` with the masking key (masking and unmasking are the same), eight bytes at a time.
pub fn apply_mask(buf: &mut [u8], key: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut chunks = buf.chunks_exact_mut(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        c.copy_from_slice(&(u64::from_ne_bytes(w) ^ wide).to_ne_bytes());
    }
    // The remainder starts at a multiple of 8, so at key offset 0.
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= key[i % 4];
    }
}

/// True for a close code an endpoint may send in a close frame (RFC 6455 §7.4, the IANA
/// registry's 1012–1014, and 3000–4999 for libraries and applications).
pub fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}
