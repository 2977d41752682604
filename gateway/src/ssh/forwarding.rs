//! Which `direct-tcpip` channels (`ssh -L`, `ssh -W`) a terminated SSH target allows: none
//! unless an admin lists them per target with `wgctl targets add … --ssh-forward-to LIST`.
//! The destination is opened by the target's own sshd (as seen from the target, so
//! `localhost:5432` is the target's own Postgres); its certificate then carries
//! `permit-port-forwarding`, which it lacks otherwise, so the target refuses forwarding too.
//!
//! A list is comma-separated `HOST:PORT` rules; `HOST` is a name or address (IPv6 in brackets)
//! or `*`, `PORT` is a number or `*`: `localhost:5432,db.internal:*`. Names are compared as
//! written (case-insensitively), never resolved: `localhost` does not allow `127.0.0.1`.

use std::fmt;
use std::str::FromStr;

/// One `HOST:PORT` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    /// Lowercase host without brackets; `None` is `*`.
    host: Option<String>,
    /// `None` is `*`.
    port: Option<u16>,
}

/// The destinations a target's users may forward to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardPolicy {
    rules: Vec<Rule>,
}

/// Why a `--ssh-forward-to` value is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a comma-separated list of HOST:PORT rules (HOST a name, an address, \
     [IPv6] or *; PORT 1-65535 or *; e.g. `localhost:5432,db.internal:*`)"
)]
pub struct ForwardPolicyError(String);

fn host_of(text: &str) -> String {
    text.trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase()
}

impl FromStr for ForwardPolicy {
    type Err = ForwardPolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ForwardPolicyError(s.to_string());
        let mut rules = Vec::new();
        for part in s.split(',').map(str::trim) {
            let (host, port) = part.rsplit_once(':').ok_or_else(bad)?;
            let bracketed = host.starts_with('[') && host.ends_with(']') && host.len() > 2;
            let host_ok = !host.is_empty()
                && host.len() <= 253
                && (bracketed
                    || host
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '*')));
            if !host_ok || (host.contains('*') && host != "*") {
                return Err(bad());
            }
            let port = match port {
                "*" => None,
                p => Some(p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(bad)?),
            };
            rules.push(Rule {
                host: (host != "*").then(|| host_of(host)),
                port,
            });
        }
        Ok(Self { rules })
    }
}

impl fmt::Display for ForwardPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.rules.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match &r.host {
                None => f.write_str("*")?,
                Some(h) if h.contains(':') => write!(f, "[{h}]")?,
                Some(h) => f.write_str(h)?,
            }
            match r.port {
                None => f.write_str(":*")?,
                Some(p) => write!(f, ":{p}")?,
            }
        }
        Ok(())
    }
}

impl ForwardPolicy {
    /// Whether a `direct-tcpip` channel to `host`:`port` may be opened.
    pub fn allows(&self, host: &str, port: u32) -> bool {
        let host = host_of(host);
        self.rules.iter().any(|r| {
            r.host.as_deref().is_none_or(|h| h == host)
                && r.port.is_none_or(|p| u32::from(p) == port)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::ForwardPolicy;

    #[test]
    fn rules_allow_exactly_what_they_name() {
        let p: ForwardPolicy = "localhost:5432, DB.internal:*, [::1]:22".parse().unwrap();
        assert!(p.allows("localhost", 5432));
        assert!(p.allows("LOCALHOST", 5432));
        assert!(!p.allows("localhost", 5433));
        assert!(!p.allows("127.0.0.1", 5432), "names are never resolved");
        assert!(p.allows("db.internal", 1));
        assert!(p.allows("db.internal", 65535));
        assert!(p.allows("::1", 22));
        assert!(p.allows("[::1]", 22));
        assert!(!p.allows("other", 22));
        assert_eq!(p.to_string(), "localhost:5432,db.internal:*,[::1]:22");
        let any: ForwardPolicy = "*:8080".parse().unwrap();
        assert!(any.allows("anything.example", 8080));
        assert!(!any.allows("anything.example", 8081));
    }

    #[test]
    fn malformed_rules_are_refused_with_an_example() {
        for bad in [
            "",
            "localhost",
            "localhost:",
            ":22",
            "localhost:0",
            "localhost:70000",
            "local host:22",
            "db*.internal:22",
            "a:22,,b:22",
            "[]:22",
        ] {
            let e = bad.parse::<ForwardPolicy>().unwrap_err().to_string();
            assert!(e.contains("localhost:5432,db.internal:*"), "{bad}: {e}");
        }
    }
}
