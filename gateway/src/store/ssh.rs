//! Terminating-SSH rows: a target's SSH settings (login, input recording) and its pinned host
//! key; and the token lookup that SSH logins check on every connection (so revoking a token
//! revokes its SSH certificates too).

use super::{Store, StoreError, TokenRow, now_ms};

/// A target's terminating-SSH settings.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SshTargetRow {
    /// The target's id.
    pub target_id: String,
    /// Login on the target (the certificate's principal).
    pub login: String,
    /// 1 when terminal input is recorded too.
    pub record_input: i64,
    /// The pinned host key (`ssh-ed25519 AAAA…`), once known.
    pub host_key: Option<String>,
    /// The certificates' `source-address` binding (`dial` or CIDR blocks), when set.
    pub source_address: Option<String>,
    /// Where `direct-tcpip` channels may go (a `ForwardPolicy` text); none when unset.
    pub forward_to: Option<String>,
}

/// A target's terminating-SSH settings, as set by `wgctl targets add … --ssh-user`.
#[derive(Debug, Clone, Copy)]
pub struct SshSettings<'a> {
    /// Login on the target.
    pub login: &'a str,
    /// Record terminal input too.
    pub record_input: bool,
    /// Pin this host key now.
    pub host_key: Option<&'a str>,
    /// Bind the certificates to this source address (validated `SourceAddress` text).
    pub source_address: Option<&'a str>,
    /// Allow `direct-tcpip` channels to these destinations (validated `ForwardPolicy` text).
    pub forward_to: Option<&'a str>,
}

impl Store {
    /// Marks target `target_id` as terminated SSH; a host key in `s` is pinned now.
    pub async fn set_ssh_target(
        &self,
        target_id: &str,
        s: SshSettings<'_>,
    ) -> Result<(), StoreError> {
        let pinned = s.host_key.map(|_| now_ms());
        self.run(async |c| {
            self.query(
                "INSERT INTO ssh_targets (target_id, login, record_input, host_key, \
                 host_key_pinned_at, source_address, forward_to) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (target_id) DO UPDATE SET login = $2, record_input = $3, \
                 host_key = $4, host_key_pinned_at = $5, source_address = $6, forward_to = $7",
            )
            .bind(target_id)
            .bind(s.login)
            .bind(i64::from(s.record_input))
            .bind(s.host_key)
            .bind(pinned)
            .bind(s.source_address)
            .bind(s.forward_to)
            .execute(&mut *c)
            .await
        })
        .await
        .map(|_| ())
    }

    /// A target's SSH settings, if it is terminated SSH.
    pub async fn ssh_target(&self, target_id: &str) -> Result<Option<SshTargetRow>, StoreError> {
        self.run(async |c| {
            self.query_as(
                "SELECT target_id, login, record_input, host_key, source_address, forward_to \
                 FROM ssh_targets \
                 WHERE target_id = $1",
            )
            .bind(target_id)
            .fetch_optional(&mut *c)
            .await
        })
        .await
    }

    /// Pins `host_key` for `target_id` if none is pinned yet; returns the key pinned after the
    /// call (the first writer wins when two replicas race).
    pub async fn pin_ssh_host_key(
        &self,
        target_id: &str,
        host_key: &str,
    ) -> Result<Option<String>, StoreError> {
        self.run(async |c| {
            self.query(
                "UPDATE ssh_targets SET host_key = $1, host_key_pinned_at = $2 \
                 WHERE target_id = $3 AND host_key IS NULL",
            )
            .bind(host_key)
            .bind(now_ms())
            .bind(target_id)
            .execute(&mut *c)
            .await
        })
        .await?;
        Ok(self.ssh_target(target_id).await?.and_then(|t| t.host_key))
    }

    /// A token by id, revoked and expired ones included (the caller decides).
    pub async fn token_by_id(&self, id: &str) -> Result<Option<TokenRow>, StoreError> {
        self.run(async |c| {
            self.query_as("SELECT id, name, role, expires_at, revoked_at FROM tokens WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *c)
                .await
        })
        .await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    #[tokio::test]
    async fn first_pin_wins_and_settings_round_trip() {
        let (_dir, store) = super::super::test_store().await;
        let t = store
            .create_target("db1", "127.0.0.1", 22, false)
            .await
            .unwrap();
        assert_eq!(store.ssh_target(&t.id).await.unwrap(), None);
        store
            .set_ssh_target(
                &t.id,
                super::SshSettings {
                    login: "deploy",
                    record_input: true,
                    host_key: None,
                    source_address: Some("dial"),
                    forward_to: Some("localhost:5432"),
                },
            )
            .await
            .unwrap();
        let row = store.ssh_target(&t.id).await.unwrap().unwrap();
        assert_eq!(
            (
                row.login.as_str(),
                row.record_input,
                row.host_key,
                row.source_address.as_deref(),
                row.forward_to.as_deref()
            ),
            ("deploy", 1, None, Some("dial"), Some("localhost:5432"))
        );
        let first = store
            .pin_ssh_host_key(&t.id, "ssh-ed25519 AAAA1")
            .await
            .unwrap();
        assert_eq!(first.as_deref(), Some("ssh-ed25519 AAAA1"));
        let second = store
            .pin_ssh_host_key(&t.id, "ssh-ed25519 BBBB2")
            .await
            .unwrap();
        assert_eq!(
            second.as_deref(),
            Some("ssh-ed25519 AAAA1"),
            "a later key never replaces the pin"
        );
    }
}
