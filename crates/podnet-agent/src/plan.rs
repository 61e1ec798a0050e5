//! The node's cross-node datapath as data: what it should hold, what it
//! holds, and the operations that turn one into the other.
//!
//! Everything here is pure. The agent's reconcile is `observe` (read the
//! kernel), [`desired`] and [`plan`] (this module), then apply; `podnet
//! doctor` runs the same first three steps and prints the plan instead of
//! applying it, so doctor reports exactly what a reconcile would change.
//! The planner is tested from recorded states (`tests/plans/*.json`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use podnet_cluster::{pod_mtu, vtep_mac, Backend, ClusterSpec, Node, RemoteNode, RemotePath};
use serde::{Deserialize, Serialize};

use crate::underlay::Underlay;

/// Name of the node's VXLAN device.
pub const VXLAN_DEVICE: &str = "podnet.vxlan";

/// The interface a planned route leaves through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Dev {
    /// The underlay interface.
    Underlay,
    /// The VXLAN device.
    Vxlan,
    /// Any other interface, by index (a route the agent did not mean).
    Other(u32),
    /// No interface: a blackhole (backend `bgp`: the node's own blocks,
    /// which BIRD advertises; packets to unassigned addresses are dropped).
    Blackhole,
}

/// A route of the node's datapath (kernel protocol podnet-nodes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedRoute {
    /// Destination prefix.
    pub dst: IpNet,
    /// Next hop; `None` for a directly connected route.
    #[serde(default)]
    pub gateway: Option<IpAddr>,
    /// Outgoing interface.
    pub dev: Dev,
    /// The next hop is on the link whatever its address (VXLAN).
    #[serde(default)]
    pub onlink: bool,
}

/// The VXLAN device the node should have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WantedVxlan {
    /// VXLAN network identifier.
    pub vni: u32,
    /// UDP port.
    pub port: u16,
    /// Local (underlay) address.
    pub local: IpAddr,
    /// Device MTU.
    pub mtu: u32,
    /// Device MAC (derived from the node name).
    pub mac: [u8; 6],
    /// Host addresses it holds: the first address of each local block.
    pub addresses: BTreeSet<IpNet>,
}

/// What the node's datapath should hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DesiredDatapath {
    /// The VXLAN device, for backends that may encapsulate.
    pub vxlan: Option<WantedVxlan>,
    /// Routes to remote blocks (and service CIDRs).
    pub routes: BTreeSet<PlannedRoute>,
    /// Permanent neighbours on the VXLAN device: remote VTEP address to MAC.
    pub neighbours: BTreeMap<IpAddr, [u8; 6]>,
    /// FDB entries on the VXLAN device: remote VTEP MAC to underlay address.
    pub fdb: BTreeSet<([u8; 6], IpAddr)>,
}

/// The VXLAN device as the kernel has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObservedVxlan {
    /// Interface index.
    pub index: u32,
    /// VNI, port and local address; `None` when the device is not VXLAN.
    pub vni: Option<u32>,
    /// UDP port.
    pub port: u16,
    /// Local address.
    pub local: Option<IpAddr>,
    /// MAC.
    pub mac: Vec<u8>,
    /// MTU.
    pub mtu: u32,
    /// Administratively up.
    pub up: bool,
    /// Addresses it holds.
    #[serde(default)]
    pub addresses: BTreeSet<IpNet>,
}

/// A neighbour entry on the VXLAN device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObservedNeighbour {
    /// Address.
    pub ip: IpAddr,
    /// Link-layer address, if resolved.
    #[serde(default)]
    pub mac: Option<Vec<u8>>,
    /// Static (the agent's), as opposed to learned.
    pub permanent: bool,
}

/// An FDB entry on the VXLAN device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObservedFdb {
    /// MAC.
    pub mac: Vec<u8>,
    /// Remote underlay address.
    #[serde(default)]
    pub dst: Option<IpAddr>,
    /// Static (the agent's), as opposed to learned.
    pub permanent: bool,
}

/// What the node's datapath holds now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObservedDatapath {
    /// The device named [`VXLAN_DEVICE`], if any.
    #[serde(default)]
    pub vxlan: Option<ObservedVxlan>,
    /// Routes of protocol podnet-nodes.
    #[serde(default)]
    pub routes: Vec<PlannedRoute>,
    /// Neighbours on the VXLAN device.
    #[serde(default)]
    pub neighbours: Vec<ObservedNeighbour>,
    /// FDB entries on the VXLAN device.
    #[serde(default)]
    pub fdb: Vec<ObservedFdb>,
}

/// One change to the node's datapath.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum DatapathOp {
    /// Delete the VXLAN device (host-gw needs none).
    DeleteVxlan,
    /// Create the VXLAN device, replacing one whose settings differ.
    CreateVxlan {
        /// What differs from the existing device, or `missing`.
        reason: String,
    },
    /// Add a host address to the VXLAN device.
    AddVxlanAddress {
        /// The address.
        address: IpNet,
    },
    /// Add (or replace) a route.
    AddRoute {
        /// The route.
        route: PlannedRoute,
    },
    /// Delete a route no remote node needs.
    DeleteRoute {
        /// The route.
        route: PlannedRoute,
    },
    /// Add an FDB entry.
    AddFdb {
        /// Remote VTEP MAC.
        mac: [u8; 6],
        /// Remote underlay address.
        dst: IpAddr,
    },
    /// Delete a stale FDB entry.
    DeleteFdb {
        /// MAC.
        mac: Vec<u8>,
        /// Remote underlay address.
        dst: IpAddr,
    },
    /// Add a permanent neighbour.
    AddNeighbour {
        /// Remote VTEP address.
        ip: IpAddr,
        /// Remote VTEP MAC.
        mac: [u8; 6],
    },
    /// Delete a stale permanent neighbour.
    DeleteNeighbour {
        /// Address.
        ip: IpAddr,
    },
}

impl DatapathOp {
    /// True for operations that remove something.
    pub fn is_removal(&self) -> bool {
        matches!(
            self,
            DatapathOp::DeleteVxlan
                | DatapathOp::DeleteRoute { .. }
                | DatapathOp::DeleteFdb { .. }
                | DatapathOp::DeleteNeighbour { .. }
        )
    }
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn mac_text(mac: &[u8]) -> String {
    let parts: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
    parts.join(":")
}

impl fmt::Display for Dev {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dev::Underlay => write!(f, "underlay"),
            Dev::Vxlan => write!(f, "{VXLAN_DEVICE}"),
            Dev::Other(i) => write!(f, "if{i}"),
            Dev::Blackhole => write!(f, "none (blackhole)"),
        }
    }
}

impl fmt::Display for PlannedRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.dst)?;
        if let Some(gw) = self.gateway {
            write!(f, " via {gw}")?;
        }
        write!(f, " dev {}", self.dev)?;
        if self.onlink {
            write!(f, " onlink")?;
        }
        Ok(())
    }
}

impl DatapathOp {
    /// What the operation changes: add, delete or create.
    pub fn verb(&self) -> &'static str {
        match self {
            DatapathOp::CreateVxlan { .. } => "create",
            op if op.is_removal() => "delete",
            _ => "add",
        }
    }

    /// The object it changes, in `ip` syntax, so that a person can compare
    /// it with `ip route`, `ip neigh` and `bridge fdb`.
    pub fn object(&self) -> String {
        let vx = VXLAN_DEVICE;
        match self {
            DatapathOp::DeleteVxlan => format!("link {vx}"),
            DatapathOp::CreateVxlan { reason } => format!("link {vx} ({reason})"),
            DatapathOp::AddVxlanAddress { address } => format!("address {address} dev {vx}"),
            DatapathOp::AddRoute { route } | DatapathOp::DeleteRoute { route } => {
                format!("route {route}")
            }
            DatapathOp::AddFdb { mac, dst } => format!("fdb {} dst {dst} dev {vx}", mac_text(mac)),
            DatapathOp::DeleteFdb { mac, dst } => {
                format!("fdb {} dst {dst} dev {vx}", mac_text(mac))
            }
            DatapathOp::AddNeighbour { ip, mac } => {
                format!("neighbour {ip} lladdr {} dev {vx}", mac_text(mac))
            }
            DatapathOp::DeleteNeighbour { ip } => format!("neighbour {ip} dev {vx}"),
        }
    }
}

impl fmt::Display for DatapathOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.verb(), self.object())
    }
}

/// What node `local`'s datapath should hold with `remotes`.
///
/// host-gw routes go via the remote node's address, or for IPv6 blocks over
/// an IPv4 underlay via its link-local address; VXLAN carries both
/// families, each block's first address serving as the remote VTEP address.
/// With `services`, the cluster's service CIDRs are routed out of the
/// underlay, so that the node's own processes reach cluster IPs (the
/// proxy's nat output rule diverts them, but needs a route to exist first).
pub fn desired(
    cluster: &ClusterSpec,
    local: &Node,
    underlay: &Underlay,
    remotes: &[RemoteNode],
    services: bool,
) -> DesiredDatapath {
    let mut d = DesiredDatapath {
        vxlan: wanted_vxlan(cluster, local, underlay),
        ..DesiredDatapath::default()
    };
    for remote in remotes {
        for cidr in &remote.pod_cidrs {
            add_remote_block(&mut d, remote, cidr);
        }
    }
    if cluster.backend == Backend::Bgp {
        // BIRD originates the node's blocks from these (Calico's model);
        // the routes to other nodes' blocks are BIRD's (protocol 12).
        for block in &local.pod_cidrs {
            d.routes.insert(PlannedRoute {
                dst: *block,
                gateway: None,
                dev: Dev::Blackhole,
                onlink: false,
            });
        }
    }
    if services {
        for cidr in &cluster.service_cidrs {
            d.routes.insert(PlannedRoute {
                dst: *cidr,
                gateway: None,
                dev: Dev::Underlay,
                onlink: false,
            });
        }
    }
    d
}

/// The VXLAN device for backends that may encapsulate; none for host-gw.
fn wanted_vxlan(cluster: &ClusterSpec, local: &Node, underlay: &Underlay) -> Option<WantedVxlan> {
    if !cluster.backend.may_encapsulate() {
        return None;
    }
    // The device holds the first address of each local block (as Flannel
    // does), so traffic from the node to remote pods leaves with an address
    // inside the cluster and returns the same way.
    let addresses = local
        .pod_cidrs
        .iter()
        .map(|b| IpNet::new(b.network(), b.max_prefix_len()).unwrap_or(*b))
        .collect();
    Some(WantedVxlan {
        vni: cluster.vxlan.vni,
        port: cluster.vxlan.port,
        local: underlay.address,
        mtu: pod_mtu(Backend::Vxlan, underlay.mtu, underlay.address, None),
        mac: vtep_mac(&local.name),
        addresses,
    })
}

fn add_remote_block(d: &mut DesiredDatapath, remote: &RemoteNode, cidr: &IpNet) {
    match remote.path {
        RemotePath::HostGw {
            via,
            via_link_local,
        } => {
            // A route's gateway must be of its family: IPv6 blocks over an
            // IPv4 underlay go via the remote link-local address.
            let gateway = if via.is_ipv4() == cidr.addr().is_ipv4() {
                Some(via)
            } else {
                via_link_local.filter(|_| cidr.addr().is_ipv6())
            };
            if let Some(gw) = gateway {
                d.routes.insert(PlannedRoute {
                    dst: *cidr,
                    gateway: Some(gw),
                    dev: Dev::Underlay,
                    onlink: false,
                });
            }
        }
        RemotePath::Vxlan {
            underlay: dst,
            vtep_mac,
        } => {
            if d.vxlan.is_none() {
                return;
            }
            let gw = cidr.network();
            d.routes.insert(PlannedRoute {
                dst: *cidr,
                gateway: Some(gw),
                dev: Dev::Vxlan,
                onlink: true,
            });
            d.neighbours.insert(gw, vtep_mac);
            d.fdb.insert((vtep_mac, dst));
        }
    }
}

/// What differs between the existing device and the wanted one, if anything.
fn vxlan_difference(have: &ObservedVxlan, want: &WantedVxlan) -> Option<String> {
    let mut diffs = Vec::new();
    match have.vni {
        None => diffs.push("not a VXLAN device".to_string()),
        Some(vni) if vni != want.vni => diffs.push(format!("vni {vni}, want {}", want.vni)),
        Some(_) => {}
    }
    if have.vni.is_some() && have.port != want.port {
        diffs.push(format!("port {}, want {}", have.port, want.port));
    }
    if have.vni.is_some() && have.local != Some(want.local) {
        let local = have.local.map_or("none".to_string(), |l| l.to_string());
        diffs.push(format!("local {local}, want {}", want.local));
    }
    if have.mac != want.mac {
        diffs.push(format!(
            "mac {}, want {}",
            mac_text(&have.mac),
            mac_text(&want.mac)
        ));
    }
    if have.mtu != want.mtu {
        diffs.push(format!("mtu {}, want {}", have.mtu, want.mtu));
    }
    if !have.up {
        diffs.push("down".into());
    }
    (!diffs.is_empty()).then(|| diffs.join(", "))
}

/// The operations that make `observed` equal to `desired`, in the order
/// they are applied: the device first, then additions (entries before the
/// routes that use them), then removals (routes before their entries).
pub fn plan(desired: &DesiredDatapath, observed: &ObservedDatapath) -> Vec<DatapathOp> {
    let mut ops = Vec::new();
    // A device that is created (or re-created) starts empty: nothing on the
    // old one survives, so nothing of it is compared or deleted.
    let mut fresh_device = false;
    match (&desired.vxlan, &observed.vxlan) {
        (None, Some(_)) => {
            ops.push(DatapathOp::DeleteVxlan);
            fresh_device = true;
        }
        (Some(_), None) => {
            ops.push(DatapathOp::CreateVxlan {
                reason: "missing".into(),
            });
            fresh_device = true;
        }
        (Some(want), Some(have)) => {
            if let Some(reason) = vxlan_difference(have, want) {
                ops.push(DatapathOp::CreateVxlan { reason });
                fresh_device = true;
            }
        }
        (None, None) => {}
    }
    let empty = ObservedDatapath::default();
    let device = if fresh_device { &empty } else { observed };
    if let Some(want) = &desired.vxlan {
        let have = device.vxlan.as_ref().map(|v| &v.addresses);
        for address in &want.addresses {
            if !have.is_some_and(|a| a.contains(address)) {
                ops.push(DatapathOp::AddVxlanAddress { address: *address });
            }
        }
    }
    plan_entries_added(desired, device, &mut ops);
    plan_routes(desired, observed, fresh_device, &mut ops);
    plan_entries_removed(desired, device, &mut ops);
    ops
}

fn plan_entries_added(d: &DesiredDatapath, o: &ObservedDatapath, ops: &mut Vec<DatapathOp>) {
    for (mac, dst) in &d.fdb {
        let present = o
            .fdb
            .iter()
            .any(|e| e.mac == mac && e.dst == Some(*dst) && e.permanent);
        if !present {
            ops.push(DatapathOp::AddFdb {
                mac: *mac,
                dst: *dst,
            });
        }
    }
    for (ip, mac) in &d.neighbours {
        let present = o
            .neighbours
            .iter()
            .any(|n| n.ip == *ip && n.permanent && n.mac.as_deref() == Some(mac.as_slice()));
        if !present {
            ops.push(DatapathOp::AddNeighbour { ip: *ip, mac: *mac });
        }
    }
}

fn plan_routes(d: &DesiredDatapath, o: &ObservedDatapath, fresh: bool, ops: &mut Vec<DatapathOp>) {
    // Routes through a device that is about to be replaced vanish with it.
    let surviving: BTreeSet<&PlannedRoute> = o
        .routes
        .iter()
        .filter(|r| !(fresh && r.dev == Dev::Vxlan))
        .collect();
    for route in &d.routes {
        if !surviving.contains(route) {
            ops.push(DatapathOp::AddRoute { route: *route });
        }
    }
    for route in surviving {
        if !d.routes.contains(route) {
            ops.push(DatapathOp::DeleteRoute { route: *route });
        }
    }
}

fn plan_entries_removed(d: &DesiredDatapath, o: &ObservedDatapath, ops: &mut Vec<DatapathOp>) {
    for n in &o.neighbours {
        if n.permanent && !d.neighbours.contains_key(&n.ip) {
            ops.push(DatapathOp::DeleteNeighbour { ip: n.ip });
        }
    }
    for e in &o.fdb {
        let Some(dst) = e.dst else { continue };
        let wanted =
            <[u8; 6]>::try_from(e.mac.as_slice()).is_ok_and(|mac| d.fdb.contains(&(mac, dst)));
        if !wanted {
            ops.push(DatapathOp::DeleteFdb {
                mac: e.mac.clone(),
                dst,
            });
        }
    }
}
