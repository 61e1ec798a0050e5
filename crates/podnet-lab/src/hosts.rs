//! Hosts outside the cluster: namespaces behind the lab router, like clients
//! on the internet. They sit on their own network (`192.0.2.0/24`, the
//! router at `192.0.2.1`) and reach node addresses, and pod addresses
//! directly: the router routes each node's pod block to that node, as a
//! top-of-rack router would, kept current as nodes come and go.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use podnet_kernel::{Netns, Route, RouteHandle};

use crate::error::LabError;
use crate::fabric::{self, Plug};
use crate::state::{self, LabHost, LabState};
use crate::Lab;

/// The external network.
pub const EXTERNAL_NET: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 0);
/// The router's address on it, every external host's gateway.
pub const EXTERNAL_GATEWAY: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// First address handed to a host without one.
const FIRST_HOST: u8 = 10;
/// Route protocol of the router's routes to pod blocks.
const RTPROT_LAB_ROUTER: u8 = 115;

impl Lab {
    /// Namespace of the external network's bridge.
    pub fn external_ns(&self) -> String {
        format!("{}ext", self.prefix())
    }

    /// Namespace of external host `name`.
    pub fn host_ns(&self, name: &str) -> String {
        format!("{}host-{name}", self.prefix())
    }
}

/// Whether `ip` is in the external network.
pub fn is_external(ip: IpAddr) -> bool {
    IpNet::new(IpAddr::V4(EXTERNAL_NET), 24)
        .expect("valid prefix")
        .contains(&ip)
}

/// Builds the external network and its hosts (nothing when the spec has none).
pub(crate) fn build(lab: &Lab, state: &mut LabState) -> Result<(), LabError> {
    if state.spec.external_hosts.is_empty() {
        return Ok(());
    }
    let mtu = state.spec.fabric.mtu;
    let ext = Netns::create_named(&lab.external_ns())?;
    RouteHandle::in_netns(&ext)?.ensure_bridge("fabric", mtu)?;
    let router = Netns::open_named(&lab.router_ns())?;
    let gateway = IpNet::new(IpAddr::V4(EXTERNAL_GATEWAY), 24).expect("valid prefix");
    let link = Plug {
        segment_ns: lab.external_ns(),
        ifname: "ext",
        address: gateway,
        gateway: None,
        v6: None,
    };
    fabric::plug(&router, &link, mtu)?;
    let mut next = FIRST_HOST;
    for h in state.spec.external_hosts.clone() {
        let address = match h.address {
            Some(a) => a,
            None => loop {
                let a = IpAddr::V4(Ipv4Addr::new(192, 0, 2, next));
                next += 1;
                if !state
                    .spec
                    .external_hosts
                    .iter()
                    .any(|x| x.address == Some(a))
                {
                    break a;
                }
            },
        };
        let ns_name = lab.host_ns(&h.name);
        let ns = Netns::create_named(&ns_name)?;
        state.hosts.push(LabHost {
            name: h.name.clone(),
            ns: ns_name,
            address,
        });
        state::write(lab, state)?;
        let link = Plug {
            segment_ns: lab.external_ns(),
            ifname: "eth0",
            address: IpNet::new(address, 24).expect("valid prefix"),
            gateway: Some(IpAddr::V4(EXTERNAL_GATEWAY)),
            v6: None,
        };
        fabric::plug(&ns, &link, mtu)?;
    }
    Ok(())
}

/// Makes the router route every node's IPv4 pod block to that node (only
/// with external hosts: without them, host-gw across segments must not work
/// through the router; and not over BGP, where the router learns them).
pub(crate) fn sync_router_routes(lab: &Lab) -> Result<(), LabError> {
    let state = state::read(lab)?;
    if state.spec.external_hosts.is_empty() || state.spec.router_bgp().is_some() {
        return Ok(());
    }
    let view = lab.with_store(state.spec.store, |s| Ok(s.snapshot()?))?;
    let mut h = RouteHandle::in_netns(&Netns::open_named(&lab.router_ns())?)?;
    let mut wanted = Vec::new();
    for record in &view.nodes {
        let Ok(node) = state.node(&record.name) else {
            continue;
        };
        let Some(dev) = h.link_by_name(&format!("seg{}", node.segment))? else {
            continue;
        };
        for block in record.pod_cidrs.iter().filter(|b| b.addr().is_ipv4()) {
            wanted.push(Route::via(
                *block,
                record.address,
                dev.index,
                RTPROT_LAB_ROUTER,
            ));
        }
    }
    for r in h
        .routes()?
        .into_iter()
        .filter(|r| r.protocol == RTPROT_LAB_ROUTER)
    {
        if !wanted
            .iter()
            .any(|w| w.dst == r.dst && w.gateway == r.gateway)
        {
            h.delete_route(&r)?;
        }
    }
    for r in &wanted {
        h.replace_route(r)?;
    }
    Ok(())
}
