//! Who peers with whom, from the cluster: a pure function of the cluster
//! spec, the registered nodes and the `BGPPeer` objects, for one node.
//!
//! - Route reflectors (when the cluster names any): a reflector peers with
//!   every other node (clients of it, except other reflectors); every other
//!   node peers only with the reflectors. The mesh is off.
//! - Otherwise, with the node-to-node mesh on: one session to every other
//!   node; of each pair, the node with the higher address waits (passive),
//!   so that two nodes starting at once do not open two connections.
//! - External peers that apply to the node, over eBGP when their AS
//!   differs (nodes of one AS behind one router accept routes carrying
//!   their own AS: `allow local as`; their own blocks are refused on
//!   import anyway).

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;
use podnet_cluster::{BgpPeer, BgpSettings, Node};

use crate::config::{NodeBgp, Peer, PeerKind};

/// Why a node cannot run BGP.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopologyError {
    /// BGP router IDs are IPv4 addresses: a node on an IPv6 underlay needs one.
    #[error("node {0}: BGP needs an IPv4 node address for its router ID")]
    NoRouterId(String),
    /// The node is not registered.
    #[error("node {0} is not registered in the cluster")]
    UnknownNode(String),
}

/// Node `local`'s BGP configuration. `segments` are the prefixes on its
/// underlay interface (peers outside them are reached over several hops);
/// `next_hop_v6` is its global IPv6 underlay address, without which it
/// carries no IPv6 routes (the kernel cannot route IPv6 via an IPv4 next hop).
pub fn node_bgp(
    settings: &BgpSettings,
    nodes: &[Node],
    peers: &[BgpPeer],
    local: &str,
    segments: &[IpNet],
    next_hop_v6: Option<std::net::Ipv6Addr>,
) -> Result<NodeBgp, TopologyError> {
    let me = nodes
        .iter()
        .find(|n| n.name == local)
        .ok_or_else(|| TopologyError::UnknownNode(local.into()))?;
    let IpAddr::V4(router_id) = me.address else {
        return Err(TopologyError::NoRouterId(local.into()));
    };
    let asn = settings.as_of(local);
    let mut out = NodeBgp {
        node: local.to_string(),
        router_id,
        asn,
        blocks: me.pod_cidrs.clone(),
        reflector_cluster: settings.reflector_cluster(local),
        next_hop_v6,
        peers: Vec::new(),
        services: Default::default(),
    };
    let mut names = BTreeSet::new();
    for other in node_peers(settings, nodes, me) {
        let peer_as = settings.as_of(&other.node.name);
        out.peers.push(Peer {
            name: unique(&mut names, &format!("node_{}", ident(&other.node.name))),
            description: other.node.name.clone(),
            address: other.node.address,
            asn: peer_as,
            passive: other.passive,
            kind: other.kind,
            multihop: peer_as != asn && !adjacent(segments, other.node.address),
        });
    }
    for p in peers.iter().filter(|p| p.applies_to(local)) {
        out.peers.push(Peer {
            name: unique(&mut names, &format!("peer_{}", ident(&p.name))),
            description: p.name.clone(),
            address: p.peer_ip,
            asn: p.as_number,
            passive: false,
            kind: external_kind(&out, p),
            multihop: p.as_number != asn && !adjacent(segments, p.peer_ip),
        });
    }
    Ok(out)
}

/// How the node treats an external peer: a reflector reflects to iBGP peers.
fn external_kind(me: &NodeBgp, p: &BgpPeer) -> PeerKind {
    match (p.as_number == me.asn, me.reflector_cluster.is_some()) {
        (true, true) => PeerKind::ReflectorClient,
        (true, false) => PeerKind::Internal,
        (false, _) => PeerKind::External,
    }
}

/// A session to another node.
struct NodeSession<'a> {
    node: &'a Node,
    passive: bool,
    kind: PeerKind,
}

fn node_peers<'a>(settings: &BgpSettings, nodes: &'a [Node], me: &Node) -> Vec<NodeSession<'a>> {
    let others = nodes.iter().filter(|n| n.name != me.name);
    let reflects = |n: &Node| settings.reflector_cluster(&n.name).is_some();
    let kind_to = |n: &Node| {
        if settings.as_of(&n.name) != settings.as_of(&me.name) {
            PeerKind::External
        } else if reflects(me) && !reflects(n) {
            PeerKind::ReflectorClient
        } else {
            PeerKind::Internal
        }
    };
    let higher = |n: &Node| (address_key(me.address), &me.name) > (address_key(n.address), &n.name);
    if !settings.route_reflectors.is_empty() {
        return others
            .filter(|n| reflects(me) || reflects(n))
            .map(|n| NodeSession {
                node: n,
                // Clients connect; reflectors wait for them (and, between
                // reflectors, the higher address waits).
                passive: if reflects(me) && reflects(n) {
                    higher(n)
                } else {
                    reflects(me)
                },
                kind: kind_to(n),
            })
            .collect();
    }
    if !settings.node_to_node_mesh {
        return Vec::new();
    }
    others
        .map(|n| NodeSession {
            node: n,
            passive: higher(n),
            kind: kind_to(n),
        })
        .collect()
}

fn address_key(a: IpAddr) -> (u8, u128) {
    match a {
        IpAddr::V4(v4) => (4, u128::from(u32::from(v4))),
        IpAddr::V6(v6) => (6, u128::from(v6)),
    }
}

fn adjacent(segments: &[IpNet], address: IpAddr) -> bool {
    segments.iter().any(|s| s.contains(&address))
}

/// A BIRD protocol name from a node or peer name: letters, digits and `_`.
fn ident(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// `base`, or `base_2`, `base_3`, ... if taken.
fn unique(taken: &mut BTreeSet<String>, base: &str) -> String {
    let mut name = base.to_string();
    let mut n = 1;
    while !taken.insert(name.clone()) {
        n += 1;
        name = format!("{base}_{n}");
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;
    use podnet_cluster::ReflectorCluster;
    use std::net::Ipv4Addr;

    fn node(name: &str, addr: &str, block: &str) -> Node {
        Node {
            name: name.into(),
            address: addr.parse().unwrap(),
            pod_cidrs: vec![block.parse().unwrap()],
            vtep_mac: String::new(),
            link_local: None,
        }
    }

    fn nodes() -> Vec<Node> {
        vec![
            node("node1", "198.18.1.1", "10.244.0.0/24"),
            node("node2", "198.18.1.2", "10.244.1.0/24"),
            node("node3", "198.18.2.3", "10.244.2.0/24"),
        ]
    }

    fn seg1() -> Vec<IpNet> {
        vec!["198.18.1.0/24".parse().unwrap()]
    }

    fn peers(b: &NodeBgp) -> Vec<(String, bool, PeerKind)> {
        b.peers
            .iter()
            .map(|p| (p.description.clone(), p.passive, p.kind))
            .collect()
    }

    #[test]
    fn the_mesh_has_one_active_side_per_pair() {
        let s = BgpSettings::default();
        let n = nodes();
        let one = node_bgp(&s, &n, &[], "node1", &seg1(), None).unwrap();
        let two = node_bgp(&s, &n, &[], "node2", &seg1(), None).unwrap();
        assert_eq!(
            peers(&one),
            [
                ("node2".into(), false, PeerKind::Internal),
                ("node3".into(), false, PeerKind::Internal)
            ]
        );
        assert_eq!(peers(&two)[0], ("node1".into(), true, PeerKind::Internal));
        assert_eq!(one.blocks, n[0].pod_cidrs);
        assert_eq!(one.router_id, "198.18.1.1".parse::<Ipv4Addr>().unwrap());
        assert!(
            one.peers.iter().all(|p| !p.multihop),
            "iBGP is multihop by default"
        );
    }

    #[test]
    fn reflectors_replace_the_mesh() {
        let s = BgpSettings {
            route_reflectors: vec![ReflectorCluster {
                cluster_id: "244.0.0.1".parse().unwrap(),
                nodes: vec!["node1".into()],
            }],
            ..BgpSettings::default()
        };
        let n = nodes();
        let rr = node_bgp(&s, &n, &[], "node1", &seg1(), None).unwrap();
        assert_eq!(rr.reflector_cluster, Some("244.0.0.1".parse().unwrap()));
        assert_eq!(
            peers(&rr),
            [
                ("node2".into(), true, PeerKind::ReflectorClient),
                ("node3".into(), true, PeerKind::ReflectorClient)
            ]
        );
        let client = node_bgp(&s, &n, &[], "node3", &seg1(), None).unwrap();
        assert_eq!(
            peers(&client),
            [("node1".into(), false, PeerKind::Internal)]
        );
    }

    #[test]
    fn external_peers_apply_to_their_nodes() {
        let s = BgpSettings {
            node_to_node_mesh: false,
            ..BgpSettings::default()
        };
        let tor = |name: &str, ip: &str, nodes: &[&str]| BgpPeer {
            name: name.into(),
            peer_ip: ip.parse().unwrap(),
            as_number: 65000,
            nodes: nodes.iter().map(|n| n.to_string()).collect(),
        };
        let p = [
            tor("tor-1", "198.18.1.254", &["node1", "node2"]),
            tor("tor-2", "198.18.2.254", &["node3"]),
        ];
        let one = node_bgp(&s, &nodes(), &p, "node1", &seg1(), None).unwrap();
        assert_eq!(peers(&one), [("tor-1".into(), false, PeerKind::External)]);
        assert_eq!(one.peers[0].name, "peer_tor_1");
        assert!(!one.peers[0].multihop);
        let far = node_bgp(
            &s,
            &nodes(),
            &[tor("far", "192.0.2.1", &[])],
            "node1",
            &seg1(),
            None,
        )
        .unwrap();
        assert!(
            far.peers[0].multihop,
            "an eBGP peer off the segment is several hops away"
        );
    }

    #[test]
    fn names_stay_unique_and_unknown_nodes_are_named() {
        let n = vec![
            node("a-b", "198.18.1.1", "10.244.0.0/24"),
            node("a.b", "198.18.1.2", "10.244.1.0/24"),
            node("c", "198.18.1.3", "10.244.2.0/24"),
        ];
        let c = node_bgp(&BgpSettings::default(), &n, &[], "c", &seg1(), None).unwrap();
        let names: Vec<&str> = c.peers.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["node_a_b", "node_a_b_2"]);
        assert_eq!(
            node_bgp(&BgpSettings::default(), &n, &[], "zz", &seg1(), None),
            Err(TopologyError::UnknownNode("zz".into()))
        );
    }
}
