//! The lab's fabric: L2 segments (a bridge each, in its own namespace), a
//! router namespace joining them, and the link that plugs a namespace into a
//! segment: a macvlan in bridge mode on the segment's bridge. Macvlan
//! siblings reach each other directly, without a veth pair and a trip
//! through the bridge, so the lab's wire costs about what one veth costs and
//! the lab's figures measure podnet rather than the lab. Addresses come from
//! 198.18.0.0/15 (RFC 2544, benchmarking); no lab namespace has a route out
//! of the machine.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsFd;

use ipnet::IpNet;
use podnet_kernel::{sysctl, Netns, Route, RouteHandle};

use crate::error::LabError;
use crate::Lab;

/// Name of the bridge inside each segment namespace.
const BRIDGE: &str = "fabric";
/// Host part of the router's address on every segment.
const ROUTER_HOST: u8 = 254;
/// Host part of the control plane's address on segment 1.
const CONTROL_HOST: u8 = 250;

/// Address `host` on segment `s`.
pub fn segment_address(s: usize, host: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 18, s as u8, host))
}

/// IPv6 address `host` on segment `s` in a dual-stack BGP lab:
/// `fd00:198:18:S::HOST`, the IPv4 address's numbers written in its place
/// (node1 on segment 1 is `198.18.1.1` and `fd00:198:18:1::1`).
pub fn segment_address_v6(s: usize, host: u8) -> IpAddr {
    let same_digits = |n: usize| u16::from_str_radix(&n.to_string(), 16).unwrap_or(0);
    IpAddr::V6(Ipv6Addr::new(
        0xfd00,
        0x198,
        0x18,
        same_digits(s),
        0,
        0,
        0,
        same_digits(host.into()),
    ))
}

/// The router's address on segment `s`: every node's default gateway.
pub fn router_address(s: usize) -> IpAddr {
    segment_address(s, ROUTER_HOST)
}

/// The control plane's address (etcd listens here).
pub fn control_address() -> IpAddr {
    segment_address(1, CONTROL_HOST)
}

impl Lab {
    /// Namespace of segment `s`.
    pub fn segment_ns(&self, s: usize) -> String {
        format!("{}seg{s}", self.prefix())
    }

    /// Namespace of the router between segments.
    pub fn router_ns(&self) -> String {
        format!("{}router", self.prefix())
    }

    /// Namespace of the control plane (etcd).
    pub fn control_ns(&self) -> String {
        format!("{}ctl", self.prefix())
    }
}

/// Creates every segment (namespace + bridge) and, when `router` (several
/// segments, or hosts outside the cluster), the router joining them; with
/// `v6`, the router has IPv6 addresses too and forwards IPv6.
pub(crate) fn build(
    lab: &Lab,
    segments: usize,
    router: bool,
    v6: bool,
    mtu: u32,
) -> Result<(), LabError> {
    for s in 1..=segments {
        let ns = Netns::create_named(&lab.segment_ns(s))?;
        RouteHandle::in_netns(&ns)?.ensure_bridge(BRIDGE, mtu)?;
    }
    if router {
        let router = Netns::create_named(&lab.router_ns())?;
        for s in 1..=segments {
            let ifname = format!("seg{s}");
            let link = Plug {
                segment_ns: lab.segment_ns(s),
                ifname: &ifname,
                address: IpNet::new(router_address(s), 24).expect("valid prefix"),
                gateway: None,
                v6: v6.then(|| (segment_v6_net(s, ROUTER_HOST), None)),
            };
            plug(&router, &link, mtu)?;
        }
        let mut forwarding = vec![("net/ipv4/ip_forward".to_string(), "1".to_string())];
        if v6 {
            forwarding.push(("net/ipv6/conf/all/forwarding".into(), "1".into()));
        }
        sysctl::write_in(&router, &forwarding)?;
    }
    Ok(())
}

/// One namespace's link into a segment.
pub(crate) struct Plug<'a> {
    /// The segment's namespace (holding the bridge).
    pub segment_ns: String,
    /// Name of the end inside the plugged namespace.
    pub ifname: &'a str,
    /// Address of that end, with the segment's prefix.
    pub address: IpNet,
    /// The default route's next hop, if any.
    pub gateway: Option<IpAddr>,
    /// An IPv6 address too (with the segment's prefix), and the IPv6
    /// default route's next hop, if any.
    pub v6: Option<(IpNet, Option<IpAddr>)>,
}

/// `host`'s IPv6 address on segment `s`, with the segment's /64.
fn segment_v6_net(s: usize, host: u8) -> IpNet {
    IpNet::new(segment_address_v6(s, host), 64).expect("valid prefix")
}

impl Plug<'_> {
    /// A plug into cluster segment `s` at `address`, routed via the router when there is one.
    pub fn segment(lab: &Lab, s: usize, address: IpAddr, via_router: bool) -> Plug<'static> {
        Plug {
            segment_ns: lab.segment_ns(s),
            ifname: "eth0",
            address: IpNet::new(address, 24).expect("valid prefix"),
            gateway: via_router.then(|| router_address(s)),
            v6: None,
        }
    }

    /// The same plug with host `host`'s IPv6 address on segment `s` too
    /// (routed via the router's, when `via_router`).
    pub fn with_v6(mut self, s: usize, host: u8, via_router: bool) -> Self {
        let gateway = via_router.then(|| segment_address_v6(s, ROUTER_HOST));
        self.v6 = Some((segment_v6_net(s, host), gateway));
        self
    }
}

/// Plugs `netns` into a segment: a macvlan (bridge mode) on the segment's
/// bridge, created directly in `netns`, holding the address (and the default
/// route, if asked).
pub(crate) fn plug(netns: &Netns, link: &Plug<'_>, mtu: u32) -> Result<(), LabError> {
    let ifname = link.ifname;
    let seg = Netns::open_named(&link.segment_ns)?;
    let mut sh = RouteHandle::in_netns(&seg)?;
    let bridge = sh.link_by_name(BRIDGE)?.ok_or(LabError::NotRunning)?;
    sh.create_macvlan(bridge.index, ifname, netns.as_fd(), mtu)?;
    let mut h = RouteHandle::in_netns(netns)?;
    let l = h.link_by_name(ifname)?.ok_or(LabError::NotRunning)?;
    h.replace_address(l.index, link.address)?;
    // No duplicate address detection on the fabric: the link-local address a
    // node publishes (the next hop of IPv6 host-gw routes) would otherwise
    // stay tentative for a second or more after the lab comes up, and a
    // loaded machine's first IPv6 probes would time out on it.
    let dad = format!("net/ipv6/conf/{ifname}/accept_dad");
    // A gratuitous ARP when the link comes up: neighbours that still hold a
    // previous owner's MAC for the address (a node removed and added again
    // with its name and address) update at once, instead of dropping the
    // first packets to it until their entry goes stale (a lost SYN costs a
    // second).
    let announce = format!("net/ipv4/conf/{ifname}/arp_notify");
    podnet_kernel::sysctl::write_in(
        netns,
        &[(dad, "0".to_string()), (announce, "1".to_string())],
    )?;
    if let Some((v6, _)) = link.v6 {
        h.replace_address(l.index, v6)?;
    }
    h.set_up(l.index)?;
    if let Some(gw) = link.gateway {
        let default: IpNet = "0.0.0.0/0".parse().expect("static prefix");
        h.replace_route(&Route::via(default, gw, l.index, libc::RTPROT_STATIC))?;
    }
    if let Some((_, Some(gw))) = link.v6 {
        let default: IpNet = "::/0".parse().expect("static prefix");
        h.replace_route(&Route::via(default, gw, l.index, libc::RTPROT_STATIC))?;
    }
    Ok(())
}
