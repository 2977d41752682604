//! Live watch of terminated SSH sessions from any replica (issue 16, item 5).
//!
//! **Publishing.** The replica carrying a session hands each cast line to the session's
//! [`CastFeed`]: a bounded queue ([`QUEUE`] lines) drained by one task that appends batches to
//! the session's live stream ([`crate::live::watch_key`], trimmed to about [`STREAM_LEN`]
//! entries, so a late watcher gets the recent screen) and keeps the current header (its size
//! follows resizes) at [`crate::live::watch_header_key`]. Pushing never waits: when the queue is
//! full (Redis slow or away) lines are dropped and counted, and the next entry says how many.
//! The end (reason and the message the user saw) is the last entry; both keys then expire
//! after [`ENDED_TTL`].
//!
//! **Following.** [`follow`] reads the header, then polls the stream every [`POLL`] and hands
//! [`WatchMessage`]s to a bounded channel. A watcher that falls behind — its channel full for
//! [`SLOW_WATCHER`], or the stream trimmed past what it has read — is dropped with an `end`
//! message; it never slows the session or other watchers (each reads the stream itself). When
//! the session ends without an end entry (its replica died), the durable row says why.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, timeout};

use crate::live::{Live, watch_header_key, watch_key};
use crate::session::EndReason;
use crate::wire::WatchMessage;

/// Cast lines a session may have waiting for the publisher before new ones are dropped.
pub const QUEUE: usize = 1024;
/// Most lines in one stream entry.
pub const MAX_BATCH_LINES: usize = 256;
/// Most bytes of lines in one stream entry (a line is never split).
pub const MAX_BATCH_BYTES: usize = 16 * 1024;
/// Entries the live stream keeps (about: Redis trims approximately).
pub const STREAM_LEN: usize = 100;
/// Lifetime of the stream and header keys while the session lives (refreshed as it runs).
pub const FEED_TTL: Duration = Duration::from_secs(600);
/// Lifetime of the keys after the session ended: long enough for every watcher to read the end.
pub const ENDED_TTL: Duration = Duration::from_secs(60);
/// Longest wait for one write to the live store; a slower one counts its lines as dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// How often a watcher reads the stream.
pub const POLL: Duration = Duration::from_millis(100);
/// How long a watcher's channel may stay full before the watcher is dropped.
pub const SLOW_WATCHER: Duration = Duration::from_secs(5);
/// How long a watcher waits for a session's header to appear.
pub const HEADER_WAIT: Duration = Duration::from_secs(10);
/// How often a watcher asks whether the session is still live (its replica may have died
/// without writing the end).
pub const STATUS_EVERY: Duration = Duration::from_secs(2);
/// Most stream entries read in one poll.
const READ_BATCH: usize = 32;

/// How a session ended, as its feed's last entry says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedEnd {
    /// Why.
    pub reason: EndReason,
    /// What the user was told.
    pub message: String,
}

/// One entry of the live stream (JSON).
#[derive(Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    /// 1, 2, 3 … per session: a watcher that sees a jump has lost entries to trimming.
    seq: u64,
    /// Cast event lines (without their newline).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    lines: Vec<String>,
    /// Lines the publisher dropped just before these.
    #[serde(default, skip_serializing_if = "is_zero")]
    dropped: u64,
    /// The end, in the last entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    end: Option<FeedEnd>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The publishing side of one session's live cast; cheap to clone.
#[derive(Debug, Clone)]
pub struct CastFeed {
    tx: mpsc::Sender<String>,
    dropped: Arc<AtomicU64>,
    end: Arc<Mutex<Option<oneshot::Sender<FeedEnd>>>>,
}

impl CastFeed {
    /// Starts publishing session `id`'s cast, whose header line is `header`.
    pub fn start(live: Live, id: &str, header: &str) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let (end_tx, end_rx) = oneshot::channel();
        let dropped = Arc::new(AtomicU64::new(0));
        tokio::spawn(publish(
            live,
            id.to_string(),
            header.trim_end().to_string(),
            rx,
            end_rx,
            dropped.clone(),
        ));
        Self {
            tx,
            dropped,
            end: Arc::new(Mutex::new(Some(end_tx))),
        }
    }

    /// Queues one cast line; never waits (a full queue drops it, counted).
    pub fn push(&self, line: &str) {
        if self.tx.try_send(line.trim_end().to_string()).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Publishes the end after every line queued so far (once; later calls do nothing).
    pub fn end(&self, reason: EndReason, message: &str) {
        let tx = self.end.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(tx) = tx {
            let _ = tx.send(FeedEnd {
                reason,
                message: message.to_string(),
            });
        }
    }
}

/// `(cols, rows)` of a resize event line.
fn resize_of(line: &str) -> Option<(u32, u32)> {
    if !line.contains("\"r\"") {
        return None;
    }
    let (_, code, data): (f64, String, String) = serde_json::from_str(line).ok()?;
    if code != "r" {
        return None;
    }
    let (c, r) = data.split_once('x')?;
    Some((c.parse().ok()?, r.parse().ok()?))
}

/// `header` with its size set to `cols`×`rows` (unchanged if it is not a JSON object).
fn resized(header: &str, cols: u32, rows: u32) -> String {
    match serde_json::from_str::<serde_json::Value>(header) {
        Ok(serde_json::Value::Object(mut o)) => {
            o.insert("width".into(), cols.into());
            o.insert("height".into(), rows.into());
            serde_json::Value::Object(o).to_string()
        }
        _ => header.to_string(),
    }
}

struct Publisher {
    live: Live,
    key: String,
    header_key: String,
    header: String,
    seq: u64,
    dropped: Arc<AtomicU64>,
    refreshed: Instant,
}

impl Publisher {
    /// Appends one entry; a failed write counts its lines as dropped (reported by the next).
    async fn write(&mut self, lines: Vec<String>, end: Option<FeedEnd>) {
        let mut header_changed = false;
        for l in &lines {
            if let Some((c, r)) = resize_of(l) {
                self.header = resized(&self.header, c, r);
                header_changed = true;
            }
        }
        if header_changed {
            let _ = timeout(
                WRITE_TIMEOUT,
                self.live.set(&self.header_key, &self.header, FEED_TTL),
            )
            .await;
        }
        let n = lines.len() as u64;
        let entry = Entry {
            seq: self.seq + 1,
            lines,
            dropped: self.dropped.swap(0, Ordering::Relaxed),
            end,
        };
        let doc = serde_json::to_string(&entry).unwrap_or_default();
        match timeout(
            WRITE_TIMEOUT,
            self.live.stream_add(&self.key, &doc, STREAM_LEN),
        )
        .await
        {
            Ok(Ok(_)) => self.seq += 1,
            _ => {
                self.dropped.fetch_add(entry.dropped + n, Ordering::Relaxed);
            }
        }
        if self.refreshed.elapsed() >= FEED_TTL / 4 {
            self.refreshed = Instant::now();
            self.expire(FEED_TTL).await;
        }
    }

    async fn expire(&self, ttl: Duration) {
        let _ = timeout(WRITE_TIMEOUT, self.live.expire(&self.key, ttl)).await;
        let _ = timeout(WRITE_TIMEOUT, self.live.expire(&self.header_key, ttl)).await;
    }

    /// Writes `lines` in entries of at most [`MAX_BATCH_LINES`] lines and
    /// [`MAX_BATCH_BYTES`] bytes.
    async fn write_all(&mut self, lines: Vec<String>) {
        let mut batch = Vec::new();
        let mut bytes = 0;
        for l in lines {
            if !batch.is_empty()
                && (batch.len() >= MAX_BATCH_LINES || bytes + l.len() > MAX_BATCH_BYTES)
            {
                self.write(std::mem::take(&mut batch), None).await;
                bytes = 0;
            }
            bytes += l.len();
            batch.push(l);
        }
        if !batch.is_empty() {
            self.write(batch, None).await;
        }
    }

    async fn finish(&mut self, rx: &mut mpsc::Receiver<String>, end: Option<FeedEnd>) {
        let mut rest = Vec::new();
        while let Ok(l) = rx.try_recv() {
            rest.push(l);
        }
        self.write_all(rest).await;
        if end.is_some() {
            self.write(Vec::new(), end).await;
        }
        self.expire(ENDED_TTL).await;
    }
}

async fn publish(
    live: Live,
    id: String,
    header: String,
    mut rx: mpsc::Receiver<String>,
    mut end_rx: oneshot::Receiver<FeedEnd>,
    dropped: Arc<AtomicU64>,
) {
    let mut p = Publisher {
        header_key: watch_header_key(&id),
        key: watch_key(&id),
        live,
        header,
        seq: 0,
        dropped,
        refreshed: Instant::now(),
    };
    let _ = timeout(
        WRITE_TIMEOUT,
        p.live.set(&p.header_key, &p.header, FEED_TTL),
    )
    .await;
    loop {
        let first = tokio::select! {
            biased;
            line = rx.recv() => match line {
                Some(l) => l,
                None => {
                    let end = end_rx.try_recv().ok();
                    p.finish(&mut rx, end).await;
                    return;
                }
            },
            end = &mut end_rx => {
                p.finish(&mut rx, end.ok()).await;
                return;
            }
        };
        let mut lines = vec![first];
        while lines.len() < MAX_BATCH_LINES * 4 {
            match rx.try_recv() {
                Ok(l) => lines.push(l),
                Err(_) => break,
            }
        }
        p.write_all(lines).await;
    }
}

/// Whether a watched session is still live, from the durable record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// Still carried (or its state cannot be read right now).
    Live,
    /// Over, with the recorded reason if any.
    Ended(Option<EndReason>),
}

/// How following ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Followed {
    /// The session ended; the last message said why.
    Ended,
    /// The receiver went away (the watcher left).
    Left,
    /// The watcher could not keep up and was dropped.
    TooSlow,
    /// The session has no live cast.
    NoFeed,
}

/// Sends `m` within [`SLOW_WATCHER`]; `Err` says how following must end.
async fn send(tx: &mpsc::Sender<WatchMessage>, m: WatchMessage) -> Result<(), Followed> {
    match tx.send_timeout(m, SLOW_WATCHER).await {
        Ok(()) => Ok(()),
        Err(mpsc::error::SendTimeoutError::Closed(_)) => Err(Followed::Left),
        Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
            let _ = tx.try_send(too_slow());
            Err(Followed::TooSlow)
        }
    }
}

fn too_slow() -> WatchMessage {
    WatchMessage::End {
        reason: None,
        message: "this watcher fell behind the live session and was dropped; watch again".into(),
    }
}

/// Follows session `id`'s live cast into `tx`: the header, then events as they are published,
/// then the end. `status` reads the durable record (every [`STATUS_EVERY`]) so a session whose
/// replica died without publishing its end still ends here; `message` words a reason.
pub async fn follow<S, F>(
    live: &Live,
    id: &str,
    tx: &mpsc::Sender<WatchMessage>,
    mut status: S,
    message: impl Fn(EndReason) -> String,
) -> Followed
where
    S: FnMut() -> F,
    F: Future<Output = Liveness>,
{
    let ended = |reason: Option<EndReason>| WatchMessage::End {
        reason,
        message: reason.map_or_else(|| "session ended".to_string(), &message),
    };
    // The header first.
    let started = Instant::now();
    let header_key = watch_header_key(id);
    let header = loop {
        tokio::select! {
            _ = tx.closed() => return Followed::Left,
            r = live.get(&header_key) => match r {
                Ok(Some(h)) => break h,
                _ if started.elapsed() >= HEADER_WAIT => {
                    let m = match status().await {
                        Liveness::Ended(r) => ended(r),
                        Liveness::Live => WatchMessage::End {
                            reason: None,
                            message: format!("session {id} has no live cast to watch"),
                        },
                    };
                    let _ = send(tx, m).await;
                    return Followed::NoFeed;
                }
                _ => {}
            },
        }
        tokio::time::sleep(POLL).await;
    };
    if let Err(f) = send(tx, WatchMessage::Header { line: header }).await {
        return f;
    }
    let mut cursor: Option<String> = None;
    let mut expect: Option<u64> = None;
    let mut checked = Instant::now();
    let mut session_over: Option<Option<EndReason>> = None;
    loop {
        // The live store away reads as nothing new: keep following; the status check still
        // ends us.
        let entries = live
            .stream_after(&watch_key(id), cursor.as_deref(), READ_BATCH)
            .await
            .unwrap_or_default();
        let got = !entries.is_empty();
        for (entry_id, doc) in entries {
            cursor = Some(entry_id);
            let Ok(e) = serde_json::from_str::<Entry>(&doc) else {
                continue;
            };
            if let Some(want) = expect
                && e.seq > want
            {
                // Trimmed before we read it: we are too slow.
                let _ = send(tx, too_slow()).await;
                return Followed::TooSlow;
            }
            expect = Some(e.seq + 1);
            if e.dropped > 0
                && let Err(f) = send(tx, WatchMessage::Gap { dropped: e.dropped }).await
            {
                return f;
            }
            if !e.lines.is_empty()
                && let Err(f) = send(tx, WatchMessage::Events { lines: e.lines }).await
            {
                return f;
            }
            if let Some(end) = e.end {
                let _ = send(
                    tx,
                    WatchMessage::End {
                        reason: Some(end.reason),
                        message: end.message,
                    },
                )
                .await;
                return Followed::Ended;
            }
        }
        if got {
            continue;
        }
        if let Some(reason) = session_over {
            // Ended in the record, and the stream holds no end after one more read.
            let _ = send(tx, ended(reason)).await;
            return Followed::Ended;
        }
        if checked.elapsed() >= STATUS_EVERY {
            checked = Instant::now();
            if let Liveness::Ended(r) = status().await {
                // Read once more: the end entry may be on its way.
                session_over = Some(r);
                tokio::time::sleep(POLL * 5).await;
                continue;
            }
        }
        tokio::select! {
            _ = tx.closed() => return Followed::Left,
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::live::MemoryLive;

    fn live() -> Live {
        Live::Memory(MemoryLive::default())
    }

    const HEADER: &str = r#"{"version":2,"width":80,"height":24,"timestamp":0,"title":"t"}"#;

    fn line(i: usize) -> String {
        format!("[{i}.0,\"o\",\"line {i}\\r\\n\"]")
    }

    async fn collect(rx: &mut mpsc::Receiver<WatchMessage>) -> Vec<WatchMessage> {
        let mut out = Vec::new();
        while let Some(m) = rx.recv().await {
            let end = matches!(m, WatchMessage::End { .. });
            out.push(m);
            if end {
                break;
            }
        }
        out
    }

    fn lines_of(ms: &[WatchMessage]) -> Vec<String> {
        ms.iter()
            .flat_map(|m| match m {
                WatchMessage::Events { lines } => lines.clone(),
                _ => Vec::new(),
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_watcher_gets_the_header_the_events_in_order_and_the_end() {
        let live = live();
        let feed = CastFeed::start(live.clone(), "s1", &format!("{HEADER}\n"));
        let (tx, mut rx) = mpsc::channel(8);
        let watcher = {
            let live = live.clone();
            tokio::spawn(async move {
                follow(
                    &live,
                    "s1",
                    &tx,
                    || async { Liveness::Live },
                    |r| r.as_str().into(),
                )
                .await
            })
        };
        for i in 0..10 {
            feed.push(&format!("{}\n", line(i)));
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        feed.push("[9.5,\"r\",\"100x30\"]");
        feed.end(
            EndReason::Terminated,
            "session terminated by an operator: alice",
        );
        let got = collect(&mut rx).await;
        assert_eq!(
            got[0],
            WatchMessage::Header {
                line: HEADER.into()
            }
        );
        let mut want: Vec<String> = (0..10).map(line).collect();
        want.push("[9.5,\"r\",\"100x30\"]".into());
        assert_eq!(lines_of(&got), want);
        assert_eq!(
            got.last().unwrap(),
            &WatchMessage::End {
                reason: Some(EndReason::Terminated),
                message: "session terminated by an operator: alice".into()
            }
        );
        assert_eq!(watcher.await.unwrap(), Followed::Ended);
        // A late watcher gets the header with the current size.
        let h = live.get(&watch_header_key("s1")).await.unwrap().unwrap();
        assert!(
            h.contains("\"width\":100") && h.contains("\"height\":30"),
            "{h}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_drops_lines_counted_and_never_waits() {
        let live = live();
        let feed = CastFeed::start(live.clone(), "s2", HEADER);
        // The publisher has not run yet (paused, single thread): the queue takes QUEUE lines.
        for i in 0..QUEUE + 50 {
            feed.push(&line(i));
        }
        assert_eq!(feed.dropped.load(Ordering::Relaxed), 50);
        feed.end(EndReason::ClientClosed, "session ended");
        let (tx, mut rx) = mpsc::channel(64);
        let f = follow(
            &live,
            "s2",
            &tx,
            || async { Liveness::Live },
            |r| r.as_str().into(),
        )
        .await;
        assert_eq!(f, Followed::Ended);
        drop(tx);
        let got = collect(&mut rx).await;
        let lines = lines_of(&got);
        assert_eq!(lines.len(), QUEUE);
        assert_eq!(lines[0], line(0));
        assert!(got.contains(&WatchMessage::Gap { dropped: 50 }), "{got:?}");
        // Every entry respects the batch bounds.
        let entries = live
            .stream_after(&watch_key("s2"), None, 1000)
            .await
            .unwrap();
        for (_, doc) in &entries {
            let e: Entry = serde_json::from_str(doc).unwrap();
            assert!(e.lines.len() <= MAX_BATCH_LINES);
            assert!(e.lines.iter().map(String::len).sum::<usize>() <= MAX_BATCH_BYTES);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn dropped_lines_are_reported_as_a_gap() {
        let live = live();
        let feed = CastFeed::start(live.clone(), "s3", HEADER);
        for i in 0..QUEUE + 7 {
            feed.push(&line(i));
        }
        // Let the publisher drain the queue, then one more line carries the count.
        tokio::time::sleep(Duration::from_millis(50)).await;
        feed.push(&line(9999));
        feed.end(EndReason::TargetClosed, "the target closed the connection");
        let (tx, mut rx) = mpsc::channel(64);
        let f = follow(
            &live,
            "s3",
            &tx,
            || async { Liveness::Live },
            |r| r.as_str().into(),
        )
        .await;
        assert_eq!(f, Followed::Ended);
        drop(tx);
        let got = collect(&mut rx).await;
        assert!(got.contains(&WatchMessage::Gap { dropped: 7 }), "{got:?}");
        assert_eq!(lines_of(&got).last().unwrap(), &line(9999));
    }

    #[tokio::test(start_paused = true)]
    async fn a_watcher_that_does_not_read_is_dropped_and_the_session_goes_on() {
        let live = live();
        let feed = CastFeed::start(live.clone(), "s4", HEADER);
        let (tx, _rx_never_read) = mpsc::channel(2);
        let watcher = {
            let live = live.clone();
            tokio::spawn(async move {
                follow(
                    &live,
                    "s4",
                    &tx,
                    || async { Liveness::Live },
                    |r| r.as_str().into(),
                )
                .await
            })
        };
        // The session keeps producing; pushing never blocks, whatever the watcher does.
        let start = Instant::now();
        for i in 0..200 {
            feed.push(&line(i));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(feed.dropped.load(Ordering::Relaxed), 0);
        assert!(watcher.is_finished());
        assert_eq!(watcher.await.unwrap(), Followed::TooSlow);
        assert!(start.elapsed() >= SLOW_WATCHER);
        // A new watcher still follows (from the recent entries the stream keeps).
        let (tx, mut rx) = mpsc::channel(STREAM_LEN * 2);
        feed.end(EndReason::Terminated, "bye");
        follow(
            &live,
            "s4",
            &tx,
            || async { Liveness::Live },
            |r| r.as_str().into(),
        )
        .await;
        drop(tx);
        let got = collect(&mut rx).await;
        assert!(matches!(got[0], WatchMessage::Header { .. }));
        assert!(matches!(got.last(), Some(WatchMessage::End { .. })));
    }

    #[tokio::test(start_paused = true)]
    async fn a_watcher_behind_the_trimmed_stream_is_dropped() {
        let live = live();
        let key = watch_key("s5");
        live.set(&watch_header_key("s5"), HEADER, FEED_TTL)
            .await
            .unwrap();
        let entry = |seq: u64| {
            serde_json::to_string(&Entry {
                seq,
                lines: vec![line(seq as usize)],
                ..Entry::default()
            })
            .unwrap()
        };
        live.stream_add(&key, &entry(1), 3).await.unwrap();
        let (tx, mut rx) = mpsc::channel(64);
        let watcher = {
            let live = live.clone();
            tokio::spawn(async move {
                follow(
                    &live,
                    "s5",
                    &tx,
                    || async { Liveness::Live },
                    |r| r.as_str().into(),
                )
                .await
            })
        };
        tokio::time::sleep(POLL * 3).await;
        // Entries 2..=6 arrive at once; the stream keeps 3, so 2 and 3 are gone.
        for seq in 2..=6 {
            live.stream_add(&key, &entry(seq), 3).await.unwrap();
        }
        assert_eq!(watcher.await.unwrap(), Followed::TooSlow);
        let got = collect(&mut rx).await;
        assert_eq!(got.last(), Some(&too_slow()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_whose_replica_died_ends_from_its_record() {
        let live = live();
        let feed = CastFeed::start(live.clone(), "s6", HEADER);
        feed.push(&line(1));
        let (tx, mut rx) = mpsc::channel(64);
        let ended = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watcher = {
            let (live, ended) = (live.clone(), ended.clone());
            tokio::spawn(async move {
                follow(
                    &live,
                    "s6",
                    &tx,
                    move || {
                        let e = ended.load(Ordering::Relaxed);
                        async move {
                            if e {
                                Liveness::Ended(Some(EndReason::ReplicaLost))
                            } else {
                                Liveness::Live
                            }
                        }
                    },
                    |r| format!("ended: {}", r.as_str()),
                )
                .await
            })
        };
        tokio::time::sleep(STATUS_EVERY * 2).await;
        assert!(!watcher.is_finished());
        ended.store(true, Ordering::Relaxed);
        assert_eq!(watcher.await.unwrap(), Followed::Ended);
        let got = collect(&mut rx).await;
        assert_eq!(lines_of(&got), vec![line(1)]);
        assert_eq!(
            got.last().unwrap(),
            &WatchMessage::End {
                reason: Some(EndReason::ReplicaLost),
                message: "ended: replica_lost".into()
            }
        );
        drop(feed);
    }

    #[test]
    fn resize_lines_update_the_header() {
        assert_eq!(resize_of("[1.5,\"r\",\"120x40\"]"), Some((120, 40)));
        assert_eq!(resize_of("[1.5,\"o\",\"\\\"r\\\"\"]"), None);
        assert_eq!(resize_of("[1.5,\"r\",\"junk\"]"), None);
        let h = resized(HEADER, 120, 40);
        let v: serde_json::Value = serde_json::from_str(&h).unwrap();
        assert_eq!(
            (v["width"].as_u64(), v["height"].as_u64()),
            (Some(120), Some(40))
        );
        assert_eq!(v["title"], "t");
    }
}
