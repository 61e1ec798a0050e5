//! Address ranges and range sets, as host-local spells them.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::error::IpamError;

/// One range: a subnet, optionally narrowed, with its gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Range {
    /// The subnet addresses are taken from.
    pub subnet: IpNet,
    /// First address handed out (default: first host after the gateway's network address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_start: Option<IpAddr>,
    /// Last address handed out (default: last host; IPv4 broadcast excluded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_end: Option<IpAddr>,
    /// Gateway address (default: the subnet's first host). Never handed out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
}

/// A list of ranges of one family; a pod gets one address per range set.
pub type RangeSet = Vec<Range>;

/// An address as a number, so that ranges can be walked.
pub(crate) fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The address `n` of the same family as `like`.
pub(crate) fn from_u128(n: u128, like: IpAddr) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::from((n as u32).to_be_bytes()),
        IpAddr::V6(_) => IpAddr::from(n.to_be_bytes()),
    }
}

impl Range {
    /// The gateway: configured, or the subnet's first host.
    pub fn gateway(&self) -> IpAddr {
        self.gateway
            .unwrap_or_else(|| from_u128(to_u128(self.subnet.network()) + 1, self.subnet.addr()))
    }

    /// First and last allocatable address as numbers (inclusive).
    pub(crate) fn bounds(&self) -> (u128, u128) {
        let net = to_u128(self.subnet.network());
        let last = to_u128(self.subnet.broadcast());
        let default_end = if self.subnet.addr().is_ipv4() && self.subnet.prefix_len() < 31 {
            last - 1
        } else {
            last
        };
        let default_start = if self.subnet.prefix_len() < 31 {
            net + 1
        } else {
            net
        };
        let start = self.range_start.map(to_u128).unwrap_or(default_start);
        let end = self.range_end.map(to_u128).unwrap_or(default_end);
        (start, end)
    }

    /// True when `ip` may be handed out from this range.
    pub(crate) fn allocatable(&self, ip: IpAddr) -> bool {
        let (start, end) = self.bounds();
        let n = to_u128(ip);
        n >= start
            && n <= end
            && ip != self.gateway()
            && ip != self.subnet.network()
            && !(ip.is_ipv4() && self.subnet.prefix_len() < 31 && ip == self.subnet.broadcast())
    }

    /// Checks that the range is coherent; names the problem when it is not.
    pub fn validate(&self) -> Result<(), IpamError> {
        let bad = |what: String| Err(IpamError::Config(format!("range {}: {what}", self.subnet)));
        if self.subnet != self.subnet.trunc() {
            return bad(format!(
                "subnet has host bits set (did you mean {}?)",
                self.subnet.trunc()
            ));
        }
        for (name, ip) in [
            ("rangeStart", self.range_start),
            ("rangeEnd", self.range_end),
            ("gateway", self.gateway),
        ] {
            if let Some(ip) = ip {
                if !self.subnet.contains(&ip) {
                    return bad(format!("{name} {ip} is outside the subnet"));
                }
            }
        }
        let (start, end) = self.bounds();
        if start > end {
            return bad("rangeStart is after rangeEnd".into());
        }
        Ok(())
    }
}

/// Validates a list of range sets: non-empty, one family per set, no overlaps.
pub fn validate_range_sets(sets: &[RangeSet]) -> Result<(), IpamError> {
    if sets.is_empty() {
        return Err(IpamError::Config(
            "ipam.ranges is empty: give at least one range set".into(),
        ));
    }
    let mut all: Vec<&Range> = Vec::new();
    for (i, set) in sets.iter().enumerate() {
        let Some(first) = set.first() else {
            return Err(IpamError::Config(format!(
                "ipam.ranges[{i}] is an empty range set"
            )));
        };
        for r in set {
            r.validate()?;
            if r.subnet.addr().is_ipv4() != first.subnet.addr().is_ipv4() {
                return Err(IpamError::Config(format!(
                    "ipam.ranges[{i}] mixes IPv4 and IPv6 ranges"
                )));
            }
            if let Some(other) = all
                .iter()
                .find(|o| o.subnet.contains(&r.subnet) || r.subnet.contains(&o.subnet))
            {
                return Err(IpamError::Config(format!(
                    "range {} overlaps range {}",
                    r.subnet, other.subnet
                )));
            }
            all.push(r);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(s: &str) -> Range {
        Range {
            subnet: s.parse().unwrap(),
            range_start: None,
            range_end: None,
            gateway: None,
        }
    }

    #[test]
    fn ipv4_defaults_reserve_network_gateway_broadcast() {
        let r = range("10.0.0.0/29");
        let ok: Vec<_> = (0..8)
            .map(|i| IpAddr::from([10, 0, 0, i]))
            .filter(|ip| r.allocatable(*ip))
            .collect();
        assert_eq!(
            ok,
            (2..7)
                .map(|i| IpAddr::from([10, 0, 0, i]))
                .collect::<Vec<_>>()
        );
        assert_eq!(r.gateway(), IpAddr::from([10, 0, 0, 1]));
    }

    #[test]
    fn ipv6_keeps_last_address() {
        let r = range("fd00::/126");
        let last: IpAddr = "fd00::3".parse().unwrap();
        assert!(r.allocatable(last));
        assert!(!r.allocatable("fd00::1".parse().unwrap()), "gateway");
    }

    #[test]
    fn validation_names_the_problem() {
        let mut r = range("10.0.0.0/24");
        r.range_start = Some("10.0.1.5".parse().unwrap());
        assert!(r
            .validate()
            .unwrap_err()
            .to_string()
            .contains("rangeStart 10.0.1.5 is outside"));
        assert!(range("10.0.0.1/24")
            .validate()
            .unwrap_err()
            .to_string()
            .contains("host bits"));
        let sets = vec![vec![range("10.0.0.0/24")], vec![range("10.0.0.0/16")]];
        assert!(validate_range_sets(&sets)
            .unwrap_err()
            .to_string()
            .contains("overlaps"));
        let mixed = vec![vec![range("10.0.0.0/24"), range("fd00::/64")]];
        assert!(validate_range_sets(&mixed)
            .unwrap_err()
            .to_string()
            .contains("mixes"));
        assert!(validate_range_sets(&[]).is_err());
        assert!(validate_range_sets(&[vec![]]).is_err());
    }
}
