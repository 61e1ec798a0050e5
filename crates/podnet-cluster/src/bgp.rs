//! BGP as the cluster describes it (backend `bgp`), in Calico's model: one
//! AS for the cluster, a full iBGP mesh between nodes unless route
//! reflectors carry the routes, and peers outside the cluster (a
//! top-of-rack router), each for every node or for named nodes.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};

use crate::error::ClusterError;

/// The private AS number a cluster takes when it names none (Calico's default).
pub const DEFAULT_AS: u32 = 64512;

fn default_as() -> u32 {
    DEFAULT_AS
}
fn default_true() -> bool {
    true
}

/// The cluster's BGP settings (`bgp:` in the cluster spec).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BgpSettings {
    /// The AS of every node that is not given its own (default 64512).
    #[serde(default = "default_as")]
    pub as_number: u32,
    /// Nodes' own AS numbers, by node name (Calico's `Node.spec.bgp.asNumber`).
    #[serde(
        rename = "nodeASNumbers",
        default,
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub node_as_numbers: BTreeMap<String, u32>,
    /// A session between every two nodes (default true; Calico's
    /// `nodeToNodeMeshEnabled`). Off when a top-of-rack router or route
    /// reflectors carry the routes.
    #[serde(default = "default_true")]
    pub node_to_node_mesh: bool,
    /// Route-reflector clusters: nodes in one reflect routes to every other
    /// node, which then peers only with reflectors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route_reflectors: Vec<ReflectorCluster>,
    /// Peers outside the cluster (top-of-rack routers), as the cluster
    /// starts; more come and go as `BGPPeer` objects.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<BgpPeer>,
    /// Which service addresses the nodes advertise.
    #[serde(default)]
    pub advertise: Advertise,
}

impl Default for BgpSettings {
    fn default() -> Self {
        BgpSettings {
            as_number: DEFAULT_AS,
            node_as_numbers: BTreeMap::new(),
            node_to_node_mesh: true,
            route_reflectors: Vec::new(),
            peers: Vec::new(),
            advertise: Advertise::default(),
        }
    }
}

/// One route-reflector cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReflectorCluster {
    /// The cluster ID the reflectors put on reflected routes.
    #[serde(rename = "clusterID")]
    pub cluster_id: Ipv4Addr,
    /// The nodes that reflect.
    pub nodes: Vec<String>,
}

/// Service addresses advertised over BGP (kube-router's
/// `--advertise-cluster-ip`, `--advertise-external-ip`,
/// `--advertise-loadbalancer-ip`; Calico's `serviceClusterIPs`, ...).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Advertise {
    /// The service CIDRs, from every node.
    #[serde(rename = "clusterIPs", default)]
    pub cluster_ips: bool,
    /// Services' external IPs.
    #[serde(rename = "externalIPs", default)]
    pub external_ips: bool,
    /// Load-balancer ingress IPs.
    #[serde(rename = "loadBalancerIPs", default)]
    pub load_balancer_ips: bool,
}

/// A BGP peer outside the cluster (Calico's `BGPPeer`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BgpPeer {
    /// Its name: letters, digits and `-`.
    pub name: String,
    /// Its address.
    #[serde(rename = "peerIP")]
    pub peer_ip: IpAddr,
    /// Its AS number.
    pub as_number: u32,
    /// The nodes that peer with it; empty: every node (a global peer).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<String>,
}

impl BgpPeer {
    /// Whether node `node` peers with it.
    pub fn applies_to(&self, node: &str) -> bool {
        self.nodes.is_empty() || self.nodes.iter().any(|n| n == node)
    }

    /// Checks name, AS and address; errors name `name_field` (the peer's
    /// name: `metadata.name` for an object) or a field under `at`.
    pub fn validate(&self, name_field: &str, at: &str) -> Result<(), ClusterError> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 40
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !name_ok {
            return Err(ClusterError::BadBgp {
                field: name_field.to_string(),
                message: format!("{:?} must be 1-40 characters of a-z, 0-9 or '-'", self.name),
            });
        }
        check_as(&format!("{at}.asNumber"), self.as_number)?;
        if self.peer_ip.is_unspecified() || self.peer_ip.is_multicast() {
            return Err(ClusterError::BadBgp {
                field: format!("{at}.peerIP"),
                message: format!("{} is not a unicast address", self.peer_ip),
            });
        }
        Ok(())
    }
}

/// An AS number BGP can use: not 0 (reserved, RFC 7607) nor AS_TRANS
/// (23456) nor 4294967295.
fn check_as(field: &str, asn: u32) -> Result<(), ClusterError> {
    let why = match asn {
        0 => "AS 0 is reserved (RFC 7607)",
        23456 => "AS 23456 is AS_TRANS, reserved for 2-byte speakers (RFC 6793)",
        u32::MAX => "AS 4294967295 is reserved (RFC 7300)",
        _ => return Ok(()),
    };
    Err(ClusterError::BadBgp {
        field: field.to_string(),
        message: why.to_string(),
    })
}

impl BgpSettings {
    /// Checks AS numbers, reflector clusters and peers, naming the field.
    pub fn validate(&self) -> Result<(), ClusterError> {
        check_as("bgp.asNumber", self.as_number)?;
        for (node, asn) in &self.node_as_numbers {
            check_as(&format!("bgp.nodeASNumbers.{node}"), *asn)?;
        }
        self.validate_reflectors()?;
        for (i, peer) in self.peers.iter().enumerate() {
            let at = format!("bgp.peers[{i}]");
            peer.validate(&format!("{at}.name"), &at)?;
            if let Some(j) = self.peers[..i].iter().position(|p| p.name == peer.name) {
                return Err(ClusterError::BadBgp {
                    field: format!("bgp.peers[{i}].name"),
                    message: format!("{:?} is also bgp.peers[{j}]", peer.name),
                });
            }
        }
        Ok(())
    }

    /// A node in two reflector clusters, or one cluster ID used twice, is
    /// refused: clients would get each route reflected with two IDs.
    fn validate_reflectors(&self) -> Result<(), ClusterError> {
        let mut seen: BTreeMap<&str, (usize, Ipv4Addr)> = BTreeMap::new();
        for (i, rr) in self.route_reflectors.iter().enumerate() {
            let at = format!("bgp.routeReflectors[{i}]");
            if rr.nodes.is_empty() {
                return Err(ClusterError::BadBgp {
                    field: format!("{at}.nodes"),
                    message: "a reflector cluster needs at least one node".into(),
                });
            }
            if let Some(j) = self.route_reflectors[..i]
                .iter()
                .position(|o| o.cluster_id == rr.cluster_id)
            {
                return Err(ClusterError::BadBgp {
                    field: format!("{at}.clusterID"),
                    message: format!(
                        "{} is also the ID of bgp.routeReflectors[{j}]: give one cluster all its reflectors",
                        rr.cluster_id
                    ),
                });
            }
            for (k, node) in rr.nodes.iter().enumerate() {
                crate::spec::validate_node_name(node)?;
                if let Some((j, id)) = seen.insert(node, (i, rr.cluster_id)) {
                    return Err(ClusterError::BadBgp {
                        field: format!("{at}.nodes[{k}]"),
                        message: format!(
                            "{node} is already a reflector of cluster {id} (bgp.routeReflectors[{j}]): reflector clusters overlap"
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    /// Node `node`'s AS number.
    pub fn as_of(&self, node: &str) -> u32 {
        self.node_as_numbers
            .get(node)
            .copied()
            .unwrap_or(self.as_number)
    }

    /// The reflector cluster ID of node `node`, if it is a reflector.
    pub fn reflector_cluster(&self, node: &str) -> Option<Ipv4Addr> {
        self.route_reflectors
            .iter()
            .find(|rr| rr.nodes.iter().any(|n| n == node))
            .map(|rr| rr.cluster_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(yaml: &str) -> BgpSettings {
        serde_json::from_str(yaml).unwrap()
    }

    fn field(e: Result<(), ClusterError>) -> String {
        match e {
            Err(ClusterError::BadBgp { field, .. }) => field,
            other => panic!("expected a BGP error, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_calicos() {
        let s = settings("{}");
        assert_eq!(s, BgpSettings::default());
        assert_eq!(s.as_number, 64512);
        assert!(s.node_to_node_mesh);
        assert_eq!(s.validate(), Ok(()));
    }

    #[test]
    fn bad_input_names_the_field() {
        let zero = settings(r#"{"asNumber":0}"#);
        assert_eq!(field(zero.validate()), "bgp.asNumber");
        let node_zero = settings(r#"{"nodeASNumbers":{"node1":0}}"#);
        assert_eq!(field(node_zero.validate()), "bgp.nodeASNumbers.node1");
        let overlap = settings(
            r#"{"routeReflectors":[{"clusterID":"244.0.0.1","nodes":["a","b"]},
                                   {"clusterID":"244.0.0.2","nodes":["c","b"]}]}"#,
        );
        assert_eq!(field(overlap.validate()), "bgp.routeReflectors[1].nodes[1]");
        let same_id = settings(
            r#"{"routeReflectors":[{"clusterID":"244.0.0.1","nodes":["a"]},
                                   {"clusterID":"244.0.0.1","nodes":["c"]}]}"#,
        );
        assert_eq!(
            field(same_id.validate()),
            "bgp.routeReflectors[1].clusterID"
        );
        let peer_as =
            settings(r#"{"peers":[{"name":"tor","peerIP":"198.18.1.254","asNumber":0}]}"#);
        assert_eq!(field(peer_as.validate()), "bgp.peers[0].asNumber");
        let twice = settings(
            r#"{"peers":[{"name":"tor","peerIP":"198.18.1.254","asNumber":65000},
                         {"name":"tor","peerIP":"198.18.2.254","asNumber":65000}]}"#,
        );
        assert_eq!(field(twice.validate()), "bgp.peers[1].name");
        let not_an_address = serde_json::from_str::<BgpSettings>(
            r#"{"peers":[{"name":"tor","peerIP":"tor.example","asNumber":65000}]}"#,
        );
        assert!(not_an_address.is_err());
    }

    #[test]
    fn node_as_and_reflector_lookup() {
        let s = settings(
            r#"{"asNumber":65001,"nodeASNumbers":{"b":65002},
                "routeReflectors":[{"clusterID":"244.0.0.1","nodes":["a"]}]}"#,
        );
        assert_eq!(s.as_of("a"), 65001);
        assert_eq!(s.as_of("b"), 65002);
        assert_eq!(s.reflector_cluster("a"), Some("244.0.0.1".parse().unwrap()));
        assert_eq!(s.reflector_cluster("b"), None);
    }
}
