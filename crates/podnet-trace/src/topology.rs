//! Where a trace may go and what the cluster says should happen there.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use podnet_cluster::Node;
use podnet_kernel::probe::ProbeProto;
use podnet_policy::World;
use podnet_services::{Endpoints, Protocol, Service};

/// What a place is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlaceKind {
    /// A pod's network namespace.
    Pod,
    /// A node's (host) network namespace.
    Node,
    /// The router between segments (or any router).
    Router,
    /// A host outside the cluster.
    Host,
    /// Anything else (the lab's control plane).
    Other,
}

impl PlaceKind {
    /// Its name in reports.
    pub fn word(self) -> &'static str {
        match self {
            PlaceKind::Pod => "pod",
            PlaceKind::Node => "node",
            PlaceKind::Router => "router",
            PlaceKind::Host => "host",
            PlaceKind::Other => "other",
        }
    }
}

/// A network namespace a trace may visit.
#[derive(Debug, Clone)]
pub struct Place {
    /// Its name in reports (`pod default/web-0`, `node node1`, `router`).
    pub name: String,
    /// What it is.
    pub kind: PlaceKind,
    /// Path of its network namespace (`/run/netns/NAME`).
    pub netns: String,
    /// For a pod: the name of its node's place.
    pub node: Option<String>,
}

/// What the cluster store says: nodes and their blocks, services with their
/// endpoints, and the policy world. Used to name what the kernel shows.
#[derive(Debug, Clone, Default)]
pub struct Cluster {
    /// Registered nodes.
    pub nodes: Vec<Node>,
    /// Services and their endpoints.
    pub services: Vec<(Service, Option<Endpoints>)>,
    /// Namespaces, pods and policies.
    pub world: World,
}

impl Cluster {
    /// The node whose pod block holds `ip`, with that block.
    pub fn block_of(&self, ip: IpAddr) -> Option<(&Node, IpNet)> {
        self.nodes.iter().find_map(|n| {
            n.pod_cidrs
                .iter()
                .find(|c| c.contains(&ip))
                .map(|c| (n, *c))
        })
    }

    /// The service with a frontend at `dst` (cluster, external or load-balancer IP) for `proto`.
    pub fn service_at(
        &self,
        dst: SocketAddr,
        proto: ProbeProto,
    ) -> Option<&(Service, Option<Endpoints>)> {
        let wanted = match proto {
            ProbeProto::Udp => Protocol::Udp,
            _ => Protocol::Tcp,
        };
        self.services.iter().find(|(s, _)| {
            let mut ips = s
                .cluster_ip
                .iter()
                .chain(&s.external_ips)
                .chain(&s.load_balancer_ips);
            ips.any(|ip| *ip == dst.ip())
                && s.ports
                    .iter()
                    .any(|p| p.port == u32::from(dst.port()) && p.protocol == wanted)
        })
    }
}

/// One trace to run.
#[derive(Debug, Clone)]
pub struct Request {
    /// Index of the sending place in the topology.
    pub from: usize,
    /// The source address to send from (the kernel's choice when `None`).
    pub src: Option<IpAddr>,
    /// Where to.
    pub dst: SocketAddr,
    /// How the destination was named (`service default/web`), for the report.
    pub to: String,
    /// Protocol.
    pub proto: ProbeProto,
    /// IP packet size.
    pub size: usize,
    /// How long to wait for an answer.
    pub timeout: Duration,
    /// Read the kernel's drop reasons through tracefs, when it can be mounted.
    pub drop_reasons: bool,
}
