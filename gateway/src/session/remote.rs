//! Regional sessions (issue 15): authorised here, relayed by a remote gateway of the target's
//! region with an Ed25519 grant, reported back as events over the agent link. The gateway
//! never writes rows; its events are recorded here, each idempotent (a replayed `started` or
//! `ended` changes nothing and emits nothing), so history holds every session exactly once.

use super::core::{Authorization, Requester, Sessions};
use super::grant::AUTHORIZED_TTL_MS;
use super::{EndReason, SessionError, SessionStatus};
use crate::agent::grant::{GrantSigner, RemoteGrant};
use crate::agent::proto::SessionEvent;
use crate::store::{GatewayCommand, SessionRow, TargetRow, now_ms};
use crate::wire::GATEWAY_CONNECTED_WITHIN_MS;

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
    ) -> Result<Authorization, SessionError> {
        if target.require_approval != 0 {
            return Err(SessionError::RegionalApproval(target.name.clone()));
        }
        self.admit(who.token_id).await?;
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
