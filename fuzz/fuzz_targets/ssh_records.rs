//! What a terminated SSH session records from bytes the client or the target chose: SFTP
//! packets split anywhere (`ssh::sftp`), terminal text through the streaming UTF-8 decoder,
//! and exec output through `ExecStream` into cast lines (`ssh::cast`). Never a panic; the
//! decoder's text equals lossy decoding of the whole input however it is split; an exec
//! stream's cast gives back its bytes exactly (`output_bytes`); every cast line is a JSON event.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wardengate::ssh::cast::{self, CastWriter, ExecStream, Header, Utf8Stream};
use wardengate::ssh::sftp::{SftpDecoder, Side};

/// `data` cut into pieces whose lengths come from `cuts` (each 1..=64).
fn pieces<'a>(data: &'a [u8], cuts: &[u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let (mut at, mut i) = (0, 0);
    while at < data.len() {
        let n = cuts
            .get(i % cuts.len().max(1))
            .map_or(data.len(), |c| usize::from(c % 64) + 1);
        let end = (at + n).min(data.len());
        out.push(&data[at..end]);
        at = end;
        i += 1;
    }
    out
}

fuzz_target!(|input: &[u8]| {
    let (cuts, data) = input.split_at(input.len().min(8));

    // SFTP: the same bytes as requests and as replies, interleaved.
    let mut sftp = SftpDecoder::default();
    for (i, p) in pieces(data, cuts).into_iter().enumerate() {
        let side = if i % 3 == 0 { Side::Server } else { Side::Client };
        for line in sftp.push(side, p) {
            assert!(line.len() < 64 * 1024, "an SFTP marker of {} bytes", line.len());
        }
    }

    // Terminal text: split anywhere, the same as decoding the whole.
    let mut text = Utf8Stream::default();
    let mut shown = String::new();
    for p in pieces(data, cuts) {
        shown.push_str(&text.push(p));
    }
    shown.push_str(&text.finish());
    assert_eq!(shown, String::from_utf8_lossy(data));

    // Exec output: the cast gives the bytes back exactly.
    let header = Header {
        version: 2,
        width: 80,
        height: 24,
        timestamp: 0,
        title: "fuzz".into(),
        env: Default::default(),
    };
    let (writer, mut cast_text) = CastWriter::start(&header);
    let mut stream = ExecStream::default();
    for p in pieces(data, cuts) {
        for piece in stream.push(p) {
            if let Some(line) = writer.piece(&piece) {
                cast_text.push_str(&line);
            }
        }
    }
    if let Some(piece) = stream.finish()
        && let Some(line) = writer.piece(&piece)
    {
        cast_text.push_str(&line);
    }
    for line in cast_text.lines().skip(1) {
        let v: (f64, String, String) = serde_json::from_str(line).expect("a JSON event");
        assert!(v.1 == "o" || v.1 == cast::RAW_OUTPUT, "{line}");
    }
    assert_eq!(cast::output_bytes(&cast_text), data);
});
