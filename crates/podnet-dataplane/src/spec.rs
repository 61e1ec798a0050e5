//! What a pod attachment asks for, independent of CNI's JSON.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// The two same-node models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Model {
    /// L2: a bridge holds the gateway.
    Bridge,
    /// L3: host routes and proxy ARP (the default).
    #[default]
    Routed,
}

impl Model {
    /// Its name in the CNI config (`bridge`, `routed`).
    pub fn name(self) -> &'static str {
        match self {
            Model::Bridge => "bridge",
            Model::Routed => "routed",
        }
    }
}

/// The network a pod joins (from the CNI network config).
#[derive(Debug, Clone)]
pub struct NetworkSpec {
    /// CNI network name; names podnet's nftables chains.
    pub name: String,
    /// Which model to use.
    pub model: Model,
    /// Bridge name (bridge model).
    pub bridge: String,
    /// MTU of the pod's interface.
    pub mtu: u32,
    /// Masquerade traffic from pods to outside `cluster_cidrs`.
    pub ip_masq: bool,
    /// Drop what pods send from addresses not their own.
    pub anti_spoofing: bool,
    /// Pod CIDRs of the cluster: never masqueraded.
    pub cluster_cidrs: Vec<IpNet>,
    /// The node's pod subnets (from the IPAM ranges): forwarded and masqueraded.
    pub pod_subnets: Vec<IpNet>,
}

/// One address for the pod, as IPAM handed it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodAddress {
    /// The address with the subnet's prefix length.
    pub address: IpNet,
    /// The subnet's gateway, if IPAM named one.
    pub gateway: Option<IpAddr>,
}

/// An extra route for the pod (`ipam.routes`, `{"dst": ..., "gw": ...}`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ExtraRoute {
    /// Destination.
    pub dst: IpNet,
    /// Next hop; the model's gateway when absent.
    #[serde(default)]
    pub gw: Option<IpAddr>,
}

/// One pod interface to plumb.
#[derive(Debug, Clone)]
pub struct PodAttachment {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_NETNS`.
    pub netns_path: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// Addresses to assign.
    pub addresses: Vec<PodAddress>,
    /// Extra routes.
    pub routes: Vec<ExtraRoute>,
}
