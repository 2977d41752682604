//! A remote gateway's session events until the control plane acknowledges them: numbered per
//! gateway without gaps, bounded, in memory and in `events.json` in the agent state dir (so a
//! restart keeps them), sent in order on every link and dropped only once acknowledged.
//!
//! The same file keeps the sessions the gateway relays (started, not yet ended) with their
//! last byte counts, written with the event that changed them. They are what its heartbeat
//! lists (so the control plane can answer with the terminates it still owes), and what a
//! restart finds unfinished: a gateway that died with relays open reports each of them as
//! ended (`replica_lost`) when it starts again, so no session is left open in history.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Mutex;

use prometheus::IntGauge;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::proto::SessionEvent;

/// Most events held. Beyond it the oldest `bytes` event is dropped (a later `bytes` or the
/// `ended` event carries the totals); with none to drop, the new event is refused and logged.
pub const MAX_QUEUED: usize = 10_000;

#[derive(Debug, Default, Serialize, Deserialize)]
struct Saved {
    next_seq: u64,
    events: VecDeque<SessionEvent>,
    /// Sessions started and not ended, with their last reported bytes (up, down).
    #[serde(default)]
    live: BTreeMap<String, (u64, u64)>,
}

impl Saved {
    /// Follows `ev` in the set of live sessions.
    fn track(&mut self, ev: &SessionEvent) {
        match ev.kind.as_str() {
            "started" => {
                self.live.insert(ev.session_id.clone(), (0, 0));
            }
            "bytes" => {
                if let Some(b) = self.live.get_mut(&ev.session_id) {
                    *b = (ev.bytes_up, ev.bytes_down);
                }
            }
            "ended" => {
                self.live.remove(&ev.session_id);
            }
            _ => {}
        }
    }
}

/// The queue.
#[derive(Debug)]
pub struct EventQueue {
    saved: Mutex<Saved>,
    path: Option<PathBuf>,
    notify: Notify,
    gauge: IntGauge,
}

impl EventQueue {
    /// The queue kept in `dir/events.json` (loaded when present); `None`: memory only.
    pub fn open(dir: Option<PathBuf>, gauge: IntGauge) -> Self {
        let path = dir.map(|d| d.join("events.json"));
        let mut saved: Saved = path
            .as_ref()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| match serde_json::from_slice(&b) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::error!(error = %e, "the saved event queue is unreadable; starting empty");
                    None
                }
            })
            .unwrap_or_default();
        saved.next_seq = saved.next_seq.max(1);
        gauge.set(saved.events.len() as i64);
        if !saved.events.is_empty() {
            tracing::info!(event = "agent_events_restored", count = saved.events.len());
        }
        let q = Self {
            saved: Mutex::new(saved),
            path,
            notify: Notify::new(),
            gauge,
        };
        q.end_unfinished();
        q
    }

    /// Relays open when the gateway last stopped died with it: each is reported ended as
    /// `replica_lost`, with the bytes last reported. Idempotent at the control plane (an
    /// end recorded already, by its cleanup job, changes nothing).
    fn end_unfinished(&self) {
        let left: Vec<(String, (u64, u64))> = self
            .lock()
            .live
            .iter()
            .map(|(id, b)| (id.clone(), *b))
            .collect();
        for (id, (bytes_up, bytes_down)) in left {
            tracing::warn!(event = "agent_session_lost_in_restart", session = %id);
            self.push(SessionEvent {
                session_id: id,
                kind: "ended".into(),
                at_ms: crate::store::now_ms(),
                bytes_up,
                bytes_down,
                reason: crate::session::EndReason::ReplicaLost.as_str().into(),
                ..Default::default()
            });
        }
    }

    /// The sessions relayed now (started, not ended), as the heartbeat lists them.
    pub fn live(&self) -> Vec<String> {
        self.lock().live.keys().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Saved> {
        self.saved.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn persist(&self, saved: &Saved) {
        let Some(path) = &self.path else { return };
        let write = || -> std::io::Result<()> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let tmp = path.with_extension("json.tmp");
            std::fs::write(&tmp, serde_json::to_vec(saved).unwrap_or_default())?;
            std::fs::rename(&tmp, path)
        };
        if let Err(e) = write() {
            tracing::warn!(error = %e, path = %path.display(), "event queue not saved");
        }
    }

    /// Numbers `ev` and queues it.
    pub fn push(&self, mut ev: SessionEvent) {
        let mut s = self.lock();
        s.track(&ev);
        if s.events.len() >= MAX_QUEUED {
            match s.events.iter().position(|e| e.kind == "bytes") {
                Some(i) => {
                    s.events.remove(i);
                }
                None => {
                    tracing::error!(event = "agent_event_dropped", session = %ev.session_id, kind = %ev.kind, "event queue full");
                    self.persist(&s);
                    return;
                }
            }
        }
        ev.seq = s.next_seq;
        s.next_seq += 1;
        s.events.push_back(ev);
        self.gauge.set(s.events.len() as i64);
        self.persist(&s);
        drop(s);
        self.notify.notify_waiters();
    }

    /// Forgets every event up to `seq`.
    pub fn ack(&self, seq: u64) {
        let mut s = self.lock();
        let before = s.events.len();
        s.events.retain(|e| e.seq > seq);
        if s.events.len() != before {
            self.gauge.set(s.events.len() as i64);
            self.persist(&s);
        }
    }

    /// Queued events after `seq`, oldest first.
    pub fn after(&self, seq: u64) -> Vec<SessionEvent> {
        self.lock()
            .events
            .iter()
            .filter(|e| e.seq > seq)
            .cloned()
            .collect()
    }

    /// Events held.
    pub fn len(&self) -> usize {
        self.lock().events.len()
    }

    /// True when nothing waits for an acknowledgement.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Resolves at the next push.
    pub fn pushed(&self) -> tokio::sync::futures::Notified<'_> {
        self.notify.notified()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn ev(kind: &str) -> SessionEvent {
        SessionEvent {
            session_id: "s".into(),
            kind: kind.into(),
            ..Default::default()
        }
    }

    #[test]
    fn events_are_numbered_kept_across_a_restart_and_dropped_only_when_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let gauge = || IntGauge::new("q", "q").unwrap();
        let q = EventQueue::open(Some(dir.path().to_path_buf()), gauge());
        for k in ["started", "bytes", "ended"] {
            q.push(ev(k));
        }
        q.ack(1);
        let seqs: Vec<u64> = q.after(0).iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![2, 3]);
        drop(q);
        let g = gauge();
        let again = EventQueue::open(Some(dir.path().to_path_buf()), g.clone());
        assert_eq!(g.get(), 2);
        assert_eq!(again.after(2).len(), 1);
        again.push(ev("started"));
        // Numbering continues where it stopped: never a reused sequence number.
        assert_eq!(again.after(3)[0].seq, 4);
        again.ack(4);
        assert!(again.is_empty());
    }

    #[test]
    fn a_restart_reports_the_relays_it_lost_as_ended_once_with_their_last_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let gauge = || IntGauge::new("q", "q").unwrap();
        let q = EventQueue::open(Some(dir.path().to_path_buf()), gauge());
        let on = |id: &str, kind: &str| SessionEvent {
            session_id: id.into(),
            ..ev(kind)
        };
        q.push(on("a", "started"));
        q.push(on("b", "started"));
        q.push(SessionEvent {
            bytes_up: 7,
            bytes_down: 9,
            ..on("a", "bytes")
        });
        q.push(on("b", "ended"));
        assert_eq!(q.live(), vec!["a".to_string()]);
        q.ack(4);
        // Killed with `a` open.
        drop(q);
        let again = EventQueue::open(Some(dir.path().to_path_buf()), gauge());
        let sent = again.after(0);
        assert_eq!(sent.len(), 1, "{sent:?}");
        let e = &sent[0];
        assert_eq!(
            (
                e.seq,
                e.session_id.as_str(),
                e.kind.as_str(),
                e.reason.as_str()
            ),
            (5, "a", "ended", "replica_lost")
        );
        assert_eq!((e.bytes_up, e.bytes_down), (7, 9));
        assert!(again.live().is_empty());
        // A second restart owes nothing more.
        drop(again);
        let third = EventQueue::open(Some(dir.path().to_path_buf()), gauge());
        assert_eq!(third.after(0).len(), 1);
    }
}
