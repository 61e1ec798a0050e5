//! Names podnet gives to the objects it owns.

/// Prefix of every host-side veth podnet creates (`ip link show | grep pn`).
pub const HOST_VETH_PREFIX: &str = "pn";

/// The host-side veth name of an attachment: `pn` + 12 hex digits of a hash.
///
/// Deterministic, so that DEL finds the interface without any stored state,
/// and short enough for the kernel's 15-character limit.
pub fn host_veth_name(network: &str, container_id: &str, ifname: &str) -> String {
    // FNV-1a, 64 bit: stable across releases and platforms, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in network
        .bytes()
        .chain([0])
        .chain(container_id.bytes())
        .chain([0])
        .chain(ifname.bytes())
    {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{HOST_VETH_PREFIX}{:012x}", h & 0xffff_ffff_ffff)
}

/// The alias podnet sets on a host-side veth: `podnet NETWORK CONTAINER_ID IFNAME`.
///
/// GC reads it back to find interfaces of attachments that are no longer valid.
pub fn host_veth_alias(network: &str, container_id: &str, ifname: &str) -> String {
    format!("podnet {network} {container_id} {ifname}")
}

/// Parses an alias made by [`host_veth_alias`] for `network` into (container ID, ifname).
pub fn parse_host_veth_alias<'a>(alias: &'a str, network: &str) -> Option<(&'a str, &'a str)> {
    let mut parts = alias.split(' ');
    match (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) {
        (Some("podnet"), Some(net), Some(id), Some(ifname), None) if net == network => {
            Some((id, ifname))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_and_differ() {
        let a = host_veth_name("net", "abc", "eth0");
        assert_eq!(a.len(), 14);
        assert_eq!(a, host_veth_name("net", "abc", "eth0"));
        assert_ne!(a, host_veth_name("net", "abc", "eth1"));
        assert_ne!(a, host_veth_name("net2", "abc", "eth0"));
    }

    #[test]
    fn aliases_round_trip_per_network() {
        let alias = host_veth_alias("n1", "c1", "eth0");
        assert_eq!(parse_host_veth_alias(&alias, "n1"), Some(("c1", "eth0")));
        assert_eq!(parse_host_veth_alias(&alias, "n2"), None);
        assert_eq!(parse_host_veth_alias("something else", "n1"), None);
    }
}
