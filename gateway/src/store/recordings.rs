//! Recording rows: which sessions were recorded and whether their manifest is signed.

use super::{Store, StoreError, now_ms};

/// A recording waiting for its manifest.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct UnsignedRecording {
    /// Session id.
    pub session_id: String,
    /// When the session ended (unix ms).
    pub ended_at: i64,
}

impl Store {
    /// Notes that `session` is being recorded by `replica`.
    pub async fn start_recording(&self, session: &str, replica: &str) -> Result<(), StoreError> {
        self.run(async |c| {
            self.query(super::START_RECORDING)
                .bind(session)
                .bind(replica)
                .bind(now_ms())
                .execute(&mut *c)
                .await
        })
        .await
        .map(|_| ())
    }

    /// Recordings of ended sessions that have no signed manifest yet.
    pub async fn unsigned_recordings(&self) -> Result<Vec<UnsignedRecording>, StoreError> {
        self.run(async |c| {
            self.query_as(
                "SELECT r.session_id, COALESCE(s.ended_at, 0) AS ended_at FROM recordings r \
                 JOIN sessions s ON s.id = r.session_id \
                 WHERE r.state = 'recording' AND s.status = 'ended' ORDER BY s.ended_at LIMIT 100",
            )
            .fetch_all(&mut *c)
            .await
        })
        .await
    }

    /// Marks `session`'s recording signed with manifest hash `sha256`, if it is not signed yet
    /// and `epoch` is the job's current fencing epoch. Only the caller that gets `true` may
    /// store the manifest, so a recording is signed once.
    pub async fn claim_signature(
        &self,
        session: &str,
        sha256: &str,
        complete: bool,
        job: &str,
        epoch: i64,
    ) -> Result<bool, StoreError> {
        let r = self
            .run(async |c| {
                self.query(
                    "UPDATE recordings SET state = 'signed', manifest_sha256 = $1, complete = $2, signed_at = $3 \
                     WHERE session_id = $4 AND state = 'recording' \
                     AND EXISTS (SELECT 1 FROM job_fences WHERE job = $5 AND epoch = $6)",
                )
                .bind(sha256)
                .bind(i64::from(complete))
                .bind(now_ms())
                .bind(session)
                .bind(job)
                .bind(epoch)
                .execute(&mut *c).await})
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// The manifest hash recorded for `session`, once signed.
    pub async fn manifest_hash(&self, session: &str) -> Result<Option<String>, StoreError> {
        let row: Option<(Option<String>,)> = self
            .run(async |c| {
                self.query_as("SELECT manifest_sha256 FROM recordings WHERE session_id = $1")
                    .bind(session)
                    .fetch_optional(&mut *c)
                    .await
            })
            .await?;
        Ok(row.and_then(|r| r.0))
    }
}
