//! The typed states of a session: where its durable record stands ([`SessionStatus`]), where its
//! live grant stands ([`GrantState`], in `grant.rs`), and why it ended ([`EndReason`]). Stored as
//! text (sqlx `Type`/`Encode`/`Decode` over the text column, for every backend), sent as
//! snake_case JSON, and compared only as enums.

use serde::{Deserialize, Serialize};

/// Implements text storage for a fieldless enum with `as_str` and `from_text`, for every sqlx
/// database whose text type is `String`/`&str` (the `Any` driver included).
macro_rules! stored_as_text {
    ($ty:ty) => {
        impl<DB: sqlx::Database> sqlx::Type<DB> for $ty
        where
            String: sqlx::Type<DB>,
        {
            fn type_info() -> DB::TypeInfo {
                <String as sqlx::Type<DB>>::type_info()
            }
            fn compatible(ty: &DB::TypeInfo) -> bool {
                <String as sqlx::Type<DB>>::compatible(ty)
            }
        }

        impl<'r, DB: sqlx::Database> sqlx::Decode<'r, DB> for $ty
        where
            String: sqlx::Decode<'r, DB>,
        {
            fn decode(
                value: <DB as sqlx::Database>::ValueRef<'r>,
            ) -> Result<Self, sqlx::error::BoxDynError> {
                let text = <String as sqlx::Decode<'r, DB>>::decode(value)?;
                Ok(<$ty>::from_text(&text))
            }
        }

        impl<'q, DB: sqlx::Database> sqlx::Encode<'q, DB> for $ty
        where
            String: sqlx::Encode<'q, DB>,
        {
            fn encode_by_ref(
                &self,
                buf: &mut <DB as sqlx::Database>::ArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <String as sqlx::Encode<'q, DB>>::encode(self.as_str().to_string(), buf)
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

/// Lifecycle of a session as recorded in Postgres (the durable truth; see the module table in
/// [`crate::session`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    /// Waiting for an approver.
    Pending,
    /// May be relayed once.
    Authorized,
    /// A relay carries it.
    Active,
    /// Terminated by an operator; the relay has not yet closed it.
    Terminating,
    /// Over; see its [`EndReason`].
    Ended,
    /// A value this version does not know (a newer version wrote it).
    #[serde(other)]
    Unknown,
}

impl SessionStatus {
    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Authorized => "authorized",
            Self::Active => "active",
            Self::Terminating => "terminating",
            Self::Ended => "ended",
            Self::Unknown => "unknown",
        }
    }

    /// Parses stored text; unknown text is [`SessionStatus::Unknown`], never an error, so a
    /// newer version's rows stay readable.
    pub fn from_text(text: &str) -> Self {
        match text {
            "pending" => Self::Pending,
            "authorized" => Self::Authorized,
            "active" => Self::Active,
            "terminating" => Self::Terminating,
            "ended" => Self::Ended,
            _ => Self::Unknown,
        }
    }

    /// True while a relay carries (or is closing) the session.
    pub fn is_live(self) -> bool {
        matches!(self, Self::Active | Self::Terminating)
    }
}

pub(crate) use stored_as_text;

stored_as_text!(SessionStatus);

/// Why a session ended: recorded in Postgres, counted in `wg_relays_ended_total{reason}`, sent in
/// `session.ended` events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The client closed its side.
    ClientClosed,
    /// The target closed its side (or could not be written to).
    TargetClosed,
    /// An operator terminated it.
    Terminated,
    /// An approver denied the request.
    Denied,
    /// Never used (or never decided) within its window.
    Expired,
    /// The relaying replica stopped heartbeating; the cleanup job ended it.
    ReplicaLost,
    /// The relaying replica was isolated from its dependencies.
    ReplicaIsolated,
    /// The live state vanished or changed under the relay (Redis lost it, or it stayed
    /// unreachable).
    SessionStateLost,
    /// The replica's drain window passed while it still carried the session.
    Drained,
    /// Recording is on and the session could not be recorded.
    RecordingUnavailable,
    /// The WebSocket upgrade failed after the session was claimed.
    UpgradeFailed,
    /// The target did not answer a session authorised and claimed in one request.
    TargetUnreachable,
    /// No data moved either way for `--relay-idle-timeout`.
    IdleTimeout,
    /// The client answered no ping (and took no data) for three ping intervals: its
    /// connection is gone or stuck.
    ClientUnresponsive,
    /// A value this version does not know (a newer version wrote it).
    #[serde(other)]
    Unknown,
}

impl EndReason {
    /// Every reason this version writes (for metrics pre-registration and tests).
    pub const ALL: [EndReason; 14] = [
        Self::ClientClosed,
        Self::TargetClosed,
        Self::Terminated,
        Self::Denied,
        Self::Expired,
        Self::ReplicaLost,
        Self::ReplicaIsolated,
        Self::SessionStateLost,
        Self::Drained,
        Self::RecordingUnavailable,
        Self::UpgradeFailed,
        Self::TargetUnreachable,
        Self::IdleTimeout,
        Self::ClientUnresponsive,
    ];

    /// The stored text (also the metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientClosed => "client_closed",
            Self::TargetClosed => "target_closed",
            Self::Terminated => "terminated",
            Self::Denied => "denied",
            Self::Expired => "expired",
            Self::ReplicaLost => "replica_lost",
            Self::ReplicaIsolated => "replica_isolated",
            Self::SessionStateLost => "session_state_lost",
            Self::Drained => "drained",
            Self::RecordingUnavailable => "recording_unavailable",
            Self::UpgradeFailed => "upgrade_failed",
            Self::TargetUnreachable => "target_unreachable",
            Self::IdleTimeout => "idle_timeout",
            Self::ClientUnresponsive => "client_unresponsive",
            Self::Unknown => "unknown",
        }
    }

    /// Parses stored text; unknown text is [`EndReason::Unknown`].
    pub fn from_text(text: &str) -> Self {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == text)
            .unwrap_or(Self::Unknown)
    }
}

stored_as_text!(EndReason);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_text_round_trips_and_matches_json() {
        for r in EndReason::ALL {
            assert_eq!(EndReason::from_text(r.as_str()), r);
            assert_eq!(
                serde_json::to_value(r).unwrap(),
                serde_json::Value::from(r.as_str())
            );
        }
        for s in [
            SessionStatus::Pending,
            SessionStatus::Authorized,
            SessionStatus::Active,
            SessionStatus::Terminating,
            SessionStatus::Ended,
        ] {
            assert_eq!(SessionStatus::from_text(s.as_str()), s);
            assert_eq!(
                serde_json::to_value(s).unwrap(),
                serde_json::Value::from(s.as_str())
            );
        }
    }

    #[test]
    fn text_from_a_newer_version_reads_as_unknown() {
        assert_eq!(SessionStatus::from_text("paused"), SessionStatus::Unknown);
        assert_eq!(EndReason::from_text("moon_phase"), EndReason::Unknown);
        let s: SessionStatus = serde_json::from_str("\"paused\"").unwrap();
        assert_eq!(s, SessionStatus::Unknown);
    }
}
