//! The node's cross-node datapath: routes to other nodes' blocks, and for
//! VXLAN the device, its static neighbours and FDB entries. Reconciled by
//! observe, plan ([`crate::plan`], pure) and apply: only what differs changes.

use ipnet::IpNet;
use podnet_cluster::{ClusterSpec, Node, RemoteNode};
use podnet_dataplane::Model;
use podnet_kernel::nftables::NftHandle;
use podnet_kernel::rtnl::RTPROT_PODNET_NODES;
use podnet_kernel::{KernelError, Route, RouteHandle, VxlanSpec};

use crate::error::{kernel, AgentError};
use crate::plan::{
    self, DatapathOp, DesiredDatapath, Dev, ObservedDatapath, ObservedFdb, ObservedNeighbour,
    ObservedVxlan, PlannedRoute, WantedVxlan, VXLAN_DEVICE,
};
use crate::underlay::Underlay;

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

/// The cross-node datapath of the node whose namespace the handles are bound to.
pub struct NodeDatapath {
    h: RouteHandle,
    nft: NftHandle,
    vxlan_index: Option<u32>,
    /// Routes, FDB entries and neighbours of the last desired state.
    programmed: (usize, usize, usize),
}

impl NodeDatapath {
    /// A datapath reconciler over `h` (routes, links) and `nft` (forwarding rules).
    pub fn new(h: RouteHandle, nft: NftHandle) -> Self {
        NodeDatapath {
            h,
            nft,
            vxlan_index: None,
            programmed: (0, 0, 0),
        }
    }

    /// Routes, FDB entries and neighbours the last reconcile kept in the kernel.
    pub fn programmed(&self) -> (usize, usize, usize) {
        self.programmed
    }

    /// How many routes of kernel protocol `protocol` the node holds.
    pub fn count_routes(&mut self, protocol: u8) -> Result<usize, AgentError> {
        let routes = self.h.routes().map_err(kernel("list routes"))?;
        Ok(routes.iter().filter(|r| r.protocol == protocol).count())
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

    /// Makes the kernel match `remotes`: reads what the node holds, plans
    /// the difference ([`crate::plan`]) and applies it.
    pub fn reconcile(
        &mut self,
        cluster: &ClusterSpec,
        local: &Node,
        underlay: &Underlay,
        remotes: &[RemoteNode],
        services: bool,
    ) -> Result<DatapathChanges, AgentError> {
        let desired = plan::desired(cluster, local, underlay, remotes, services);
        self.programmed = (
            desired.routes.len(),
            desired.fdb.len(),
            desired.neighbours.len(),
        );
        let observed = self.observe(underlay)?;
        let ops = plan::plan(&desired, &observed);
        self.vxlan_index = observed.vxlan.as_ref().map(|v| v.index);
        self.apply(&ops, &desired, underlay)
    }

    /// What the node's datapath holds now.
    pub fn observe(&mut self, underlay: &Underlay) -> Result<ObservedDatapath, AgentError> {
        observe(&mut self.h, underlay)
    }

    /// Applies `ops` (from [`plan::plan`] for `desired`) in order.
    fn apply(
        &mut self,
        ops: &[DatapathOp],
        desired: &DesiredDatapath,
        underlay: &Underlay,
    ) -> Result<DatapathChanges, AgentError> {
        let mut changes = DatapathChanges::default();
        for op in ops {
            let changed = self.apply_one(op, desired, underlay)?;
            match (changed, op.is_removal()) {
                (false, _) => {}
                (true, true) => changes.removed += 1,
                (true, false) => changes.added += 1,
            }
        }
        Ok(changes)
    }

    /// Applies one operation; false when there was nothing to do (a route
    /// that vanished with its device).
    fn apply_one(
        &mut self,
        op: &DatapathOp,
        desired: &DesiredDatapath,
        underlay: &Underlay,
    ) -> Result<bool, AgentError> {
        let what = op.to_string();
        match op {
            DatapathOp::DeleteVxlan => {
                self.h.delete_link(VXLAN_DEVICE).map_err(kernel(what))?;
                self.vxlan_index = None;
            }
            DatapathOp::CreateVxlan { .. } => {
                let want = desired.vxlan.as_ref().ok_or_else(|| unplanned(&what))?;
                self.create_vxlan(want, underlay)?;
            }
            DatapathOp::AddVxlanAddress { address } => {
                let vx = self.vxlan(&what)?;
                self.h.replace_address(vx, *address).map_err(kernel(what))?;
            }
            DatapathOp::AddRoute { route } => {
                let r = self.kernel_route(route, underlay, &what)?;
                self.h.replace_route(&r).map_err(kernel(what))?;
            }
            DatapathOp::DeleteRoute { route } => {
                let r = self.kernel_route(route, underlay, &what)?;
                return self.h.delete_route(&r).map_err(kernel(what));
            }
            DatapathOp::AddFdb { mac, dst } => {
                let vx = self.vxlan(&what)?;
                self.h.replace_fdb(vx, mac, *dst).map_err(kernel(what))?;
            }
            DatapathOp::DeleteFdb { mac, dst } => {
                let vx = self.vxlan(&what)?;
                self.h
                    .delete_fdb(vx, mac, Some(*dst))
                    .map_err(kernel(what))?;
            }
            DatapathOp::AddNeighbour { ip, mac } => {
                let vx = self.vxlan(&what)?;
                self.h
                    .replace_neighbour(vx, *ip, mac)
                    .map_err(kernel(what))?;
            }
            DatapathOp::DeleteNeighbour { ip } => {
                let vx = self.vxlan(&what)?;
                self.h.delete_neighbour(vx, *ip).map_err(kernel(what))?;
            }
        }
        Ok(true)
    }

    /// Creates the VXLAN device (deleting one whose settings differ) and
    /// records its index.
    fn create_vxlan(&mut self, want: &WantedVxlan, underlay: &Underlay) -> Result<(), AgentError> {
        let existing = self
            .h
            .link_by_name(VXLAN_DEVICE)
            .map_err(kernel("look up VXLAN device"))?;
        if existing.is_some() {
            self.h
                .delete_link(VXLAN_DEVICE)
                .map_err(kernel("replace VXLAN device"))?;
        }
        let spec = VxlanSpec {
            name: VXLAN_DEVICE,
            vni: want.vni,
            port: want.port,
            local: want.local,
            underlay: underlay.index,
            mtu: want.mtu,
            mac: want.mac,
        };
        self.h
            .create_vxlan(&spec)
            .map_err(kernel("create VXLAN device"))?;
        let link = self
            .h
            .link_by_name(VXLAN_DEVICE)
            .map_err(kernel("look up VXLAN device"))?
            .ok_or_else(|| unplanned("create VXLAN device: it vanished right after creation"))?;
        self.vxlan_index = Some(link.index);
        Ok(())
    }

    fn vxlan(&self, what: &str) -> Result<u32, AgentError> {
        self.vxlan_index.ok_or_else(|| unplanned(what))
    }

    /// The kernel route for a planned one, its device resolved to an index.
    fn kernel_route(
        &self,
        route: &PlannedRoute,
        underlay: &Underlay,
        what: &str,
    ) -> Result<Route, AgentError> {
        let oif = match route.dev {
            Dev::Underlay => underlay.index,
            Dev::Vxlan => self.vxlan(what)?,
            Dev::Other(i) => i,
            Dev::Blackhole => return Ok(Route::blackhole(route.dst, RTPROT_PODNET_NODES)),
        };
        let mut r = match route.gateway {
            Some(gw) => Route::via(route.dst, gw, oif, RTPROT_PODNET_NODES),
            None => Route::direct(route.dst, oif, RTPROT_PODNET_NODES),
        };
        r.onlink = route.onlink;
        Ok(r)
    }
}

/// An operation the plan should not have produced (no device to put it on).
fn unplanned(what: &str) -> AgentError {
    AgentError::Kernel {
        context: what.to_string(),
        source: KernelError::Protocol {
            op: what.to_string(),
            detail: "the VXLAN device it needs is missing".into(),
        },
    }
}

/// What the datapath of `h`'s namespace holds now.
pub fn observe(h: &mut RouteHandle, underlay: &Underlay) -> Result<ObservedDatapath, AgentError> {
    let link = h
        .link_by_name(VXLAN_DEVICE)
        .map_err(kernel("look up VXLAN device"))?;
    let mut observed = ObservedDatapath::default();
    if let Some(link) = link {
        let addresses = h
            .addresses(Some(link.index))
            .map_err(kernel("list VXLAN addresses"))?
            .into_iter()
            .map(|a| a.net)
            .collect();
        observed.neighbours = h
            .neighbours(link.index)
            .map_err(kernel("list VXLAN neighbours"))?
            .into_iter()
            .map(|n| ObservedNeighbour {
                ip: n.ip,
                mac: n.mac,
                permanent: n.permanent,
            })
            .collect();
        observed.fdb = h
            .fdb(link.index)
            .map_err(kernel("list VXLAN FDB"))?
            .into_iter()
            .map(|e| ObservedFdb {
                mac: e.mac,
                dst: e.dst,
                permanent: e.permanent,
            })
            .collect();
        observed.vxlan = Some(ObservedVxlan {
            index: link.index,
            vni: link.vxlan.as_ref().map(|v| v.vni),
            port: link.vxlan.as_ref().map_or(0, |v| v.port),
            local: link.vxlan.as_ref().and_then(|v| v.local),
            mac: link.mac,
            mtu: link.mtu,
            up: link.up,
            addresses,
        });
    }
    let vxlan = observed.vxlan.as_ref().map(|v| v.index);
    observed.routes = h
        .routes()
        .map_err(kernel("list routes"))?
        .into_iter()
        .filter(|r| r.protocol == RTPROT_PODNET_NODES)
        .map(|r| PlannedRoute {
            dst: r.dst,
            gateway: r.gateway,
            dev: match r.oif {
                _ if r.blackhole => Dev::Blackhole,
                Some(i) if i == underlay.index => Dev::Underlay,
                Some(i) if Some(i) == vxlan => Dev::Vxlan,
                other => Dev::Other(other.unwrap_or(0)),
            },
            onlink: r.onlink,
        })
        .collect();
    Ok(observed)
}
