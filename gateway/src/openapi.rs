//! The OpenAPI document of the HTTP API, generated from the wire types ([`crate::wire`]) with
//! `utoipa`, served at `GET /v1/openapi.json` and checked in as `gateway/openapi.json` (the
//! `openapi` test fails when the two differ), so users can generate clients.
//!
//! The operations are declared here, one documentation stub per route, rather than on the
//! handlers: the handlers stay thin and change often, the document changes only with the API.
//! The `dev` e2e suite requests every documented operation from a running server and fails
//! on one that no route serves.

use std::sync::OnceLock;

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::wire::*;

/// Registers the bearer-token scheme the operations name as `bearer`.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API token: `Authorization: Bearer wg_…` (`wgctl tokens create`).",
                    ))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Wardengate API",
        description = "Session broker and relay: targets, tokens, sessions and their \
                       approvals, the relay WebSocket, and each replica's health and drain. \
                       Errors are `ErrorBody` JSON with a stable `code`; every 503 carries \
                       `Retry-After`."
    ),
    paths(
        paths::healthz,
        paths::readyz,
        paths::metrics,
        paths::openapi,
        paths::system_status,
        paths::system_drain,
        paths::list_targets,
        paths::create_target,
        paths::get_target,
        paths::delete_target,
        paths::create_token,
        paths::list_tokens,
        paths::revoke_token,
        paths::list_sessions,
        paths::create_session,
        paths::get_session,
        paths::terminate_session,
        paths::relay,
        paths::relay_target,
        paths::watch_session,
        paths::list_approvals,
        paths::approve,
        paths::deny,
        paths::events,
        paths::verify_recording,
        paths::create_join_token,
        paths::list_gateways,
        paths::revoke_gateway,
        paths::gateway_command,
        paths::recording_cast,
        paths::ssh_ca,
        paths::ssh_certificate,
    ),
    components(schemas(ErrorBody, ErrorCode, WatchMessage)),
    modifiers(&BearerAuth),
    tags(
        (name = "health", description = "Probes and metrics of one replica."),
        (name = "system", description = "Status and drain of the replica that answers."),
        (name = "targets", description = "What people may connect to."),
        (name = "tokens", description = "API tokens (admin)."),
        (name = "sessions", description = "Authorise, inspect, relay, watch and terminate \
                                           sessions."),
        (name = "approvals", description = "Requests to targets that need an approver."),
        (name = "recordings", description = "Signed session recordings."),
        (name = "gateways", description = "Remote gateways of other regions (admin): join \
                                           tokens, the fleet, revocation and commands."),
        (name = "ssh", description = "The terminating SSH front end: the user CA for targets, \
                                      login certificates for users."),
    )
)]
struct ApiDoc;

/// The document, built from the types.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The document as pretty JSON with a final newline: what the server sends and what
/// `gateway/openapi.json` holds. Built once per process.
pub fn json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        let mut s = document()
            .to_pretty_json()
            .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
        s.push('\n');
        s
    })
}

/// Documentation stubs, one per route; never called.
#[allow(dead_code)]
mod paths {
    use crate::wire::*;

    #[utoipa::path(get, path = "/healthz", tag = "health",
        description = "Liveness. Fails only when this replica is isolated (Postgres unreachable \
                       while its peers reach it); a starting replica answers 200.",
        responses(
            (status = 200, description = "Alive (or starting).", body = Healthz),
            (status = 503, description = "Isolated: restart this replica.", body = Healthz),
        ))]
    fn healthz() {}

    #[utoipa::path(get, path = "/readyz", tag = "health",
        description = "Readiness: Postgres, Redis, isolation and the drain bit, each named.",
        responses(
            (status = 200, description = "Ready for new work.", body = Readyz),
            (status = 503, description = "Not ready (starting, draining, isolated or a \
                                          dependency failing beyond its grace).", body = Readyz),
        ))]
    fn readyz() {}

    #[utoipa::path(get, path = "/metrics", tag = "health",
        responses(
            (status = 200, description = "Prometheus text exposition.", body = String,
             content_type = "text/plain"),
        ))]
    fn metrics() {}

    #[utoipa::path(get, path = "/v1/openapi.json", tag = "health",
        description = "This document. Needs no token: it describes the API, not its data.",
        responses(
            (status = 200, description = "The OpenAPI document.", body = Object),
        ))]
    fn openapi() {}

    #[utoipa::path(get, path = "/v1/system/status", tag = "system",
        description = "The answering replica's status. Any valid token, or an observer token \
                       (`--observer-token-file`), which reads this and `/metrics` only.",
        responses(
            (status = 200, description = "The answering replica's status.", body = SystemStatus),
        ))]
    fn system_status() {}

    #[utoipa::path(post, path = "/v1/system/drain", tag = "system",
        description = "Drains the answering replica (call its own address, not the load \
                       balancer's): readiness fails, new relays get 503, owned sessions get \
                       `timeout` to end and the rest are then closed recoverably. Idempotent.",
        params(("timeout" = Option<String>, Query,
                description = "Eviction window, e.g. `90s` or `10m` (default 270s).")),
        responses(
            (status = 204, description = "Drained.",
             headers(("wardengate-drain-outcome" = String,
                      description = "`drained`, or `evicted=N` when N sessions were closed."))),
            (status = 400, description = "`invalid_timeout`.", body = ErrorBody),
            (status = 401, description = "`unauthorized`.", body = ErrorBody),
            (status = 403, description = "`forbidden`: needs the admin role.", body = ErrorBody),
        ),
        security(("bearer" = [])))]
    fn system_drain() {}

    #[utoipa::path(get, path = "/v1/targets", tag = "targets",
        responses(
            (status = 200, description = "Every target.", body = Vec<TargetView>),
            (status = 401, description = "`unauthorized`.", body = ErrorBody),
            (status = 503, description = "`database_unavailable`, `starting`.", body = ErrorBody),
        ),
        security(("bearer" = [])))]
    fn list_targets() {}

    #[utoipa::path(post, path = "/v1/targets", tag = "targets", request_body = NewTarget,
        responses(
            (status = 201, description = "Created.", body = TargetView),
            (status = 400, description = "`invalid_body`, `invalid_name`, `invalid_host`, \
                                          `invalid_port`.", body = ErrorBody),
            (status = 401, description = "`unauthorized`.", body = ErrorBody),
            (status = 403, description = "`forbidden`: needs the admin role.", body = ErrorBody),
            (status = 409, description = "`target_exists`.", body = ErrorBody),
            (status = 503, description = "`database_unavailable`, `starting`.", body = ErrorBody),
        ),
        security(("bearer" = [])))]
    fn create_target() {}

    #[utoipa::path(get, path = "/v1/targets/{name}", tag = "targets",
        params(("name" = String, Path, description = "Target name.")),
        responses(
            (status = 200, description = "The target.", body = TargetView),
            (status = 401, description = "`unauthorized`.", body = ErrorBody),
            (status = 404, description = "`target_not_found`.", body = ErrorBody),
        ),
        security(("bearer" = [])))]
    fn get_target() {}

    #[utoipa::path(delete, path = "/v1/targets/{name}", tag = "targets",
        params(("name" = String, Path, description = "Target name.")),
        responses(
            (status = 204, description = "Removed."),
            (status = 401, description = "`unauthorized`.", body = ErrorBody),
            (status = 403, description = "`forbidden`: needs the admin role.", body = ErrorBody),
            (status = 404, description = "`target_not_found`.", body = ErrorBody),
        ),
        security(("bearer" = [])))]
    fn delete_target() {}

    #[utoipa::path(post, path = "/v1/tokens", tag = "tokens", request_body = NewToken,
        responses(
            (status = 201, description = "Created; the secret is shown only in this answer.",
             body = CreatedToken),
            (status = 400, description = "`invalid_body`, `invalid_ttl` (`ttl_seconds` outside \
                                          60–31,622,400).", body = ErrorBody),
            (status = 401, description = "`unauthorized`, `token_expired`, `token_revoked`.",
             body = ErrorBody),
            (status = 403, description = "`forbidden`: needs the admin role.", body = ErrorBody),
        ),
        security(("bearer" = [])))]
    fn create_token() {}

    #[utoipa::path(get, path = "/v1/tokens", tag = "tokens",
        description = "Every token, oldest first, with its state; never a secret or hash.",
        responses(
            (status = 200, description = "Tokens.", body = Vec<TokenView>),
            (status = 401, description = "`unauthorized`, `token_expired`, `token_revoked`.",
             body = ErrorBody),
            (status = 403, description = "`forbidden`: needs the admin role.", body = ErrorBody),
        ),
        security(("bearer" = [])))]
    fn list_tokens() {}

    #[utoipa::path(delete, path = "/v1/tokens/{id}", tag = "tokens",
        description = "Revokes a token (idempotent). Its next request is refused with \
                       `token_revoked`: at once on the replica that answers, within 2 s on \
                       every other (their token cache TTL); event streams opened with it end \
                       within that bound plus a 250 ms poll.",
        params(("id" = String, Path, description = "Token id.")),
        responses(
            (status = 200, description = "The token after the change.", body = TokenView),
            (status = 401, description = "`unauthorized`, `token_expired`, `token_revoked`.",
             body = ErrorBody),
            (status = 403, description = "`forbidden`: needs the admin role.", body = ErrorBody),
            (status = 404, description = "`token_not_found`.", body = ErrorBody),
        ),
        security(("bearer" = [])))]
    fn revoke_token() {}

    #[utoipa::path(post, path = "/v1/gateways/join-tokens", tag = "gateways",
        request_body = NewJoinToken,
        description = "A one-time join token for a remote gateway of `region` (`wardengate serve \
                       --role gateway --join-token-file F`); the secret is shown only here.",
        responses(
            (status = 201, description = "Created.", body = CreatedJoinToken),
            (status = 400, description = "`invalid_body`, `invalid_ttl`.", body = ErrorBody),
            (status = 401, description = "`unauthorized`.", body = ErrorBody),
            (status = 403, description = "`forbidden`: needs the admin role.", body = ErrorBody),
        ),
        security(("bearer" = [])))]
    fn create_join_token() {}

    #[utoipa::path(get, path = "/v1/gateways", tag = "gateways",
        description = "Every remote gateway: region, version, address, last heartbeat, sessions, \
                       which control-plane replica holds its link.",
        responses(
            (status = 200, description = "The gateways.", body = Vec<GatewayView>),
            (status = 401, description = "`unauthorized`.", body = ErrorBody),
            (status = 403, description = "`forbidden`: needs the admin role.", body = ErrorBody),
        ),
        security(("bearer" = [])))]
    fn list_gateways() {}

    #[utoipa::path(delete, path = "/v1/gateways/{id}", tag = "gateways",
        description = "Revokes a gateway: its certificate is refused from its next call and its \
                       link is cut at its next heartbeat.",
        params(("id" = String, Path, description = "Gateway id.")),
        responses(
            (status = 200, description = "The gateway after the change.", body = GatewayView),
            (status = 401, description = "`unauthorized`.", body = ErrorBody),
            (status = 403, description = "`forbidden`: needs the admin role.", body = ErrorBody),
            (status = 404, description = "`not_found`.", body = ErrorBody),
        ),
        security(("bearer" = [])))]
    fn revoke_gateway() {}

    #[utoipa::path(post, path = "/v1/gateways/{id}/commands", tag = "gateways",
        request_body = NewGatewayCommand,
        description = "Queues `drain` or `terminate` for a gateway; the replica holding its link \
                       sends it at the gateway's next heartbeat, once.",
        params(("id" = String, Path, description = "Gateway id.")),
        responses(
            (status = 202, description = "Queued.", body = QueuedGatewayCommand),
            (status = 400, description = "`invalid_body`.", body = ErrorBody),
            (status = 401, description = "`unauthorized`.", body = ErrorBody),
            (status = 403, description = "`forbidden`: needs the admin role.", body = ErrorBody),
            (status = 404, description = "`not_found`.", body = ErrorBody),
        ),
        security(("bearer" = [])))]
    fn gateway_command() {}

    #[utoipa::path(get, path = "/v1/sessions", tag = "sessions",
        description = "Newest first. A user sees its own sessions; approvers and admins all.",
        params(("limit" = Option<i64>, Query, description = "1–1000 (default 100).")),
        responses(
            (status = 200, description = "Sessions.", body = Vec<SessionView>),
            (status = 401, description = "`unauthorized`.", body = ErrorBody),
        ),
        security(("bearer" = [])))]
    fn list_sessions() {}

    #[utoipa::path(post, path = "/v1/sessions", tag = "sessions", request_body = NewSession,
        description = "Authorises a session to a target; connect it with the relay before \
                       `expires_at_ms`.",
        responses(
            (status = 201, description = "Authorised.", body = Authorized),
            (status = 202, description = "Pending: an approver must decide first.",
             body = Authorized),
            (status = 400, description = "`invalid_body`.", body = ErrorBody),
            (status = 401, description = "`unauthorized`.", body = ErrorBody),
            (status = 404, description = "`target_not_found`.", body = ErrorBody),
            (status = 429, description = "`session_rate_limited` (this token opens sessions \
                                          too fast), `too_many_sessions` (it holds the most \
                                          allowed at once), `too_many_requests`, \
                                          `too_many_failed_auth`; wait `Retry-After`.",
             body = ErrorBody),
            (status = 503, description = "`database_unavailable`, \
                                          `session_state_unavailable`, `starting`.",
             body = ErrorBody),
        ),
        security(("bearer" = [])))]
    fn create_session() {}

    #[utoipa::path(get, path = "/v1/sessions/{id}", tag = "sessions",
        params(("id" = String, Path, description = "Session id.")),
        responses(
            (status = 200, description = "The session.", body = SessionView),
            (status = 401, description = "`unauthorized`.", body = ErrorBody),
            (status = 404, description = "`session_not_found` (also for another user's).",
             body = ErrorBody),
        ),
        security(("bearer" = [])))]
    fn get_session() {}

    #[utoipa::path(delete, path = "/v1/sessions/{id}", tag = "sessions",
        description = "Terminates a session: its relay, wherever it runs, closes within a poll.",
        params(("id" = String, Path, description = "Session id.")),
        responses(
            (status = 200, description = "The session after the change.", body = SessionView),
            (status = 401, description = "`unauthorized`.", body = ErrorBody),
            (status = 403, description = "`forbidden`: another token's session needs an \
                                          approver or admin.", body = ErrorBody),
            (status = 404, description = "`session_not_found`.", body = ErrorBody),
        ),
        security(("bearer" = [])))]
    fn terminate_session() {}

    #[utoipa::path(get, path = "/v1/sessions/{id}/relay", tag = "sessions",
        description = "WebSocket upgrade carrying the session's bytes as binary messages; the \
                       text message `eof` ends the upload side. Close codes 4000–4999 \
                       say how it ended (see `relay_protocol`).",
        params(("id" = String, Path, description = "Session id.")),
        responses(
            (status = 101, description = "Switching to the relay WebSocket."),
            (status = 401, description = "`unauthorized`.", body = ErrorBody),
            (status = 403, description = "`not_your_session`, `invalid_session_state`.",
             body = ErrorBody),
            (status = 409, description = "`approval_pending`, `session_in_use`.",
             body = ErrorBody),
            (status = 410, description = "`session_expired`, `session_terminated`.",
             body = ErrorBody),
            (status = 502, description = "`target_unreachable`.", body = ErrorBody),
            (status = 429, description = "`too_many_requests`, `too_many_failed_auth` (and for \
                                          `/v1/targets/{name}/relay`, which creates a session: \
                                          `session_rate_limited`, `too_many_sessions`); wait \
                                          `Retry-After`.", body = ErrorBody),
            (status = 503, description = "`draining`, `replica_isolated`, \
                                          `replica_at_capacity`, `recording_unavailable`, \
                                          `session_state_unavailable`: retry through the \
                                          load balancer.", body = ErrorBody),
        ),
        security(("bearer" = [])))]
    fn relay() {}

    #[utoipa::path(get, path = "/v1/sessions/{id}/watch", tag = "sessions",
        description = "WebSocket upgrade that follows a live terminated SSH session from any \
                       replica (approver or admin; audited as `session.watch`). Text messages, \
                       each a JSON `WatchMessage`: `header` first (the asciicast v2 header \
                       line, with the terminal's current size), then `events` (asciicast v2 \
                       event lines) as they happen and `gap` where events were lost, and last \
                       `end` with the reason the session ended and the message its user saw; \
                       then the server closes. A late watcher starts with the recent screen. \
                       Watching never affects the session: the watcher sends nothing but a \
                       close, and one too slow to keep up is dropped with an `end` message.",
        params(("id" = String, Path, description = "Session id.")),
        responses(
            (status = 101, description = "Switching to the watch WebSocket."),
            (status = 401, description = "`unauthorized`.", body = ErrorBody),
            (status = 403, description = "`forbidden`: needs the approver role.",
             body = ErrorBody),
            (status = 404, description = "`session_not_found`.", body = ErrorBody),
            (status = 409, description = "`session_not_watchable`: the session is not live, or \
                                          is a byte relay rather than terminated SSH.",
             body = ErrorBody),
            (status = 503, description = "`database_unavailable`: retry.", body = ErrorBody),
        ),
        security(("bearer" = [])))]
    fn watch_session() {}

    #[utoipa::path(get, path = "/v1/targets/{name}/relay", tag = "sessions",
        description = "Authorises a session to a target that needs no approval and upgrades to \
                       its relay WebSocket in one request (same framing and close codes as \
                       `/v1/sessions/{id}/relay`); the `wardengate-session` response header \
                       names the session. A target that needs an approver answers 409 \
                       `approval_required`: use `POST /v1/sessions`.",
        params(("name" = String, Path, description = "Target name.")),
        responses(
            (status = 101, description = "Switching to the relay WebSocket.",
             headers(("wardengate-session" = String, description = "The new session's id."))),
            (status = 401, description = "`unauthorized`.", body = ErrorBody),
            (status = 404, description = "`target_not_found`.", body = ErrorBody),
            (status = 409, description = "`approval_required`.", body = ErrorBody),
            (status = 502, description = "`target_unreachable` (the attempt is recorded as \
                                          ended with that reason).", body = ErrorBody),
            (status = 429, description = "`too_many_requests`, `too_many_failed_auth` (and for \
                                          `/v1/targets/{name}/relay`, which creates a session: \
                                          `session_rate_limited`, `too_many_sessions`); wait \
                                          `Retry-After`.", body = ErrorBody),
            (status = 503, description = "`draining`, `replica_isolated`, \
                                          `replica_at_capacity`, `recording_unavailable`, \
                                          `session_state_unavailable`, \
                                          `database_unavailable`: retry through the load \
                                          balancer.", body = ErrorBody),
        ),
        security(("bearer" = [])))]
    fn relay_target() {}

    #[utoipa::path(get, path = "/v1/approvals", tag = "approvals",
        responses(
            (status = 200, description = "Sessions waiting for a decision, oldest first.",
             body = Vec<SessionView>),
            (status = 401, description = "`unauthorized`.", body = ErrorBody),
            (status = 403, description = "`forbidden`: needs the approver role.",
             body = ErrorBody),
        ),
        security(("bearer" = [])))]
    fn list_approvals() {}

    #[utoipa::path(post, path = "/v1/approvals/{id}/approve", tag = "approvals",
        request_body = Option<DecisionBody>,
        params(("id" = String, Path, description = "Session id.")),
        responses(
            (status = 200, description = "Approved.", body = DecisionResult),
            (status = 401, description = "`unauthorized`.", body = ErrorBody),
            (status = 403, description = "`forbidden`, `self_approval`.", body = ErrorBody),
            (status = 404, description = "`session_not_found`.", body = ErrorBody),
            (status = 409, description = "`already_decided`, `approval_expired`, \
                                          `not_pending`.", body = ErrorBody),
        ),
        security(("bearer" = [])))]
    fn approve() {}

    #[utoipa::path(post, path = "/v1/approvals/{id}/deny", tag = "approvals",
        request_body = Option<DecisionBody>,
        params(("id" = String, Path, description = "Session id.")),
        responses(
            (status = 200, description = "Denied.", body = DecisionResult),
            (status = 401, description = "`unauthorized`.", body = ErrorBody),
            (status = 403, description = "`forbidden`, `self_approval`.", body = ErrorBody),
            (status = 404, description = "`session_not_found`.", body = ErrorBody),
            (status = 409, description = "`already_decided`, `approval_expired`, \
                                          `not_pending`.", body = ErrorBody),
        ),
        security(("bearer" = [])))]
    fn deny() {}

    #[utoipa::path(get, path = "/v1/events", tag = "approvals",
        description = "Server-sent events: approval requests and decisions, session starts \
                       and ends. Each event's `data` is an `Event`; reconnect with \
                       `Last-Event-ID` (or `since`) to replay what was missed.",
        params(
            ("since" = Option<i64>, Query, description = "Replay events after this id first."),
            ("Last-Event-ID" = Option<String>, Header,
             description = "Resume after this event id (wins over `since`)."),
        ),
        responses(
            (status = 200, description = "The event stream.", body = Event,
             content_type = "text/event-stream"),
            (status = 401, description = "`unauthorized`.", body = ErrorBody),
            (status = 403, description = "`forbidden`: needs the approver role.",
             body = ErrorBody),
        ),
        security(("bearer" = [])))]
    fn events() {}

    #[utoipa::path(get, path = "/v1/recordings/{id}/verify", tag = "recordings",
        params(("id" = String, Path, description = "Session id.")),
        responses(
            (status = 200, description = "The verification report; `ok` says whether it \
                                          verified.", body = Verification),
            (status = 401, description = "`unauthorized`.", body = ErrorBody),
            (status = 403, description = "`forbidden`: needs the approver role.",
             body = ErrorBody),
            (status = 404, description = "`session_not_found`, `recordings_disabled`.",
             body = ErrorBody),
            (status = 503, description = "`recordings_unavailable`.", body = ErrorBody),
        ),
        security(("bearer" = [])))]
    fn verify_recording() {}

    #[utoipa::path(get, path = "/v1/recordings/{id}/cast", tag = "recordings",
        params(("id" = String, Path, description = "Session id.")),
        responses(
            (status = 200, description = "A terminated SSH session's recording as an asciicast \
                                          v2 file (`application/x-asciicast`).", body = String),
            (status = 401, description = "`unauthorized`.", body = ErrorBody),
            (status = 403, description = "`forbidden`: needs the approver role.",
             body = ErrorBody),
            (status = 404, description = "`session_not_found`, `recordings_disabled`, \
                                          `not_found` (not a terminated SSH session).",
             body = ErrorBody),
            (status = 503, description = "`recordings_unavailable`.", body = ErrorBody),
        ),
        security(("bearer" = [])))]
    fn recording_cast() {}

    #[utoipa::path(get, path = "/v1/ssh/ca.pub", tag = "ssh",
        responses(
            (status = 200, description = "The SSH user CA's public key, one line for targets' \
                                          `TrustedUserCAKeys` (no token needed).", body = String),
            (status = 404, description = "`ssh_not_configured`: terminating SSH is not configured.",
             body = ErrorBody),
        ))]
    fn ssh_ca() {}

    #[utoipa::path(post, path = "/v1/ssh/certificates", tag = "ssh",
        request_body = SshCertificateRequest,
        responses(
            (status = 200, description = "A short-lived login certificate for the SSH front \
                                          end (what `wgctl ssh` uses).", body = SshCertificate),
            (status = 400, description = "`invalid_body`.", body = ErrorBody),
            (status = 401, description = "`unauthorized`.", body = ErrorBody),
            (status = 404, description = "`ssh_not_configured`: terminating SSH is not configured.",
             body = ErrorBody),
        ),
        security(("bearer" = [])))]
    fn ssh_certificate() {}
}
