//! Regional sessions (issue 15): authorised here, relayed by a remote gateway of the target's
//! region with an Ed25519 grant, reported back as events over the agent link. The gateway
//! never writes rows; its events are recorded here, each idempotent (a replayed `started` or
//! `ended` changes nothing and emits nothing), so history holds every session exactly once.

use super::core::{Authorization, Requester, Sessions};
use super::grant::AUTHORIZED_TTL_MS;
use super::{EndReason, SessionError, SessionStatus};
use crate::agent::grant::{GrantSigner, RemoteGrant};
use crate::agent::proto::SessionEvent;
use crate::store::{GatewayCommand, GatewayRow, SessionRow, TargetRow, now_ms};
use crate::wire::GATEWAY_CONNECTED_WITHIN_MS;

/// What the control plane assumes of a gateway that never reported how long its sessions
/// outlive a lost link: the default `--offline-grace` (5 min) plus a minute to notice the loss.
pub const DEFAULT_GATEWAY_LOST_AFTER_MS: i64 = 6 * 60_000;

/// Whether a gateway's sessions must be over by now: silent for longer than it said they
/// outlive a lost link (its offline grace plus its link's loss detection), plus `margin`
/// (`--replica-lost-after`: the cleanup job's own slack for clocks and store delays). A
/// gateway that never heartbeated counts from when it joined.
pub fn gateway_gone(g: &GatewayRow, now: i64, margin_ms: i64) -> bool {
    let lost_after = match g.lost_after_ms {
        0 => DEFAULT_GATEWAY_LOST_AFTER_MS,
        ms => ms,
    };
    let last = g.last_heartbeat_at.unwrap_or(g.joined_at);
    now - last > lost_after.saturating_add(margin_ms)
}

/// Whether a relay a gateway reports as live must be told to stop: the control plane ended
/// the session, or terminated it (the terminate command may have been lost in flight).
fn owed_terminate(status: SessionStatus) -> bool {
    matches!(status, SessionStatus::Terminating | SessionStatus::Ended)
}

impl Sessions {
    /// Authorises a session to a regional target: picks the connected gateway of the region
    /// carrying the fewest sessions (none: [`SessionError::NoRegionalGateway`], retryable),
    /// records the session as authorised for it and returns its address with a grant only it
    /// accepts, once, until the grant expires.
    pub(super) async fn authorise_regional(
        &self,
        who: Requester<'_>,
        target: &TargetRow,
        region: &str,
        held: i64,
    ) -> Result<Authorization, SessionError> {
        if target.require_approval != 0 {
            return Err(SessionError::RegionalApproval(target.name.clone()));
        }
        self.admit(who.token_id, held)?;
        let store = &self.inner.store;
        let now = now_ms();
        let gateway = store
            .list_gateways()
            .await?
            .into_iter()
            .filter(|g| {
                g.region == region
                    && g.revoked_at.is_none()
                    && g.linked_by.is_some()
                    && !g.address.is_empty()
                    && g.last_heartbeat_at
                        .is_some_and(|t| now - t <= GATEWAY_CONNECTED_WITHIN_MS)
            })
            .min_by_key(|g| g.sessions)
            .ok_or_else(|| SessionError::NoRegionalGateway(region.to_string()))?;
        let id = uuid::Uuid::new_v4().to_string();
        let grant = RemoteGrant {
            session_id: id.clone(),
            token_id: who.token_id.to_string(),
            target: target.name.clone(),
            host: target.host.clone(),
            port: u16::try_from(target.port).unwrap_or(0),
            region: region.to_string(),
            gateway_id: gateway.id.clone(),
            expires_at_ms: now + AUTHORIZED_TTL_MS,
        };
        let signed = GrantSigner::from_keyring(&self.inner.keyring).sign(&grant);
        store
            .create_session(&SessionRow {
                id: id.clone(),
                token_id: grant.token_id.clone(),
                target_id: target.id.clone(),
                target_name: target.name.clone(),
                host: target.host.clone(),
                port: target.port,
                status: SessionStatus::Authorized,
                // The gateway that holds it: terminations are sent there.
                replica: Some(gateway.id.clone()),
                created_at: now,
                started_at: None,
                ended_at: None,
                bytes_up: 0,
                bytes_down: 0,
                end_reason: None,
                requested_from: who.from.map(|a| a.to_string()),
                connected_by: None,
                connected_from: None,
            })
            .await?;
        self.audit(
            who.token_id,
            "session.authorize",
            &id,
            format!("{} via {}", target.name, gateway.id),
        );
        tracing::info!(event = "session_authorized", session = %id, target = %target.name, token = %who.token_id, gateway = %gateway.id, region);
        Ok(Authorization {
            id,
            target: target.name.clone(),
            status: SessionStatus::Authorized,
            expires_at_ms: grant.expires_at_ms,
            gateway: Some(format!("https://{}", gateway.address)),
            grant: Some(signed),
        })
    }

    /// Records one session event of remote gateway `gateway`. Idempotent.
    pub async fn remote_event(&self, gateway: &str, ev: &SessionEvent) -> Result<(), SessionError> {
        let store = &self.inner.store;
        let id = ev.session_id.as_str();
        match ev.kind.as_str() {
            "started" => {
                let client = (!ev.client.is_empty()).then_some(ev.client.as_str());
                if store
                    .claim_session(id, gateway, &ev.token_id, client)
                    .await?
                {
                    self.emit(
                        "session.started",
                        id,
                        serde_json::json!({"session": id, "replica": gateway, "by": ev.token_id, "client": client, "at": ev.at_ms}),
                    );
                    tracing::info!(event = "remote_session_started", session = %id, gateway);
                }
            }
            "bytes" => {
                store
                    .remote_session_bytes(id, ev.bytes_up, ev.bytes_down)
                    .await?
            }
            "ended" => {
                let reason = EndReason::from_text(&ev.reason);
                if store
                    .end_remote_session(id, gateway, ev.at_ms, ev.bytes_up, ev.bytes_down, reason)
                    .await?
                {
                    let m = &self.inner.metrics;
                    m.relays_ended.with_label_values(&[reason.as_str()]).inc();
                    self.emit(
                        "session.ended",
                        id,
                        serde_json::json!({"session": id, "reason": reason, "bytes_up": ev.bytes_up, "bytes_down": ev.bytes_down, "replica": gateway, "at": ev.at_ms}),
                    );
                    tracing::info!(event = "remote_session_ended", session = %id, gateway, reason = reason.as_str());
                }
            }
            other => tracing::warn!(gateway, kind = other, "unknown session event ignored"),
        }
        Ok(())
    }

    /// Of the sessions remote gateway `gateway` says it relays (`live`, from its heartbeat),
    /// those it must stop: ended or terminating here. The link answers each with a terminate,
    /// so a terminate lost on its way (a link cut after the command was claimed, a gateway
    /// restarted before it applied it, a grant reused after a restart) is sent again at every
    /// heartbeat until the relay is gone: delivery at least once, applied idempotently.
    pub async fn owed_terminations(
        &self,
        gateway: &str,
        live: &[String],
    ) -> Result<Vec<String>, SessionError> {
        if live.is_empty() {
            return Ok(Vec::new());
        }
        let owed: Vec<String> = self
            .inner
            .store
            .session_statuses(live)
            .await?
            .into_iter()
            .filter(|(_, status)| owed_terminate(*status))
            .map(|(id, _)| id)
            .collect();
        for id in &owed {
            tracing::info!(event = "gateway_terminate_reconciled", session = %id, gateway);
        }
        Ok(owed)
    }

    /// When `holder` is a remote gateway, queues a terminate of `id` for it (sent down its link
    /// at its next heartbeat): its relay ends, or its unused grant is refused.
    pub(super) async fn tell_gateway(
        &self,
        holder: &str,
        id: &str,
        by: &str,
    ) -> Result<(), SessionError> {
        let store = &self.inner.store;
        if store.gateway(holder).await?.is_none() {
            return Ok(());
        }
        let cmd = GatewayCommand {
            id: uuid::Uuid::new_v4().to_string(),
            kind: "terminate".into(),
            session_id: Some(id.to_string()),
            timeout_seconds: 0,
        };
        store.queue_gateway_command(holder, &cmd, by).await?;
        tracing::info!(event = "gateway_terminate_queued", session = %id, gateway = holder);
        Ok(())
    }

    /// After `token_id` was revoked: terminates its sessions held by remote gateways (a replica
    /// of the control plane refuses the revoked token itself; a cut-off gateway cannot).
    /// Returns how many.
    pub async fn terminate_remote_sessions_of(
        &self,
        token_id: &str,
        by: &str,
    ) -> Result<usize, SessionError> {
        let mut n = 0;
        for (id, holder) in self.inner.store.open_sessions_with_holder(token_id).await? {
            let Some(holder) = holder else { continue };
            if self.inner.store.gateway(&holder).await?.is_some() {
                self.terminate(&id, by).await?;
                n += 1;
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gw(last: Option<i64>, lost_after_ms: i64) -> GatewayRow {
        GatewayRow {
            id: "gw".into(),
            region: "eu".into(),
            joined_at: 1_000,
            cert_not_after: i64::MAX,
            version: String::new(),
            address: String::new(),
            sessions: 0,
            last_heartbeat_at: last,
            linked_by: None,
            revoked_at: None,
            lost_after_ms,
        }
    }

    #[test]
    fn a_gateway_is_gone_only_after_its_own_bound_plus_the_margin() {
        let g = gw(Some(10_000), 8_000);
        assert!(!gateway_gone(&g, 10_000 + 8_000 + 3_000, 3_000));
        assert!(gateway_gone(&g, 10_000 + 8_000 + 3_001, 3_000));
        // Not reported: the default grace and a minute.
        let old = gw(Some(10_000), 0);
        assert!(!gateway_gone(&old, 10_000 + 5 * 60_000, 0));
        assert!(gateway_gone(
            &old,
            10_001 + DEFAULT_GATEWAY_LOST_AFTER_MS,
            0
        ));
        // Never heartbeated: counted from its join.
        assert!(gateway_gone(&gw(None, 1), 1_003, 1));
    }

    #[test]
    fn only_ended_or_terminating_sessions_are_owed_a_terminate() {
        use SessionStatus::*;
        let owed: Vec<_> = [Pending, Authorized, Active, Terminating, Ended, Unknown]
            .into_iter()
            .filter(|s| owed_terminate(*s))
            .collect();
        assert_eq!(owed, vec![Terminating, Ended]);
    }
}
