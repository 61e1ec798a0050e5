//! What a lab is made of: `cluster.yaml`, or the flags of `podnet lab up`.

use std::collections::BTreeMap;

use std::net::IpAddr;

use ipnet::IpNet;
use podnet_cluster::{Backend, ClusterSpec, VxlanSettings};
use podnet_dataplane::Model;
use podnet_services::Service;
use serde::{Deserialize, Serialize};

use crate::error::LabError;

/// Where the lab's agents keep the cluster state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// The embedded file store in the lab's state directory.
    #[default]
    Embedded,
    /// A real etcd server in the lab's control-plane namespace.
    Etcd,
}

/// One L2 segment of the fabric: a bridge in its own namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SegmentSpec {
    /// How many nodes sit on this segment.
    pub nodes: usize,
}

/// The fabric between nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FabricSpec {
    /// MTU of every fabric link (default 1500).
    #[serde(default = "default_mtu")]
    pub mtu: u32,
    /// The segments; more than one are joined by a router namespace.
    pub segments: Vec<SegmentSpec>,
}

fn default_mtu() -> u32 {
    1500
}
fn default_true() -> bool {
    true
}
fn default_pods() -> usize {
    2
}
fn default_cidrs() -> Vec<IpNet> {
    vec!["10.244.0.0/16".parse().expect("static prefix")]
}

/// A whole lab cluster (the schema of `cluster.yaml`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabSpec {
    /// Cross-node backend.
    #[serde(default)]
    pub backend: Backend,
    /// Same-node model.
    #[serde(default)]
    pub model: Model,
    /// Cluster store.
    #[serde(default)]
    pub store: StoreKind,
    /// etcd as production runs it: TLS with client certificates and
    /// authentication; the lab makes its own CA (with `store: etcd`).
    #[serde(
        rename = "etcdTLS",
        default,
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub etcd_tls: bool,
    /// Cluster pod CIDRs (default 10.244.0.0/16).
    #[serde(rename = "clusterCIDRs", default = "default_cidrs")]
    pub cluster_cidrs: Vec<IpNet>,
    /// VXLAN settings.
    #[serde(default)]
    pub vxlan: VxlanSettings,
    /// Masquerade pod traffic that leaves the cluster CIDRs (default true).
    #[serde(default = "default_true")]
    pub masquerade: bool,
    /// Drop packets pods send from addresses not their own (default true).
    #[serde(default = "default_true")]
    pub anti_spoofing: bool,
    /// Pod MTU override (derived from the fabric when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Pods created on each node.
    #[serde(default = "default_pods")]
    pub pods_per_node: usize,
    /// Labels of every lab pod (default `app: echo`); each pod also gets
    /// `node: NODE` and `pod: NAME`. Service selectors match these.
    #[serde(default = "default_pod_labels")]
    pub pod_labels: BTreeMap<String, String>,
    /// Service CIDRs (default 10.96.0.0/12).
    #[serde(
        rename = "serviceCIDRs",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub service_cidrs: Vec<IpNet>,
    /// Node port range (default 30000-32767).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_port_range: Option<String>,
    /// Services created once the pods are up; endpoints follow their selectors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<Service>,
    /// Hosts outside the cluster, behind the router (network 192.0.2.0/24).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub external_hosts: Vec<ExternalHostSpec>,
    /// BGP (backend `bgp`): topology and advertised addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp: Option<LabBgpSpec>,
    /// The fabric.
    pub fabric: FabricSpec,
}

/// How the lab's nodes exchange routes (backend `bgp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BgpTopology {
    /// Every node peers with the lab router, a top-of-rack router (FRR,
    /// AS 65000, eBGP); no node-to-node sessions.
    #[default]
    Tor,
    /// A full iBGP mesh between nodes; with several segments the router
    /// (FRR) peers with every node too, so that it can route between them.
    Mesh,
    /// Route reflectors: chosen nodes (BIRD) or the router (FRR).
    Reflector,
}

/// Which daemon reflects routes in the `reflector` topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReflectorKind {
    /// Chosen nodes' BIRD.
    #[default]
    Bird,
    /// The lab router's FRR.
    Frr,
}

/// BGP in the lab.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabBgpSpec {
    /// `tor` (default), `mesh` or `reflector`.
    #[serde(default)]
    pub topology: BgpTopology,
    /// `bird` (default: nodes reflect) or `frr` (the router reflects).
    #[serde(default)]
    pub reflector: ReflectorKind,
    /// Nodes that reflect (`reflector: bird`); default: the first node of each segment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reflectors: Vec<String>,
    /// Service addresses the nodes advertise.
    #[serde(default)]
    pub advertise: podnet_cluster::Advertise,
}

/// The AS of the lab router as a top-of-rack router.
pub const TOR_AS: u32 = 65000;
/// The cluster ID of the lab's route reflectors.
pub const REFLECTOR_CLUSTER_ID: std::net::Ipv4Addr = std::net::Ipv4Addr::new(244, 0, 0, 1);

/// What the lab router is to BGP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouterBgp {
    /// A top-of-rack router in its own AS (eBGP to every node).
    Tor,
    /// A member of the cluster's AS that learns every node's blocks (iBGP).
    Member,
    /// The cluster's route reflector (iBGP, every node its client).
    Reflector,
}

/// A host outside the cluster (a client on the internet).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExternalHostSpec {
    /// Its name (its namespace is `podnet-LAB-host-NAME`).
    pub name: String,
    /// Its address in the external network (default: the next free one from 192.0.2.10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<IpAddr>,
}

fn default_pod_labels() -> BTreeMap<String, String> {
    BTreeMap::from([("app".to_string(), "echo".to_string())])
}

impl LabSpec {
    /// The common case from flags: `nodes` spread over `segments` as evenly as possible.
    pub fn from_flags(
        nodes: usize,
        segments: usize,
        pods_per_node: usize,
        backend: Backend,
        model: Model,
    ) -> Self {
        let segments = segments.max(1);
        let fabric = FabricSpec {
            mtu: default_mtu(),
            segments: (0..segments)
                .map(|s| SegmentSpec {
                    nodes: nodes / segments + usize::from(s < nodes % segments),
                })
                .collect(),
        };
        LabSpec {
            backend,
            model,
            store: StoreKind::Embedded,
            etcd_tls: false,
            cluster_cidrs: default_cidrs(),
            vxlan: VxlanSettings::default(),
            masquerade: true,
            anti_spoofing: true,
            mtu: None,
            pods_per_node,
            pod_labels: default_pod_labels(),
            service_cidrs: Vec::new(),
            node_port_range: None,
            services: Vec::new(),
            external_hosts: Vec::new(),
            bgp: None,
            fabric,
        }
    }

    /// The lab's BGP settings (defaults when the spec gives none).
    pub fn bgp_spec(&self) -> LabBgpSpec {
        self.bgp.clone().unwrap_or_default()
    }

    /// What the router does in BGP, if it speaks it: always for `tor` and an
    /// FRR reflector; as a member when several segments need it to route.
    pub fn router_bgp(&self) -> Option<RouterBgp> {
        if self.backend != Backend::Bgp {
            return None;
        }
        let b = self.bgp_spec();
        match (b.topology, b.reflector) {
            (BgpTopology::Tor, _) => Some(RouterBgp::Tor),
            (BgpTopology::Reflector, ReflectorKind::Frr) => Some(RouterBgp::Reflector),
            _ if self.fabric.segments.len() > 1 => Some(RouterBgp::Member),
            _ => None,
        }
    }

    /// The nodes that reflect (BIRD reflectors): as given, or the first
    /// node of each segment (nodes are named in segment order).
    pub fn reflector_nodes(&self) -> Vec<String> {
        let b = self.bgp_spec();
        if b.topology != BgpTopology::Reflector || b.reflector != ReflectorKind::Bird {
            return Vec::new();
        }
        if !b.reflectors.is_empty() {
            return b.reflectors;
        }
        let mut first = 1;
        let mut out = Vec::new();
        for seg in &self.fabric.segments {
            if seg.nodes > 0 {
                out.push(format!("node{first}"));
            }
            first += seg.nodes;
        }
        out
    }

    /// The cluster's BGP settings for this lab's topology.
    fn bgp_settings(&self) -> podnet_cluster::BgpSettings {
        let b = self.bgp_spec();
        let reflectors = self.reflector_nodes();
        podnet_cluster::BgpSettings {
            node_to_node_mesh: b.topology == BgpTopology::Mesh,
            route_reflectors: if reflectors.is_empty() {
                Vec::new()
            } else {
                vec![podnet_cluster::ReflectorCluster {
                    cluster_id: REFLECTOR_CLUSTER_ID,
                    nodes: reflectors,
                }]
            },
            advertise: b.advertise,
            ..podnet_cluster::BgpSettings::default()
        }
    }

    /// Parses `cluster.yaml`.
    pub fn from_yaml(text: &str) -> Result<Self, LabError> {
        serde_yaml_ng::from_str(text).map_err(|e| LabError::Spec(format!("cluster.yaml: {e}")))
    }

    /// The cluster spec the agents are started with.
    pub fn cluster(&self) -> ClusterSpec {
        let mut c = ClusterSpec::new(self.cluster_cidrs.clone(), self.backend);
        c.vxlan = self.vxlan;
        c.mtu = self.mtu;
        c.masquerade = self.masquerade;
        c.anti_spoofing = self.anti_spoofing;
        if !self.service_cidrs.is_empty() {
            c.service_cidrs = self.service_cidrs.clone();
        }
        if let Some(range) = &self.node_port_range {
            c.node_port_range = range.clone();
        }
        if self.backend == Backend::Bgp {
            c.bgp = Some(self.bgp_settings());
        }
        c
    }

    /// Checks external hosts: names (letters, digits, `-`; unique) and
    /// addresses (unique, inside 192.0.2.0/24, not the network, gateway or broadcast).
    fn validate_hosts(&self) -> Result<(), LabError> {
        let mut names = std::collections::BTreeSet::new();
        let mut addrs = std::collections::BTreeSet::new();
        for (i, h) in self.external_hosts.iter().enumerate() {
            let at = format!("externalHosts[{i}]");
            let ok = !h.name.is_empty()
                && h.name.len() <= 20
                && h.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-');
            if !ok || !names.insert(h.name.clone()) {
                return Err(LabError::Spec(format!(
                    "{at}.name: {:?} must be unique, 1-20 letters, digits or '-'",
                    h.name
                )));
            }
            if let Some(a) = h.address {
                let reserved = matches!(a, IpAddr::V4(v4) if [0, 1, 255].contains(&v4.octets()[3]));
                if !crate::hosts::is_external(a) || reserved || !addrs.insert(a) {
                    return Err(LabError::Spec(format!("{at}.address: {a} must be a unique host address of 192.0.2.0/24 (not .0, .1 or .255)")));
                }
            }
        }
        if self.external_hosts.len() > 200 {
            return Err(LabError::Spec("externalHosts: at most 200".into()));
        }
        Ok(())
    }

    /// Whether the fabric carries IPv6 too: a dual-stack cluster over BGP,
    /// whose IPv6 routes need a global next hop on every node (host-gw and
    /// VXLAN use link-local or IPv4 addresses and need none).
    pub fn fabric_v6(&self) -> bool {
        self.backend == Backend::Bgp && self.cluster_cidrs.iter().any(|c| c.addr().is_ipv6())
    }

    /// Whether the lab has a router: several segments, hosts outside the
    /// cluster, or a BGP topology that peers with it.
    pub fn has_router(&self) -> bool {
        self.fabric.segments.len() > 1
            || !self.external_hosts.is_empty()
            || self.router_bgp().is_some()
    }

    /// Total number of nodes.
    pub fn node_count(&self) -> usize {
        self.fabric.segments.iter().map(|s| s.nodes).sum()
    }

    /// Checks sizes and the cluster spec before anything is built.
    pub fn validate(&self) -> Result<(), LabError> {
        self.cluster()
            .validate()
            .map_err(|e| LabError::Spec(e.to_string()))?;
        let nodes = self.node_count();
        if nodes == 0 || nodes > 200 {
            return Err(LabError::Spec(format!(
                "a lab has 1 to 200 nodes, not {nodes}"
            )));
        }
        if self.fabric.segments.len() > 50 {
            return Err(LabError::Spec("a lab has at most 50 segments".into()));
        }
        if self.pods_per_node > 100 {
            return Err(LabError::Spec("at most 100 pods per node".into()));
        }
        if self.bgp.is_some() && self.backend != Backend::Bgp {
            return Err(LabError::Spec("bgp: needs backend: bgp".into()));
        }
        if self.etcd_tls && self.store != StoreKind::Etcd {
            return Err(LabError::Spec("etcdTLS: needs store: etcd".into()));
        }
        let settings = podnet_store::service_settings(&self.cluster())
            .map_err(|e| LabError::Spec(e.to_string()))?;
        let mut alloc = podnet_services::validate::Allocations::default();
        for svc in &self.services {
            alloc
                .admit(svc.clone(), None, &settings)
                .map_err(|e| LabError::Spec(e.to_string()))?;
        }
        self.validate_hosts()?;
        if !(1280..=65535).contains(&self.fabric.mtu) {
            return Err(LabError::Spec(format!(
                "fabric MTU {} is out of range (1280-65535)",
                self.fabric.mtu
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_cluster_yaml_parses() {
        let text = include_str!("../../../examples/cluster.yaml");
        let spec = LabSpec::from_yaml(text).unwrap();
        spec.validate().unwrap();
        assert_eq!(spec.node_count(), 3);
        assert_eq!(spec.fabric.segments.len(), 2);
    }

    #[test]
    fn sample_services_yaml_parses_and_is_admitted() {
        let text = include_str!("../../../examples/services.yaml");
        let services: Vec<Service> = serde_yaml_ng::from_str(text).unwrap();
        let settings = podnet_services::ServiceSettings::default();
        let mut alloc = podnet_services::validate::Allocations::default();
        for s in services {
            alloc.admit(s, None, &settings).unwrap();
        }
    }

    #[test]
    fn flags_spread_nodes_over_segments() {
        let s = LabSpec::from_flags(5, 2, 1, Backend::Auto, Model::Routed);
        assert_eq!(
            s.fabric.segments,
            vec![SegmentSpec { nodes: 3 }, SegmentSpec { nodes: 2 }]
        );
    }

    #[test]
    fn bad_specs_are_named() {
        assert!(LabSpec::from_yaml("fabric: {segments: []}\nbogus: 1").is_err());
        let mut s = LabSpec::from_flags(2, 1, 1, Backend::Auto, Model::Routed);
        s.cluster_cidrs = vec![
            "10.0.0.0/16".parse().unwrap(),
            "10.0.1.0/24".parse().unwrap(),
        ];
        assert!(s.validate().unwrap_err().to_string().contains("overlap"));
    }
}
