//! Decodes SFTP (version 3, what OpenSSH's `sftp` and `scp` speak) from the bytes of an
//! `sftp` subsystem channel, both ways, into file operations for the recording: opens with
//! their mode, reads and writes totalled per handle and reported at close, removes, renames,
//! directory changes. The bytes are passed through untouched whatever this decoder makes of
//! them; a stream it cannot frame (a packet over [`MAX_PACKET`]) is reported once and no
//! longer decoded.

use std::collections::HashMap;

/// Largest packet decoded (OpenSSH's sftp-server limit is 256 KiB of payload).
pub const MAX_PACKET: usize = 1 << 20;

const INIT: u8 = 1;
const OPEN: u8 = 3;
const CLOSE: u8 = 4;
const READ: u8 = 5;
const WRITE: u8 = 6;
const SETSTAT: u8 = 9;
const OPENDIR: u8 = 11;
const REMOVE: u8 = 13;
const MKDIR: u8 = 14;
const RMDIR: u8 = 15;
const RENAME: u8 = 18;
const SYMLINK: u8 = 20;
const STATUS: u8 = 101;
const HANDLE: u8 = 102;
const DATA: u8 = 103;

/// Which side sent the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The SFTP client (requests).
    Client,
    /// The SFTP server (replies).
    Server,
}

#[derive(Debug, Default)]
struct OpenFile {
    path: String,
    written: u64,
    read: u64,
}

/// The decoder of one SFTP channel.
#[derive(Debug, Default)]
pub struct SftpDecoder {
    up: Vec<u8>,
    down: Vec<u8>,
    broken: bool,
    /// Request id → path, for OPEN / OPENDIR until the server answers with a handle.
    opening: HashMap<u32, String>,
    /// Request id → handle, for READ until DATA answers.
    reading: HashMap<u32, Vec<u8>>,
    handles: HashMap<Vec<u8>, OpenFile>,
}

/// A cursor over one packet's payload.
struct Cur<'a>(&'a [u8]);

impl<'a> Cur<'a> {
    fn u32(&mut self) -> Option<u32> {
        let (h, t) = self.0.split_first_chunk::<4>()?;
        self.0 = t;
        Some(u32::from_be_bytes(*h))
    }
    fn u64(&mut self) -> Option<u64> {
        let (h, t) = self.0.split_first_chunk::<8>()?;
        self.0 = t;
        Some(u64::from_be_bytes(*h))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        if n > self.0.len() {
            return None;
        }
        let (h, t) = self.0.split_at(n);
        self.0 = t;
        Some(h)
    }
    fn string(&mut self) -> Option<String> {
        self.bytes()
            .map(|b| String::from_utf8_lossy(b).into_owned())
    }
}

fn open_mode(pflags: u32) -> String {
    let names = [
        (0x1, "read"),
        (0x2, "write"),
        (0x4, "append"),
        (0x8, "create"),
        (0x10, "truncate"),
        (0x20, "exclusive"),
    ];
    let v: Vec<&str> = names
        .iter()
        .filter(|(bit, _)| pflags & bit != 0)
        .map(|(_, n)| *n)
        .collect();
    v.join(",")
}

impl SftpDecoder {
    /// Feeds bytes `side` sent; returns the operations completed by them, as one line each.
    pub fn push(&mut self, side: Side, bytes: &[u8]) -> Vec<String> {
        if self.broken {
            return Vec::new();
        }
        let buf = match side {
            Side::Client => &mut self.up,
            Side::Server => &mut self.down,
        };
        buf.extend_from_slice(bytes);
        let mut packets = Vec::new();
        let mut at = 0;
        while let Some(len) = buf
            .get(at..at + 4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(|b| u32::from_be_bytes(b) as usize)
        {
            if len == 0 || len > MAX_PACKET {
                self.broken = true;
                self.up = Vec::new();
                self.down = Vec::new();
                return vec![format!(
                    "sftp: undecodable packet length {len}; file operations after this are not recorded"
                )];
            }
            let Some(p) = buf.get(at + 4..at + 4 + len) else {
                break;
            };
            packets.push(p.to_vec());
            at += 4 + len;
        }
        buf.drain(..at);
        let mut out = Vec::new();
        for p in packets {
            if let Some((&kind, body)) = p.split_first()
                && let Some(line) = self.packet(side, kind, body)
            {
                out.push(line);
            }
        }
        out
    }

    fn packet(&mut self, side: Side, kind: u8, body: &[u8]) -> Option<String> {
        let mut c = Cur(body);
        match (side, kind) {
            (Side::Client, INIT) => Some(format!("sftp: version {}", c.u32()?)),
            (Side::Client, OPEN) => {
                let id = c.u32()?;
                let path = c.string()?;
                let mode = open_mode(c.u32()?);
                self.opening.insert(id, path.clone());
                Some(format!("sftp open {path} ({mode})"))
            }
            (Side::Client, OPENDIR) => {
                let id = c.u32()?;
                let path = c.string()?;
                self.opening.insert(id, path.clone());
                Some(format!("sftp list {path}"))
            }
            (Side::Client, CLOSE) => {
                let _id = c.u32()?;
                let handle = c.bytes()?;
                let f = self.handles.remove(handle)?;
                Some(format!(
                    "sftp close {}: wrote {} bytes, read {} bytes",
                    f.path, f.written, f.read
                ))
            }
            (Side::Client, READ) => {
                let id = c.u32()?;
                let handle = c.bytes()?.to_vec();
                self.reading.insert(id, handle);
                None
            }
            (Side::Client, WRITE) => {
                let _id = c.u32()?;
                let handle = c.bytes()?;
                let _offset = c.u64()?;
                let data = c.bytes()?;
                if let Some(f) = self.handles.get_mut(handle) {
                    f.written += data.len() as u64;
                }
                None
            }
            (Side::Client, REMOVE) => {
                let _id = c.u32()?;
                Some(format!("sftp remove {}", c.string()?))
            }
            (Side::Client, MKDIR) => {
                let _id = c.u32()?;
                Some(format!("sftp mkdir {}", c.string()?))
            }
            (Side::Client, RMDIR) => {
                let _id = c.u32()?;
                Some(format!("sftp rmdir {}", c.string()?))
            }
            (Side::Client, SETSTAT) => {
                let _id = c.u32()?;
                Some(format!("sftp setstat {}", c.string()?))
            }
            (Side::Client, RENAME) => {
                let _id = c.u32()?;
                let from = c.string()?;
                Some(format!("sftp rename {from} -> {}", c.string()?))
            }
            (Side::Client, SYMLINK) => {
                let _id = c.u32()?;
                let link = c.string()?;
                Some(format!("sftp symlink {link} -> {}", c.string()?))
            }
            (Side::Server, HANDLE) => {
                let id = c.u32()?;
                let handle = c.bytes()?.to_vec();
                let path = self.opening.remove(&id)?;
                // Bounded by the server: a handle it never closes costs one entry.
                self.handles.insert(
                    handle,
                    OpenFile {
                        path,
                        ..Default::default()
                    },
                );
                None
            }
            (Side::Server, DATA) => {
                let id = c.u32()?;
                let data = c.bytes()?;
                let handle = self.reading.remove(&id)?;
                if let Some(f) = self.handles.get_mut(&handle) {
                    f.read += data.len() as u64;
                }
                None
            }
            (Side::Server, STATUS) => {
                let id = c.u32()?;
                let code = c.u32()?;
                self.reading.remove(&id);
                let path = self.opening.remove(&id)?;
                (code != 0).then(|| format!("sftp open {path} failed (status {code})"))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn s(b: &[u8]) -> Vec<u8> {
        let mut v = (b.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(b);
        v
    }

    fn packet(kind: u8, parts: &[Vec<u8>]) -> Vec<u8> {
        let mut body = vec![kind];
        for p in parts {
            body.extend_from_slice(p);
        }
        s(&body)
    }

    fn u32b(v: u32) -> Vec<u8> {
        v.to_be_bytes().to_vec()
    }

    /// An upload as `scp` (SFTP mode) does it: open for write, two writes, close.
    fn upload() -> (Vec<u8>, Vec<u8>) {
        let mut up = packet(INIT, &[u32b(3)]);
        up.extend(packet(
            OPEN,
            &[u32b(1), s(b"/tmp/report.txt"), u32b(0x1a), u32b(0)],
        ));
        let mut down = packet(2, &[u32b(3)]);
        down.extend(packet(HANDLE, &[u32b(1), s(b"h1")]));
        up.extend(packet(
            WRITE,
            &[u32b(2), s(b"h1"), 0u64.to_be_bytes().to_vec(), s(&[7; 100])],
        ));
        up.extend(packet(
            WRITE,
            &[
                u32b(3),
                s(b"h1"),
                100u64.to_be_bytes().to_vec(),
                s(&[7; 23]),
            ],
        ));
        up.extend(packet(CLOSE, &[u32b(4), s(b"h1")]));
        up.extend(packet(RENAME, &[u32b(5), s(b"/tmp/a"), s(b"/tmp/b")]));
        up.extend(packet(REMOVE, &[u32b(6), s(b"/tmp/b")]));
        (up, down)
    }

    #[test]
    fn an_upload_is_recorded_with_its_name_mode_and_size() {
        let (up, down) = upload();
        let mut d = SftpDecoder::default();
        let mut out = Vec::new();
        // Interleaved as on the wire: the handle arrives before the writes are sent.
        let open_end = {
            let first = 4 + u32::from_be_bytes(up[..4].try_into().unwrap()) as usize;
            first + 4 + u32::from_be_bytes(up[first..first + 4].try_into().unwrap()) as usize
        };
        out.extend(d.push(Side::Client, &up[..open_end]));
        out.extend(d.push(Side::Server, &down));
        // Byte by byte: packets split anywhere still decode.
        for b in &up[open_end..] {
            out.extend(d.push(Side::Client, std::slice::from_ref(b)));
        }
        assert_eq!(
            out,
            vec![
                "sftp: version 3",
                "sftp open /tmp/report.txt (write,create,truncate)",
                "sftp close /tmp/report.txt: wrote 123 bytes, read 0 bytes",
                "sftp rename /tmp/a -> /tmp/b",
                "sftp remove /tmp/b",
            ]
        );
    }

    #[test]
    fn a_download_counts_data_replies_and_failed_opens_are_named() {
        let mut d = SftpDecoder::default();
        d.push(
            Side::Client,
            &packet(OPEN, &[u32b(1), s(b"/etc/hostname"), u32b(1), u32b(0)]),
        );
        d.push(Side::Server, &packet(HANDLE, &[u32b(1), s(b"H")]));
        d.push(
            Side::Client,
            &packet(
                READ,
                &[u32b(2), s(b"H"), 0u64.to_be_bytes().to_vec(), u32b(4096)],
            ),
        );
        d.push(Side::Server, &packet(DATA, &[u32b(2), s(b"hello\n")]));
        let out = d.push(Side::Client, &packet(CLOSE, &[u32b(3), s(b"H")]));
        assert_eq!(
            out,
            vec!["sftp close /etc/hostname: wrote 0 bytes, read 6 bytes"]
        );
        d.push(
            Side::Client,
            &packet(OPEN, &[u32b(9), s(b"/root/x"), u32b(1), u32b(0)]),
        );
        let out = d.push(
            Side::Server,
            &packet(STATUS, &[u32b(9), u32b(3), s(b"denied"), s(b"")]),
        );
        assert_eq!(out, vec!["sftp open /root/x failed (status 3)"]);
    }

    #[test]
    fn an_oversized_length_stops_decoding_once() {
        let mut d = SftpDecoder::default();
        let out = d.push(Side::Client, &[0xff, 0xff, 0xff, 0xff, 1, 2, 3]);
        assert_eq!(out.len(), 1);
        assert!(out[0].contains("undecodable"));
        assert!(
            d.push(Side::Client, &packet(REMOVE, &[u32b(1), s(b"/x")]))
                .is_empty()
        );
    }

    /// A small deterministic fuzz (xorshift): random bytes, random splits, and mutated valid
    /// streams never panic, and buffered bytes stay within one packet's bound.
    #[test]
    fn fuzz_random_and_mutated_streams_never_panic() {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let (up, down) = upload();
        for round in 0..3000 {
            let mut d = SftpDecoder::default();
            let mut stream = if round % 2 == 0 {
                up.clone()
            } else {
                down.clone()
            };
            if round % 3 == 0 {
                stream = (0..(next() % 300)).map(|_| next() as u8).collect();
            } else {
                for _ in 0..(next() % 6) {
                    let i = (next() as usize) % stream.len();
                    stream[i] = next() as u8;
                }
            }
            let mut at = 0;
            while at < stream.len() {
                let n = 1 + (next() as usize) % 40;
                let end = (at + n).min(stream.len());
                let side = if next() % 2 == 0 {
                    Side::Client
                } else {
                    Side::Server
                };
                for line in d.push(side, &stream[at..end]) {
                    assert!(!line.is_empty());
                }
                at = end;
            }
            assert!(d.up.len() <= MAX_PACKET + 4 && d.down.len() <= MAX_PACKET + 4);
        }
    }
}
