//! The cluster spec and node records, as stored and as written in cluster.yaml.

use std::net::{IpAddr, Ipv6Addr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::bgp::BgpSettings;
use crate::error::ClusterError;

/// How pod traffic crosses from one node to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// A route to each remote node's block via that node's address (needs one L2 segment).
    HostGw,
    /// A VXLAN overlay with static FDB and neighbour entries (no multicast, no flooding).
    Vxlan,
    /// host-gw to nodes on the same L2 segment, VXLAN to the others (Flannel's DirectRouting).
    #[default]
    Auto,
    /// Every node a BGP speaker (BIRD): blocks advertised, routes learned,
    /// nothing encapsulated (Calico's BGP mode).
    Bgp,
}

impl Backend {
    /// Its name in the cluster spec (`host-gw`, `vxlan`, `auto`).
    pub fn name(self) -> &'static str {
        match self {
            Backend::HostGw => "host-gw",
            Backend::Vxlan => "vxlan",
            Backend::Auto => "auto",
            Backend::Bgp => "bgp",
        }
    }

    /// Whether this backend may encapsulate, so pods need the smaller MTU.
    pub fn may_encapsulate(self) -> bool {
        !matches!(self, Backend::HostGw | Backend::Bgp)
    }
}

/// VXLAN parameters shared by every node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VxlanSettings {
    /// VXLAN network identifier (default 1).
    #[serde(default = "default_vni")]
    pub vni: u32,
    /// UDP destination port (default 4789, the IANA port).
    #[serde(default = "default_port")]
    pub port: u16,
}

impl Default for VxlanSettings {
    fn default() -> Self {
        VxlanSettings {
            vni: default_vni(),
            port: default_port(),
        }
    }
}

fn default_vni() -> u32 {
    1
}
fn default_port() -> u16 {
    4789
}
fn default_block_v4() -> u8 {
    24
}
fn default_block_v6() -> u8 {
    64
}
fn default_true() -> bool {
    true
}

/// What every node agrees on: pod CIDRs, block sizes, backend, MTU override.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterSpec {
    /// The cluster's pod CIDRs: one IPv4, optionally one IPv6.
    #[serde(rename = "clusterCIDRs")]
    pub cluster_cidrs: Vec<IpNet>,
    /// Prefix length of each node's IPv4 block (default 24).
    #[serde(default = "default_block_v4")]
    pub node_block_v4: u8,
    /// Prefix length of each node's IPv6 block (default 64).
    #[serde(default = "default_block_v6")]
    pub node_block_v6: u8,
    /// Cross-node backend.
    #[serde(default)]
    pub backend: Backend,
    /// VXLAN parameters (used by `vxlan` and `auto`).
    #[serde(default)]
    pub vxlan: VxlanSettings,
    /// Pod MTU; when absent each node derives it from its underlay interface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Masquerade pod traffic that leaves the cluster CIDRs (default true).
    #[serde(default = "default_true")]
    pub masquerade: bool,
    /// Drop packets a pod sends from an address that is not its own, and (bridge
    /// model) ARP and neighbour advertisements claiming another's address (default true).
    #[serde(default = "default_true")]
    pub anti_spoofing: bool,
    /// Service CIDRs, where cluster IPs come from (default 10.96.0.0/12).
    #[serde(rename = "serviceCIDRs", default = "default_service_cidrs")]
    pub service_cidrs: Vec<IpNet>,
    /// Node port range, `MIN-MAX` (default 30000-32767).
    #[serde(default = "default_node_port_range")]
    pub node_port_range: String,
    /// BGP settings (backend `bgp`; defaults when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp: Option<BgpSettings>,
}

fn default_service_cidrs() -> Vec<IpNet> {
    vec!["10.96.0.0/12".parse().expect("static prefix")]
}

fn default_node_port_range() -> String {
    "30000-32767".into()
}

impl ClusterSpec {
    /// A cluster with default settings over `cidrs`.
    pub fn new(cidrs: Vec<IpNet>, backend: Backend) -> Self {
        ClusterSpec {
            cluster_cidrs: cidrs,
            node_block_v4: default_block_v4(),
            node_block_v6: default_block_v6(),
            backend,
            vxlan: VxlanSettings::default(),
            mtu: None,
            masquerade: true,
            anti_spoofing: true,
            service_cidrs: default_service_cidrs(),
            node_port_range: default_node_port_range(),
            bgp: None,
        }
    }

    /// The BGP settings: the spec's, or the defaults.
    pub fn bgp_settings(&self) -> BgpSettings {
        self.bgp.clone().unwrap_or_default()
    }

    /// Checks CIDRs (one per family, no overlap), block sizes and VXLAN settings.
    pub fn validate(&self) -> Result<(), ClusterError> {
        if self.cluster_cidrs.is_empty() {
            return Err(ClusterError::NoClusterCidr);
        }
        for (i, a) in self.cluster_cidrs.iter().enumerate() {
            for b in &self.cluster_cidrs[i + 1..] {
                if a.contains(b) || b.contains(a) {
                    return Err(ClusterError::Overlap(*a, *b));
                }
                if a.addr().is_ipv4() == b.addr().is_ipv4() {
                    return Err(ClusterError::SameFamily(*a, *b));
                }
            }
            let block = self.block_len(a);
            if block < a.prefix_len() || block >= a.max_prefix_len() {
                return Err(ClusterError::BadBlockSize { cidr: *a, block });
            }
        }
        if self.vxlan.vni == 0 || self.vxlan.vni > 0x00ff_ffff {
            return Err(ClusterError::BadVni(self.vxlan.vni));
        }
        for s in &self.service_cidrs {
            if let Some(c) = self
                .cluster_cidrs
                .iter()
                .find(|c| c.contains(s) || s.contains(*c))
            {
                return Err(ClusterError::Overlap(*c, *s));
            }
        }
        self.node_ports()?;
        if let Some(bgp) = &self.bgp {
            if self.backend != Backend::Bgp {
                return Err(ClusterError::BadBgp {
                    field: "bgp".into(),
                    message: format!("BGP settings need backend bgp, not {}", self.backend.name()),
                });
            }
            bgp.validate()?;
        }
        Ok(())
    }

    /// The node port range as `(first, last)`.
    pub fn node_ports(&self) -> Result<(u16, u16), ClusterError> {
        let bad = || ClusterError::BadNodePortRange(self.node_port_range.clone());
        let (a, b) = self.node_port_range.split_once('-').ok_or_else(bad)?;
        let a: u16 = a.trim().parse().map_err(|_| bad())?;
        let b: u16 = b.trim().parse().map_err(|_| bad())?;
        if a == 0 || a > b {
            return Err(bad());
        }
        Ok((a, b))
    }

    /// The block prefix length for the family of `cidr`.
    pub fn block_len(&self, cidr: &IpNet) -> u8 {
        match cidr {
            IpNet::V4(_) => self.node_block_v4,
            IpNet::V6(_) => self.node_block_v6,
        }
    }
}

/// A node as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    /// Node name (unique in the cluster).
    pub name: String,
    /// The node's underlay address: where other nodes send its pods' traffic.
    pub address: IpAddr,
    /// The node's pod CIDR blocks, one per cluster family.
    #[serde(rename = "podCIDRs")]
    pub pod_cidrs: Vec<IpNet>,
    /// MAC of the node's VXLAN device (derived from its name, stable across restarts).
    pub vtep_mac: String,
    /// IPv6 link-local address of the node's underlay interface: the next hop of
    /// host-gw routes to the node's IPv6 block when the underlay is IPv4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_local: Option<Ipv6Addr>,
}

/// Checks a node name: it becomes a store key and part of interface aliases.
pub fn validate_node_name(name: &str) -> Result<(), ClusterError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(ClusterError::BadNodeName(name.to_string()))
    }
}

/// The VXLAN MAC of node `name`: locally administered, unicast, derived from the name.
///
/// Deriving it (instead of letting the kernel pick one) keeps it stable when
/// the agent recreates the device, so other nodes' FDB entries stay valid.
pub fn vtep_mac(name: &str) -> [u8; 6] {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.as_bytes() {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let h = hash.to_be_bytes();
    [0x0e, h[0], h[1], h[2], h[3], h[4]]
}

/// Formats a MAC as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut out {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// VXLAN encapsulation overhead: outer IP + UDP + VXLAN + inner Ethernet.
const VXLAN_OVERHEAD_V4: u32 = 20 + 8 + 8 + 14;
const VXLAN_OVERHEAD_V6: u32 = 40 + 8 + 8 + 14;

/// The pod MTU for an underlay interface of `underlay_mtu`: minus 50 (IPv4
/// underlay) or 70 (IPv6 underlay) when `backend` may encapsulate, unchanged
/// for host-gw; `explicit` (the cluster's `mtu`) wins.
pub fn pod_mtu(
    backend: Backend,
    underlay_mtu: u32,
    underlay: IpAddr,
    explicit: Option<u32>,
) -> u32 {
    if let Some(mtu) = explicit {
        return mtu;
    }
    if !backend.may_encapsulate() {
        return underlay_mtu;
    }
    let overhead = if underlay.is_ipv4() {
        VXLAN_OVERHEAD_V4
    } else {
        VXLAN_OVERHEAD_V6
    };
    underlay_mtu.saturating_sub(overhead)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn yaml_like_json_defaults() {
        let spec: ClusterSpec =
            serde_json::from_str(r#"{"clusterCIDRs":["10.244.0.0/16"]}"#).unwrap();
        assert_eq!(
            spec,
            ClusterSpec::new(vec![net("10.244.0.0/16")], Backend::Auto)
        );
        assert!(serde_json::from_str::<ClusterSpec>(r#"{"clusterCIDRs":[],"bogus":1}"#).is_err());
    }

    #[test]
    fn validation_names_the_problem() {
        let two_v4 = ClusterSpec::new(vec![net("10.0.0.0/16"), net("10.1.0.0/16")], Backend::Auto);
        assert!(matches!(
            two_v4.validate(),
            Err(ClusterError::SameFamily(..))
        ));
        let overlap = ClusterSpec::new(vec![net("10.0.0.0/16"), net("10.0.1.0/24")], Backend::Auto);
        assert!(matches!(overlap.validate(), Err(ClusterError::Overlap(..))));
        let small = ClusterSpec::new(vec![net("10.0.0.0/25")], Backend::Auto);
        assert!(matches!(
            small.validate(),
            Err(ClusterError::BadBlockSize { .. })
        ));
        let mut vni = ClusterSpec::new(vec![net("10.0.0.0/16")], Backend::Vxlan);
        vni.vxlan.vni = 0;
        assert_eq!(vni.validate(), Err(ClusterError::BadVni(0)));
        let dual = ClusterSpec::new(vec![net("10.0.0.0/16"), net("fd00::/56")], Backend::Auto);
        assert_eq!(dual.validate(), Ok(()));
        assert_eq!(
            ClusterSpec::new(vec![], Backend::Auto).validate(),
            Err(ClusterError::NoClusterCidr)
        );
    }

    #[test]
    fn mtu_is_derived_from_the_underlay() {
        let v4: IpAddr = "198.18.1.1".parse().unwrap();
        let v6: IpAddr = "fd00::1".parse().unwrap();
        assert_eq!(pod_mtu(Backend::Vxlan, 1500, v4, None), 1450);
        assert_eq!(pod_mtu(Backend::Auto, 9000, v4, None), 8950);
        assert_eq!(pod_mtu(Backend::Vxlan, 1500, v6, None), 1430);
        assert_eq!(pod_mtu(Backend::HostGw, 1400, v4, None), 1400);
        assert_eq!(pod_mtu(Backend::Vxlan, 1500, v4, Some(1300)), 1300);
    }

    #[test]
    fn vtep_mac_is_stable_unicast_and_local() {
        let a = vtep_mac("node-1");
        assert_eq!(a, vtep_mac("node-1"));
        assert_ne!(a, vtep_mac("node-2"));
        assert_eq!(a[0] & 0x03, 0x02);
        assert_eq!(parse_mac(&format_mac(&a)), Some(a));
        assert_eq!(parse_mac("zz:00:00:00:00:00"), None);
    }

    #[test]
    fn node_names() {
        assert!(validate_node_name("node-1.example").is_ok());
        assert!(validate_node_name("Node").is_err());
        assert!(validate_node_name("").is_err());
        assert!(validate_node_name("a/b").is_err());
    }
}
