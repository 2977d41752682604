//! Finding the executables of the Debian packages the harness drives, with an actionable error
//! naming the package when one is missing (never a hang, never a confusing spawn error).

use std::path::{Path, PathBuf};

use crate::error::{Result, TestkitError};

/// Where Debian's PostgreSQL 15 server binaries live (not on `PATH`).
pub const PG_BIN_DIR: &str = "/usr/lib/postgresql/15/bin";

/// The Debian packages the service suites need; `scripts/install-deps.sh` installs the same list.
pub const DEBIAN_PACKAGES: &[&str] = &[
    "postgresql",
    "redis-server",
    "redis-sentinel",
    "patroni",
    "etcd-server",
    "etcd-client",
    "haproxy",
    "pgbouncer",
    "openssh-server",
    "openssh-client",
];

/// Maps an executable to the Debian package that ships it.
fn package_of(binary: &str) -> &'static str {
    match binary {
        "postgres" | "initdb" | "pg_ctl" | "pg_basebackup" => "postgresql-15",
        "psql" | "pg_isready" => "postgresql-client-15",
        "redis-server" => "redis-server",
        "redis-sentinel" => "redis-sentinel",
        "redis-cli" => "redis-tools",
        "patroni" | "patronictl" => "patroni",
        "etcd" => "etcd-server",
        "etcdctl" => "etcd-client",
        "haproxy" => "haproxy",
        "pgbouncer" => "pgbouncer",
        "sshd" => "openssh-server",
        "ssh" | "scp" | "ssh-keygen" => "openssh-client",
        _ => "(unknown package)",
    }
}

/// Resolves `binary` to a path: Postgres server tools from [`PG_BIN_DIR`], `sshd` and
/// `pgbouncer` from `/usr/sbin`, Debian's `etcd`/`etcdctl` from `/usr/bin`, everything else from
/// `PATH`.
pub fn require(binary: &str) -> Result<PathBuf> {
    let candidates: Vec<PathBuf> = match binary {
        "postgres" | "initdb" | "pg_ctl" | "pg_basebackup" => {
            vec![Path::new(PG_BIN_DIR).join(binary)]
        }
        "sshd" => vec![PathBuf::from("/usr/sbin/sshd")],
        "pgbouncer" => vec![PathBuf::from("/usr/sbin/pgbouncer")],
        // Debian's etcd 3.4 with its v2 API, which Patroni 3.0 speaks; never the v3.6 etcd that
        // `./task kube-tools` puts first on PATH for the Kubernetes control plane.
        "etcd" | "etcdctl" => vec![PathBuf::from("/usr/bin").join(binary)],
        _ => std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).map(|d| d.join(binary)).collect())
            .unwrap_or_default(),
    };
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| TestkitError::MissingBinary {
            binary: binary.to_string(),
            package: package_of(binary),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binary_names_package_and_command() {
        let err = require("pg_isready-does-not-exist").unwrap_err();
        assert!(matches!(err, TestkitError::MissingBinary { .. }));
        let TestkitError::MissingBinary { binary, .. } = &err else {
            unreachable!()
        };
        assert_eq!(binary, "pg_isready-does-not-exist");
        assert!(err.to_string().contains("apt-get install -y"), "{err}");
    }

    #[test]
    fn known_binaries_map_to_their_packages() {
        assert_eq!(package_of("redis-cli"), "redis-tools");
        assert_eq!(package_of("initdb"), "postgresql-15");
        assert_eq!(package_of("etcdctl"), "etcd-client");
    }
}
