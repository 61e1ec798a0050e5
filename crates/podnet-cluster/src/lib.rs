//! The cluster as data: what every node agent agrees on, with no I/O.
//!
//! A cluster has one or two pod CIDRs (IPv4, optionally IPv6), carved into
//! per-node blocks (like Calico's block affinity, one block per node and
//! family), a cross-node backend, and nodes that each own a block.
//! [`plan`] turns the cluster's nodes into the routes one node needs.

pub mod bgp;
pub mod blocks;
pub mod error;
pub mod plan;
pub mod spec;

pub use bgp::{Advertise, BgpPeer, BgpSettings, ReflectorCluster};
pub use blocks::allocate_blocks;
pub use error::ClusterError;
pub use plan::{plan_remote_nodes, RemoteNode, RemotePath};
pub use spec::{
    format_mac, parse_mac, pod_mtu, validate_node_name, vtep_mac, Backend, ClusterSpec, Node,
    VxlanSettings,
};
