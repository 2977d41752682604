//! The asciicast v2 writer: one JSON header line, then one JSON array per event
//! (`[seconds, code, data]`). Output (`o`) and input (`i`) bytes go through a streaming UTF-8
//! decoder per stream, so a character split across two SSH packets is written whole; bytes that
//! are not UTF-8 become U+FFFD. Resizes are `r` (`COLSxROWS`); exec command lines, exit
//! statuses and SFTP operations are markers (`m`).
//!
//! An exec channel without a terminal may carry a binary stream (`tar`, `rsync`, a dumped
//! file), which a text event cannot hold. Its standard output goes through an [`ExecStream`]:
//! `o` text while it is UTF-8, then, from the first byte that is not, `b` events holding the
//! raw bytes in standard base64. Players ignore the `b` code (asciinema-player acts on `o`,
//! `i`, `r` and `m` only), and [`output_bytes`] gives back the output byte for byte.

use std::time::Instant;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// The cast event code of raw output bytes (base64) from a binary exec stream.
pub const RAW_OUTPUT: &str = "b";

/// A streaming UTF-8 decoder: keeps an incomplete trailing sequence (at most 3 bytes) until
/// the next call completes it.
#[derive(Debug, Default, Clone)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    /// Decodes `bytes` after whatever was pending; invalid sequences become U+FFFD, an
    /// incomplete one at the end waits for more.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        let mut buf = std::mem::take(&mut self.pending);
        buf.extend_from_slice(bytes);
        let mut out = String::with_capacity(buf.len());
        let mut rest = &buf[..];
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    // `valid` is valid UTF-8 by construction.
                    out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                    match e.error_len() {
                        Some(n) => {
                            out.push('\u{FFFD}');
                            rest = after.get(n..).unwrap_or_default();
                        }
                        None => {
                            self.pending = after.to_vec();
                            break;
                        }
                    }
                }
            }
        }
        out
    }

    /// What is left at the end of the stream (an incomplete sequence), as U+FFFD.
    pub fn finish(&mut self) -> String {
        if std::mem::take(&mut self.pending).is_empty() {
            String::new()
        } else {
            "\u{FFFD}".into()
        }
    }
}

/// One piece of an exec channel's output, as [`ExecStream`] splits it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Whole UTF-8 text: an `o` event.
    Text(String),
    /// Raw bytes: a `b` event.
    Bytes(Vec<u8>),
}

/// The standard output of one exec channel without a terminal: text while it is UTF-8 (a
/// character split across packets waits to be whole), raw bytes from the first invalid
/// sequence on, for the rest of the channel. Lossless: the pieces' bytes, in order, are the
/// stream's bytes.
#[derive(Debug, Default, Clone)]
pub struct ExecStream {
    pending: Vec<u8>,
    binary: bool,
}

impl ExecStream {
    /// The pieces `bytes` completes (none, one or two).
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Piece> {
        if self.binary {
            return vec![Piece::Bytes(bytes.to_vec())];
        }
        let mut buf = std::mem::take(&mut self.pending);
        buf.extend_from_slice(bytes);
        let (valid, rest) = match std::str::from_utf8(&buf) {
            Ok(_) => (buf.len(), None),
            Err(e) => (e.valid_up_to(), Some(e.error_len().is_some())),
        };
        let mut out = Vec::new();
        let tail = buf.split_off(valid);
        if !buf.is_empty() {
            // Valid UTF-8 by construction: the decoder said so up to `valid`.
            out.push(Piece::Text(String::from_utf8(buf).unwrap_or_default()));
        }
        match rest {
            // An invalid sequence: binary from here on.
            Some(true) => {
                self.binary = true;
                out.push(Piece::Bytes(tail));
            }
            // An incomplete character at the end: wait for the rest.
            Some(false) => self.pending = tail,
            None => {}
        }
        out
    }

    /// The end of the stream: an incomplete character left over, as raw bytes.
    pub fn finish(&mut self) -> Option<Piece> {
        let rest = std::mem::take(&mut self.pending);
        (!rest.is_empty()).then_some(Piece::Bytes(rest))
    }
}

/// The output of a cast, byte for byte: `o` text and `b` raw bytes in order (what a binary
/// exec stream printed, whole; `wgctl recordings output`). Unparsable lines and undecodable
/// `b` data are skipped.
pub fn output_bytes(cast: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for line in cast.lines().skip(1) {
        let Ok((_, code, data)) = serde_json::from_str::<(f64, String, String)>(line) else {
            continue;
        };
        match code.as_str() {
            "o" => out.extend_from_slice(data.as_bytes()),
            RAW_OUTPUT => {
                if let Ok(b) = STANDARD.decode(data.as_bytes()) {
                    out.extend_from_slice(&b);
                }
            }
            _ => {}
        }
    }
    out
}

/// The header of a cast (`{"version": 2, …}`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Header {
    /// Always 2.
    pub version: u32,
    /// Terminal columns at the start.
    pub width: u32,
    /// Terminal rows at the start.
    pub height: u32,
    /// Unix seconds at the start.
    pub timestamp: i64,
    /// Session, target and user.
    pub title: String,
    /// `TERM` and the shell, when known.
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
}

/// Writes events of one session as cast lines (each ends with `\n`), timed from its creation.
#[derive(Debug)]
pub struct CastWriter {
    started: Instant,
    out: Utf8Stream,
    input: Utf8Stream,
}

impl CastWriter {
    /// A writer whose clock starts now; returns it and the header line.
    pub fn start(header: &Header) -> (Self, String) {
        let line = format!("{}\n", serde_json::to_string(header).unwrap_or_default());
        (
            Self {
                started: Instant::now(),
                out: Utf8Stream::default(),
                input: Utf8Stream::default(),
            },
            line,
        )
    }

    fn secs(&self) -> f64 {
        // Microsecond resolution, as asciinema writes.
        (self.started.elapsed().as_micros() as f64) / 1_000_000.0
    }

    fn event(&self, code: &str, data: &str) -> String {
        format!(
            "{}\n",
            serde_json::to_string(&(self.secs(), code, data)).unwrap_or_default()
        )
    }

    /// Terminal output; `None` while the bytes are an incomplete character.
    pub fn output(&mut self, bytes: &[u8]) -> Option<String> {
        let text = self.out.push(bytes);
        (!text.is_empty()).then(|| self.event("o", &text))
    }

    /// A piece of an exec channel's output ([`ExecStream`]): `o` for text, `b` for bytes.
    pub fn piece(&self, piece: &Piece) -> Option<String> {
        match piece {
            Piece::Text(t) if t.is_empty() => None,
            Piece::Bytes(b) if b.is_empty() => None,
            Piece::Text(t) => Some(self.event("o", t)),
            Piece::Bytes(b) => Some(self.event(RAW_OUTPUT, &STANDARD.encode(b))),
        }
    }

    /// Terminal input (only when the target's policy records input).
    pub fn input(&mut self, bytes: &[u8]) -> Option<String> {
        let text = self.input.push(bytes);
        (!text.is_empty()).then(|| self.event("i", &text))
    }

    /// A terminal resize.
    pub fn resize(&self, cols: u32, rows: u32) -> String {
        self.event("r", &format!("{cols}x{rows}"))
    }

    /// A marker: exec command lines, exit statuses, SFTP operations, the end reason.
    pub fn marker(&self, text: &str) -> String {
        self.event("m", text)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn utf8_split_across_pushes_is_written_whole() {
        let mut d = Utf8Stream::default();
        let euro = "€".as_bytes(); // 3 bytes
        assert_eq!(d.push(&euro[..1]), "");
        assert_eq!(d.push(&euro[1..2]), "");
        assert_eq!(d.push(&euro[2..]), "€");
        assert_eq!(d.push(b"a\xffb"), "a\u{FFFD}b");
        assert_eq!(d.push(&euro[..2]), "");
        assert_eq!(d.finish(), "\u{FFFD}");
        assert_eq!(d.finish(), "");
    }

    #[test]
    fn decoder_matches_lossy_decoding_for_any_split() {
        let text = "héllo wörld ✓ 𝄞 \u{7f}".as_bytes();
        let mut bytes = text.to_vec();
        bytes.extend_from_slice(b"\xc3(\xe2\x82");
        let whole = String::from_utf8_lossy(&bytes).into_owned();
        for cut in 0..bytes.len() {
            let mut d = Utf8Stream::default();
            let mut s = d.push(&bytes[..cut]);
            s.push_str(&d.push(&bytes[cut..]));
            s.push_str(&d.finish());
            assert_eq!(s, whole, "split at {cut}");
        }
    }

    fn pieces_of(bytes: &[u8], cut: usize) -> Vec<Piece> {
        let mut s = ExecStream::default();
        let mut p = s.push(&bytes[..cut]);
        p.extend(s.push(&bytes[cut..]));
        p.extend(s.finish());
        p
    }

    #[test]
    fn exec_streams_are_text_until_the_first_invalid_byte_then_raw_and_lossless() {
        let mut bytes = "ok ✓\n".as_bytes().to_vec();
        bytes.extend_from_slice(b"\x1f\x8b\x08\x00\xff\x00binary\xc3");
        for cut in 0..=bytes.len() {
            let pieces = pieces_of(&bytes, cut);
            let mut back = Vec::new();
            for p in &pieces {
                match p {
                    Piece::Text(t) => back.extend_from_slice(t.as_bytes()),
                    Piece::Bytes(b) => back.extend_from_slice(b),
                }
            }
            assert_eq!(back, bytes, "split at {cut}: {pieces:?}");
            // Text only before the first invalid byte; every piece after it is raw.
            let first_raw = pieces
                .iter()
                .position(|p| matches!(p, Piece::Bytes(_)))
                .unwrap();
            assert!(
                pieces[first_raw..]
                    .iter()
                    .all(|p| matches!(p, Piece::Bytes(_))),
                "{pieces:?}"
            );
        }
        // Text all along: only text, a split character written whole.
        let euro = "a€b".as_bytes();
        for cut in 0..=euro.len() {
            let pieces = pieces_of(euro, cut);
            assert!(pieces.iter().all(|p| matches!(p, Piece::Text(_))));
        }
        // A stream that ends inside a character keeps those bytes.
        let mut s = ExecStream::default();
        assert_eq!(s.push(&"€".as_bytes()[..2]), vec![]);
        assert_eq!(s.finish(), Some(Piece::Bytes("€".as_bytes()[..2].to_vec())));
    }

    #[test]
    fn output_bytes_gives_back_text_and_raw_events_in_order() {
        let header = Header {
            version: 2,
            width: 80,
            height: 24,
            timestamp: 0,
            title: "t".into(),
            env: Default::default(),
        };
        let (mut w, head) = CastWriter::start(&header);
        let mut cast = head;
        let mut stream = ExecStream::default();
        let data = b"header\n\x00\x01\xfe\xffpayload";
        for p in stream.push(data) {
            cast.push_str(&w.piece(&p).unwrap());
        }
        cast.push_str(&w.marker("exit-status 0"));
        cast.push_str(&w.output(b"\r\n$ ").unwrap());
        let mut expected = data.to_vec();
        expected.extend_from_slice(b"\r\n$ ");
        assert_eq!(output_bytes(&cast), expected);
        assert!(cast.contains("\"b\""), "{cast}");
    }

    #[test]
    fn cast_lines_are_json_events_a_player_reads() {
        let header = Header {
            version: 2,
            width: 80,
            height: 24,
            timestamp: 1_700_000_000,
            title: "s1 db1 alice".into(),
            env: [("TERM".to_string(), "xterm".to_string())].into(),
        };
        let (mut w, head) = CastWriter::start(&header);
        assert!(head.ends_with('\n'));
        let back: Header = serde_json::from_str(head.trim_end()).unwrap();
        assert_eq!(back, header);
        let o = w.output("ok \"quoted\"\r\n".as_bytes()).unwrap();
        let v: serde_json::Value = serde_json::from_str(o.trim_end()).unwrap();
        assert_eq!(v[1], "o");
        assert_eq!(v[2], "ok \"quoted\"\r\n");
        assert!(v[0].as_f64().unwrap() >= 0.0);
        assert_eq!(w.output(&"é".as_bytes()[..1]), None);
        let o = w.output(&"é".as_bytes()[1..]).unwrap();
        assert!(o.contains("\"é\""), "{o}");
        let r: serde_json::Value = serde_json::from_str(w.resize(100, 30).trim_end()).unwrap();
        assert_eq!((r[1].as_str(), r[2].as_str()), (Some("r"), Some("100x30")));
        let m: serde_json::Value =
            serde_json::from_str(w.marker("exit-status 3").trim_end()).unwrap();
        assert_eq!(
            (m[1].as_str(), m[2].as_str()),
            (Some("m"), Some("exit-status 3"))
        );
        let i: serde_json::Value =
            serde_json::from_str(w.input(b"ls\r").unwrap().trim_end()).unwrap();
        assert_eq!(i[1], "i");
    }
}
