//! The asciicast v2 writer: one JSON header line, then one JSON array per event
//! (`[seconds, code, data]`). Output (`o`) and input (`i`) bytes go through a streaming UTF-8
//! decoder per stream, so a character split across two SSH packets is written whole; bytes that
//! are not UTF-8 become U+FFFD. Resizes are `r` (`COLSxROWS`); exec command lines, exit
//! statuses and SFTP operations are markers (`m`).

use std::time::Instant;

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
