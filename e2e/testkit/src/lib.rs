//! Real test dependencies on loopback, for every Wardengate test suite.
//!
//! Each fixture starts real Debian-packaged servers on 127.0.0.1 with random free ports inside a
//! temp dir, exposes URLs and ports, offers fault injection (kill -9, stop/start, Sentinel and
//! Patroni failover) and waits with deadlines, never fixed sleeps. Dropping a fixture — also
//! during a panic — kills its processes by PID and removes its directory; leftovers of a test
//! process that was killed outright are reaped at the next start.
//!
//! Missing packages fail fast with [`TestkitError::MissingBinary`], which names the package and
//! the command that installs it.

pub mod deps;
pub mod error;
pub mod haproxy;
pub mod http;
pub mod kube;
pub mod net;
pub mod patroni;
pub mod pgbouncer;
pub mod postgres;
pub mod process;
pub mod proxy;
pub mod redis;
pub mod sandbox;
pub mod sshd;
pub mod user;
pub mod wait;

pub use error::{Result, TestkitError};
pub use haproxy::{Backend, HaProxy, HealthCheck};
pub use kube::KubeCluster;
pub use patroni::{PatroniCluster, PatroniTiming};
pub use pgbouncer::PgBouncer;
pub use postgres::{PgServer, Postgres, PostgresPair};
pub use redis::{RedisCluster, RedisSentinel, RedisServer};
pub use sandbox::Sandbox;
pub use sshd::Sshd;
pub use wait::{wait_for, wait_until};
