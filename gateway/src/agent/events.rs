//! A remote gateway's session events until the control plane acknowledges them: numbered per
//! gateway without gaps, bounded, in memory and in `events.json` in the agent state dir (so a
//! restart keeps them), sent in order on every link and dropped only once acknowledged.

use std::collections::VecDeque;
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
        Self {
            saved: Mutex::new(saved),
            path,
            notify: Notify::new(),
            gauge,
        }
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
        if s.events.len() >= MAX_QUEUED {
            match s.events.iter().position(|e| e.kind == "bytes") {
                Some(i) => {
                    s.events.remove(i);
                }
                None => {
                    tracing::error!(event = "agent_event_dropped", session = %ev.session_id, kind = %ev.kind, "event queue full");
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
}
