//! Durable state: targets, tokens, sessions and their history, audit events.
//!
//! One implementation over sqlx's `Any` driver serves Postgres (production; the serialisation
//! point of the fleet) and SQLite (`wardengate dev`). Every Postgres connection gets
//! `statement_timeout`; every call is also bounded on the client side, because a commit waiting
//! for a synchronous standby is not bounded by `statement_timeout`.

#[macro_use]
mod rows;
mod gateways;
mod outbox;
mod recordings;
mod ssh;
mod tokens;

/// A migrated SQLite store in a temporary directory, for the store's unit tests (the directory
/// lives as long as the returned guard).
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) async fn test_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(
        &format!("sqlite://{}?mode=rwc", dir.path().join("db").display()),
        std::time::Duration::from_secs(5),
    )
    .unwrap();
    store.migrate().await.unwrap();
    (dir, store)
}

use std::future::Future;
use std::time::{Duration, Instant};

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Executor};

pub use gateways::{GatewayCommand, GatewayRow, JoinRefusal};
pub use outbox::{ApprovalRow, Decided, Decision, EventRow, OUTBOX_LOCK};
pub use recordings::UnsignedRecording;
pub use rows::{SessionRow, TargetRow, TokenRow};
pub use ssh::{SshSettings, SshTargetRow};
pub use tokens::{BOOTSTRAP_ID_PREFIX, TokenInfo};

use crate::session::EndReason;

/// Failures of the store a caller can act on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database did not answer in time or the connection failed: retry later.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A unique constraint was hit (for example a target name that exists).
    #[error("already exists: {0}")]
    Conflict(String),
    /// Any other database error.
    #[error("database error: {0}")]
    Database(String),
    /// Migrations failed.
    #[error("running migrations: {0}")]
    Migrate(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            // A connection cut mid-handshake (e.g. a load balancer with no primary to route to
            // closes it) surfaces as a protocol error: a transport failure, retry later.
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(e.to_string()),
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                StoreError::Conflict(db.message().to_string())
            }
            // 57014 query_canceled (statement_timeout), 57P01 admin_shutdown, 57P03 cannot_connect_now,
            // 25006 read_only_sql_transaction (talking to a demoted primary), 08xxx connection errors.
            sqlx::Error::Database(db)
                if db.code().is_some_and(|c| {
                    matches!(c.as_ref(), "57014" | "57P01" | "57P02" | "57P03" | "25006")
                        || c.starts_with("08")
                }) =>
            {
                StoreError::Unavailable(db.message().to_string())
            }
            _ => StoreError::Database(e.to_string()),
        }
    }
}

/// Which database is behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// PostgreSQL.
    Postgres,
    /// Embedded SQLite (`wardengate dev`).
    Sqlite,
}

/// How the gateway's connections reach Postgres.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum PoolMode {
    /// Directly, or through a pooler in session mode: settings and prepared statements live as
    /// long as a connection.
    #[default]
    Session,
    /// Through a pooler in transaction mode (PgBouncer `pool_mode = transaction`, pgcat, RDS
    /// Proxy): a server connection is ours only inside a transaction. Every call then runs in a
    /// transaction that sets `statement_timeout` locally, with unnamed statements only.
    Transaction,
}

/// Handle to the durable store.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    /// A small pool of its own for [`Store::ping`]: a flood that holds every connection of the
    /// main pool cannot fail `/readyz`.
    health: AnyPool,
    backend: Backend,
    call_timeout: Duration,
    mode: PoolMode,
    /// `BEGIN` plus the transaction-scoped settings of [`PoolMode::Transaction`].
    begin_sql: String,
}

/// Connections of the main pool.
pub const POOL_SIZE: u32 = 16;
/// Connections of the health-check pool (one check per cycle needs one; the second covers a
/// connection being replaced).
pub const HEALTH_POOL_SIZE: u32 = 2;
/// A pooled connection idle this long is pinged before it is used again.
const PING_AFTER_IDLE: Duration = Duration::from_secs(1);

/// The `sessions` columns a new row writes, in the order [`bind_session`] binds them (`$1` to
/// `$13`): one list for every insert, so no statement can bind a column into another's place.
macro_rules! session_columns {
    () => {
        "id, token_id, target_id, target_name, host, port, status, created_at, replica, \
         started_at, requested_from, connected_by, connected_from"
    };
}

/// Inserts a new session row ([`bind_session`]).
macro_rules! insert_session {
    () => {
        concat!(
            "INSERT INTO sessions (",
            session_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
        )
    };
}

/// Inserts a new session row ([`bind_session`]).
const INSERT_SESSION: &str = insert_session!();

/// Ends an open session ([`bind_end`]).
const END_SESSION: &str = "UPDATE sessions SET status = 'ended', ended_at = $1, bytes_up = $2, \
     bytes_down = $3, end_reason = $4, replica = $5 WHERE id = $6 AND status IN ('active', 'terminating')";

/// [`END_SESSION`] and, only when it ended the row, its `session.ended` event (`$7` the outbox
/// lock, `$8` the event's detail), in one Postgres statement.
const END_SESSION_ANNOUNCED: &str = "WITH ended AS (UPDATE sessions SET status = 'ended', \
     ended_at = $1, bytes_up = $2, bytes_down = $3, end_reason = $4, replica = $5 \
     WHERE id = $6 AND status IN ('active', 'terminating') RETURNING id), \
     locked AS (SELECT pg_advisory_xact_lock($7) FROM ended) \
     INSERT INTO events (at, kind, subject, detail) \
     SELECT $1::BIGINT, 'session.ended', $6::TEXT, $8::TEXT FROM locked";

/// Inserts an audit row: at, actor, action, subject, detail.
const INSERT_AUDIT: &str =
    "INSERT INTO audit_events (at, actor, action, subject, detail) VALUES ($1, $2, $3, $4, $5)";

/// [`Store::start_direct_session`] on Postgres: `$1`–`$13` the session row, `$14` now, `$15`
/// actor, `$16` action, `$17` audit detail, `$18` the token's cap (0: none), `$19` the
/// recording replica (NULL: no recording row), `$20` the outbox lock, `$21` the
/// `session.started` event's detail. Every insert reads `created`, so nothing is written when the checks fail; the
/// outbox lock is taken only then, before the event's id is drawn.
const START_DIRECT_SESSION: &str = concat!(
    "WITH allowed AS (\
       SELECT 1 FROM targets t WHERE t.id = $3 AND t.name = $4 AND t.host = $5 AND t.port = $6 \
       AND t.require_approval = 0 AND t.region IS NULL \
       AND ($18 <= 0 OR (SELECT COUNT(*) FROM sessions h WHERE h.token_id = $2 \
       AND h.status IN ('pending', 'authorized', 'active', 'terminating')) < $18)), \
     created AS (INSERT INTO sessions (",
    session_columns!(),
    ") SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13 FROM allowed RETURNING id), \
     audited AS (INSERT INTO audit_events (at, actor, action, subject, detail) \
       SELECT $14, $15, $16, id, $17 FROM created), \
     recorded AS (INSERT INTO recordings (session_id, replica, state, started_at) \
       SELECT id, $19, 'recording', $14 FROM created WHERE $19::TEXT IS NOT NULL \
       ON CONFLICT (session_id) DO NOTHING), \
     locked AS (SELECT pg_advisory_xact_lock($20) FROM created), \
     evented AS (INSERT INTO events (at, kind, subject, detail) \
       SELECT $14::BIGINT, 'session.started', $1::TEXT, $21::TEXT FROM locked) \
     SELECT COUNT(*) FROM created"
);

/// What [`Store::start_direct_session`] writes.
#[derive(Debug, Clone, Copy)]
pub struct DirectStart<'a> {
    /// The session row (`active`), its target fields as the caller read them.
    pub row: &'a SessionRow,
    /// Audit: who.
    pub actor: &'a str,
    /// Audit: what.
    pub action: &'a str,
    /// Audit: detail.
    pub detail: &'a str,
    /// The token's cap on sessions held at once; 0: none.
    pub max_held: i64,
    /// The replica recording it, when it is recorded.
    pub recording_replica: Option<&'a str>,
    /// The JSON detail of its `session.started` event.
    pub started_event: &'a str,
}

/// Notes that a session is being recorded ($1 session, $2 replica, $3 unix ms); a second start
/// (a reconnect) keeps the first.
const START_RECORDING: &str = "INSERT INTO recordings (session_id, replica, state, started_at) \
     VALUES ($1, $2, 'recording', $3) ON CONFLICT (session_id) DO NOTHING";

/// A target row with the requesting token's open sessions ([`Store::target_and_held`]).
#[derive(sqlx::FromRow)]
struct TargetHeld {
    #[sqlx(flatten)]
    target: TargetRow,
    held: i64,
}

/// Advisory lock key serialising migrations across replicas (`pg_advisory_xact_lock`).
const MIGRATE_LOCK: i64 = 0x5767_6d69_6772_6174; // "Wgmigrat"

/// Current time in unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

impl Store {
    /// Connects lazily (start-up does not fail while the database is briefly down; `/readyz`
    /// reports it) with `statement_timeout` on every Postgres connection.
    pub fn connect(url: &str, statement_timeout: Duration) -> Result<Self, StoreError> {
        Self::connect_with(url, statement_timeout, PoolMode::Session)
    }

    /// [`Store::connect`] through a pooler in `mode`.
    pub fn connect_with(
        url: &str,
        statement_timeout: Duration,
        mode: PoolMode,
    ) -> Result<Self, StoreError> {
        install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        };
        let ms = statement_timeout.as_millis();
        let options = |max: u32| {
            AnyPoolOptions::new()
                .max_connections(max)
                .min_connections(0)
                .acquire_timeout(statement_timeout.min(Duration::from_secs(5)))
                .idle_timeout(Duration::from_secs(300))
                // A connection used within the last second is handed out without a ping: the
                // ping is a round trip to the server on every query (the bench's profile put a
                // seventh of the replica's CPU per session in it). One idle longer is pinged,
                // as HikariCP does, so a pool that sat through a restart or failover is
                // refreshed; a hot connection broken by one fails its call with a retryable
                // 503 (`StoreError::Unavailable`), as a connection dying mid-query always could.
                .test_before_acquire(false)
                .before_acquire(|conn, meta| {
                    Box::pin(async move {
                        if meta.idle_for >= PING_AFTER_IDLE {
                            sqlx::Connection::ping(conn).await?;
                        }
                        Ok(true)
                    })
                })
                .after_connect(move |conn, _meta| {
                    Box::pin(async move {
                        if backend == Backend::Postgres && mode == PoolMode::Transaction {
                            // Session settings would stick to a server connection other clients
                            // share: they are set per transaction instead (see `begin_sql`).
                        } else if backend == Backend::Postgres {
                            conn.execute(sqlx::AssertSqlSafe(format!(
                                "SET statement_timeout = {ms}"
                            )))
                            .await?;
                            conn.execute("SET idle_in_transaction_session_timeout = 60000")
                                .await?;
                        } else {
                            conn.execute("PRAGMA busy_timeout = 5000").await?;
                            conn.execute("PRAGMA journal_mode = WAL").await?;
                        }
                        Ok(())
                    })
                })
        };
        let pool = options(POOL_SIZE).connect_lazy(url)?;
        let health = match backend {
            Backend::Postgres => options(HEALTH_POOL_SIZE).connect_lazy(url)?,
            // One file, one process: a second pool would only contend for the same lock.
            Backend::Sqlite => pool.clone(),
        };
        // Client-side bound: the server-side timeout plus a margin for the round trip.
        let call_timeout = statement_timeout + Duration::from_secs(1);
        Ok(Self {
            pool,
            health,
            backend,
            call_timeout,
            mode,
            begin_sql: format!(
                "BEGIN; SET LOCAL statement_timeout = {ms}; \
                 SET LOCAL idle_in_transaction_session_timeout = 60000"
            ),
        })
    }

    /// Runs one call's work on a connection, bounded client-side. Through a transaction-mode
    /// pooler the work runs inside a transaction whose first statement sets `statement_timeout`
    /// (the only way a setting holds there); otherwise on a pooled connection as it is.
    async fn run<T>(
        &self,
        work: impl AsyncFnOnce(&mut sqlx::AnyConnection) -> Result<T, sqlx::Error>,
    ) -> Result<T, StoreError> {
        self.bounded(async {
            if self.transactional() {
                let mut tx = self.begin().await?;
                let out = work(&mut tx).await?;
                tx.commit().await?;
                Ok(out)
            } else {
                let mut conn = self.pool.acquire().await?;
                work(&mut conn).await
            }
        })
        .await
    }

    fn transactional(&self) -> bool {
        self.backend == Backend::Postgres && self.mode == PoolMode::Transaction
    }

    /// Begins a transaction (with the transaction-scoped settings through a transaction-mode
    /// pooler).
    async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        if self.transactional() {
            self.pool
                .begin_with(sqlx::AssertSqlSafe(self.begin_sql.clone()))
                .await
        } else {
            self.pool.begin().await
        }
    }

    /// A query with this store's statement policy: named, cached prepared statements on a
    /// connection of our own; unnamed ones through a transaction-mode pooler, where a named
    /// statement would outlive the transaction on a server connection others share.
    fn query(
        &self,
        sql: &'static str,
    ) -> sqlx::query::Query<'static, sqlx::Any, <sqlx::Any as sqlx::Database>::Arguments> {
        sqlx::query(sql).persistent(!self.transactional())
    }

    /// [`Store::query`] mapping rows to `O`.
    fn query_as<O>(
        &self,
        sql: &'static str,
    ) -> sqlx::query::QueryAs<'static, sqlx::Any, O, <sqlx::Any as sqlx::Database>::Arguments>
    where
        O: for<'r> sqlx::FromRow<'r, sqlx::any::AnyRow>,
    {
        sqlx::query_as(sql).persistent(!self.transactional())
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    async fn bounded<T>(
        &self,
        fut: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.call_timeout, fut).await {
            Ok(r) => r.map_err(StoreError::from),
            Err(_) => Err(StoreError::Unavailable(format!(
                "no answer within {:?}",
                self.call_timeout
            ))),
        }
    }

    /// Applies pending migrations. On Postgres they run in one transaction under a
    /// transaction-scoped advisory lock, with unnamed statements only: replicas starting
    /// together migrate once, and it holds behind a transaction-mode pooler too (where sqlx's
    /// session-level lock would be taken and released on different server connections, and its
    /// named statements would collide with other clients'). The bookkeeping table is sqlx's own
    /// `_sqlx_migrations`, checksums included. An unreachable database is
    /// [`StoreError::Unavailable`], so start-up waits for it.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self.backend {
            Backend::Sqlite => sqlx::migrate!("./migrations/sqlite")
                .run(&self.pool)
                .await
                .map_err(|e| match e {
                    sqlx::migrate::MigrateError::Execute(e) => StoreError::from(e),
                    other => StoreError::Migrate(other.to_string()),
                }),
            Backend::Postgres => {
                let migrator = sqlx::migrate!("./migrations/postgres");
                let work = async {
                    let mut tx = self
                        .pool
                        .begin_with("BEGIN; SET LOCAL statement_timeout = 600000")
                        .await?;
                    sqlx::query("SELECT pg_advisory_xact_lock($1)")
                        .bind(MIGRATE_LOCK)
                        .persistent(false)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::raw_sql(
                        "CREATE TABLE IF NOT EXISTS _sqlx_migrations ( \
                           version BIGINT PRIMARY KEY, description TEXT NOT NULL, \
                           installed_on TIMESTAMPTZ NOT NULL DEFAULT now(), \
                           success BOOLEAN NOT NULL, checksum BYTEA NOT NULL, \
                           execution_time BIGINT NOT NULL)",
                    )
                    .execute(&mut *tx)
                    .await?;
                    let applied: Vec<(i64, bool, Vec<u8>)> = sqlx::query_as(
                        "SELECT version, success, checksum FROM _sqlx_migrations ORDER BY version",
                    )
                    .persistent(false)
                    .fetch_all(&mut *tx)
                    .await?;
                    for m in migrator.iter() {
                        if m.migration_type.is_down_migration() {
                            continue;
                        }
                        match applied.iter().find(|(v, _, _)| *v == m.version) {
                            Some((_, false, _)) => {
                                return Ok(Err(format!(
                                    "migration {} was left partially applied; repair it by hand",
                                    m.version
                                )));
                            }
                            Some((_, true, sum)) if sum.as_slice() != &*m.checksum => {
                                return Ok(Err(format!(
                                    "migration {} changed after it was applied (checksum differs)",
                                    m.version
                                )));
                            }
                            Some(_) => continue,
                            None => {}
                        }
                        let started = Instant::now();
                        sqlx::raw_sql(m.sql.clone()).execute(&mut *tx).await?;
                        sqlx::query(
                            "INSERT INTO _sqlx_migrations \
                             (version, description, success, checksum, execution_time) \
                             VALUES ($1, $2, TRUE, $3, $4)",
                        )
                        .bind(m.version)
                        .bind(m.description.to_string())
                        .bind(m.checksum.to_vec())
                        .bind(i64::try_from(started.elapsed().as_nanos()).unwrap_or(i64::MAX))
                        .persistent(false)
                        .execute(&mut *tx)
                        .await?;
                        tracing::info!(event = "migration_applied", version = m.version, description = %m.description);
                    }
                    tx.commit().await?;
                    Ok::<_, sqlx::Error>(Ok(()))
                };
                match tokio::time::timeout(Duration::from_secs(600), work).await {
                    Err(_) => Err(StoreError::Unavailable(
                        "migrations did not finish within 10 minutes".into(),
                    )),
                    Ok(Err(e)) => Err(StoreError::from(e)),
                    Ok(Ok(Err(reason))) => Err(StoreError::Migrate(reason)),
                    Ok(Ok(Ok(()))) => Ok(()),
                }
            }
        }
    }

    /// A round trip (`SELECT 1`) on the health pool, returning its duration.
    pub async fn ping(&self) -> Result<Duration, StoreError> {
        let start = Instant::now();
        self.bounded(async {
            let mut conn = self.health.acquire().await?;
            // Unnamed: through a transaction-mode pooler a named statement would outlive us.
            sqlx::query("SELECT 1")
                .persistent(false)
                .execute(&mut *conn)
                .await
        })
        .await?;
        Ok(start.elapsed())
    }

    /// The value of a server setting as this pool's connections see it (diagnostics; on
    /// Postgres, e.g. `statement_timeout`).
    pub async fn current_setting(&self, name: &str) -> Result<String, StoreError> {
        let (v,): (String,) = self
            .run(async |c| {
                self.query_as("SELECT current_setting($1)")
                    .bind(name)
                    .fetch_one(&mut *c)
                    .await
            })
            .await?;
        Ok(v)
    }

    /// Appends an audit event.
    pub async fn audit(
        &self,
        actor: &str,
        action: &str,
        subject: &str,
        detail: &str,
    ) -> Result<(), StoreError> {
        self.run(async |c| {
            self.query("INSERT INTO audit_events (at, actor, action, subject, detail) VALUES ($1, $2, $3, $4, $5)")
                .bind(now_ms())
                .bind(actor)
                .bind(action)
                .bind(subject)
                .bind(detail)
                .execute(&mut *c).await})
        .await
        .map(|_| ())
    }

    /// Audit events about `subject`, oldest first.
    pub async fn audit_for(
        &self,
        subject: &str,
    ) -> Result<Vec<(String, String, String)>, StoreError> {
        let rows: Vec<(String, String, String)> = self
            .run(async |c| {
                self.query_as(
                    "SELECT actor, action, detail FROM audit_events WHERE subject = $1 ORDER BY id",
                )
                .bind(subject)
                .fetch_all(&mut *c)
                .await
            })
            .await?;
        Ok(rows)
    }

    // ---- targets ----

    /// Adds a target; a duplicate name is a [`StoreError::Conflict`].
    pub async fn create_target(
        &self,
        name: &str,
        host: &str,
        port: u16,
        require_approval: bool,
    ) -> Result<TargetRow, StoreError> {
        self.create_target_in(name, host, port, require_approval, None)
            .await
    }

    /// Adds a target relayed by the remote gateways of `region` (None: by the control plane).
    pub async fn create_target_in(
        &self,
        name: &str,
        host: &str,
        port: u16,
        require_approval: bool,
        region: Option<&str>,
    ) -> Result<TargetRow, StoreError> {
        let row = TargetRow {
            region: region.map(str::to_string),
            id: uuid::Uuid::new_v4().to_string(),
            name: name.to_string(),
            host: host.to_string(),
            port: i64::from(port),
            require_approval: i64::from(require_approval),
            created_at: now_ms(),
        };
        self.run(async |c| {
            self.query(
                "INSERT INTO targets (id, name, host, port, require_approval, created_at, region) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&row.id)
            .bind(&row.name)
            .bind(&row.host)
            .bind(row.port)
            .bind(row.require_approval)
            .bind(row.created_at)
            .bind(&row.region)
            .execute(&mut *c).await})
        .await?;
        Ok(row)
    }

    /// All targets by name.
    pub async fn list_targets(&self) -> Result<Vec<TargetRow>, StoreError> {
        self.run(async |c| {
            self.query_as("SELECT id, name, host, port, require_approval, created_at, region FROM targets ORDER BY name")
                .fetch_all(&mut *c).await})
        .await
    }

    /// One target by name.
    pub async fn target(&self, name: &str) -> Result<Option<TargetRow>, StoreError> {
        self.run(async |c| {
            self.query_as("SELECT id, name, host, port, require_approval, created_at, region FROM targets WHERE name = $1")
                .bind(name)
                .fetch_optional(&mut *c).await})
        .await
    }

    /// One target by name and how many sessions `token_id` holds now (pending, authorised or
    /// relayed), read in one round trip: what a new session needs to know before it is
    /// admitted (the target, and the per-token cap), where two queries cost two.
    pub async fn target_and_held(
        &self,
        name: &str,
        token_id: &str,
    ) -> Result<Option<(TargetRow, i64)>, StoreError> {
        let row: Option<TargetHeld> = self
            .run(async |c| {
                self.query_as(
                    "SELECT t.id, t.name, t.host, t.port, t.require_approval, t.created_at, t.region, \
                     CAST((SELECT COUNT(*) FROM sessions s WHERE s.token_id = $2 \
                     AND s.status IN ('pending', 'authorized', 'active', 'terminating')) AS BIGINT) AS held \
                     FROM targets t WHERE t.name = $1",
                )
                .bind(name)
                .bind(token_id)
                .fetch_optional(&mut *c)
                .await
            })
            .await?;
        Ok(row.map(|r| (r.target, r.held)))
    }

    /// Deletes a target by name; returns whether it existed.
    pub async fn delete_target(&self, name: &str) -> Result<bool, StoreError> {
        let r = self
            .run(async |c| {
                self.query("DELETE FROM targets WHERE name = $1")
                    .bind(name)
                    .execute(&mut *c)
                    .await
            })
            .await?;
        Ok(r.rows_affected() > 0)
    }

    // ---- sessions ----

    /// Records a new session: authorised, pending approval, or already active on the replica
    /// that authorised and claimed it in one request.
    pub async fn create_session(&self, s: &SessionRow) -> Result<(), StoreError> {
        self.run(async |c| {
            bind_session(self.query(INSERT_SESSION), s)
                .execute(&mut *c)
                .await
        })
        .await
        .map(|_| ())
    }

    /// Records a new session and its audit row (`actor` did `action`, with `detail`) together:
    /// on Postgres in one statement (one round trip, where a separate audit insert cost
    /// another), on SQLite in one transaction. Neither row exists without the other.
    pub async fn create_session_audited(
        &self,
        s: &SessionRow,
        actor: &str,
        action: &str,
        detail: &str,
    ) -> Result<(), StoreError> {
        if self.backend != Backend::Postgres {
            let work = async {
                let mut tx = self.begin().await?;
                bind_session(self.query(INSERT_SESSION), s)
                    .execute(&mut *tx)
                    .await?;
                self.query(INSERT_AUDIT)
                    .bind(now_ms())
                    .bind(actor)
                    .bind(action)
                    .bind(&s.id)
                    .bind(detail)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await
            };
            return self.bounded(work).await;
        }
        self.run(async |c| {
            bind_session(
                self.query(concat!(
                    "WITH created AS (",
                    insert_session!(),
                    ") INSERT INTO audit_events (at, actor, action, subject, detail) \
                     VALUES ($14, $15, $16, $1, $17)"
                )),
                s,
            )
            .bind(now_ms())
            .bind(actor)
            .bind(action)
            .bind(detail)
            .execute(&mut *c)
            .await
        })
        .await
        .map(|_| ())
    }

    /// Starts a session authorised and claimed at once (no approval), if the target and the
    /// token still allow it: the session row, its audit row, its recording row (when
    /// `recording_replica` is given) and its `session.started` event, all or nothing. The
    /// target is re-checked in the same transaction (it still exists with the row's id, name,
    /// host and port, needs no approval and has no region), and so is the token's cap on
    /// sessions held (`max_held`, 0: none). Returns false, writing nothing, when either check
    /// fails: the caller read the target from a cache and must read it again to say why.
    ///
    /// On Postgres this is one statement: one round trip for what took three (target read,
    /// insert, event), with the event ordered by the outbox lock like every other.
    pub async fn start_direct_session(&self, start: &DirectStart<'_>) -> Result<bool, StoreError> {
        let s = start.row;
        let now = now_ms();
        if self.backend != Backend::Postgres {
            let work = async {
                let mut tx = self.begin().await?;
                // The write comes first, so the transaction takes SQLite's write lock at once
                // (waiting its busy timeout) instead of failing to upgrade a read lock.
                let created = bind_session(
                    self.query(concat!(
                        "INSERT INTO sessions (",
                        session_columns!(),
                        ") SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13 \
                         WHERE EXISTS (SELECT 1 FROM targets t WHERE t.id = $14 AND t.name = $15 \
                         AND t.host = $16 AND t.port = $17 AND t.require_approval = 0 AND t.region IS NULL) \
                         AND ($18 <= 0 OR (SELECT COUNT(*) FROM sessions WHERE token_id = $19 \
                         AND status IN ('pending', 'authorized', 'active', 'terminating')) < $20)"
                    )),
                    s,
                )
                .bind(&s.target_id)
                .bind(&s.target_name)
                .bind(&s.host)
                .bind(s.port)
                .bind(start.max_held)
                .bind(&s.token_id)
                .bind(start.max_held)
                .execute(&mut *tx)
                .await?;
                if created.rows_affected() != 1 {
                    return Ok(false);
                }
                self.query(INSERT_AUDIT)
                    .bind(now)
                    .bind(start.actor)
                    .bind(start.action)
                    .bind(&s.id)
                    .bind(start.detail)
                    .execute(&mut *tx)
                    .await?;
                if let Some(replica) = start.recording_replica {
                    self.query(START_RECORDING)
                        .bind(&s.id)
                        .bind(replica)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                }
                self.append_event_in(&mut tx, now, "session.started", &s.id, start.started_event)
                    .await?;
                tx.commit().await.map(|()| true)
            };
            return self.bounded(work).await;
        }
        let created: i64 = self
            .run(async |c| {
                use sqlx::Row as _;
                bind_session(self.query(START_DIRECT_SESSION), s)
                    .bind(now)
                    .bind(start.actor)
                    .bind(start.action)
                    .bind(start.detail)
                    .bind(start.max_held)
                    .bind(start.recording_replica)
                    .bind(OUTBOX_LOCK)
                    .bind(start.started_event)
                    .fetch_one(&mut *c)
                    .await
                    .and_then(|row| row.try_get(0))
            })
            .await?;
        Ok(created == 1)
    }

    /// Claims an authorised session for the relay on `replica`, recording which token
    /// connected it from which address. Postgres serialises concurrent claims: exactly one
    /// replica wins; the others get `false`.
    pub async fn claim_session(
        &self,
        id: &str,
        replica: &str,
        by: &str,
        from: Option<&str>,
    ) -> Result<bool, StoreError> {
        let r = self
            .run(async |c| {
                self.query(
                    "UPDATE sessions SET status = 'active', replica = $1, started_at = $2, \
                     connected_by = $3, connected_from = $4 WHERE id = $5 AND status = 'authorized'",
                )
                .bind(replica)
                .bind(now_ms())
                .bind(by)
                .bind(from)
                .bind(id)
                .execute(&mut *c)
                .await
            })
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Records the end of a relay: bytes each way, which replica, why. With `event` (the JSON
    /// detail of `session.ended`), the event is written in the same statement, and only when
    /// this call ended the session: a retried or repeated end never announces it twice, and an
    /// end recorded late is announced when it is recorded.
    pub async fn end_session(
        &self,
        id: &str,
        replica: &str,
        moved: (u64, u64),
        reason: EndReason,
        event: Option<&str>,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let Some(event) = event else {
            return self
                .run(async |c| {
                    bind_end(self.query(END_SESSION), now, moved, reason, replica, id)
                        .execute(&mut *c)
                        .await
                })
                .await
                .map(|_| ());
        };
        if self.backend != Backend::Postgres {
            let work = async {
                let mut tx = self.begin().await?;
                let ended = bind_end(self.query(END_SESSION), now, moved, reason, replica, id)
                    .execute(&mut *tx)
                    .await?;
                if ended.rows_affected() == 1 {
                    self.append_event_in(&mut tx, now, "session.ended", id, event)
                        .await?;
                }
                tx.commit().await
            };
            return self.bounded(work).await;
        }
        self.run(async |c| {
            bind_end(
                self.query(END_SESSION_ANNOUNCED),
                now,
                moved,
                reason,
                replica,
                id,
            )
            .bind(OUTBOX_LOCK)
            .bind(event)
            .execute(&mut *c)
            .await
        })
        .await
        .map(|_| ())
    }

    /// Marks a session terminated by an operator. An active one becomes `terminating` until its
    /// relay notices and records the end; one not yet started ends at once. Returns the row after
    /// the change.
    pub async fn terminate_session(&self, id: &str) -> Result<Option<SessionRow>, StoreError> {
        let now = now_ms();
        self.run(async |c| {
            self.query(
                "UPDATE sessions SET status = CASE WHEN status = 'active' THEN 'terminating' ELSE 'ended' END, \
                 end_reason = 'terminated', ended_at = CASE WHEN status = 'active' THEN ended_at ELSE $1 END \
                 WHERE id = $2 AND status IN ('authorized', 'pending', 'active')",
            )
            .bind(now)
            .bind(id)
            .execute(&mut *c).await})
        .await?;
        self.session(id).await
    }

    // ---- fenced background jobs ----

    /// Takes the next fencing epoch of `job` for `holder`. Called right after acquiring the
    /// job's lease; side effects carry the epoch so a holder that lost its lease cannot act.
    pub async fn fence_job(&self, job: &str, holder: &str) -> Result<i64, StoreError> {
        let (epoch,): (i64,) = self
            .run(async |c| {
                self.query_as(
                    "INSERT INTO job_fences (job, epoch, holder, at) VALUES ($1, 1, $2, $3) \
                     ON CONFLICT (job) DO UPDATE SET epoch = job_fences.epoch + 1, holder = excluded.holder, at = excluded.at \
                     RETURNING epoch",
                )
                .bind(job)
                .bind(holder)
                .bind(now_ms())
                .fetch_one(&mut *c).await})
            .await?;
        Ok(epoch)
    }

    /// Sessions a relay carries or carried (`active`, `terminating`).
    pub async fn live_sessions(&self) -> Result<Vec<SessionRow>, StoreError> {
        self.run(async |c| {
            self.query_as(select_sessions!(
                "WHERE status IN ('active', 'terminating') ORDER BY created_at"
            ))
            .fetch_all(&mut *c)
            .await
        })
        .await
    }

    /// Ends a session whose relay's replica is gone, if `epoch` is still the job's current
    /// fencing epoch. Returns whether this call ended it (idempotent).
    pub async fn end_lost_session(
        &self,
        id: &str,
        replica: &str,
        job: &str,
        epoch: i64,
    ) -> Result<bool, StoreError> {
        let r = self
            .run(async |c| {
                self.query(
                    "UPDATE sessions SET status = 'ended', ended_at = $1, end_reason = 'replica_lost' \
                     WHERE id = $2 AND replica = $3 AND status IN ('active', 'terminating') \
                     AND EXISTS (SELECT 1 FROM job_fences WHERE job = $4 AND epoch = $5)",
                )
                .bind(now_ms())
                .bind(id)
                .bind(replica)
                .bind(job)
                .bind(epoch)
                .execute(&mut *c).await})
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Ends, as `expired`, requests still pending a decision made before `pending_before`, and
    /// authorisations never used that were granted (created, or approved) before
    /// `authorized_before` (unix ms); fenced like every cleanup side effect.
    pub async fn expire_unused_sessions(
        &self,
        pending_before: i64,
        authorized_before: i64,
        job: &str,
        epoch: i64,
    ) -> Result<u64, StoreError> {
        let r = self
            .run(async |c| {
                self.query(
                    "UPDATE sessions SET status = 'ended', ended_at = $1, end_reason = 'expired' \
                     WHERE ((status = 'pending' AND created_at < $2) \
                        OR (status = 'authorized' AND COALESCE( \
                              (SELECT decided_at FROM approvals a WHERE a.session_id = sessions.id), \
                              created_at) < $3)) \
                     AND EXISTS (SELECT 1 FROM job_fences WHERE job = $4 AND epoch = $5)",
                )
                .bind(now_ms())
                .bind(pending_before)
                .bind(authorized_before)
                .bind(job)
                .bind(epoch)
                .execute(&mut *c).await})
            .await?;
        Ok(r.rows_affected())
    }

    /// One session.
    pub async fn session(&self, id: &str) -> Result<Option<SessionRow>, StoreError> {
        self.run(async |c| {
            self.query_as(select_sessions!("WHERE id = $1"))
                .bind(id)
                .fetch_optional(&mut *c)
                .await
        })
        .await
    }

    /// Recent sessions, newest first; only those of `token_id` when given.
    pub async fn list_sessions(
        &self,
        token_id: Option<&str>,
        limit: i64,
    ) -> Result<Vec<SessionRow>, StoreError> {
        let q = match token_id {
            Some(_) => select_sessions!("WHERE token_id = $1 ORDER BY created_at DESC LIMIT $2"),
            None => select_sessions!("ORDER BY created_at DESC LIMIT $1"),
        };
        let mut query = self.query_as(q);
        if let Some(t) = token_id {
            query = query.bind(t);
        }
        self.run(async |c| query.bind(limit).fetch_all(&mut *c).await)
            .await
    }
}

/// Binds the six parameters [`END_SESSION`] and [`END_SESSION_ANNOUNCED`] start with.
fn bind_end<'q>(
    q: sqlx::query::Query<'q, sqlx::Any, <sqlx::Any as sqlx::Database>::Arguments>,
    now: i64,
    moved: (u64, u64),
    reason: EndReason,
    replica: &'q str,
    id: &'q str,
) -> sqlx::query::Query<'q, sqlx::Any, <sqlx::Any as sqlx::Database>::Arguments> {
    q.bind(now)
        .bind(moved.0 as i64)
        .bind(moved.1 as i64)
        .bind(reason)
        .bind(replica)
        .bind(id)
}

/// Binds a new session row's thirteen columns, in the order of `session_columns!` (`$1` to
/// `$13`).
fn bind_session<'q>(
    q: sqlx::query::Query<'q, sqlx::Any, <sqlx::Any as sqlx::Database>::Arguments>,
    s: &'q SessionRow,
) -> sqlx::query::Query<'q, sqlx::Any, <sqlx::Any as sqlx::Database>::Arguments> {
    q.bind(&s.id)
        .bind(&s.token_id)
        .bind(&s.target_id)
        .bind(&s.target_name)
        .bind(&s.host)
        .bind(s.port)
        .bind(s.status)
        .bind(s.created_at)
        .bind(&s.replica)
        .bind(s.started_at)
        .bind(&s.requested_from)
        .bind(&s.connected_by)
        .bind(&s.connected_from)
}
