//! Redis in the three topologies of `WG_REDIS_URL`, behind one small command surface.
//!
//! - Standalone: a `ConnectionManager` that reconnects by itself.
//! - Sentinel: the primary's address is asked of the Sentinels; a connection error or a
//!   `READONLY` reply (a demoted primary) makes us ask again, and a changed answer counts as a
//!   failover (`wg_redis_failover_total`). [`RedisLive::ping`] asks too, so promotions are noticed
//!   within a health-check cycle even without traffic.
//! - Cluster: redis-rs's cluster connection, which follows slot moves itself.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, Client, Cmd, FromRedisValue, RedisError};
use tokio::sync::Mutex;

use super::{LiveError, Swap};
use crate::metrics::Metrics;
use crate::redis_url::{HostPort, RedisTarget};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// A connection to Redis in whichever topology the URL named.
#[derive(Clone)]
pub struct RedisLive {
    conn: Conn,
    target: Arc<RedisTarget>,
}

impl std::fmt::Debug for RedisLive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RedisLive({})", self.target.redacted())
    }
}

#[derive(Clone)]
enum Conn {
    Standalone(ConnectionManager),
    Sentinel(Arc<SentinelConn>),
    Cluster(ClusterConnection),
}

fn unavailable(e: RedisError) -> LiveError {
    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() {
        LiveError::Unavailable(e.to_string())
    } else {
        LiveError::Command(e.to_string())
    }
}

fn node_url(
    addr: &HostPort,
    tls: bool,
    username: Option<&str>,
    password: Option<&str>,
    db: i64,
) -> String {
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let auth = match (username, password) {
        (Some(u), Some(p)) => format!("{}:{}@", enc(u), enc(p)),
        (None, Some(p)) => format!(":{}@", enc(p)),
        (Some(u), None) => format!("{}@", enc(u)),
        (None, None) => String::new(),
    };
    format!(
        "{}://{auth}{addr}/{db}",
        if tls { "rediss" } else { "redis" }
    )
}

impl RedisLive {
    /// Connects. Fails only on a URL the client library refuses; an unreachable server is
    /// retried on use (start-up does not depend on Redis being up).
    pub async fn connect(target: RedisTarget, metrics: Metrics) -> Result<Self, LiveError> {
        let bad = |e: RedisError| LiveError::Command(format!("{}: {e}", target.redacted()));
        let conn = match &target {
            RedisTarget::Standalone {
                addr,
                tls,
                username,
                password,
                db,
            } => {
                let client = Client::open(node_url(
                    addr,
                    *tls,
                    username.as_deref(),
                    password.as_deref(),
                    *db,
                ))
                .map_err(bad)?;
                let cfg = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(RESPONSE_TIMEOUT))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(500));
                Conn::Standalone(ConnectionManager::new_lazy_with_config(client, cfg).map_err(bad)?)
            }
            RedisTarget::Sentinel {
                sentinels,
                master,
                password,
                tls,
                db,
            } => Conn::Sentinel(Arc::new(SentinelConn {
                sentinels: sentinels.clone(),
                master: master.clone(),
                password: password.clone(),
                tls: *tls,
                db: *db,
                current: Mutex::new(None),
                last_master: Mutex::new(None),
                metrics,
            })),
            RedisTarget::Cluster {
                nodes,
                tls,
                username,
                password,
            } => {
                let urls: Vec<String> = nodes
                    .iter()
                    .map(|n| node_url(n, *tls, None, None, 0))
                    .collect();
                let mut b = ClusterClientBuilder::new(urls)
                    .connection_timeout(CONNECT_TIMEOUT)
                    .response_timeout(RESPONSE_TIMEOUT)
                    .retries(2);
                if let Some(u) = username {
                    b = b.username(u.clone());
                }
                if let Some(p) = password {
                    b = b.password(p.clone());
                }
                let client = b.build().map_err(bad)?;
                let conn = tokio::time::timeout(CONNECT_TIMEOUT * 2, client.get_async_connection())
                    .await
                    .map_err(|_| {
                        LiveError::Unavailable(format!(
                            "{}: no cluster node answered",
                            target.redacted()
                        ))
                    })?
                    .map_err(unavailable)?;
                Conn::Cluster(conn)
            }
        };
        Ok(Self {
            conn,
            target: Arc::new(target),
        })
    }

    async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, LiveError> {
        match &self.conn {
            Conn::Standalone(c) => cmd.query_async(&mut c.clone()).await.map_err(unavailable),
            Conn::Cluster(c) => cmd.query_async(&mut c.clone()).await.map_err(unavailable),
            Conn::Sentinel(s) => s.query(cmd).await,
        }
    }

    pub(super) async fn set(&self, key: &str, value: &str, ttl: Duration) -> Result<(), LiveError> {
        let ms = ttl.as_millis().max(1) as u64;
        self.query::<()>(redis::cmd("SET").arg(key).arg(value).arg("PX").arg(ms))
            .await
    }

    pub(super) async fn get(&self, key: &str) -> Result<Option<String>, LiveError> {
        self.query(redis::cmd("GET").arg(key)).await
    }

    pub(super) async fn expire(&self, key: &str, ttl: Duration) -> Result<bool, LiveError> {
        let ms = ttl.as_millis().max(1) as u64;
        self.query::<i64>(redis::cmd("PEXPIRE").arg(key).arg(ms))
            .await
            .map(|n| n == 1)
    }

    pub(super) async fn lease_acquire(
        &self,
        key: &str,
        token: &str,
        ttl: Duration,
    ) -> Result<bool, LiveError> {
        let ms = ttl.as_millis().max(1) as u64;
        let r: Option<String> = self
            .query(
                redis::cmd("SET")
                    .arg(key)
                    .arg(token)
                    .arg("NX")
                    .arg("PX")
                    .arg(ms),
            )
            .await?;
        Ok(r.is_some())
    }

    pub(super) async fn lease_renew(
        &self,
        key: &str,
        token: &str,
        ttl: Duration,
    ) -> Result<bool, LiveError> {
        const RENEW: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
            return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end";
        let ms = ttl.as_millis().max(1) as u64;
        let n: i64 = self
            .query(
                redis::cmd("EVAL")
                    .arg(RENEW)
                    .arg(1)
                    .arg(key)
                    .arg(token)
                    .arg(ms),
            )
            .await?;
        Ok(n == 1)
    }

    pub(super) async fn compare_and_set(
        &self,
        key: &str,
        expected: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<Swap, LiveError> {
        // One round trip: swap when the key still holds `expected`, else report what it holds.
        const CAS: &str = "local v = redis.call('GET', KEYS[1]) \
            if v == ARGV[1] then redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) \
            return {1, false} end return {0, v}";
        let ms = ttl.as_millis().max(1) as u64;
        let (swapped, current): (i64, Option<String>) = self
            .query(
                redis::cmd("EVAL")
                    .arg(CAS)
                    .arg(1)
                    .arg(key)
                    .arg(expected)
                    .arg(value)
                    .arg(ms),
            )
            .await?;
        Ok(if swapped == 1 {
            Swap::Swapped
        } else {
            Swap::Current(current)
        })
    }

    pub(super) async fn lease_release(&self, key: &str, token: &str) -> Result<(), LiveError> {
        const RELEASE: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
            return redis.call('DEL', KEYS[1]) else return 0 end";
        self.query::<i64>(redis::cmd("EVAL").arg(RELEASE).arg(1).arg(key).arg(token))
            .await
            .map(|_| ())
    }

    pub(super) async fn del(&self, key: &str) -> Result<(), LiveError> {
        self.query::<i64>(redis::cmd("DEL").arg(key))
            .await
            .map(|_| ())
    }

    pub(super) async fn hset(&self, key: &str, field: &str, value: &str) -> Result<(), LiveError> {
        self.query::<i64>(redis::cmd("HSET").arg(key).arg(field).arg(value))
            .await
            .map(|_| ())
    }

    pub(super) async fn hgetall(&self, key: &str) -> Result<HashMap<String, String>, LiveError> {
        self.query(redis::cmd("HGETALL").arg(key)).await
    }

    pub(super) async fn hdel(&self, key: &str, field: &str) -> Result<(), LiveError> {
        self.query::<i64>(redis::cmd("HDEL").arg(key).arg(field))
            .await
            .map(|_| ())
    }

    pub(super) async fn stream_add(
        &self,
        key: &str,
        value: &str,
        max_len: usize,
    ) -> Result<String, LiveError> {
        self.query(
            redis::cmd("XADD")
                .arg(key)
                .arg("MAXLEN")
                .arg("~")
                .arg(max_len)
                .arg("*")
                .arg("e")
                .arg(value),
        )
        .await
    }

    pub(super) async fn stream_after(
        &self,
        key: &str,
        after: Option<&str>,
        count: usize,
    ) -> Result<Vec<(String, String)>, LiveError> {
        let start = after.map(|a| format!("({a}")).unwrap_or_else(|| "-".into());
        let entries: Vec<(String, Vec<String>)> = self
            .query(
                redis::cmd("XRANGE")
                    .arg(key)
                    .arg(start)
                    .arg("+")
                    .arg("COUNT")
                    .arg(count),
            )
            .await?;
        Ok(entries
            .into_iter()
            .filter_map(|(id, fields)| fields.get(1).cloned().map(|v| (id, v)))
            .collect())
    }

    pub(super) async fn stream_last_id(&self, key: &str) -> Result<Option<String>, LiveError> {
        let entries: Vec<(String, Vec<String>)> = self
            .query(
                redis::cmd("XREVRANGE")
                    .arg(key)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1),
            )
            .await?;
        Ok(entries.into_iter().next().map(|(id, _)| id))
    }

    pub(super) async fn ping(&self) -> Result<Duration, LiveError> {
        let start = Instant::now();
        if let Conn::Sentinel(s) = &self.conn {
            s.refresh_master().await?;
        }
        self.query::<String>(&redis::cmd("PING")).await?;
        Ok(start.elapsed())
    }
}

/// The primary named by a set of Sentinels, followed across failovers.
struct SentinelConn {
    sentinels: Vec<HostPort>,
    master: String,
    password: Option<String>,
    tls: bool,
    db: i64,
    current: Mutex<Option<(HostPort, MultiplexedConnection)>>,
    last_master: Mutex<Option<HostPort>>,
    metrics: Metrics,
}

impl SentinelConn {
    fn config() -> AsyncConnectionConfig {
        AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
    }

    /// Asks the Sentinels, in order, for the primary's address.
    async fn resolve(&self) -> Result<HostPort, LiveError> {
        let mut last_err = String::from("no sentinel configured");
        for s in &self.sentinels {
            let url = node_url(s, self.tls, None, None, 0);
            let attempt = async {
                let client = Client::open(url)?;
                let mut c = client
                    .get_multiplexed_async_connection_with_config(&Self::config())
                    .await?;
                redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg(&self.master)
                    .query_async::<Option<(String, u16)>>(&mut c)
                    .await
            };
            match attempt.await {
                Ok(Some((host, port))) => return Ok(HostPort { host, port }),
                Ok(None) => {
                    last_err = format!("sentinel {s} does not know master `{}`", self.master)
                }
                Err(e) => last_err = format!("sentinel {s}: {e}"),
            }
        }
        Err(LiveError::Unavailable(last_err))
    }

    /// Re-resolves the primary; on a change, drops the old connection and counts a failover.
    async fn refresh_master(&self) -> Result<HostPort, LiveError> {
        let addr = self.resolve().await?;
        let mut last = self.last_master.lock().await;
        if let Some(prev) = last.as_ref()
            && *prev != addr
        {
            self.metrics.redis_failover_total.inc();
            tracing::warn!(event = "redis_failover", from = %prev, to = %addr, master = %self.master, "Redis primary changed");
            self.current.lock().await.take();
        }
        *last = Some(addr.clone());
        Ok(addr)
    }

    async fn connection(&self) -> Result<MultiplexedConnection, LiveError> {
        if let Some((_, c)) = self.current.lock().await.as_ref() {
            return Ok(c.clone());
        }
        let addr = self.refresh_master().await?;
        let url = node_url(&addr, self.tls, None, self.password.as_deref(), self.db);
        let client = Client::open(url).map_err(unavailable)?;
        let conn = client
            .get_multiplexed_async_connection_with_config(&Self::config())
            .await
            .map_err(unavailable)?;
        *self.current.lock().await = Some((addr, conn.clone()));
        Ok(conn)
    }

    /// Runs `cmd` on the primary; after a connection error or `READONLY`, re-resolves and retries
    /// once (a command cut off mid-flight may have run: our commands are idempotent).
    async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, LiveError> {
        let mut conn = self.connection().await?;
        match cmd.query_async::<T>(&mut conn).await {
            Ok(v) => Ok(v),
            Err(e)
                if e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_timeout()
                    || is_readonly(&e) =>
            {
                self.current.lock().await.take();
                let mut conn = self.connection().await?;
                cmd.query_async::<T>(&mut conn).await.map_err(unavailable)
            }
            Err(e) => Err(unavailable(e)),
        }
    }
}

fn is_readonly(e: &RedisError) -> bool {
    e.to_string().contains("READONLY")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_urls_encode_credentials() {
        let a = HostPort {
            host: "h".into(),
            port: 1,
        };
        assert_eq!(
            node_url(&a, false, None, Some("p@ss:/"), 2),
            "redis://:p%40ss%3A%2F@h:1/2"
        );
        assert_eq!(node_url(&a, true, Some("u"), None, 0), "rediss://u@h:1/0");
    }
}
