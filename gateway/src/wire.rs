//! The wire API: every JSON request and response body of the HTTP API, shared by the server's
//! handlers and the client (`wgctl`, the e2e suites), and the source of the OpenAPI document
//! (`GET /v1/openapi.json`). No axum here: a client links this without the server.
//!
//! Handlers answer with views built from store rows ([`SessionView`], [`TargetView`]); rows
//! themselves never go on the wire, so a new column cannot leak and a stored encoding (the
//! target's `require_approval` integer) stays a storage detail.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use utoipa::ToSchema;

use crate::session::{EndReason, SessionStatus};
use crate::store::{Decision, EventRow, SessionRow, TargetRow};
use crate::token::Role;

/// Body of `POST /v1/sessions`: ask to connect to a target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSession {
    /// Name of the target.
    pub target: String,
}

/// Response of `POST /v1/sessions` (201 when authorised, 202 when an approver must decide).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Authorized {
    /// Session id; connect with `GET /v1/sessions/{id}/relay`.
    pub id: String,
    /// Target name.
    pub target: String,
    /// `authorized`, or `pending` when an approver must decide first.
    pub status: SessionStatus,
    /// Unix ms after which the authorisation can no longer be used to connect.
    pub expires_at_ms: i64,
    /// A regional target's gateway, `https://HOST:PORT`: connect there with
    /// `GET /v1/sessions/{id}/relay` presenting `grant` (header `wardengate-grant`), not the
    /// API token. Absent: connect through the control plane.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// The control plane's Ed25519-signed grant for `gateway` (one use, until `expires_at_ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<String>,
}

/// A session and its history, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SessionView {
    /// Session id.
    pub id: String,
    /// Id of the token that asked for it.
    pub token_id: String,
    /// Target id at authorisation time.
    pub target_id: String,
    /// Target name at authorisation time.
    pub target_name: String,
    /// Host the gateway dials.
    pub host: String,
    /// Port the gateway dials.
    pub port: u16,
    /// Lifecycle state.
    pub status: SessionStatus,
    /// Replica that carried (or carries) the relay.
    pub replica: Option<String>,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms when the relay connected to the target.
    pub started_at: Option<i64>,
    /// Unix ms when it ended.
    pub ended_at: Option<i64>,
    /// Bytes client → target.
    pub bytes_up: u64,
    /// Bytes target → client.
    pub bytes_down: u64,
    /// Why it ended (`client_closed`, `target_closed`, `terminated`, `replica_lost`, `expired`,
    /// `denied`, …).
    pub end_reason: Option<EndReason>,
    /// Client address (`ip:port`) that asked for it; behind a load balancer that sends the
    /// PROXY protocol, the real client's.
    #[serde(default)]
    pub requested_from: Option<String>,
    /// Token id that connected it: the owner's, or an admin's acting for them.
    #[serde(default)]
    pub connected_by: Option<String>,
    /// Client address that connected it.
    #[serde(default)]
    pub connected_from: Option<String>,
}

impl From<SessionRow> for SessionView {
    fn from(r: SessionRow) -> Self {
        Self {
            status: r.status,
            id: r.id,
            token_id: r.token_id,
            target_id: r.target_id,
            target_name: r.target_name,
            host: r.host,
            port: u16::try_from(r.port).unwrap_or(0),
            replica: r.replica,
            created_at: r.created_at,
            started_at: r.started_at,
            ended_at: r.ended_at,
            bytes_up: u64::try_from(r.bytes_up).unwrap_or(0),
            bytes_down: u64::try_from(r.bytes_down).unwrap_or(0),
            end_reason: r.end_reason,
            requested_from: r.requested_from,
            connected_by: r.connected_by,
            connected_from: r.connected_from,
        }
    }
}

/// Body of `POST /v1/targets`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTarget {
    /// Unique name: 1–63 letters, digits, `.`, `-` or `_`.
    pub name: String,
    /// Host the gateway dials.
    pub host: String,
    /// Port the gateway dials (1–65535).
    pub port: u16,
    /// Sessions need an approver's decision first.
    #[serde(default)]
    pub require_approval: bool,
    /// The region whose remote gateways relay it (`wgctl targets add … --region R`); absent:
    /// the control plane's replicas relay it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Terminated SSH: the login on the target (the certificate's principal). Set, the target
    /// is reached with `ssh -p 2222 USER:NAME@gateway` / `wgctl ssh NAME`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_user: Option<String>,
    /// Terminated SSH: record terminal input too (off by default: input holds passwords typed
    /// at prompts that do not echo).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ssh_record_input: bool,
    /// Terminated SSH: the target's host key (`ssh-ed25519 AAAA…`), pinned now instead of on
    /// first use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_host_key: Option<String>,
    /// Terminated SSH: bind each session's certificate to the address the target sees the
    /// gateway come from (OpenSSH `source-address`): `dial` (the address the replica dials
    /// from) or a comma-separated list of addresses and CIDR blocks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_source_address: Option<String>,
    /// Terminated SSH: the destinations users may open port forwards (`direct-tcpip`: `ssh -L`,
    /// `ssh -W`) to, as the target sees them: comma-separated `HOST:PORT` rules, `*` for any
    /// host or port (`localhost:5432,db.internal:*`). Absent: forwarding is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_forward_to: Option<String>,
}

/// Body of `POST /v1/ssh/certificates`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SshCertificateRequest {
    /// The public key to certify, one OpenSSH line (`ssh-ed25519 AAAA…`).
    pub public_key: String,
}

/// A short-lived SSH login certificate for the terminating SSH front end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SshCertificate {
    /// The certificate, one OpenSSH line (`ssh-ed25519-cert-v01@openssh.com AAAA…`).
    pub certificate: String,
    /// The `USER` of `USER:TARGET` logins this certificate is valid for.
    pub user: String,
    /// The gateway's SSH host key, for `known_hosts`.
    pub host_key: String,
    /// The port the SSH front end listens on.
    pub ssh_port: u16,
    /// Unix seconds after which the certificate no longer logs in.
    pub valid_before: u64,
}

/// A target people connect to, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TargetView {
    /// Stable id.
    pub id: String,
    /// Unique name used by `wgctl connect NAME`.
    pub name: String,
    /// Host the gateway dials.
    pub host: String,
    /// Port the gateway dials.
    pub port: u16,
    /// Sessions need an approver's decision first.
    pub require_approval: bool,
    /// Unix ms.
    pub created_at: i64,
    /// The region whose remote gateways relay it (absent: the control plane's replicas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Terminated SSH: the login on the target, when it is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_user: Option<String>,
}

impl From<TargetRow> for TargetView {
    fn from(r: TargetRow) -> Self {
        Self {
            id: r.id,
            name: r.name,
            host: r.host,
            port: u16::try_from(r.port).unwrap_or(0),
            require_approval: r.require_approval != 0,
            region: r.region,
            created_at: r.created_at,
            ssh_user: None,
        }
    }
}

/// Body of `POST /v1/tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// What the token may do.
    pub role: Role,
    /// Label (default `<role>-token`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Seconds until the token stops working (60 to 31,622,400, i.e. 366 days); absent: it
    /// never expires (revoke it with `DELETE /v1/tokens/{id}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
}

/// Response of `POST /v1/tokens`: the only time the secret is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CreatedToken {
    /// Token id.
    pub id: String,
    /// Label.
    pub name: String,
    /// Role.
    pub role: Role,
    /// The secret bearer token.
    pub token: String,
    /// Unix ms after which it is refused, if it expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}

/// Whether a token works now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TokenState {
    /// Accepted.
    Active,
    /// Past its `expires_at`.
    Expired,
    /// Revoked by an admin (or a rotated bootstrap token).
    Revoked,
}

/// A token as `GET /v1/tokens` lists it: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenView {
    /// Token id (what `DELETE /v1/tokens/{id}` takes; bootstrap tokens start `bootstrap-`).
    pub id: String,
    /// Label.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Whether it works now.
    pub state: TokenState,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms after which it is refused, if it expires.
    pub expires_at: Option<i64>,
    /// Unix ms when it was revoked.
    pub revoked_at: Option<i64>,
    /// Unix ms of its last use, to the minute (per replica; absent when never used).
    pub last_used_at: Option<i64>,
}

impl TokenView {
    /// The view of a stored token at `now_ms`; `None` for a row with an unknown role.
    pub fn from_row(r: crate::store::TokenInfo, now_ms: i64) -> Option<Self> {
        let state = if r.revoked_at.is_some() {
            TokenState::Revoked
        } else if r.expires_at.is_some_and(|e| e <= now_ms) {
            TokenState::Expired
        } else {
            TokenState::Active
        };
        Some(Self {
            role: Role::parse(&r.role)?,
            id: r.id,
            name: r.name,
            state,
            created_at: r.created_at,
            expires_at: r.expires_at,
            revoked_at: r.revoked_at,
            last_used_at: r.last_used_at,
        })
    }
}

/// Optional body of `POST /v1/approvals/{id}/approve` and `…/deny`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    /// Why (kept in the audit log; shown to the requester on a denial).
    #[serde(default)]
    pub reason: String,
}

/// Response of approve/deny.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DecisionResult {
    /// The session after the decision.
    pub session: SessionView,
    /// `approved` or `denied`.
    pub decision: Decision,
}

/// Response of `GET /v1/system/status`: what the operator and `wgctl system status` read from
/// each replica.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct SystemStatus {
    /// Replica id.
    pub replica: String,
    /// Served role (`all`, `control-plane`, `gateway`).
    pub role: String,
    /// True once a drain started.
    pub draining: bool,
    /// Relays this replica carries.
    pub owned_sessions: i64,
    /// Server version.
    pub version: String,
    /// Seconds left in the drain's eviction window, while draining.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_remaining_seconds: Option<f64>,
    /// Whether Postgres and Redis pass this replica's readiness checks (as `/readyz` computes
    /// them); absent from the local admin socket, which does not run the checker's view.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dependencies: Option<Dependencies>,
}

/// The dependency verdicts of `GET /v1/system/status`: the operator stops a rollout when most
/// serving replicas report one of them failing.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct Dependencies {
    /// Postgres passes (failing no longer than the isolation grace).
    pub postgres: bool,
    /// Redis passes (failing no longer than the isolation grace).
    pub redis: bool,
}

/// One event of `GET /v1/events` (the `data` of a server-sent event; its `id` and `event`
/// fields repeat `id` and `kind`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Event {
    /// Increasing id: send it back as `Last-Event-ID` to resume.
    pub id: i64,
    /// Unix ms.
    pub at: i64,
    /// `approval.requested`, `approval.approved`, `approval.denied`, `session.started`,
    /// `session.ended`, `session.terminated`.
    pub kind: String,
    /// What it is about (a session id).
    pub subject: String,
    /// Details: a JSON object encoded as a string.
    pub detail: String,
}

impl From<EventRow> for Event {
    fn from(e: EventRow) -> Self {
        Self {
            id: e.id,
            at: e.at,
            kind: e.kind,
            subject: e.subject,
            detail: e.detail,
        }
    }
}

/// The result of verifying a recording (`GET /v1/recordings/{id}/verify`, or
/// `wgctl recordings verify --offline`): 200 whether or not it verified; `ok` says which.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Verification {
    /// Session id.
    pub session: String,
    /// Whether the manifest is signed and the signature, the chain and every object check out.
    pub ok: bool,
    /// Key id that signed the manifest, when the signature is valid.
    pub key_id: Option<String>,
    /// How the manifest is signed, when its signature is valid: `ed25519`, or `legacy-hmac`
    /// (a manifest from before Ed25519 signing, accepted only when its hash is the one
    /// Postgres recorded).
    #[serde(default)]
    pub signature: Option<String>,
    /// Whether the recording is complete (its `end.json` was written by the relaying replica).
    pub complete: bool,
    /// Chunks in the hash chain (1..N, N from `end.json` once the session ended).
    #[serde(default)]
    pub chunks: u64,
    /// Whether the chain's seals (HMACs under the internal key) were checked: false offline.
    #[serde(default)]
    pub seals_checked: bool,
    /// Objects checked.
    pub objects: usize,
    /// Bytes checked.
    pub bytes: u64,
    /// What failed, each naming the object key concerned.
    #[serde(default)]
    pub findings: Vec<Finding>,
    /// The same findings in plain words, one line each.
    pub problems: Vec<String>,
}

impl Verification {
    /// An empty report for `session`, to be filled by the checks.
    pub fn new(session: &str) -> Self {
        Self {
            session: session.to_string(),
            ok: false,
            key_id: None,
            signature: None,
            complete: false,
            chunks: 0,
            seals_checked: false,
            objects: 0,
            bytes: 0,
            findings: Vec::new(),
            problems: Vec::new(),
        }
    }

    /// Whether the only finding is that the recording is not signed yet (a live or just-ended
    /// session whose chain checks out so far).
    pub fn intact_but_unsigned(&self) -> bool {
        matches!(self.findings.as_slice(), [Finding::NotSignedYet { .. }])
    }
}

/// One thing wrong with a recording, naming the object key (relative to the session's prefix)
/// concerned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "finding", rename_all = "snake_case")]
pub enum Finding {
    /// An object below the session's prefix in a sub-folder (`ID/a/meta.json`): recordings are
    /// flat, so it can only be a shadow copy.
    NestedKey {
        /// Key.
        key: String,
    },
    /// An object whose name is not part of the recording layout.
    UnexpectedObject {
        /// Key.
        key: String,
    },
    /// The same key twice (in a listing or in the manifest).
    DuplicateKey {
        /// Key.
        key: String,
    },
    /// An object the chain or the manifest needs is not there.
    Missing {
        /// Key.
        key: String,
    },
    /// An object that does not parse as what it should be.
    Malformed {
        /// Key.
        key: String,
        /// Why.
        reason: String,
    },
    /// An object whose bytes differ from what the signed manifest lists.
    Altered {
        /// Key.
        key: String,
        /// SHA-256 in the manifest.
        signed_sha256: String,
        /// SHA-256 of the stored bytes.
        actual_sha256: String,
        /// Size in the manifest.
        signed_size: u64,
        /// Size of the stored bytes.
        actual_size: u64,
    },
    /// A chunk's bytes do not match the hash and size in its sealed index.
    IndexMismatch {
        /// Key of the chunk's bytes.
        key: String,
    },
    /// A chunk index carries another sequence number than its name.
    OutOfSequence {
        /// Key.
        key: String,
        /// The number its name says.
        expected_seq: u64,
    },
    /// A chunk numbered after the last one `end.json` counts.
    BeyondEnd {
        /// Key.
        key: String,
        /// Chunks according to `end.json`.
        chunks: u64,
    },
    /// `prev` is not the hash of the previous link: a link was altered, removed, reordered or
    /// inserted.
    ChainBroken {
        /// Key of the link whose `prev` does not match.
        key: String,
    },
    /// A link's seal (HMAC under the internal key) is missing or wrong: it was not written by a
    /// replica.
    SealInvalid {
        /// Key.
        key: String,
        /// Why.
        reason: String,
    },
    /// No manifest yet: the session is live or its manifest is still to be signed.
    NotSignedYet {
        /// Key of the manifest.
        key: String,
    },
    /// No manifest, but Postgres says it was signed: it was deleted.
    ManifestDeleted {
        /// Key of the manifest.
        key: String,
    },
    /// A manifest exists but Postgres recorded none: it was placed by someone else.
    ManifestNotRecorded {
        /// Key of the manifest.
        key: String,
    },
    /// The manifest's SHA-256 is not the one Postgres recorded when it was signed.
    ManifestHashMismatch {
        /// Key of the manifest.
        key: String,
        /// SHA-256 Postgres holds.
        recorded: String,
        /// SHA-256 of the stored manifest.
        actual: String,
    },
    /// The manifest's signature does not verify.
    SignatureInvalid {
        /// Key of the manifest.
        key: String,
        /// Why.
        reason: String,
    },
    /// The manifest is signed with a key id none of the trusted public keys has.
    UnknownKey {
        /// Key of the manifest.
        key: String,
        /// The key id it names.
        kid: String,
    },
    /// A legacy HMAC manifest where its MAC cannot be checked (offline: no shared key).
    LegacyHmacUnverifiable {
        /// Key of the manifest.
        key: String,
    },
    /// An object of the recording that the signed manifest does not list.
    NotInManifest {
        /// Key.
        key: String,
    },
    /// A document that names another session.
    WrongSession {
        /// Key.
        key: String,
        /// The session it names.
        found: String,
    },
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NestedKey { key } => write!(
                f,
                "{key}: unexpected object in a sub-folder (recordings are flat; a shadow copy?)"
            ),
            Self::UnexpectedObject { key } => {
                write!(f, "{key}: unexpected object (not part of a recording)")
            }
            Self::DuplicateKey { key } => write!(f, "{key}: listed twice"),
            Self::Missing { key } => write!(f, "{key}: missing"),
            Self::Malformed { key, reason } => write!(f, "{key}: malformed ({reason})"),
            Self::Altered {
                key,
                signed_sha256,
                actual_sha256,
                signed_size,
                actual_size,
            } => write!(
                f,
                "{key}: altered (sha256 {actual_sha256} size {actual_size}, signed \
                 {signed_sha256} size {signed_size})"
            ),
            Self::IndexMismatch { key } => write!(
                f,
                "{key}: altered (its bytes do not match the hash in its sealed index)"
            ),
            Self::OutOfSequence { key, expected_seq } => write!(
                f,
                "{key}: carries another sequence number than {expected_seq} (reordered?)"
            ),
            Self::BeyondEnd { key, chunks } => write!(
                f,
                "{key}: chunk after the last one (end.json counts {chunks}); added later"
            ),
            Self::ChainBroken { key } => write!(
                f,
                "{key}: hash chain broken (a chunk before it was altered, removed, reordered \
                 or inserted)"
            ),
            Self::SealInvalid { key, reason } => {
                write!(
                    f,
                    "{key}: seal invalid ({reason}); not written by a replica"
                )
            }
            Self::NotSignedYet { key } => write!(
                f,
                "{key}: not signed yet (the session is live or its manifest is pending)"
            ),
            Self::ManifestDeleted { key } => write!(
                f,
                "{key}: deleted (Postgres says this recording was signed): tampered"
            ),
            Self::ManifestNotRecorded { key } => write!(
                f,
                "{key}: present, but Postgres recorded no signature for this recording: placed \
                 by someone else"
            ),
            Self::ManifestHashMismatch {
                key,
                recorded,
                actual,
            } => write!(
                f,
                "{key}: replaced (sha256 {actual}, Postgres recorded {recorded})"
            ),
            Self::SignatureInvalid { key, reason } => {
                write!(f, "{key}: signature invalid ({reason})")
            }
            Self::UnknownKey { key, kid } => write!(
                f,
                "{key}: signed with key `{kid}`, which is not a trusted recording key"
            ),
            Self::LegacyHmacUnverifiable { key } => write!(
                f,
                "{key}: legacy HMAC manifest; it can only be checked by the server (against \
                 the hash Postgres recorded)"
            ),
            Self::NotInManifest { key } => write!(f, "{key}: not in the signed manifest"),
            Self::WrongSession { key, found } => {
                write!(f, "{key}: belongs to session {found}")
            }
        }
    }
}

/// One trusted recording-manifest key (`GET /v1/recordings/public-keys`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RecordingKey {
    /// Key id, as named in manifests.
    pub kid: String,
    /// Always `ed25519`.
    pub algorithm: String,
    /// The 32-byte public key, standard base64.
    pub public_key: String,
    /// Whether this replica signs with it (false: a retired key kept for verification).
    pub signing: bool,
}

/// Body of `GET /v1/recordings/public-keys`: the keys manifests may be signed with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RecordingKeys {
    /// Trusted keys, the signing one first.
    pub keys: Vec<RecordingKey>,
}

/// Body of `GET /v1/recordings/{id}/objects`: every object key below the session's prefix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RecordingObjects {
    /// Session id.
    pub session: String,
    /// Keys relative to the session's prefix, sorted (nested ones included, so a download
    /// shows what verify would flag).
    pub keys: Vec<String>,
}

/// State named by `GET /healthz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LiveState {
    /// Serving (200).
    Ok,
    /// Cut off from Postgres while peers reach it (503): restart me.
    Isolated,
    /// Still starting (200): waiting for `waiting_for`.
    Starting,
    /// A state this client does not know (a newer server).
    #[serde(other)]
    Unknown,
}

/// Body of `GET /healthz` (liveness).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Healthz {
    /// Liveness state.
    pub status: LiveState,
    /// Why the replica is isolated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What a starting replica waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
}

/// One readiness check of `GET /readyz`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Check {
    /// Whether this check passes.
    pub ok: bool,
    /// How long it has been failing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_for_ms: Option<u64>,
    /// How long it may fail before the replica reports not ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_ms: Option<u64>,
    /// The last Postgres round trip, while it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roundtrip_ms: Option<f64>,
    /// The last error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The checks behind `GET /readyz`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReadinessChecks {
    /// Postgres round trips.
    pub postgres: Check,
    /// Redis.
    pub redis: Check,
    /// Isolation (see `/healthz`).
    pub isolation: Check,
    /// The drain bit.
    pub drain: Check,
}

/// Body of `GET /readyz` (200 ready, 503 not).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Readyz {
    /// Whether the replica takes new work.
    pub ready: bool,
    /// Replica id (once started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
    /// What a starting replica waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starting: Option<String>,
    /// Each check (once started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks: Option<ReadinessChecks>,
}

/// One text message of `GET /v1/sessions/{id}/watch` (WebSocket): the live asciicast v2 stream
/// of a terminated SSH session, as the replica carrying it publishes it. The first message is
/// `header`; then `events` as they happen (and `gap` where events were dropped); the last is
/// `end`, after which the server closes the socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WatchMessage {
    /// The cast's header line (an asciicast v2 header object, as JSON text), with the
    /// terminal's current size.
    Header {
        /// The header line.
        line: String,
    },
    /// Cast event lines (`[seconds, code, data]` as JSON text), in order.
    Events {
        /// The lines.
        lines: Vec<String>,
    },
    /// Events were lost here (the publishing replica's queue was full, or this watcher fell
    /// behind the bounded live stream).
    Gap {
        /// How many events were lost, when known (0: unknown).
        dropped: u64,
    },
    /// The session ended, or watching ended (the last message).
    End {
        /// Why the session ended (`None` when watching ended but the session did not, e.g.
        /// a watcher too slow to keep up).
        reason: Option<EndReason>,
        /// What to tell the watcher (e.g. `session terminated by an operator: alice`).
        message: String,
    },
}

/// The JSON body of every API error.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct ErrorBody {
    /// Stable machine-readable identifier.
    pub code: ErrorCode,
    /// Human explanation.
    pub message: String,
}

/// Declares [`ErrorCode`] with its wire text once, so parsing, printing and the OpenAPI
/// description cannot disagree.
macro_rules! error_codes {
    (
        server { $( $(#[doc = $doc:literal])* $variant:ident = $text:literal, )* }
        client { $( $(#[doc = $cdoc:literal])* $cvariant:ident = $ctext:literal, )* }
    ) => {
        /// Stable machine-readable error code of an [`ErrorBody`]. Scripts and `wgctl` branch
        /// on it; a code from a newer server this build does not know is kept as
        /// [`ErrorCode::Other`], never a deserialisation failure.
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $( $(#[doc = $doc])* $variant, )*
            $( $(#[doc = $cdoc])* $cvariant, )*
            /// A code this build does not know (a newer server), as sent.
            Other(String),
        }

        impl ErrorCode {
            /// Every code the server sends.
            pub const SERVER: &'static [ErrorCode] = &[$( ErrorCode::$variant, )*];

            /// The wire text.
            pub fn as_str(&self) -> &str {
                match self {
                    $( ErrorCode::$variant => $text, )*
                    $( ErrorCode::$cvariant => $ctext, )*
                    ErrorCode::Other(s) => s,
                }
            }

            /// Parses wire text; unknown text becomes [`ErrorCode::Other`].
            pub fn parse(s: &str) -> Self {
                match s {
                    $( $text => ErrorCode::$variant, )*
                    $( $ctext => ErrorCode::$cvariant, )*
                    other => ErrorCode::Other(other.to_string()),
                }
            }
        }
    };
}

error_codes! {
    server {
        /// 400: the body is not the JSON the endpoint takes.
        InvalidBody = "invalid_body",
        /// 400: a target name outside 1–63 letters, digits, `.`, `-`, `_`.
        InvalidName = "invalid_name",
        /// 400: a target host that is empty or has spaces.
        InvalidHost = "invalid_host",
        /// 400: a target port of 0.
        InvalidPort = "invalid_port",
        /// 400: a drain timeout that is not a duration.
        InvalidTimeout = "invalid_timeout",
        /// 401: no, a malformed or an unknown token.
        Unauthorized = "unauthorized",
        /// 401: the token is past its expiry; ask an admin for a new one.
        TokenExpired = "token_expired",
        /// 401: the token was revoked (or was a rotated-out bootstrap token).
        TokenRevoked = "token_revoked",
        /// 401: the console session cookie is unknown, expired or signed out; sign in again.
        ConsoleSignedOut = "console_signed_out",
        /// 403: a console request without its CSRF header, or from another origin.
        CsrfRefused = "csrf_refused",
        /// 400: a token TTL outside the allowed range.
        InvalidTtl = "invalid_ttl",
        /// 404: no such token.
        TokenNotFound = "token_not_found",
        /// 429: too many failed authentications from this address; wait `Retry-After`.
        TooManyFailedAuth = "too_many_failed_auth",
        /// 429: too many requests from this address; wait `Retry-After`.
        TooManyRequests = "too_many_requests",
        /// 429: this token opens sessions faster than allowed; wait `Retry-After`.
        SessionRateLimited = "session_rate_limited",
        /// 429: this token holds as many sessions as allowed; end one first.
        TooManySessions = "too_many_sessions",
        /// 503: this replica carries as many relays as allowed; retry through the load
        /// balancer (a server condition, not the client's rate: 503 like `draining`).
        ReplicaAtCapacity = "replica_at_capacity",
        /// 503: the target changed while the session started (nothing was written); retry.
        TargetChanged = "target_changed",
        /// 403: the token's role does not allow this.
        Forbidden = "forbidden",
        /// 403: an approver tried to decide their own request.
        SelfApproval = "self_approval",
        /// 403: the live session state failed its signature or belongs to another session.
        InvalidSessionState = "invalid_session_state",
        /// 403: the session was authorised for another token.
        NotYourSession = "not_your_session",
        /// 404: no such endpoint.
        NotFound = "not_found",
        /// 404: no such session (or not visible to this token).
        SessionNotFound = "session_not_found",
        /// 404: no such target.
        TargetNotFound = "target_not_found",
        /// 404: this server does not record sessions.
        RecordingsDisabled = "recordings_disabled",
        /// 404: this server does not terminate SSH (its three SSH key files are not given).
        SshNotConfigured = "ssh_not_configured",
        /// 409: a unique name is taken.
        AlreadyExists = "already_exists",
        /// 409: a target with that name exists.
        TargetExists = "target_exists",
        /// 409: another approver decided first.
        AlreadyDecided = "already_decided",
        /// 409: the request waited too long for a decision and expired.
        ApprovalExpired = "approval_expired",
        /// 409: the session is not waiting for a decision.
        NotPending = "not_pending",
        /// 409: the session still waits for an approver.
        ApprovalPending = "approval_pending",
        /// 409: the target needs an approver; authorise with `POST /v1/sessions` first.
        ApprovalRequired = "approval_required",
        /// 409: the session is already connected (or ended).
        SessionInUse = "session_in_use",
        /// 410: the authorisation expired or ended; authorise again.
        SessionExpired = "session_expired",
        /// 410: an operator terminated the session.
        SessionTerminated = "session_terminated",
        /// 409: the session cannot be watched: it is not live, or it is not a terminated SSH
        /// session (a byte relay carries opaque bytes, not a terminal).
        SessionNotWatchable = "session_not_watchable",
        /// 503: the request took longer than the server's request timeout; retry.
        RequestTimeout = "request_timeout",
        /// 502: the gateway cannot reach the target.
        TargetUnreachable = "target_unreachable",
        /// 403: the target points at an address targets may not use (cloud metadata,
        /// link-local, the gateway's own Postgres, Redis or listeners); see `--target-allow`.
        TargetNotAllowed = "target_not_allowed",
        /// 500: a server fault; see its logs.
        Internal = "internal",
        /// 503: Postgres is unavailable; retry.
        DatabaseUnavailable = "database_unavailable",
        /// 503: Redis (live session state) is unavailable; retry.
        SessionStateUnavailable = "session_state_unavailable",
        /// 503: this replica is draining; retry through the load balancer.
        Draining = "draining",
        /// 503: this replica is isolated; retry through the load balancer.
        ReplicaIsolated = "replica_isolated",
        /// 503: this replica is starting; retry.
        Starting = "starting",
        /// 503: recording storage cannot be read.
        RecordingsUnavailable = "recordings_unavailable",
        /// 503: recording is on and the session cannot be recorded.
        RecordingUnavailable = "recording_unavailable",
        /// 409: the target is relayed by its region's remote gateways; authorise with
        /// `POST /v1/sessions` and connect to the gateway it names.
        RegionalTarget = "regional_target",
        /// 503: no remote gateway of the target's region is connected; retry.
        NoRegionalGateway = "no_regional_gateway",
        /// 503: this remote gateway lost its control-plane link and accepts no new sessions
        /// (revocation could not reach it); retry.
        GatewayOffline = "gateway_offline",
        /// 403: the grant presented to a remote gateway is missing, forged, expired, for another
        /// gateway or session, used before, or revoked.
        InvalidGrant = "invalid_grant",
    }
    client {
        /// Set by the client: an error answer without a JSON error body (a proxy's page).
        HttpError = "http_error",
        /// Set by `wgctl`: an approver denied the request.
        SessionDenied = "session_denied",
        /// Set by `wgctl`: a recording did not verify.
        RecordingInvalid = "recording_invalid",
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Cow::<'de, str>::deserialize(d)?;
        Ok(ErrorCode::parse(&s))
    }
}

impl utoipa::PartialSchema for ErrorCode {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        // An open set: listed as examples, not as an `enum`, so a client generated from this
        // document accepts codes added later.
        let known: Vec<&str> = ErrorCode::SERVER.iter().map(ErrorCode::as_str).collect();
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(format!(
                "Stable machine-readable error code. Known codes: {}. Newer servers may add \
                 codes; treat an unknown one by its HTTP status.",
                known.join(", ")
            )))
            .examples(known.iter().map(|s| serde_json::Value::from(*s)))
            .into()
    }
}

impl ToSchema for ErrorCode {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("ErrorCode")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use serde_json::{Value, json};

    fn target_row(require_approval: i64) -> TargetRow {
        TargetRow {
            id: "t1".into(),
            name: "db1".into(),
            host: "10.0.0.5".into(),
            port: 5432,
            require_approval,
            created_at: 7,
            region: None,
        }
    }

    fn keys(v: &Value) -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    }

    #[test]
    fn target_view_shows_require_approval_as_a_bool() {
        for (stored, shown) in [(0, false), (1, true)] {
            let v = serde_json::to_value(TargetView::from(target_row(stored))).unwrap();
            assert_eq!(v["require_approval"], json!(shown), "stored {stored}: {v}");
            assert_eq!(v["port"], json!(5432));
        }
        let v = serde_json::to_value(TargetView::from(target_row(1))).unwrap();
        assert_eq!(
            keys(&v),
            [
                "created_at",
                "host",
                "id",
                "name",
                "port",
                "require_approval"
            ]
        );
        // And a client reads it back unchanged.
        let back: TargetView = serde_json::from_value(v).unwrap();
        assert!(back.require_approval);
    }

    fn session_row(status: &str) -> SessionRow {
        SessionRow {
            id: "s1".into(),
            token_id: "tok".into(),
            target_id: "t1".into(),
            target_name: "db1".into(),
            host: "h".into(),
            port: 22,
            status: crate::session::SessionStatus::from_text(status),
            replica: None,
            created_at: 1,
            started_at: Some(2),
            ended_at: None,
            bytes_up: 10,
            bytes_down: 20,
            end_reason: None,
            requested_from: Some("203.0.113.7:51234".into()),
            connected_by: Some("id-root".into()),
            connected_from: None,
        }
    }

    #[test]
    fn session_view_keeps_the_documented_shape_and_types_the_status() {
        let view = SessionView::from(session_row("terminating"));
        assert_eq!(view.status, SessionStatus::Terminating);
        assert_eq!((view.port, view.bytes_up, view.bytes_down), (22, 10, 20));
        let v = serde_json::to_value(&view).unwrap();
        assert_eq!(v["status"], "terminating");
        // Absent optionals stay explicit nulls, as the row's JSON had them.
        assert_eq!(v["replica"], Value::Null);
        assert_eq!(v["ended_at"], Value::Null);
        assert_eq!(
            keys(&v),
            [
                "bytes_down",
                "bytes_up",
                "connected_by",
                "connected_from",
                "created_at",
                "end_reason",
                "ended_at",
                "host",
                "id",
                "port",
                "replica",
                "requested_from",
                "started_at",
                "status",
                "target_id",
                "target_name",
                "token_id"
            ]
        );
        assert_eq!(v["requested_from"], "203.0.113.7:51234");
        assert_eq!(v["connected_by"], "id-root");
        // A status written by a newer version shows as `unknown` instead of failing.
        let later = serde_json::to_value(SessionView::from(session_row("parked"))).unwrap();
        assert_eq!(later["status"], "unknown");
    }

    #[test]
    fn error_codes_round_trip_and_unknown_codes_survive() {
        for code in ErrorCode::SERVER {
            let body = ErrorBody {
                code: code.clone(),
                message: "m".into(),
            };
            let text = serde_json::to_string(&body).unwrap();
            assert!(text.contains(&format!("\"{}\"", code.as_str())), "{text}");
            let back: ErrorBody = serde_json::from_str(&text).unwrap();
            assert_eq!(&back.code, code);
            assert!(!matches!(back.code, ErrorCode::Other(_)), "{text}");
        }
        let newer: ErrorBody =
            serde_json::from_str(r#"{"code":"quota_exceeded","message":"later"}"#).unwrap();
        assert_eq!(newer.code, ErrorCode::Other("quota_exceeded".into()));
        assert_eq!(
            serde_json::to_value(&newer).unwrap()["code"],
            "quota_exceeded"
        );
        assert_eq!(
            ErrorCode::parse("target_unreachable"),
            ErrorCode::TargetUnreachable
        );
        assert_eq!(ErrorCode::SessionDenied.to_string(), "session_denied");
    }

    #[test]
    fn error_code_texts_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for c in ErrorCode::SERVER {
            assert!(seen.insert(c.as_str()), "duplicate {}", c.as_str());
        }
        for c in ["http_error", "session_denied", "recording_invalid"] {
            assert!(!matches!(ErrorCode::parse(c), ErrorCode::Other(_)), "{c}");
            assert!(seen.insert(c), "client code {c} is also a server code");
        }
    }

    #[test]
    fn requests_refuse_unknown_fields() {
        assert!(serde_json::from_str::<NewSession>(r#"{"target":"a","x":1}"#).is_err());
        assert!(
            serde_json::from_str::<NewTarget>(r#"{"name":"a","host":"h","port":1,"x":1}"#).is_err()
        );
        let t: NewTarget = serde_json::from_str(r#"{"name":"a","host":"h","port":1}"#).unwrap();
        assert!(!t.require_approval);
    }

    #[test]
    fn health_documents_match_the_probes() {
        let h: Healthz = serde_json::from_str(r#"{"status":"isolated","reason":"r"}"#).unwrap();
        assert_eq!(h.status, LiveState::Isolated);
        let later: Healthz = serde_json::from_str(r#"{"status":"sleeping"}"#).unwrap();
        assert_eq!(later.status, LiveState::Unknown);
        let r = Readyz {
            ready: false,
            replica: None,
            starting: Some("redis".into()),
            checks: None,
        };
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            json!({"ready": false, "starting": "redis"})
        );
    }
}

/// `POST /v1/gateways/join-tokens`: a join token for gateways of `region`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NewJoinToken {
    /// Region the joining gateway must serve.
    pub region: String,
    /// Lifetime in seconds (one minute to 30 days).
    pub ttl_seconds: u64,
    /// How many gateways may join with it (1 to 1000): 1 for one gateway, more for a
    /// `GatewayPool` whose pods each join with the token in its Secret. Default: 1.
    #[serde(default = "one_use")]
    #[schema(default = 1, minimum = 1, maximum = 1000)]
    pub uses: u32,
}

fn one_use() -> u32 {
    1
}

/// The most joins one token may admit (a pool's scale-ups and rollouts before it is renewed).
pub const MAX_JOIN_TOKEN_USES: u32 = 1000;

/// A join token as created: the secret is shown only here, once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CreatedJoinToken {
    /// Token id (for the audit trail).
    pub id: String,
    /// Its region.
    pub region: String,
    /// The secret, for the gateway's `--join-token-file`.
    pub token: String,
    /// Unix ms after which it is refused.
    pub expires_at: i64,
    /// How many joins it admits.
    #[serde(default = "one_use")]
    pub uses: u32,
}

/// A remote gateway as `GET /v1/gateways` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GatewayView {
    /// Gateway id.
    pub id: String,
    /// Region it serves.
    pub region: String,
    /// Version it reported.
    pub version: String,
    /// Address it serves relays on.
    pub address: String,
    /// Live sessions it reported in its last heartbeat.
    pub sessions: i64,
    /// Unix ms of its last heartbeat.
    pub last_heartbeat_at: Option<i64>,
    /// Whether its link is up: held by a replica, with a heartbeat within
    /// [`GATEWAY_CONNECTED_WITHIN_MS`].
    pub connected: bool,
    /// The control-plane replica holding its link.
    pub linked_by: Option<String>,
    /// When its certificate expires (unix ms).
    pub cert_not_after: i64,
    /// Unix ms it was revoked.
    pub revoked_at: Option<i64>,
    /// Its sessions are over at most this long after its last heartbeat (its offline grace
    /// plus the time it takes to notice a lost link; 0: not reported). The control plane ends
    /// the sessions of a gateway silent for longer (plus `--replica-lost-after`) as
    /// `replica_lost`.
    #[serde(default)]
    pub lost_after_ms: i64,
}

/// A gateway whose last heartbeat is older than this counts as not connected, even if the
/// replica that held its link died without recording the end.
pub const GATEWAY_CONNECTED_WITHIN_MS: i64 = 10_000;

/// `POST /v1/gateways/{id}/commands`: a command for a gateway, delivered down its link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NewGatewayCommand {
    /// `drain` or `terminate`.
    pub kind: String,
    /// The session to terminate (`terminate` only).
    #[serde(default)]
    pub session_id: Option<String>,
    /// How long a drain lets owned sessions continue, in seconds (0: the gateway's default).
    #[serde(default)]
    pub timeout_seconds: u64,
}

/// A queued gateway command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct QueuedGatewayCommand {
    /// Command id.
    pub id: String,
    /// The gateway it is for.
    pub gateway_id: String,
    /// `drain` or `terminate`.
    pub kind: String,
}
