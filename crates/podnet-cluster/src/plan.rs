//! Which path each remote node's pods take from this node: pure, tested without root.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::spec::{parse_mac, Backend, Node};

/// How this node reaches one remote node's pods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemotePath {
    /// A plain route via the remote node's address (same L2 segment).
    HostGw {
        /// The remote node's underlay address.
        via: IpAddr,
        /// Its IPv6 link-local address, the next hop for IPv6 blocks over an IPv4 underlay.
        via_link_local: Option<IpAddr>,
    },
    /// Encapsulated to the remote node's underlay address.
    Vxlan {
        /// Outer destination of the encapsulated packets.
        underlay: IpAddr,
        /// The remote VXLAN device's MAC.
        vtep_mac: [u8; 6],
    },
}

/// One remote node as this node's datapath sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteNode {
    /// The remote node's name.
    pub name: String,
    /// Its pod CIDR blocks.
    pub pod_cidrs: Vec<IpNet>,
    /// How to reach them.
    pub path: RemotePath,
}

/// The remote nodes of `local` and the path to each, for `backend`.
///
/// `segments` are the prefixes connected to this node's underlay interface:
/// with `auto`, a node whose address lies in one of them is reached by
/// host-gw, any other by VXLAN. Nodes with an unreadable VTEP MAC are left
/// out of VXLAN rather than given a wrong FDB entry.
pub fn plan_remote_nodes(
    backend: Backend,
    local: &str,
    segments: &[IpNet],
    nodes: &[Node],
) -> Vec<RemoteNode> {
    let mut out = Vec::new();
    for node in nodes.iter().filter(|n| n.name != local) {
        let adjacent = segments.iter().any(|s| s.contains(&node.address));
        let direct = match backend {
            Backend::HostGw => true,
            Backend::Vxlan => false,
            Backend::Auto => adjacent,
            // BIRD learns every remote block over BGP; the agent routes none.
            Backend::Bgp => continue,
        };
        let path = if direct {
            RemotePath::HostGw {
                via: node.address,
                via_link_local: node.link_local.map(IpAddr::V6),
            }
        } else {
            match parse_mac(&node.vtep_mac) {
                Some(vtep_mac) => RemotePath::Vxlan {
                    underlay: node.address,
                    vtep_mac,
                },
                None => continue,
            }
        };
        out.push(RemoteNode {
            name: node.name.clone(),
            pod_cidrs: node.pod_cidrs.clone(),
            path,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{format_mac, vtep_mac};

    fn node(name: &str, addr: &str, cidr: &str) -> Node {
        Node {
            name: name.into(),
            address: addr.parse().unwrap(),
            pod_cidrs: vec![cidr.parse().unwrap()],
            vtep_mac: format_mac(&vtep_mac(name)),
            link_local: None,
        }
    }

    fn nodes() -> Vec<Node> {
        vec![
            node("a", "198.18.1.1", "10.244.0.0/24"),
            node("b", "198.18.1.2", "10.244.1.0/24"),
            node("c", "198.18.2.1", "10.244.2.0/24"),
        ]
    }

    #[test]
    fn auto_picks_host_gw_on_the_segment_and_vxlan_across() {
        let seg = ["198.18.1.0/24".parse().unwrap()];
        let plan = plan_remote_nodes(Backend::Auto, "a", &seg, &nodes());
        assert_eq!(plan.len(), 2);
        assert_eq!(
            plan[0].path,
            RemotePath::HostGw {
                via: "198.18.1.2".parse().unwrap(),
                via_link_local: None
            }
        );
        assert_eq!(
            plan[1].path,
            RemotePath::Vxlan {
                underlay: "198.18.2.1".parse().unwrap(),
                vtep_mac: vtep_mac("c")
            }
        );
    }

    #[test]
    fn fixed_backends_ignore_adjacency() {
        let seg = ["198.18.1.0/24".parse().unwrap()];
        let gw = plan_remote_nodes(Backend::HostGw, "a", &seg, &nodes());
        assert!(gw
            .iter()
            .all(|r| matches!(r.path, RemotePath::HostGw { .. })));
        let vx = plan_remote_nodes(Backend::Vxlan, "a", &seg, &nodes());
        assert!(vx
            .iter()
            .all(|r| matches!(r.path, RemotePath::Vxlan { .. })));
        assert!(vx.iter().all(|r| r.name != "a"));
    }

    #[test]
    fn a_node_with_a_bad_vtep_mac_gets_no_vxlan_path() {
        let mut n = nodes();
        n[2].vtep_mac = "garbage".into();
        let plan = plan_remote_nodes(Backend::Vxlan, "a", &[], &n);
        assert_eq!(plan.len(), 1);
    }
}
