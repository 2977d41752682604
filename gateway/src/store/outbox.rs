//! Approval decisions, the event outbox and fenced job cursors.
//!
//! Events must become visible in id order, or a cursor could pass an id whose transaction
//! commits later and skip it for good. On Postgres every event insert therefore takes one
//! transaction-scoped advisory lock, so ids are assigned and committed in the same order
//! (SQLite serialises writers anyway). Events are few; the lock costs nothing measurable.
//!
//! A decision and its event commit in one transaction with the session's new status, so a
//! decision is never half-made. Events get increasing ids; the fan-out job walks them with a
//! cursor it can only advance while its fencing epoch is current, so a job that lost its lease
//! cannot publish an event a second time.

use serde::{Deserialize, Serialize};

use super::{Backend, SessionRow, Store, StoreError, now_ms};

/// Advisory lock key serialising outbox inserts on Postgres (every writer of `events` takes it).
pub const OUTBOX_LOCK: i64 = 0x7767_6f75_7462_6f78; // "wgoutbox"

impl Store {
    /// Appends an event inside `tx`, after taking the outbox lock ([`OUTBOX_LOCK`]) so its id
    /// commits in order: for a change that must commit together with its event.
    pub(super) async fn append_event_in(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        at: i64,
        kind: &str,
        subject: &str,
        detail: &str,
    ) -> Result<(), sqlx::Error> {
        self.lock_outbox(tx).await?;
        self.query("INSERT INTO events (at, kind, subject, detail) VALUES ($1, $2, $3, $4)")
            .bind(at)
            .bind(kind)
            .bind(subject)
            .bind(detail)
            .execute(&mut **tx)
            .await
            .map(|_| ())
    }

    /// Serialises outbox inserts (see [`OUTBOX_LOCK`]) until `tx` ends.
    async fn lock_outbox(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    ) -> Result<(), sqlx::Error> {
        if self.backend == Backend::Postgres {
            self.query("SELECT pg_advisory_xact_lock($1)")
                .bind(OUTBOX_LOCK)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }
}

/// An approver's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// The session may connect.
    Approved,
    /// The session ends.
    Denied,
}

impl Decision {
    /// Stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Approved => "approved",
            Decision::Denied => "denied",
        }
    }

    /// Parses stored text (anything but `approved` reads as a denial: never let an unknown
    /// value open a session).
    pub fn from_text(text: &str) -> Self {
        match text {
            "approved" => Decision::Approved,
            _ => Decision::Denied,
        }
    }
}

crate::session::stored_as_text!(Decision);

/// A recorded decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct ApprovalRow {
    /// Session decided on.
    pub session_id: String,
    /// The decision.
    pub decision: Decision,
    /// Token id of the approver.
    pub decided_by: String,
    /// Free text given with the decision.
    pub reason: String,
    /// Unix ms.
    pub decided_at: i64,
}

/// One event of the outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct EventRow {
    /// Increasing id (the SSE event id).
    pub id: i64,
    /// Unix ms.
    pub at: i64,
    /// `approval.requested`, `approval.approved`, `approval.denied`, `session.started`,
    /// `session.ended`, `session.terminated`.
    pub kind: String,
    /// What it is about (a session id).
    pub subject: String,
    /// JSON details.
    pub detail: String,
}

/// Outcome of [`Store::decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decided {
    /// This call decided; the session row after the change.
    Now(SessionRow),
    /// Someone decided before.
    Already(ApprovalRow),
    /// No pending session with that id.
    NotPending,
}

impl Store {
    /// Appends an event to the outbox.
    pub async fn emit(
        &self,
        kind: &str,
        subject: &str,
        detail: &serde_json::Value,
    ) -> Result<(), StoreError> {
        let (at, detail) = (now_ms(), detail.to_string());
        if self.backend == Backend::Postgres {
            // One round trip instead of four (BEGIN, lock, INSERT, COMMIT): the statement's own
            // transaction takes the outbox lock before the row (and its id) is made, and holds it
            // until that transaction commits.
            return self
                .run(async |c| {
                    self.query(
                        "WITH outbox AS (SELECT pg_advisory_xact_lock($1)) \
                         INSERT INTO events (at, kind, subject, detail) \
                         SELECT $2::BIGINT, $3::TEXT, $4::TEXT, $5::TEXT FROM outbox",
                    )
                    .bind(OUTBOX_LOCK)
                    .bind(at)
                    .bind(kind)
                    .bind(subject)
                    .bind(&detail)
                    .execute(&mut *c)
                    .await
                })
                .await
                .map(|_| ());
        }
        self.run(async |c| {
            self.query("INSERT INTO events (at, kind, subject, detail) VALUES ($1, $2, $3, $4)")
                .bind(at)
                .bind(kind)
                .bind(subject)
                .bind(&detail)
                .execute(&mut *c)
                .await
        })
        .await
        .map(|_| ())
    }

    /// Events with an id above `after`, oldest first.
    pub async fn events_after(&self, after: i64, limit: i64) -> Result<Vec<EventRow>, StoreError> {
        self.run(async |c| {
            self.query_as("SELECT id, at, kind, subject, detail FROM events WHERE id > $1 ORDER BY id LIMIT $2")
                .bind(after)
                .bind(limit)
                .fetch_all(&mut *c).await})
        .await
    }

    /// Records `decision` on a pending session, atomically with its new status (`authorized`,
    /// or `ended` with reason `denied`) and an `approval.<decision>` event.
    pub async fn decide(
        &self,
        session_id: &str,
        decision: Decision,
        by: &str,
        reason: &str,
    ) -> Result<Decided, StoreError> {
        let now = now_ms();
        let work = async move {
            let mut tx = self.begin().await?;
            let inserted = self
                .query(
                    "INSERT INTO approvals (session_id, decision, decided_by, reason, decided_at) \
                 SELECT id, $2, $3, $4, $5 FROM sessions WHERE id = $1 AND status = 'pending' \
                 ON CONFLICT (session_id) DO NOTHING",
                )
                .bind(session_id)
                .bind(decision.as_str())
                .bind(by)
                .bind(reason)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if inserted == 0 {
                tx.rollback().await?;
                return Ok::<bool, sqlx::Error>(false);
            }
            let update = match decision {
                Decision::Approved => {
                    "UPDATE sessions SET status = 'authorized' WHERE id = $1 AND status = 'pending'"
                }
                Decision::Denied => {
                    "UPDATE sessions SET status = 'ended', end_reason = 'denied', ended_at = $2 \
                     WHERE id = $1 AND status = 'pending'"
                }
            };
            let mut q = self.query(update).bind(session_id);
            if decision == Decision::Denied {
                q = q.bind(now);
            }
            q.execute(&mut *tx).await?;
            self.append_event_in(
                &mut tx,
                now,
                &format!("approval.{}", decision.as_str()),
                session_id,
                &serde_json::json!({"session": session_id, "by": by, "reason": reason}).to_string(),
            )
            .await?;
            tx.commit().await?;
            Ok(true)
        };
        if self.bounded(work).await? {
            return Ok(match self.session(session_id).await? {
                Some(row) => Decided::Now(row),
                None => Decided::NotPending,
            });
        }
        match self.approval(session_id).await? {
            Some(a) => Ok(Decided::Already(a)),
            None => Ok(Decided::NotPending),
        }
    }

    /// The decision on a session, if any.
    pub async fn approval(&self, session_id: &str) -> Result<Option<ApprovalRow>, StoreError> {
        self.run(async |c| {
            self.query_as(
                "SELECT session_id, decision, decided_by, reason, decided_at FROM approvals WHERE session_id = $1",
            )
            .bind(session_id)
            .fetch_optional(&mut *c).await})
        .await
    }

    /// Where `job`'s cursor stands (0 before its first pass).
    pub async fn cursor(&self, job: &str) -> Result<i64, StoreError> {
        let row: Option<(i64,)> = self
            .run(async |c| {
                self.query_as("SELECT position FROM job_cursors WHERE job = $1")
                    .bind(job)
                    .fetch_optional(&mut *c)
                    .await
            })
            .await?;
        Ok(row.map(|r| r.0).unwrap_or(0))
    }

    /// Moves `job`'s cursor from `from` to `to` if it still stands at `from` and `epoch` is the
    /// job's current fencing epoch. Returns whether this call moved it: only then may the
    /// caller act on the events in between, so each is acted on at most once.
    pub async fn advance_cursor(
        &self,
        job: &str,
        from: i64,
        to: i64,
        epoch: i64,
    ) -> Result<bool, StoreError> {
        self.run(async |c| {
            self.query("INSERT INTO job_cursors (job, position) VALUES ($1, 0) ON CONFLICT (job) DO NOTHING")
                .bind(job)
                .execute(&mut *c).await})
        .await?;
        let r = self
            .run(async |c| {
                self.query(
                    "UPDATE job_cursors SET position = $1 WHERE job = $2 AND position = $3 \
                     AND EXISTS (SELECT 1 FROM job_fences WHERE job = $2 AND epoch = $4)",
                )
                .bind(to)
                .bind(job)
                .bind(from)
                .bind(epoch)
                .execute(&mut *c)
                .await
            })
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Sessions waiting for an approver, oldest first.
    pub async fn pending_sessions(&self) -> Result<Vec<SessionRow>, StoreError> {
        self.run(async |c| {
            self.query_as(select_sessions!(
                "WHERE status = 'pending' ORDER BY created_at"
            ))
            .fetch_all(&mut *c)
            .await
        })
        .await
    }
}
