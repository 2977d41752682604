//! The `source-address` a per-session certificate to a target is bound to (OpenSSH's critical
//! option: the target refuses the certificate from any other address). Set per target with
//! `wgctl targets add … --ssh-source-address`, it makes a certificate taken from the gateway
//! useless anywhere else:
//! - `dial`: the address the replica dialled the target from, read from the socket of each
//!   session, so every replica's certificates name only itself (no NAT between gateway and
//!   target, or the target sees another address);
//! - a comma-separated list of addresses and CIDR blocks (`10.0.0.0/8,192.0.2.7`): the
//!   addresses the target sees the gateways come from, NAT included.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;

/// Where a target may accept the gateway's certificates from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceAddress {
    /// The local address of the connection the replica dialled (per session).
    Dial,
    /// These blocks (a bare address is a /32 or /128).
    Blocks(Vec<IpNet>),
}

/// Why a `--ssh-source-address` value is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not `dial` or a comma-separated list of IP addresses and CIDR blocks \
     (e.g. `10.0.0.0/8,192.0.2.7`)"
)]
pub struct SourceAddressError(pub String);

impl FromStr for SourceAddress {
    type Err = SourceAddressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("dial") {
            return Ok(Self::Dial);
        }
        let bad = |p: &str| SourceAddressError(p.to_string());
        let mut blocks = Vec::new();
        for part in s.split(',').map(str::trim) {
            let block = match part.parse::<IpNet>() {
                Ok(n) => n.trunc(),
                Err(_) => IpNet::from(part.parse::<IpAddr>().map_err(|_| bad(part))?),
            };
            if !blocks.contains(&block) {
                blocks.push(block);
            }
        }
        // OpenSSH reads at most 64 entries (`addr_match_cidr_list`); far fewer make sense.
        if blocks.is_empty() || blocks.len() > 32 {
            return Err(bad(s));
        }
        Ok(Self::Blocks(blocks))
    }
}

impl fmt::Display for SourceAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dial => f.write_str("dial"),
            Self::Blocks(b) => {
                let parts: Vec<String> = b.iter().map(IpNet::to_string).collect();
                f.write_str(&parts.join(","))
            }
        }
    }
}

impl SourceAddress {
    /// The option's value in a certificate for a connection dialled from `local`.
    pub fn option_for(&self, local: IpAddr) -> String {
        match self {
            Self::Dial => IpNet::from(local.to_canonical()).to_string(),
            Self::Blocks(_) => self.to_string(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_to_a_canonical_form_and_bad_ones_are_named() {
        assert_eq!(
            "dial".parse::<SourceAddress>().unwrap(),
            SourceAddress::Dial
        );
        assert_eq!(
            " DIAL ".parse::<SourceAddress>().unwrap(),
            SourceAddress::Dial
        );
        let s: SourceAddress = "10.1.2.3/8, 192.0.2.7,2001:db8::1,192.0.2.7"
            .parse()
            .unwrap();
        assert_eq!(s.to_string(), "10.0.0.0/8,192.0.2.7/32,2001:db8::1/128");
        assert_eq!(s.to_string().parse::<SourceAddress>().unwrap(), s);
        for bad in [
            "",
            "10.0.0.0/33",
            "gateway",
            "10.0.0.1,",
            "10.0.0.1 10.0.0.2",
        ] {
            let e = bad.parse::<SourceAddress>().unwrap_err();
            assert!(e.to_string().contains("not `dial`"), "{bad}: {e}");
        }
    }

    #[test]
    fn dial_names_the_local_address_of_the_connection() {
        let v4 = "127.0.0.1".parse().unwrap();
        assert_eq!(SourceAddress::Dial.option_for(v4), "127.0.0.1/32");
        // An IPv4 address seen through an IPv6 socket is written as IPv4, as sshd sees it.
        let mapped = "::ffff:10.0.0.9".parse().unwrap();
        assert_eq!(SourceAddress::Dial.option_for(mapped), "10.0.0.9/32");
        let blocks: SourceAddress = "10.0.0.0/8".parse().unwrap();
        assert_eq!(blocks.option_for(v4), "10.0.0.0/8");
    }
}
