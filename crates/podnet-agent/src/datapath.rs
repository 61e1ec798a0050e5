//! The node's cross-node datapath: routes to other nodes' blocks, and for
//! VXLAN the device, its static neighbours and FDB entries. Reconciled by
//! diff: read what the kernel has, change only what differs.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use podnet_cluster::{pod_mtu, vtep_mac, Backend, ClusterSpec, Node, RemoteNode, RemotePath};
use podnet_dataplane::Model;
use podnet_kernel::nftables::NftHandle;
use podnet_kernel::rtnl::RTPROT_PODNET_NODES;
use podnet_kernel::{FdbEntry, KernelError, Neighbour, Route, RouteHandle, RouteScope, VxlanSpec};

use crate::error::{kernel, AgentError};
use crate::underlay::Underlay;

/// Name of the node's VXLAN device.
pub const VXLAN_DEVICE: &str = "podnet.vxlan";

/// How many kernel objects one reconcile added (or replaced) and removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DatapathChanges {
    /// Objects created or replaced.
    pub added: usize,
    /// Objects deleted.
    pub removed: usize,
}

impl DatapathChanges {
    /// True when the kernel already matched.
    pub fn is_empty(&self) -> bool {
        self.added == 0 && self.removed == 0
    }
}

/// Route identity for the diff: what makes two routes the same path.
type RouteKey = (IpNet, Option<IpAddr>, Option<u32>, bool);

fn route_key(r: &Route) -> RouteKey {
    (r.dst, r.gateway, r.oif, r.onlink)
}

/// What the node's datapath should hold.
#[derive(Debug, Default)]
struct Desired {
    routes: BTreeMap<RouteKey, Route>,
    neighbours: BTreeMap<IpAddr, [u8; 6]>,
    fdb: BTreeSet<([u8; 6], IpAddr)>,
}

/// What a VXLAN device holds: its neighbour and FDB entries.
struct VxlanEntries {
    neighbours: Vec<Neighbour>,
    fdb: Vec<FdbEntry>,
}

/// The cross-node datapath of the node whose namespace the handles are bound to.
pub struct NodeDatapath {
    h: RouteHandle,
    nft: NftHandle,
    vxlan_index: Option<u32>,
}

impl NodeDatapath {
    /// A datapath reconciler over `h` (routes, links) and `nft` (forwarding rules).
    pub fn new(h: RouteHandle, nft: NftHandle) -> Self {
        NodeDatapath {
            h,
            nft,
            vxlan_index: None,
        }
    }

    /// Index of the VXLAN device as of the last reconcile.
    pub fn vxlan_index(&self) -> Option<u32> {
        self.vxlan_index
    }

    /// Keeps pod traffic forwarded when someone loads a firewall whose
    /// forward chain drops by default (`iptables -P FORWARD DROP`) after the
    /// pods were made: the accept rules the plugin inserts at ADD, re-inserted
    /// into any such chain that lacks them. Returns how many chains changed.
    pub fn allow_forwarding(
        &mut self,
        network: &str,
        blocks: &[IpNet],
    ) -> Result<usize, AgentError> {
        let changed = self
            .nft
            .accept_in_foreign_drop_chains(network, blocks)
            .map_err(kernel("accept pod traffic in foreign forward chains"))?;
        Ok(changed.len())
    }

    /// Removes the anti-spoofing elements of pods deleted since (their
    /// interfaces are gone); returns how many.
    pub fn sweep_antispoof(&mut self, model: Model) -> Result<usize, AgentError> {
        let present: Vec<String> = self
            .h
            .links()
            .map_err(kernel("list links"))?
            .into_iter()
            .map(|l| l.name)
            .collect();
        Ok(podnet_dataplane::antispoof::remove_absent(
            &mut self.nft,
            model,
            &present,
        )?)
    }

    /// Makes the kernel match `remotes`: ensures (or removes) the VXLAN device,
    /// then adds what is missing and deletes what no remote node needs.
    ///
    /// With `services`, the node also routes the cluster's service CIDRs out
    /// of its underlay interface: the node's own processes then reach cluster
    /// IPs (their connection is diverted by the service proxy's nat output
    /// rule, which needs a route to exist first) even on a node without a
    /// default route. Pods need no route: their traffic is diverted before
    /// routing.
    pub fn reconcile(
        &mut self,
        cluster: &ClusterSpec,
        local: &Node,
        underlay: &Underlay,
        remotes: &[RemoteNode],
        services: bool,
    ) -> Result<DatapathChanges, AgentError> {
        let mut changes = DatapathChanges::default();
        let vxlan = self.ensure_vxlan(cluster, local, underlay, &mut changes)?;
        self.vxlan_index = vxlan;
        let mut desired = desired(underlay, vxlan, remotes);
        if services {
            for cidr in &cluster.service_cidrs {
                let r = Route::direct(*cidr, underlay.index, RTPROT_PODNET_NODES);
                desired.routes.insert(route_key(&r), r);
            }
        }
        // The device's entries are read once: the additions below only add
        // desired entries, so the same listing tells what is stale afterwards.
        let entries = match vxlan {
            Some(vx) => {
                let entries = self.vxlan_entries(vx)?;
                self.add_vxlan_entries(vx, &desired, &entries, &mut changes)?;
                Some((vx, entries))
            }
            None => None,
        };
        let actual: Vec<Route> = self
            .h
            .routes()
            .map_err(kernel("list routes"))?
            .into_iter()
            .filter(|r| r.protocol == RTPROT_PODNET_NODES)
            .collect();
        let have: BTreeSet<RouteKey> = actual.iter().map(route_key).collect();
        for (key, route) in &desired.routes {
            if !have.contains(key) {
                self.h
                    .replace_route(route)
                    .map_err(kernel(format!("route to {}", route.dst)))?;
                changes.added += 1;
            }
        }
        for route in actual
            .iter()
            .filter(|r| !desired.routes.contains_key(&route_key(r)))
        {
            // A replaced route already vanished; anything else is stale.
            if self
                .h
                .delete_route(route)
                .map_err(kernel("delete stale route"))?
            {
                changes.removed += 1;
            }
        }
        if let Some((vx, entries)) = entries {
            self.remove_stale_vxlan_entries(vx, &desired, &entries, &mut changes)?;
        }
        Ok(changes)
    }

    /// Ensures the VXLAN device when the backend may encapsulate (removes it
    /// for host-gw); recreates it if its VNI, port, address, MAC or MTU differ.
    fn ensure_vxlan(
        &mut self,
        cluster: &ClusterSpec,
        local: &Node,
        underlay: &Underlay,
        changes: &mut DatapathChanges,
    ) -> Result<Option<u32>, AgentError> {
        let existing = self
            .h
            .link_by_name(VXLAN_DEVICE)
            .map_err(kernel("look up VXLAN device"))?;
        if cluster.backend == Backend::HostGw {
            if existing.is_some() {
                self.h
                    .delete_link(VXLAN_DEVICE)
                    .map_err(kernel("delete VXLAN device"))?;
                changes.removed += 1;
            }
            return Ok(None);
        }
        let spec = VxlanSpec {
            name: VXLAN_DEVICE,
            vni: cluster.vxlan.vni,
            port: cluster.vxlan.port,
            local: underlay.address,
            underlay: underlay.index,
            mtu: pod_mtu(Backend::Vxlan, underlay.mtu, underlay.address, None),
            mac: vtep_mac(&local.name),
        };
        let current = existing.as_ref().is_some_and(|l| {
            l.vxlan.as_ref().is_some_and(|v| {
                v.vni == spec.vni && v.port == spec.port && v.local == Some(spec.local)
            }) && l.mac == spec.mac
                && l.mtu == spec.mtu
                && l.up
        });
        let index = match existing {
            Some(link) if current => link.index,
            stale => {
                if stale.is_some() {
                    self.h
                        .delete_link(VXLAN_DEVICE)
                        .map_err(kernel("replace VXLAN device"))?;
                }
                self.h
                    .create_vxlan(&spec)
                    .map_err(kernel("create VXLAN device"))?;
                changes.added += 1;
                self.h
                    .link_by_name(VXLAN_DEVICE)
                    .map_err(kernel("look up VXLAN device"))?
                    .ok_or_else(|| AgentError::Kernel {
                        context: "create VXLAN device".into(),
                        source: KernelError::Protocol {
                            op: format!("ip link show {VXLAN_DEVICE}"),
                            detail: "the device vanished right after creation".into(),
                        },
                    })?
                    .index
            }
        };
        // The device holds the first address of each local block (as Flannel
        // does), so traffic from the node to remote pods leaves with an
        // address inside the cluster and returns the same way.
        let have: BTreeSet<IpNet> = self
            .h
            .addresses(Some(index))
            .map_err(kernel("list VXLAN addresses"))?
            .into_iter()
            .map(|a| a.net)
            .collect();
        for block in &local.pod_cidrs {
            let host = IpNet::new(block.network(), block.max_prefix_len()).unwrap_or(*block);
            if !have.contains(&host) {
                self.h
                    .replace_address(index, host)
                    .map_err(kernel("address the VXLAN device"))?;
                changes.added += 1;
            }
        }
        Ok(Some(index))
    }

    fn vxlan_entries(&mut self, vx: u32) -> Result<VxlanEntries, AgentError> {
        Ok(VxlanEntries {
            neighbours: self
                .h
                .neighbours(vx)
                .map_err(kernel("list VXLAN neighbours"))?,
            fdb: self.h.fdb(vx).map_err(kernel("list VXLAN FDB"))?,
        })
    }

    fn add_vxlan_entries(
        &mut self,
        vx: u32,
        desired: &Desired,
        actual: &VxlanEntries,
        changes: &mut DatapathChanges,
    ) -> Result<(), AgentError> {
        for (mac, dst) in &desired.fdb {
            if !actual
                .fdb
                .iter()
                .any(|e| e.mac == mac && e.dst == Some(*dst) && e.permanent)
            {
                self.h
                    .replace_fdb(vx, mac, *dst)
                    .map_err(kernel(format!("FDB entry to {dst}")))?;
                changes.added += 1;
            }
        }
        for (ip, mac) in &desired.neighbours {
            let present = actual
                .neighbours
                .iter()
                .any(|n| n.ip == *ip && n.permanent && n.mac.as_deref() == Some(mac.as_slice()));
            if !present {
                self.h
                    .replace_neighbour(vx, *ip, mac)
                    .map_err(kernel(format!("neighbour {ip}")))?;
                changes.added += 1;
            }
        }
        Ok(())
    }

    fn remove_stale_vxlan_entries(
        &mut self,
        vx: u32,
        desired: &Desired,
        actual: &VxlanEntries,
        changes: &mut DatapathChanges,
    ) -> Result<(), AgentError> {
        for n in &actual.neighbours {
            if n.permanent && !desired.neighbours.contains_key(&n.ip) {
                self.h
                    .delete_neighbour(vx, n.ip)
                    .map_err(kernel("delete stale neighbour"))?;
                changes.removed += 1;
            }
        }
        for e in &actual.fdb {
            let Some(dst) = e.dst else { continue };
            let wanted = <[u8; 6]>::try_from(e.mac.as_slice())
                .is_ok_and(|mac| desired.fdb.contains(&(mac, dst)));
            if !wanted {
                self.h
                    .delete_fdb(vx, &e.mac, Some(dst))
                    .map_err(kernel("delete stale FDB entry"))?;
                changes.removed += 1;
            }
        }
        Ok(())
    }
}

/// Routes, neighbours and FDB entries for `remotes`.
///
/// host-gw routes go via the remote node's address, or for IPv6 blocks over
/// an IPv4 underlay via its link-local address; VXLAN carries both
/// families, each block's first address serving as the remote VTEP address.
fn desired(underlay: &Underlay, vxlan: Option<u32>, remotes: &[RemoteNode]) -> Desired {
    let mut d = Desired::default();
    for remote in remotes {
        for cidr in &remote.pod_cidrs {
            match remote.path {
                RemotePath::HostGw {
                    via,
                    via_link_local,
                } => {
                    // A route's gateway must be of its family: IPv6 blocks over
                    // an IPv4 underlay go via the remote link-local address.
                    let gateway = if via.is_ipv4() == cidr.addr().is_ipv4() {
                        Some(via)
                    } else {
                        via_link_local.filter(|_| cidr.addr().is_ipv6())
                    };
                    if let Some(gw) = gateway {
                        let mut r = Route::via(*cidr, gw, underlay.index, RTPROT_PODNET_NODES);
                        r.scope = RouteScope::Universe;
                        d.routes.insert(route_key(&r), r);
                    }
                }
                RemotePath::Vxlan {
                    underlay: dst,
                    vtep_mac,
                } => {
                    let Some(vx) = vxlan else { continue };
                    let gw = cidr.network();
                    let mut r = Route::via(*cidr, gw, vx, RTPROT_PODNET_NODES);
                    r.onlink = true;
                    d.routes.insert(route_key(&r), r);
                    d.neighbours.insert(gw, vtep_mac);
                    d.fdb.insert((vtep_mac, dst));
                }
            }
        }
    }
    d
}
