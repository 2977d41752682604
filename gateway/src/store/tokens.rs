//! Token rows: bootstrap, create, look up, list, revoke. Only hashes are stored; a revoked token
//! keeps its row (for the audit trail and so that it can never come back).

use super::{Store, StoreError, TokenRow, now_ms};
use crate::token::Role;

/// Id prefix of tokens created from `--admin-token-file`; API-created ids are 16 hex digits, so
/// the two never collide.
pub const BOOTSTRAP_ID_PREFIX: &str = "bootstrap-";

/// How stale `last_used_at` may get before a lookup refreshes it: the column is for humans
/// (`wgctl tokens list`), not worth a write per request.
const LAST_USED_GRANULARITY_MS: i64 = 60_000;

/// A token as `GET /v1/tokens` lists it: never its secret or hash.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct TokenInfo {
    /// Token id.
    pub id: String,
    /// Label.
    pub name: String,
    /// Stored role name.
    pub role: String,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms after which it is refused, if it expires.
    pub expires_at: Option<i64>,
    /// Unix ms when it was revoked.
    pub revoked_at: Option<i64>,
    /// Unix ms of its last use, to the minute.
    pub last_used_at: Option<i64>,
}

impl Store {
    /// Ensures the bootstrap admin token (from `--admin-token-file`) exists. Replicas starting
    /// together race here; `ON CONFLICT DO NOTHING` without a target covers both unique indexes
    /// (hash and id), whereas `ON CONFLICT (hash)` let the loser fail on the id index. A token
    /// revoked before stays revoked: a rotated-out secret never comes back.
    pub async fn ensure_admin_token(&self, token_hash: &str) -> Result<(), StoreError> {
        let id = format!("{BOOTSTRAP_ID_PREFIX}{}", &token_hash[..12]);
        self.run(async |c| {
            self.query(
                "INSERT INTO tokens (hash, id, name, role, created_at) VALUES ($1, $2, 'bootstrap-admin', 'admin', $3) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(token_hash)
            .bind(id)
            .bind(now_ms())
            .execute(&mut *c).await})
        .await
        .map(|_| ())
    }

    /// Revokes every bootstrap token created before the one hashed `current_hash`: rotating the
    /// admin token file kills the old secret at the next start. Only older ones, so a replica
    /// still holding the previous file (a rolling update) cannot revoke its successor's token.
    /// Returns how many it revoked.
    pub async fn revoke_older_bootstrap_tokens(
        &self,
        current_hash: &str,
    ) -> Result<u64, StoreError> {
        let r = self
            .run(async |c| {
                self.query(
                    "UPDATE tokens SET revoked_at = $1 \
                     WHERE id LIKE 'bootstrap-%' AND hash <> $2 AND revoked_at IS NULL \
                     AND created_at <= (SELECT created_at FROM tokens WHERE hash = $2)",
                )
                .bind(now_ms())
                .bind(current_hash)
                .execute(&mut *c)
                .await
            })
            .await?;
        Ok(r.rows_affected())
    }

    /// Stores a new token (by hash), expiring at `expires_at` (unix ms) when given, and returns
    /// its id.
    pub async fn create_token(
        &self,
        token_hash: &str,
        name: &str,
        role: Role,
        expires_at: Option<i64>,
    ) -> Result<String, StoreError> {
        let id = uuid::Uuid::new_v4().simple().to_string()[..16].to_string();
        self.run(async |c| {
            self.query(
                "INSERT INTO tokens (hash, id, name, role, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(token_hash)
            .bind(&id)
            .bind(name)
            .bind(role.as_str())
            .bind(now_ms())
            .bind(expires_at)
            .execute(&mut *c)
            .await
        })
        .await?;
        Ok(id)
    }

    /// Looks up a token by hash, revoked and expired ones included (the caller decides).
    pub async fn token_by_hash(&self, token_hash: &str) -> Result<Option<TokenRow>, StoreError> {
        self.run(async |c| {
            self.query_as(
                "SELECT id, name, role, expires_at, revoked_at FROM tokens WHERE hash = $1",
            )
            .bind(token_hash)
            .fetch_optional(&mut *c)
            .await
        })
        .await
    }

    /// Notes that the token hashed `token_hash` was used now, unless noted within the last
    /// minute.
    pub async fn touch_token(&self, token_hash: &str) -> Result<(), StoreError> {
        let now = now_ms();
        self.run(async |c| {
            self.query(
                "UPDATE tokens SET last_used_at = $1 WHERE hash = $2 \
                 AND (last_used_at IS NULL OR last_used_at < $3)",
            )
            .bind(now)
            .bind(token_hash)
            .bind(now - LAST_USED_GRANULARITY_MS)
            .execute(&mut *c)
            .await
        })
        .await
        .map(|_| ())
    }

    /// Every token, oldest first.
    pub async fn list_tokens(&self) -> Result<Vec<TokenInfo>, StoreError> {
        self.run(async |c| {
            self.query_as(
                "SELECT id, name, role, created_at, expires_at, revoked_at, last_used_at \
                 FROM tokens ORDER BY created_at, id",
            )
            .fetch_all(&mut *c)
            .await
        })
        .await
    }

    /// Revokes token `id` (a no-op when it is revoked already) and returns it after the change,
    /// or `None` when there is no such token.
    pub async fn revoke_token(&self, id: &str) -> Result<Option<TokenInfo>, StoreError> {
        self.run(async |c| {
            self.query("UPDATE tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(now_ms())
                .bind(id)
                .execute(&mut *c)
                .await?;
            self.query_as(
                "SELECT id, name, role, created_at, expires_at, revoked_at, last_used_at \
                 FROM tokens WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(&mut *c)
            .await
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use super::*;
    use crate::token::hash;

    use super::super::test_store as store;

    #[tokio::test]
    async fn rotating_the_bootstrap_token_revokes_only_older_ones() {
        let (_dir, s) = store().await;
        s.ensure_admin_token(&hash("old-bootstrap-aaaaaaaaaaaa"))
            .await
            .unwrap();
        let user = s
            .create_token(&hash("user"), "u", Role::User, None)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        s.ensure_admin_token(&hash("new-bootstrap-bbbbbbbbbbbb"))
            .await
            .unwrap();
        assert_eq!(
            s.revoke_older_bootstrap_tokens(&hash("new-bootstrap-bbbbbbbbbbbb"))
                .await
                .unwrap(),
            1
        );
        // A replica still holding the old file revokes nothing newer, and its token stays
        // revoked when it ensures it again.
        s.ensure_admin_token(&hash("old-bootstrap-aaaaaaaaaaaa"))
            .await
            .unwrap();
        assert_eq!(
            s.revoke_older_bootstrap_tokens(&hash("old-bootstrap-aaaaaaaaaaaa"))
                .await
                .unwrap(),
            0
        );
        let row = |h: &'static str| {
            let s = s.clone();
            async move { s.token_by_hash(&hash(h)).await.unwrap().unwrap() }
        };
        assert!(row("old-bootstrap-aaaaaaaaaaaa").await.revoked_at.is_some());
        assert!(row("new-bootstrap-bbbbbbbbbbbb").await.revoked_at.is_none());
        assert!(
            row("user").await.revoked_at.is_none(),
            "not a bootstrap token"
        );
        assert_eq!(row("user").await.id, user);
    }

    #[tokio::test]
    async fn revoke_and_list() {
        let (_dir, s) = store().await;
        let id = s
            .create_token(&hash("t"), "ci", Role::Approver, Some(now_ms() + 60_000))
            .await
            .unwrap();
        s.touch_token(&hash("t")).await.unwrap();
        let listed = s.list_tokens().await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].id, id);
        assert!(listed[0].expires_at.is_some() && listed[0].last_used_at.is_some());
        let revoked = s.revoke_token(&id).await.unwrap().unwrap();
        assert!(revoked.revoked_at.is_some());
        // Idempotent: the first revocation time stays.
        let again = s.revoke_token(&id).await.unwrap().unwrap();
        assert_eq!(again.revoked_at, revoked.revoked_at);
        assert!(s.revoke_token("nope").await.unwrap().is_none());
    }
}
