//! The attach / detach / check flow shared by both models.

use std::net::IpAddr;
use std::os::fd::AsFd;

use ipnet::IpNet;
use podnet_kernel::nftables::{NetworkRuleset, NftHandle};
use podnet_kernel::rtnl::RTPROT_PODNET;
use podnet_kernel::{sysctl, Link, Netns, Route, RouteHandle, VethSpec};

use crate::antispoof;
use crate::error::DataplaneError;
use crate::names::{
    host_veth_alias, host_veth_name, network_group, parse_host_veth_alias, HOST_VETH_PREFIX,
};
use crate::spec::{Model, NetworkSpec, PodAttachment};
use crate::{BridgePodNetwork, RoutedPodNetwork};

/// Result alias of the dataplane.
pub type Result<T, E = DataplaneError> = std::result::Result<T, E>;

/// A route inside the pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRoute {
    /// Destination.
    pub dst: IpNet,
    /// Next hop.
    pub gw: IpAddr,
    /// The next hop is on-link without a covering prefix.
    pub onlink: bool,
}

/// How the pod side looks in a given model.
#[derive(Debug, Clone, Default)]
pub struct PodLayout {
    /// Addresses on the pod interface, with the prefix the pod sees.
    pub addresses: Vec<(IpNet, Option<IpAddr>)>,
    /// Routes in the pod.
    pub routes: Vec<PodRoute>,
    /// Permanent neighbour entries (gateway → host MAC).
    pub neighbours: Vec<(IpAddr, Vec<u8>)>,
}

/// One model of same-node pod networking.
pub trait PodNetwork {
    /// Prepares shared host state; returns the bridge to enslave the host veth to, if any.
    fn prepare_host(
        &self,
        host: &mut RouteHandle,
        net: &NetworkSpec,
        pod: &PodAttachment,
    ) -> Result<Option<Link>>;
    /// The MAC of the host-side veth, when the model fixes it.
    fn host_mac(&self) -> Option<[u8; 6]>;
    /// Configures the host side once the veth exists (host routes, link-local gateway).
    fn configure_host_port(
        &self,
        host: &mut RouteHandle,
        port: &Link,
        pod: &PodAttachment,
    ) -> Result<()>;
    /// Sysctls the host namespace needs for this pod.
    fn host_sysctls(&self, port: &str, pod: &PodAttachment) -> Vec<(String, String)>;
    /// Addresses, routes and neighbours inside the pod.
    fn pod_layout(&self, pod: &PodAttachment, port: &Link) -> Result<PodLayout>;
    /// Verifies the host side (CHECK); names what is missing.
    fn check_host(
        &self,
        host: &mut RouteHandle,
        net: &NetworkSpec,
        port: &Link,
        pod: &PodAttachment,
    ) -> Result<()>;
}

fn model(m: Model) -> &'static dyn PodNetwork {
    match m {
        Model::Bridge => &BridgePodNetwork,
        Model::Routed => &RoutedPodNetwork,
    }
}

/// A plumbed interface, for the CNI result.
#[derive(Debug, Clone)]
pub struct Interface {
    /// Interface name.
    pub name: String,
    /// Hardware address as `aa:bb:...`.
    pub mac: String,
}

/// What [`attach`] made.
#[derive(Debug, Clone)]
pub struct Attached {
    /// The bridge, in the bridge model.
    pub bridge: Option<Interface>,
    /// The host-side veth.
    pub host: Interface,
    /// The pod's interface.
    pub pod: Interface,
    /// Addresses on the pod's interface and their gateways.
    pub addresses: Vec<(IpNet, Option<IpAddr>)>,
    /// Routes in the pod.
    pub routes: Vec<PodRoute>,
}

/// Formats a MAC address as `ip link` does.
pub fn format_mac(mac: &[u8]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn open_pod_netns(path: &str) -> Result<Netns> {
    Netns::open(path).map_err(|e| {
        if e.is_not_found() || matches!(e, podnet_kernel::KernelError::NotANamespace(_)) {
            DataplaneError::NoNamespace(path.to_string())
        } else {
            e.into()
        }
    })
}

/// Plumbs `pod` into `net`, with `host` as the node's namespace and `pod_ns` the pod's.
///
/// On failure everything this call created is removed again.
pub fn attach(
    host: &Netns,
    pod_ns: &Netns,
    net: &NetworkSpec,
    pod: &PodAttachment,
) -> Result<Attached> {
    let m = model(net.model);
    let mut hh = RouteHandle::in_netns(host)?;
    let mut ph = RouteHandle::in_netns(pod_ns)?;
    let port_name = host_veth_name(&net.name, &pod.container_id, &pod.ifname);

    let bridge = m.prepare_host(&mut hh, net, pod)?;
    let spec = VethSpec {
        name: &port_name,
        peer_name: &pod.ifname,
        peer_netns: pod_ns.as_fd(),
        mtu: net.mtu,
        mac: m.host_mac(),
        master: bridge.as_ref().map(|b| b.index),
        group: network_group(&net.name),
    };
    let taken = || DataplaneError::InterfaceExists {
        ifname: pod.ifname.clone(),
        netns: pod.netns_path.clone(),
    };
    match hh.create_veth(&spec) {
        Ok(()) => {}
        // A name is taken. If our deterministic host-side name exists, it is a
        // leftover of an ADD of this attachment that was killed midway: remove
        // it (its pod end goes with it) and try once more. Otherwise the pod's
        // interface name belongs to someone else, and is not ours to touch.
        Err(e) if e.is_exists() => {
            if !hh.delete_link(&port_name)? {
                return Err(taken());
            }
            hh.create_veth(&spec)
                .map_err(|e| if e.is_exists() { taken() } else { e.into() })?;
        }
        Err(e) => return Err(e.into()),
    }
    let plumbed = plumb(m, host, &mut hh, &mut ph, net, pod, &port_name).map(|mut a| {
        a.bridge = bridge.map(|b| Interface {
            name: b.name,
            mac: format_mac(&b.mac),
        });
        a
    });
    match plumbed {
        Ok(a) => Ok(a),
        // Roll back: deleting the host end removes the pod end and its routes too.
        Err(error) => match hh.delete_link(&port_name) {
            Ok(_) => Err(error),
            Err(e) => Err(DataplaneError::RollbackFailed {
                error: Box::new(error),
                rollback: format!("delete {port_name}: {e}"),
            }),
        },
    }
}

/// Configures both sides once the veth exists; the caller rolls back on error.
fn plumb(
    m: &dyn PodNetwork,
    host: &Netns,
    hh: &mut RouteHandle,
    ph: &mut RouteHandle,
    net: &NetworkSpec,
    pod: &PodAttachment,
    port_name: &str,
) -> Result<Attached> {
    let missing =
        |what: &str| DataplaneError::Invalid(format!("{what} vanished right after creation"));
    let port = hh
        .link_by_name(port_name)?
        .ok_or_else(|| missing(port_name))?;
    hh.set_alias(
        port.index,
        &host_veth_alias(&net.name, &pod.container_id, &pod.ifname),
    )?;
    let pod_link = ph
        .link_by_name(&pod.ifname)?
        .ok_or_else(|| missing(&pod.ifname))?;
    let layout = m.pod_layout(pod, &port)?;
    configure_pod(ph, &pod_link, &layout)?;
    m.configure_host_port(hh, &port, pod)?;
    sysctl::write_in(host, &m.host_sysctls(port_name, pod))?;
    let ruleset =
        NetworkRuleset::for_pods(&net.name, &net.pod_subnets, &net.cluster_cidrs, net.ip_masq);
    let mut nft = NftHandle::in_netns(host)?;
    nft.apply_network(&ruleset)?;
    nft.accept_in_foreign_drop_chains(&net.name, &net.pod_subnets)?;
    if net.anti_spoofing {
        let addrs: Vec<IpAddr> = pod.addresses.iter().map(|a| a.address.addr()).collect();
        antispoof::add_pod(&mut nft, net.model, port_name, &addrs)?;
    }
    Ok(Attached {
        bridge: None,
        host: Interface {
            name: port.name.clone(),
            mac: format_mac(&port.mac),
        },
        pod: Interface {
            name: pod_link.name.clone(),
            mac: format_mac(&pod_link.mac),
        },
        addresses: layout.addresses,
        routes: layout.routes,
    })
}

/// Brings the pod's interface up with its addresses, gateway neighbours and routes.
fn configure_pod(ph: &mut RouteHandle, link: &Link, layout: &PodLayout) -> Result<()> {
    ph.set_up(link.index)?;
    for (addr, _) in &layout.addresses {
        ph.replace_address(link.index, *addr)?;
    }
    for (ip, mac) in &layout.neighbours {
        ph.replace_neighbour(link.index, *ip, mac)?;
    }
    for r in &layout.routes {
        let mut route = Route::via(r.dst, r.gw, link.index, RTPROT_PODNET);
        route.onlink = r.onlink;
        ph.replace_route(&route)?;
    }
    Ok(())
}

/// Removes the pod's interface; absent interfaces and namespaces are success.
///
/// Deleting the host end removes the pod end and every route through it. The
/// call returns once the kernel has unregistered both ends; the kernel's final
/// RCU barrier (~20 ms) is waited out by a forked child (see
/// [`podnet_kernel::rtnl::delete_link_unregistered`]).
pub fn detach(host: &Netns, net: &NetworkSpec, container_id: &str, ifname: &str) -> Result<()> {
    let name = host_veth_name(&net.name, container_id, ifname);
    podnet_kernel::rtnl::delete_link_unregistered(host, &name)?;
    Ok(())
}

/// Deletes the host-side veths of `net` whose attachment is not in `valid` (CNI GC).
///
/// A network's veths are found by their interface group, which is set at
/// creation, so even the veth of an ADD killed before it could set the alias
/// is found. A veth is stale when its deterministic name belongs to no valid
/// attachment. Returns the attachments whose veth was deleted (`(container id, ifname)`,
/// from the veth's alias; a veth without one is deleted and not listed).
pub fn remove_stale(
    host: &Netns,
    net: &NetworkSpec,
    valid: &[(String, String)],
) -> Result<Vec<(String, String)>> {
    let group = network_group(&net.name);
    let keep: Vec<String> = valid
        .iter()
        .map(|(id, ifname)| host_veth_name(&net.name, id, ifname))
        .collect();
    let mut hh = RouteHandle::in_netns(host)?;
    let mut removed = Vec::new();
    let mut present = Vec::new();
    for link in hh.links()? {
        let ours = link.group == group && link.name.starts_with(HOST_VETH_PREFIX);
        if ours && !keep.contains(&link.name) && hh.delete_link(&link.name)? {
            // The alias names the attachment.
            let alias = link.alias.unwrap_or_default();
            if let Some((_, id, ifname)) = parse_host_veth_alias(&alias) {
                removed.push((id.to_string(), ifname.to_string()));
            }
        } else {
            present.push(link.name);
        }
    }
    antispoof::remove_absent(&mut NftHandle::in_netns(host)?, net.model, &present)?;
    Ok(removed)
}

/// Verifies that the pod's interface, addresses and routes are really there.
pub fn check(host: &Netns, net: &NetworkSpec, pod: &PodAttachment) -> Result<()> {
    let m = model(net.model);
    let pod_ns = open_pod_netns(&pod.netns_path)?;
    let mut hh = RouteHandle::in_netns(host)?;
    let mut ph = RouteHandle::in_netns(&pod_ns)?;
    let fail = |s: String| Err(DataplaneError::CheckFailed(s));
    let port_name = host_veth_name(&net.name, &pod.container_id, &pod.ifname);
    let Some(port) = hh.link_by_name(&port_name)? else {
        return fail(format!("host interface {port_name} is missing"));
    };
    let Some(link) = ph.link_by_name(&pod.ifname)? else {
        return fail(format!(
            "interface {} is missing in {}",
            pod.ifname, pod.netns_path
        ));
    };
    if !link.up {
        return fail(format!("interface {} is down", pod.ifname));
    }
    if link.mtu != net.mtu {
        return fail(format!(
            "interface {} has MTU {}, expected {}",
            pod.ifname, link.mtu, net.mtu
        ));
    }
    let layout = m.pod_layout(pod, &port)?;
    let have = ph.addresses(Some(link.index))?;
    for (addr, _) in &layout.addresses {
        if !have.iter().any(|a| a.net == *addr) {
            return fail(format!("address {addr} is missing on {}", pod.ifname));
        }
    }
    let routes = ph.routes()?;
    for r in &layout.routes {
        if !routes
            .iter()
            .any(|k| k.dst == r.dst && k.gateway == Some(r.gw) && k.oif == Some(link.index))
        {
            return fail(format!(
                "route {} via {} is missing in the pod",
                r.dst, r.gw
            ));
        }
    }
    let wanted = m.host_sysctls(&port_name, pod);
    let found = host.run(|| {
        wanted
            .iter()
            .map(|(k, _)| sysctl::read(k))
            .collect::<Vec<_>>()
    })?;
    for ((key, want), got) in wanted.iter().zip(found) {
        let got = got?;
        if &got != want {
            return fail(format!("sysctl {key} is {got}, expected {want}"));
        }
    }
    m.check_host(&mut hh, net, &port, pod)
}
