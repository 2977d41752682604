//! Remote gateways and their join tokens. Join tokens are stored only as hashes; each admits
//! `max_uses` joins (one by default), counted by one atomic update, so gateways racing with the
//! same token can never join more often than it allows. Gateway rows are written by the replica holding the gateway's agent link.

use super::{Store, StoreError, now_ms};

/// A gateway as `wgctl gateways list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct GatewayRow {
    /// Gateway id (its certificate's common name).
    pub id: String,
    /// Region it serves.
    pub region: String,
    /// Unix ms it joined.
    pub joined_at: i64,
    /// When its current certificate expires (unix ms).
    pub cert_not_after: i64,
    /// Version it reported.
    pub version: String,
    /// Address it serves relays on.
    pub address: String,
    /// Live sessions it reported.
    pub sessions: i64,
    /// Unix ms of its last heartbeat.
    pub last_heartbeat_at: Option<i64>,
    /// The control-plane replica holding its link (NULL after a clean unlink).
    pub linked_by: Option<String>,
    /// Unix ms it was revoked.
    pub revoked_at: Option<i64>,
    /// Its sessions are over at most this long after its last heartbeat (0: not reported).
    pub lost_after_ms: i64,
}

/// Why a join token was refused: each names what the operator should do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinRefusal {
    /// No such token.
    #[error("unknown join token; create one with `wgctl gateways join-token --region R`")]
    Unknown,
    /// Every join it admits was used (one, unless created with `--uses N`).
    #[error("join token {0} was already used as often as it allows; create a new one")]
    Used(String),
    /// Past its expiry.
    #[error("join token {0} expired; create a new one")]
    Expired(String),
    /// Revoked.
    #[error("join token {0} was revoked")]
    Revoked(String),
    /// Made for another region.
    #[error("join token {id} is for region {token_region}, not {asked}")]
    WrongRegion {
        /// Token id.
        id: String,
        /// Its region.
        token_region: String,
        /// The region the gateway asked for.
        asked: String,
    },
}

const GATEWAY_COLUMNS: &str = "id, region, joined_at, cert_not_after, version, address, sessions, \
     last_heartbeat_at, linked_by, revoked_at, lost_after_ms";

impl Store {
    /// Stores a join token (by hash) for `region`, admitting `max_uses` joins until
    /// `expires_at` (unix ms).
    pub async fn create_join_token(
        &self,
        token_hash: &str,
        id: &str,
        region: &str,
        created_by: &str,
        expires_at: i64,
        max_uses: i64,
    ) -> Result<(), StoreError> {
        self.run(async |c| {
            self.query(
                "INSERT INTO gateway_join_tokens \
                 (hash, id, region, created_by, created_at, expires_at, max_uses) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(token_hash)
            .bind(id)
            .bind(region)
            .bind(created_by)
            .bind(now_ms())
            .bind(expires_at)
            .bind(max_uses)
            .execute(&mut *c)
            .await
        })
        .await
        .map(|_| ())
    }

    /// Consumes a join token for a new gateway `gateway_id` in `region` and records the
    /// gateway (certificate expiring at `cert_not_after`). The outer error is the database's;
    /// the inner one says why the token was refused.
    pub async fn join_gateway(
        &self,
        token_hash: &str,
        region: &str,
        gateway_id: &str,
        cert_not_after: i64,
    ) -> Result<Result<(), JoinRefusal>, StoreError> {
        let now = now_ms();
        let used: Option<(String,)> = self
            .run(async |c| {
                self.query_as(
                    "UPDATE gateway_join_tokens SET used_at = $1, used_by = $2, uses = uses + 1 \
                     WHERE hash = $3 AND uses < max_uses AND revoked_at IS NULL \
                     AND expires_at > $1 AND region = $4 RETURNING id",
                )
                .bind(now)
                .bind(gateway_id)
                .bind(token_hash)
                .bind(region)
                .fetch_optional(&mut *c)
                .await
            })
            .await?;
        let Some((token_id,)) = used else {
            return self.why_refused(token_hash, region, now).await.map(Err);
        };
        self.run(async |c| {
            self.query(
                "INSERT INTO gateways (id, region, joined_at, join_token_id, cert_not_after) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(gateway_id)
            .bind(region)
            .bind(now)
            .bind(&token_id)
            .bind(cert_not_after)
            .execute(&mut *c)
            .await
        })
        .await?;
        Ok(Ok(()))
    }

    async fn why_refused(
        &self,
        token_hash: &str,
        region: &str,
        now: i64,
    ) -> Result<JoinRefusal, StoreError> {
        type Row = (String, String, i64, i64, Option<i64>);
        let row: Option<Row> = self
            .run(async |c| {
                self.query_as(
                    "SELECT id, region, expires_at, \
                     CAST(CASE WHEN uses >= max_uses THEN 1 ELSE 0 END AS BIGINT), revoked_at \
                     FROM gateway_join_tokens WHERE hash = $1",
                )
                .bind(token_hash)
                .fetch_optional(&mut *c)
                .await
            })
            .await?;
        Ok(match row {
            None => JoinRefusal::Unknown,
            Some((id, _, _, _, Some(_))) => JoinRefusal::Revoked(id),
            Some((id, _, _, used_up, _)) if used_up != 0 => JoinRefusal::Used(id),
            Some((id, _, exp, _, _)) if exp <= now => JoinRefusal::Expired(id),
            Some((id, token_region, _, _, _)) => JoinRefusal::WrongRegion {
                id,
                token_region,
                asked: region.to_string(),
            },
        })
    }

    /// One gateway, revoked ones included.
    pub async fn gateway(&self, id: &str) -> Result<Option<GatewayRow>, StoreError> {
        self.run(async |c| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {GATEWAY_COLUMNS} FROM gateways WHERE id = $1"
            )))
            .persistent(!self.transactional())
            .bind(id)
            .fetch_optional(&mut *c)
            .await
        })
        .await
    }

    /// Every gateway, oldest first.
    pub async fn list_gateways(&self) -> Result<Vec<GatewayRow>, StoreError> {
        self.run(async |c| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {GATEWAY_COLUMNS} FROM gateways ORDER BY joined_at, id"
            )))
            .persistent(!self.transactional())
            .fetch_all(&mut *c)
            .await
        })
        .await
    }

    /// Records a renewed certificate's expiry; false when the gateway is revoked or unknown.
    pub async fn renew_gateway(&self, id: &str, cert_not_after: i64) -> Result<bool, StoreError> {
        let r = self
            .run(async |c| {
                self.query(
                    "UPDATE gateways SET cert_not_after = $1 WHERE id = $2 AND revoked_at IS NULL",
                )
                .bind(cert_not_after)
                .bind(id)
                .execute(&mut *c)
                .await
            })
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Records a heartbeat received by `replica`; false when the gateway is revoked or unknown
    /// (the link is then cut).
    pub async fn gateway_heartbeat(
        &self,
        id: &str,
        replica: &str,
        hb: &crate::agent::proto::Heartbeat,
    ) -> Result<bool, StoreError> {
        let r = self
            .run(async |c| {
                self.query(
                    "UPDATE gateways SET region = $1, version = $2, address = $3, sessions = $4, \
                     last_heartbeat_at = $5, linked_by = $6, lost_after_ms = $7 \
                     WHERE id = $8 AND revoked_at IS NULL",
                )
                .bind(&hb.region)
                .bind(&hb.version)
                .bind(&hb.address)
                .bind(hb.sessions)
                .bind(now_ms())
                .bind(replica)
                .bind(hb.lost_after_ms.max(0))
                .bind(id)
                .execute(&mut *c)
                .await
            })
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Marks a link held by `replica` as ended (a newer link held elsewhere is left alone).
    pub async fn unlink_gateway(&self, id: &str, replica: &str) -> Result<(), StoreError> {
        self.run(async |c| {
            self.query("UPDATE gateways SET linked_by = NULL WHERE id = $1 AND linked_by = $2")
                .bind(id)
                .bind(replica)
                .execute(&mut *c)
                .await
        })
        .await
        .map(|_| ())
    }

    /// Revokes a gateway: its certificate and renewals are refused from now on. Returns the
    /// row, or None when there is no such gateway.
    pub async fn revoke_gateway(&self, id: &str) -> Result<Option<GatewayRow>, StoreError> {
        self.run(async |c| {
            self.query("UPDATE gateways SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(now_ms())
                .bind(id)
                .execute(&mut *c)
                .await
        })
        .await?;
        self.gateway(id).await
    }
}

/// A command queued for a gateway.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct GatewayCommand {
    /// Command id.
    pub id: String,
    /// `drain` or `terminate`.
    pub kind: String,
    /// The session to terminate.
    pub session_id: Option<String>,
    /// Drain timeout in seconds (0: the gateway's default).
    pub timeout_seconds: i64,
}

impl Store {
    /// Queues a command for gateway `gateway_id` (delivered by the replica holding its link).
    pub async fn queue_gateway_command(
        &self,
        gateway_id: &str,
        cmd: &GatewayCommand,
        created_by: &str,
    ) -> Result<(), StoreError> {
        self.run(async |c| {
            self.query(
                "INSERT INTO gateway_commands \
                 (id, gateway_id, kind, session_id, timeout_seconds, created_by, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&cmd.id)
            .bind(gateway_id)
            .bind(&cmd.kind)
            .bind(&cmd.session_id)
            .bind(cmd.timeout_seconds)
            .bind(created_by)
            .bind(now_ms())
            .execute(&mut *c)
            .await
        })
        .await
        .map(|_| ())
    }

    /// Claims every undelivered command of a gateway for delivery by `replica`, oldest first:
    /// one atomic update, so two replicas never deliver the same command.
    pub async fn claim_gateway_commands(
        &self,
        gateway_id: &str,
        replica: &str,
    ) -> Result<Vec<GatewayCommand>, StoreError> {
        let mut cmds: Vec<(i64, GatewayCommand)> = self
            .run(async |c| {
                let rows: Vec<(String, String, Option<String>, i64, i64)> = self
                    .query_as(
                        "UPDATE gateway_commands SET delivered_at = $1, delivered_by = $2 \
                         WHERE gateway_id = $3 AND delivered_at IS NULL \
                         RETURNING id, kind, session_id, timeout_seconds, created_at",
                    )
                    .bind(now_ms())
                    .bind(replica)
                    .bind(gateway_id)
                    .fetch_all(&mut *c)
                    .await?;
                Ok(rows
                    .into_iter()
                    .map(|(id, kind, session_id, timeout_seconds, at)| {
                        (
                            at,
                            GatewayCommand {
                                id,
                                kind,
                                session_id,
                                timeout_seconds,
                            },
                        )
                    })
                    .collect())
            })
            .await?;
        cmds.sort_by_key(|(at, _)| *at);
        Ok(cmds.into_iter().map(|(_, c)| c).collect())
    }
}

/// Session events of remote gateways, recorded through the session core (issue 15).
impl Store {
    /// The last event sequence number recorded for gateway `id` (0: none yet).
    pub async fn gateway_events_seq(&self, id: &str) -> Result<i64, StoreError> {
        let row: Option<(i64,)> = self
            .run(async |c| {
                self.query_as("SELECT events_seq FROM gateways WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&mut *c)
                    .await
            })
            .await?;
        Ok(row.map_or(0, |(s,)| s))
    }

    /// Records that gateway `id`'s events up to `seq` are applied (never moves backwards).
    pub async fn advance_gateway_events_seq(&self, id: &str, seq: i64) -> Result<(), StoreError> {
        self.run(async |c| {
            self.query("UPDATE gateways SET events_seq = $1 WHERE id = $2 AND events_seq < $1")
                .bind(seq)
                .bind(id)
                .execute(&mut *c)
                .await
        })
        .await
        .map(|_| ())
    }

    /// Records the end of a session a remote gateway carried, as of `at`; true when this call
    /// ended it (false: already ended, so a replayed event changes nothing).
    #[allow(clippy::too_many_arguments)]
    pub async fn end_remote_session(
        &self,
        id: &str,
        gateway: &str,
        at: i64,
        up: u64,
        down: u64,
        reason: crate::session::EndReason,
    ) -> Result<bool, StoreError> {
        let r = self
            .run(async |c| {
                self.query(
                    "UPDATE sessions SET status = 'ended', ended_at = $1, bytes_up = $2, \
                     bytes_down = $3, end_reason = CASE WHEN status = 'terminating' THEN 'terminated' ELSE $4 END, \
                     replica = $5 WHERE id = $6 AND status IN ('active', 'terminating')",
                )
                .bind(at)
                .bind(up as i64)
                .bind(down as i64)
                .bind(reason)
                .bind(gateway)
                .bind(id)
                .execute(&mut *c)
                .await
            })
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Byte counts of a live session a remote gateway carries.
    pub async fn remote_session_bytes(
        &self,
        id: &str,
        up: u64,
        down: u64,
    ) -> Result<(), StoreError> {
        self.run(async |c| {
            self.query(
                "UPDATE sessions SET bytes_up = $1, bytes_down = $2 \
                 WHERE id = $3 AND status IN ('active', 'terminating')",
            )
            .bind(up as i64)
            .bind(down as i64)
            .bind(id)
            .execute(&mut *c)
            .await
        })
        .await
        .map(|_| ())
    }

    /// The status of each of `ids` that exists, in no order: what a gateway's heartbeat lists
    /// as live is checked against it.
    pub async fn session_statuses(
        &self,
        ids: &[String],
    ) -> Result<Vec<(String, crate::session::SessionStatus)>, StoreError> {
        /// Placeholders per statement (well below every backend's limit).
        const CHUNK: usize = 500;
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(CHUNK) {
            let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT id, status FROM sessions WHERE id IN ({})",
                marks.join(", ")
            );
            let rows: Vec<(String, crate::session::SessionStatus)> = self
                .run(async |c| {
                    // Only numbered placeholders are formatted in; the ids are bound.
                    let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql.clone())).persistent(false);
                    for id in chunk {
                        q = q.bind(id);
                    }
                    q.fetch_all(&mut *c).await
                })
                .await?;
            out.extend(rows);
        }
        Ok(out)
    }

    /// Sessions of `token_id` not ended yet, with the replica or gateway that holds them.
    pub async fn open_sessions_with_holder(
        &self,
        token_id: &str,
    ) -> Result<Vec<(String, Option<String>)>, StoreError> {
        self.run(async |c| {
            self.query_as(
                "SELECT id, replica FROM sessions WHERE token_id = $1 \
                 AND status IN ('pending', 'authorized', 'active', 'terminating')",
            )
            .bind(token_id)
            .fetch_all(&mut *c)
            .await
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    use super::super::test_store as store;

    fn beat(sessions: i64) -> crate::agent::proto::Heartbeat {
        crate::agent::proto::Heartbeat {
            region: "eu".into(),
            version: "1".into(),
            address: "a:1".into(),
            sessions,
            live_sessions: vec![],
            lost_after_ms: 60_000,
        }
    }

    #[tokio::test]
    async fn a_join_token_joins_once_in_its_region_and_says_why_it_is_refused() {
        let (_d, s) = store().await;
        let far = now_ms() + 3_600_000;
        s.create_join_token("h1", "t1", "eu", "admin", far, 1)
            .await
            .unwrap();
        assert_eq!(
            s.join_gateway("h1", "us", "gw-a", far).await.unwrap(),
            Err(JoinRefusal::WrongRegion {
                id: "t1".into(),
                token_region: "eu".into(),
                asked: "us".into()
            })
        );
        assert_eq!(
            s.join_gateway("h1", "eu", "gw-a", far).await.unwrap(),
            Ok(())
        );
        assert_eq!(
            s.join_gateway("h1", "eu", "gw-b", far).await.unwrap(),
            Err(JoinRefusal::Used("t1".into()))
        );
        s.create_join_token("h2", "t2", "eu", "admin", now_ms() - 1, 1)
            .await
            .unwrap();
        assert_eq!(
            s.join_gateway("h2", "eu", "gw-c", far).await.unwrap(),
            Err(JoinRefusal::Expired("t2".into()))
        );
        assert_eq!(
            s.join_gateway("nope", "eu", "gw-d", far).await.unwrap(),
            Err(JoinRefusal::Unknown)
        );
        let ids: Vec<String> = s
            .list_gateways()
            .await
            .unwrap()
            .into_iter()
            .map(|g| g.id)
            .collect();
        assert_eq!(ids, vec!["gw-a".to_string()]);
        // A pool's token admits exactly its number of joins, each a gateway of its own.
        s.create_join_token("h3", "t3", "eu", "admin", far, 2)
            .await
            .unwrap();
        for gw in ["gw-p1", "gw-p2"] {
            assert_eq!(s.join_gateway("h3", "eu", gw, far).await.unwrap(), Ok(()));
        }
        assert_eq!(
            s.join_gateway("h3", "eu", "gw-p3", far).await.unwrap(),
            Err(JoinRefusal::Used("t3".into()))
        );
        assert!(s.gateway("gw-p2").await.unwrap().is_some());
        assert!(s.gateway("gw-p3").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn heartbeats_stop_at_revocation_and_commands_are_claimed_once() {
        let (_d, s) = store().await;
        let far = now_ms() + 3_600_000;
        s.create_join_token("h", "t", "eu", "admin", far, 1)
            .await
            .unwrap();
        s.join_gateway("h", "eu", "gw", far).await.unwrap().unwrap();
        assert!(s.gateway_heartbeat("gw", "r0", &beat(2)).await.unwrap());
        let g = s.gateway("gw").await.unwrap().unwrap();
        assert_eq!(
            (g.sessions, g.linked_by.as_deref(), g.lost_after_ms),
            (2, Some("r0"), 60_000)
        );
        for (id, kind) in [("c1", "drain"), ("c2", "terminate")] {
            let cmd = GatewayCommand {
                id: id.into(),
                kind: kind.into(),
                session_id: (kind == "terminate").then(|| "s1".into()),
                timeout_seconds: 0,
            };
            s.queue_gateway_command("gw", &cmd, "admin").await.unwrap();
        }
        let first = s.claim_gateway_commands("gw", "r0").await.unwrap();
        assert_eq!(first.len(), 2);
        assert!(
            s.claim_gateway_commands("gw", "r1")
                .await
                .unwrap()
                .is_empty()
        );
        s.unlink_gateway("gw", "r1").await.unwrap();
        assert!(s.gateway("gw").await.unwrap().unwrap().linked_by.is_some());
        s.revoke_gateway("gw").await.unwrap().unwrap();
        assert!(!s.gateway_heartbeat("gw", "r0", &beat(0)).await.unwrap());
        assert!(!s.renew_gateway("gw", far).await.unwrap());
    }
}
