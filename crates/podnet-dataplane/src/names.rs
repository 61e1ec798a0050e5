//! Names podnet gives to the objects it owns.

/// Prefix of every host-side veth podnet creates (`ip link show | grep pn`).
pub const HOST_VETH_PREFIX: &str = "pn";

/// The host-side veth name of an attachment: `pn` + 12 hex digits of a hash.
///
/// Deterministic, so that DEL finds the interface without any stored state,
/// and short enough for the kernel's 15-character limit.
pub fn host_veth_name(network: &str, container_id: &str, ifname: &str) -> String {
    let key = [network, container_id, ifname].join("\0");
    let h = podnet_kernel::hash::fnv1a64(key.as_bytes());
    format!("{HOST_VETH_PREFIX}{:012x}", h & 0xffff_ffff_ffff)
}

/// The interface group of a network's host-side veths: a 31-bit hash of its name, never 0.
///
/// Set atomically at creation, so even an ADD killed right after creating the
/// veth leaves an interface that GC can attribute to its network.
pub fn network_group(network: &str) -> u32 {
    let h = podnet_kernel::hash::fnv1a64(network.as_bytes());
    ((h as u32) & 0x7fff_ffff).max(1)
}

/// The alias podnet sets on a host-side veth: `podnet NETWORK CONTAINER_ID IFNAME`.
///
/// It tells a person reading `ip link` which pod an interface belongs to.
pub fn host_veth_alias(network: &str, container_id: &str, ifname: &str) -> String {
    format!("podnet {network} {container_id} {ifname}")
}

/// `(network, container id, ifname)` from an alias [`host_veth_alias`] wrote.
pub fn parse_host_veth_alias(alias: &str) -> Option<(&str, &str, &str)> {
    match alias.split(' ').collect::<Vec<_>>()[..] {
        ["podnet", network, container, ifname] => Some((network, container, ifname)),
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
    fn groups_are_per_network_and_never_zero() {
        assert_ne!(network_group("n1"), network_group("n2"));
        assert_eq!(network_group("n1"), network_group("n1"));
        assert!(network_group("") != 0);
        assert_eq!(host_veth_alias("n1", "c1", "eth0"), "podnet n1 c1 eth0");
        assert_eq!(
            parse_host_veth_alias(&host_veth_alias("n1", "c1", "eth0")),
            Some(("n1", "c1", "eth0"))
        );
        assert_eq!(parse_host_veth_alias("someone else's"), None);
    }
}
