//! Parsing of the Redis URL forms Wardengate accepts (`WG_REDIS_URL`):
//!
//! - `redis://[[user]:password@]host:port[/db]` and `rediss://…` (TLS): one server;
//! - `sentinel://[:password@]h1:26379,h2:26379,h3:26379/<master-name>` (`sentinels://` for TLS):
//!   the primary Sentinel names, followed across failovers;
//! - `redis://host:port?cluster=true` / `rediss://…?cluster=true`: a Redis Cluster, seeded from
//!   the given node(s) (several may be listed comma-separated).

use std::fmt;

/// Why a Redis URL was refused. Messages never include the password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedisUrlError {
    /// Not one of the supported schemes.
    #[error("unsupported scheme `{0}`: use redis://, rediss://, sentinel:// or sentinels://")]
    Scheme(String),
    /// No host was given.
    #[error("no host: expected host:port after the scheme")]
    NoHost,
    /// A `host:port` entry is malformed.
    #[error("bad address `{0}`: expected host:port with a port between 1 and 65535")]
    Address(String),
    /// A Sentinel URL without `/<master-name>`.
    #[error(
        "sentinel URL needs the master name as its path, e.g. sentinel://h1:26379,h2:26379/mymaster"
    )]
    NoMasterName,
    /// The database path is not a number.
    #[error("bad database `{0}`: the path of a redis:// URL is a database number")]
    Database(String),
    /// A query parameter we do not understand (typos must not be ignored silently).
    #[error("unknown query parameter `{0}`: only cluster=true|false is supported")]
    Query(String),
    /// Cluster mode with a database number (clusters only have database 0).
    #[error("a Redis Cluster has only database 0; remove the /{0} path")]
    ClusterDatabase(i64),
}

/// A host and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// Host name or IP literal (brackets stripped for IPv6).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// What to connect to, with credentials.
#[derive(Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One server.
    Standalone {
        /// Server address.
        addr: HostPort,
        /// TLS (`rediss://`).
        tls: bool,
        /// ACL user name, if any.
        username: Option<String>,
        /// Password, if any.
        password: Option<String>,
        /// Database number.
        db: i64,
    },
    /// A primary discovered through Sentinels.
    Sentinel {
        /// Sentinel addresses.
        sentinels: Vec<HostPort>,
        /// Monitored master name.
        master: String,
        /// Password of the data nodes (primary/replicas).
        password: Option<String>,
        /// TLS to the data nodes and Sentinels (`sentinels://`).
        tls: bool,
        /// Database number.
        db: i64,
    },
    /// A Redis Cluster.
    Cluster {
        /// Seed nodes.
        nodes: Vec<HostPort>,
        /// TLS.
        tls: bool,
        /// ACL user name, if any.
        username: Option<String>,
        /// Password, if any.
        password: Option<String>,
    },
}

impl fmt::Debug for RedisTarget {
    /// Never prints the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.redacted())
    }
}

impl RedisTarget {
    /// Every address the URL names (the server, the Sentinels, or the cluster's seeds).
    pub fn endpoints(&self) -> Vec<HostPort> {
        match self {
            Self::Standalone { addr, .. } => vec![addr.clone()],
            Self::Sentinel { sentinels, .. } => sentinels.clone(),
            Self::Cluster { nodes, .. } => nodes.clone(),
        }
    }

    /// A printable description with the password masked.
    pub fn redacted(&self) -> String {
        let pw = |p: &Option<String>| if p.is_some() { ":***@" } else { "" };
        let join = |v: &[HostPort]| {
            v.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        match self {
            Self::Standalone {
                addr,
                tls,
                password,
                db,
                ..
            } => {
                format!(
                    "{}://{}{addr}/{db}",
                    if *tls { "rediss" } else { "redis" },
                    pw(password)
                )
            }
            Self::Sentinel {
                sentinels,
                master,
                password,
                tls,
                ..
            } => format!(
                "{}://{}{}/{master}",
                if *tls { "sentinels" } else { "sentinel" },
                pw(password),
                join(sentinels)
            ),
            Self::Cluster {
                nodes,
                tls,
                password,
                ..
            } => format!(
                "{}://{}{}?cluster=true",
                if *tls { "rediss" } else { "redis" },
                pw(password),
                join(nodes)
            ),
        }
    }

    /// Parses one of the supported URL forms.
    pub fn parse(url: &str) -> Result<Self, RedisUrlError> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| RedisUrlError::Scheme(url.chars().take(12).collect()))?;
        let (tls, sentinel) = match scheme {
            "redis" => (false, false),
            "rediss" => (true, false),
            "sentinel" => (false, true),
            "sentinels" => (true, true),
            other => return Err(RedisUrlError::Scheme(other.to_string())),
        };
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        let mut cluster = false;
        for pair in query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .filter(|p| !p.is_empty())
        {
            match pair {
                "cluster=true" | "cluster=1" => cluster = true,
                "cluster=false" | "cluster=0" => cluster = false,
                other => {
                    return Err(RedisUrlError::Query(
                        other.split('=').next().unwrap_or(other).to_string(),
                    ));
                }
            }
        }
        let (userinfo, rest) = match rest.rsplit_once('@') {
            Some((u, r)) => (Some(u), r),
            None => (None, rest),
        };
        let (username, password) = match userinfo {
            None => (None, None),
            Some(u) => {
                let (user, pw) = u.split_once(':').unwrap_or((u, ""));
                let user = (!user.is_empty()).then(|| decode(user));
                let pw = (!pw.is_empty()).then(|| decode(pw));
                (user, pw)
            }
        };
        let (hosts, path) = match rest.split_once('/') {
            Some((h, p)) => (h, p),
            None => (rest, ""),
        };
        if hosts.is_empty() {
            return Err(RedisUrlError::NoHost);
        }
        let default_port = if sentinel { 26379 } else { 6379 };
        let addrs = hosts
            .split(',')
            .map(|h| parse_host_port(h, default_port))
            .collect::<Result<Vec<_>, _>>()?;
        if sentinel {
            if path.is_empty() {
                return Err(RedisUrlError::NoMasterName);
            }
            let (master, db) = match path.split_once('/') {
                Some((m, d)) => (m, parse_db(d)?),
                None => (path, 0),
            };
            return Ok(Self::Sentinel {
                sentinels: addrs,
                master: decode(master),
                password,
                tls,
                db,
            });
        }
        let db = parse_db(path)?;
        if cluster {
            if db != 0 {
                return Err(RedisUrlError::ClusterDatabase(db));
            }
            return Ok(Self::Cluster {
                nodes: addrs,
                tls,
                username,
                password,
            });
        }
        let [addr] = <[HostPort; 1]>::try_from(addrs).map_err(|v| {
            RedisUrlError::Address(
                v.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            )
        })?;
        Ok(Self::Standalone {
            addr,
            tls,
            username,
            password,
            db,
        })
    }
}

fn parse_db(path: &str) -> Result<i64, RedisUrlError> {
    if path.is_empty() {
        return Ok(0);
    }
    path.parse::<i64>()
        .ok()
        .filter(|d| *d >= 0)
        .ok_or_else(|| RedisUrlError::Database(path.to_string()))
}

fn parse_host_port(s: &str, default_port: u16) -> Result<HostPort, RedisUrlError> {
    let bad = || RedisUrlError::Address(s.to_string());
    let (host, port) = if let Some(v6) = s.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or_else(bad)?;
        (h, after.strip_prefix(':'))
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if host.is_empty() {
        return Err(bad());
    }
    let port = match port {
        None => default_port,
        Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(bad)?,
    };
    Ok(HostPort {
        host: host.to_string(),
        port,
    })
}

/// Percent-decodes a URL component (passwords may contain `@`, `:` or `/` encoded).
fn decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hp(h: &str, p: u16) -> HostPort {
        HostPort {
            host: h.into(),
            port: p,
        }
    }

    #[test]
    fn standalone_forms() {
        assert_eq!(
            RedisTarget::parse("redis://127.0.0.1:6380/2").unwrap(),
            RedisTarget::Standalone {
                addr: hp("127.0.0.1", 6380),
                tls: false,
                username: None,
                password: None,
                db: 2
            }
        );
        assert_eq!(
            RedisTarget::parse("rediss://:p%40ss@cache.internal").unwrap(),
            RedisTarget::Standalone {
                addr: hp("cache.internal", 6379),
                tls: true,
                username: None,
                password: Some("p@ss".into()),
                db: 0
            }
        );
    }

    #[test]
    fn sentinel_form_from_the_ha_guide() {
        let t = RedisTarget::parse(
            "sentinel://:password@s1.example:26379,s2.example:26379,s3.example:26379/mymaster",
        )
        .unwrap();
        assert_eq!(
            t,
            RedisTarget::Sentinel {
                sentinels: vec![
                    hp("s1.example", 26379),
                    hp("s2.example", 26379),
                    hp("s3.example", 26379)
                ],
                master: "mymaster".into(),
                password: Some("password".into()),
                tls: false,
                db: 0,
            }
        );
        assert!(
            !format!("{t:?}").contains("password@"),
            "debug output leaks the password"
        );
    }

    #[test]
    fn cluster_form_from_the_ha_guide() {
        assert_eq!(
            RedisTarget::parse("rediss://cluster.internal:6379?cluster=true").unwrap(),
            RedisTarget::Cluster {
                nodes: vec![hp("cluster.internal", 6379)],
                tls: true,
                username: None,
                password: None
            }
        );
        assert_eq!(
            RedisTarget::parse("redis://a:1,b:2?cluster=true").unwrap(),
            RedisTarget::Cluster {
                nodes: vec![hp("a", 1), hp("b", 2)],
                tls: false,
                username: None,
                password: None
            }
        );
    }

    #[test]
    fn ipv6_literal() {
        let t = RedisTarget::parse("redis://[::1]:7000").unwrap();
        assert!(matches!(t, RedisTarget::Standalone { addr, .. } if addr == hp("::1", 7000)));
    }

    #[test]
    fn malformed_urls_are_refused_with_the_reason() {
        use RedisUrlError::*;
        let cases: &[(&str, RedisUrlError)] = &[
            ("http://x:1", Scheme("http".into())),
            ("redis-host:6379", Scheme("redis-host:6".into())),
            ("sentinel://h1:26379,h2:26379", NoMasterName),
            ("redis://:pw@", NoHost),
            ("redis://h:notaport", Address("h:notaport".into())),
            ("redis://h:0", Address("h:0".into())),
            ("redis://h:1/x", Database("x".into())),
            ("redis://h:1?clustr=true", Query("clustr".into())),
            ("redis://h:1/3?cluster=true", ClusterDatabase(3)),
            ("redis://a:1,b:2", Address("a:1,b:2".into())),
        ];
        for (url, want) in cases {
            assert_eq!(&RedisTarget::parse(url).unwrap_err(), want, "{url}");
        }
    }
}
