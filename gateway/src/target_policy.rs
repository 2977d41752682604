//! Which addresses a target may point at. A target is an address the gateway dials from inside
//! the network on a user's behalf, so an admin token (or a mistake) must not turn it into a way
//! to reach the cloud's instance metadata (credentials), link-local services, or the gateway's
//! own Postgres and Redis (whose contents include every session grant).
//!
//! Refused by default: the networks in [`DEFAULT_DENY`] and the endpoints the replica itself
//! depends on (its Postgres and Redis addresses, its own listeners). `--target-allow` lets an
//! operator permit a network explicitly; it wins over both. Checked twice: when a target is
//! added (an IP literal, or a host name equal to a dependency's), and at every dial, against
//! every address the name resolves to then (DNS may change after the target was added). A
//! dependency named by a host name is resolved once at start-up; its name is also compared.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;

/// Refused target networks unless allowed: IPv4 link-local (cloud metadata at
/// 169.254.169.254, ECS/EKS credential endpoints at 169.254.170.2), IPv6 link-local and AWS's
/// IPv6 metadata address, "this network", multicast, reserved, broadcast, and unspecified.
pub const DEFAULT_DENY: &str =
    "169.254.0.0/16,fe80::/10,fd00:ec2::254/128,0.0.0.0/8,224.0.0.0/4,240.0.0.0/4,ff00::/8,::/128";

/// Why [`TargetPolicy::dial`] returned no connection.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// The policy refuses every address the name resolves to (403 `target_not_allowed`).
    #[error(transparent)]
    Refused(TargetRefused),
    /// The name does not resolve, or nothing answered in time (502 `target_unreachable`).
    #[error("{0}")]
    Unreachable(String),
}

/// Why a target address is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetRefused {
    /// The address lies in a denied network.
    #[error(
        "{host}:{port} resolves to {addr}, inside the denied network {net} (--target-deny); an operator can allow it with --target-allow"
    )]
    Denied {
        /// Host as configured.
        host: String,
        /// Port.
        port: u16,
        /// The refused address.
        addr: IpAddr,
        /// The network that refused it.
        net: IpNet,
    },
    /// The address is one of the replica's own dependencies or listeners.
    #[error(
        "{host}:{port} is this gateway's own {what}; targets may not point at it (an operator can allow it with --target-allow)"
    )]
    OwnEndpoint {
        /// Host as configured.
        host: String,
        /// Port.
        port: u16,
        /// Which dependency (`Postgres`, `Redis`, `listener`).
        what: &'static str,
    },
}

/// One endpoint the replica depends on or serves.
#[derive(Debug, Clone)]
struct Endpoint {
    what: &'static str,
    host: String,
    port: u16,
    addrs: Vec<IpAddr>,
}

/// The target rules of one replica.
#[derive(Debug, Clone, Default)]
pub struct TargetPolicy {
    deny: Vec<IpNet>,
    allow: Vec<IpNet>,
    own: Vec<Endpoint>,
}

/// Parses a comma-separated list of CIDRs or addresses.
pub fn parse_networks(list: &str) -> Result<Vec<IpNet>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|item| {
            item.parse::<IpNet>()
                .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                .map(|n| n.trunc())
                .map_err(|_| format!("`{item}` is not a CIDR (10.0.0.0/8) or an IP address"))
        })
        .collect()
}

fn host_eq(a: &str, b: &str) -> bool {
    a.trim_matches(['[', ']'])
        .eq_ignore_ascii_case(b.trim_matches(['[', ']']))
}

impl TargetPolicy {
    /// Denies `deny` unless in `allow`.
    pub fn new(deny: Vec<IpNet>, allow: Vec<IpNet>) -> Self {
        Self {
            deny,
            allow,
            own: Vec::new(),
        }
    }

    /// Also refuses `host:port`, one of the replica's own endpoints (`what` names it in
    /// errors). A host name is resolved now, within two seconds; an unresolvable one is still
    /// compared by name.
    pub async fn with_own(mut self, what: &'static str, host: &str, port: u16) -> Self {
        let host = host.trim_matches(['[', ']']).to_string();
        let addrs = match host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => tokio::time::timeout(
                Duration::from_secs(2),
                tokio::net::lookup_host((host.as_str(), port)),
            )
            .await
            .ok()
            .and_then(Result::ok)
            .map(|it| it.map(|a| a.ip()).collect())
            .unwrap_or_default(),
        };
        self.own.push(Endpoint {
            what,
            host,
            port,
            addrs,
        });
        self
    }

    /// Also refuses this replica's own listener on `addr` (an unspecified address means
    /// every local address: loopback and `localhost` are refused on that port).
    pub async fn with_listener(self, addr: SocketAddr) -> Self {
        if addr.ip().is_unspecified() {
            let with_v4 = self.with_own("listener", "127.0.0.1", addr.port()).await;
            let with_v6 = with_v4.with_own("listener", "::1", addr.port()).await;
            with_v6.with_own("listener", "localhost", addr.port()).await
        } else {
            self.with_own("listener", &addr.ip().to_string(), addr.port())
                .await
        }
    }

    fn allowed(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.allow.iter().any(|n| n.contains(&ip))
    }

    fn own_by_name(&self, host: &str, port: u16) -> Option<&Endpoint> {
        self.own
            .iter()
            .find(|e| e.port == port && host_eq(&e.host, host))
    }

    /// Checks a target as it is added: its host name against the dependencies' names, and an
    /// IP literal against every rule. Names are checked again at each dial.
    pub fn check_configured(&self, host: &str, port: u16) -> Result<(), TargetRefused> {
        let literal = host.trim_matches(['[', ']']).parse::<IpAddr>().ok();
        if literal.is_some_and(|ip| self.allowed(ip)) {
            return Ok(());
        }
        if let Some(e) = self.own_by_name(host, port) {
            return Err(TargetRefused::OwnEndpoint {
                host: host.to_string(),
                port,
                what: e.what,
            });
        }
        match literal {
            Some(ip) => self.check_addr(host, SocketAddr::new(ip, port)),
            None => Ok(()),
        }
    }

    /// Checks one address `host` resolved to.
    pub fn check_addr(&self, host: &str, addr: SocketAddr) -> Result<(), TargetRefused> {
        let ip = addr.ip().to_canonical();
        if self.allowed(ip) {
            return Ok(());
        }
        if let Some(e) = self
            .own
            .iter()
            .find(|e| e.port == addr.port() && e.addrs.iter().any(|a| a.to_canonical() == ip))
            .or_else(|| self.own_by_name(host, addr.port()))
        {
            return Err(TargetRefused::OwnEndpoint {
                host: host.to_string(),
                port: addr.port(),
                what: e.what,
            });
        }
        match self.deny.iter().find(|n| n.contains(&ip)) {
            Some(net) => Err(TargetRefused::Denied {
                host: host.to_string(),
                port: addr.port(),
                addr: ip,
                net: *net,
            }),
            None => Ok(()),
        }
    }

    /// Dials `host:port` within `timeout`: resolves the name now and connects only to the
    /// addresses this policy permits (Nagle off). The one dial of every front end: the byte
    /// relay, a remote gateway's relay and the terminating SSH front end.
    pub async fn dial(
        &self,
        host: &str,
        port: u16,
        timeout: Duration,
    ) -> Result<tokio::net::TcpStream, DialError> {
        let connect = async {
            let resolved = tokio::net::lookup_host((host, port))
                .await
                .map_err(|e| DialError::Unreachable(e.to_string()))?;
            let addrs = self
                .permitted(host, resolved)
                .map_err(|refused| match refused {
                    Some(e) => DialError::Refused(e),
                    None => DialError::Unreachable("the name resolves to no address".into()),
                })?;
            tokio::net::TcpStream::connect(&addrs[..])
                .await
                .map_err(|e| DialError::Unreachable(e.to_string()))
        };
        let stream = tokio::time::timeout(timeout, connect)
            .await
            .map_err(|_| DialError::Unreachable(format!("no answer within {timeout:?}")))??;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    /// The addresses of `resolved` the gateway may dial; when none may, the first refusal.
    pub fn permitted(
        &self,
        host: &str,
        resolved: impl IntoIterator<Item = SocketAddr>,
    ) -> Result<Vec<SocketAddr>, Option<TargetRefused>> {
        let mut first_refusal = None;
        let mut ok = Vec::new();
        for addr in resolved {
            match self.check_addr(host, addr) {
                Ok(()) => ok.push(addr),
                Err(e) => {
                    first_refusal.get_or_insert(e);
                }
            }
        }
        if ok.is_empty() {
            Err(first_refusal)
        } else {
            Ok(ok)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn policy(allow: &str) -> TargetPolicy {
        TargetPolicy::new(
            parse_networks(DEFAULT_DENY).unwrap(),
            parse_networks(allow).unwrap(),
        )
        .with_own("Postgres", "10.0.5.7", 5432)
        .await
        .with_own("Redis", "redis.internal.example", 6379)
        .await
        .with_listener("0.0.0.0:8443".parse().unwrap())
        .await
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn metadata_link_local_and_own_dependencies_are_refused_by_default() {
        let p = policy("").await;
        for (host, port) in [
            ("169.254.169.254", 80),
            ("169.254.170.2", 80),
            ("[fd00:ec2::254]", 80),
            ("fe80::1", 22),
            ("0.0.0.0", 22),
            ("10.0.5.7", 5432),
            ("redis.internal.example", 6379),
            ("REDIS.internal.example", 6379),
            ("127.0.0.1", 8443),
            ("localhost", 8443),
        ] {
            let e = p.check_configured(host, port);
            assert!(e.is_err(), "{host}:{port} was allowed");
        }
        let e = p.check_configured("169.254.169.254", 80).unwrap_err();
        assert!(e.to_string().contains("169.254.0.0/16"), "{e}");
        assert!(e.to_string().contains("--target-allow"), "{e}");
        let e = p.check_configured("10.0.5.7", 5432).unwrap_err();
        assert!(e.to_string().contains("own Postgres"), "{e}");
    }

    #[tokio::test]
    async fn ordinary_targets_pass_and_an_explicit_allow_wins() {
        let p = policy("").await;
        for (host, port) in [
            ("10.0.5.7", 22),
            ("127.0.0.1", 22),
            ("db.example", 5432),
            ("2001:db8::1", 22),
        ] {
            assert_eq!(p.check_configured(host, port), Ok(()), "{host}:{port}");
        }
        let p = policy("169.254.10.0/24, 10.0.5.7").await;
        assert_eq!(p.check_configured("169.254.10.5", 22), Ok(()));
        assert!(p.check_configured("169.254.169.254", 80).is_err());
        assert_eq!(p.check_configured("10.0.5.7", 5432), Ok(()));
    }

    #[tokio::test]
    async fn a_name_that_resolves_to_a_refused_address_is_refused_at_dial() {
        let p = policy("").await;
        // An innocent-looking name pointing at the metadata service (DNS rebinding).
        let e = p
            .permitted("innocent.example", [sa("169.254.169.254:80")])
            .unwrap_err()
            .unwrap();
        assert!(matches!(e, TargetRefused::Denied { .. }), "{e}");
        let e = p
            .permitted("db.example", [sa("10.0.5.7:5432")])
            .unwrap_err()
            .unwrap();
        assert!(
            matches!(
                e,
                TargetRefused::OwnEndpoint {
                    what: "Postgres",
                    ..
                }
            ),
            "{e}"
        );
        // Only the permitted addresses of a mixed answer are dialled.
        assert_eq!(
            p.permitted(
                "mixed.example",
                [sa("169.254.169.254:22"), sa("10.1.1.1:22")]
            ),
            Ok(vec![sa("10.1.1.1:22")])
        );
        assert_eq!(p.permitted("nothing.example", []), Err(None));
    }

    #[test]
    fn bad_networks_are_named() {
        let e = parse_networks("10.0.0.0/8,metadata").unwrap_err();
        assert!(e.contains("`metadata`"), "{e}");
    }
}
