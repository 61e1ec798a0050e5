//! The path, hop by hop: in each namespace, what nf_tables did (from the
//! trace events), what NAT changed, which route the kernel chooses for the
//! packet as it arrived (asked on the real input path), and which namespace
//! holds the next hop. The walk stops at the destination or at the first
//! fault it can name.

use std::net::IpAddr;

use podnet_kernel::conntrack::ConntrackHandle;
use podnet_kernel::nftables::{ChainInfo, NftHandle, RuleInfo, TraceEvent};
use podnet_kernel::probe::ProbeProto;
use podnet_kernel::rtnl::{RouteDecision, RouteKind, RouteQuery, RTPROT_PODNET_NODES};
use podnet_kernel::{Address, Link, Netns, RouteHandle};

use crate::error::TraceError;
use crate::events::{groups, steps, Kind, Packet};
use crate::findings;
use crate::report::{Finding, Hop};
use crate::topology::{Cluster, Place, PlaceKind};

/// At most this many hops: a loop or a long path ends the walk.
const MAX_HOPS: usize = 16;

/// One namespace as the walk sees it, read after the probe.
pub struct View {
    /// The place.
    pub place: Place,
    netns: Netns,
    rt: RouteHandle,
    links: Vec<Link>,
    addrs: Vec<Address>,
    chains: Vec<ChainInfo>,
    rules: Vec<RuleInfo>,
    /// Its trace events.
    pub events: Vec<TraceEvent>,
}

impl View {
    /// Reads a namespace's links, addresses, chains and rules.
    pub fn read(place: Place, netns: Netns, events: Vec<TraceEvent>) -> Result<Self, TraceError> {
        let mut rt = RouteHandle::in_netns(&netns)?;
        let mut nft = NftHandle::in_netns(&netns)?;
        Ok(View {
            links: rt.links()?,
            addrs: rt.addresses(None)?,
            chains: nft.chains()?,
            rules: nft.rules()?,
            place,
            netns,
            rt,
            events,
        })
    }

    /// Its links, as read after the probe.
    pub fn links(&self) -> &[Link] {
        &self.links
    }

    fn link(&self, index: u32) -> Option<&Link> {
        self.links.iter().find(|l| l.index == index)
    }

    fn ifname(&self, index: Option<u32>) -> Option<String> {
        index.map(|i| {
            self.link(i)
                .map(|l| l.name.clone())
                .unwrap_or_else(|| format!("if{i}"))
        })
    }

    fn holds(&self, ip: IpAddr) -> Option<u32> {
        self.addrs
            .iter()
            .find(|a| a.net.addr() == ip)
            .map(|a| a.index)
    }
}

/// The walk's inputs besides the namespaces.
pub struct Walk<'a> {
    /// What the cluster says.
    pub cluster: &'a Cluster,
    /// The probe as sent.
    pub probe: Packet,
    /// The cluster's VXLAN port.
    pub vxlan_port: Option<u16>,
}

/// Where the packet goes next.
struct Next {
    place: usize,
    iif: u32,
}

impl Walk<'_> {
    /// Follows the probe from place `from`; returns the hops in order.
    pub fn run(&self, views: &mut [View], from: usize) -> Vec<Hop> {
        let mut hops = Vec::new();
        let (mut at, mut iif, mut pkt) = (from, None::<u32>, self.probe);
        for _ in 0..MAX_HOPS {
            let (hop, next) = self.hop(views, at, iif, &mut pkt);
            let stop = hop.delivered || hop.findings.iter().any(|f| f.fatal) || next.is_none();
            hops.push(hop);
            match next {
                Some(n) if !stop => {
                    at = n.place;
                    iif = Some(n.iif);
                }
                _ => break,
            }
        }
        hops
    }

    /// One namespace: netfilter, NAT, delivery or route, and the next hop.
    fn hop(
        &self,
        views: &mut [View],
        at: usize,
        iif: Option<u32>,
        pkt: &mut Packet,
    ) -> (Hop, Option<Next>) {
        let v = &views[at];
        let mut hop = Hop {
            place: v.place.name.clone(),
            kind: v.place.kind.word().into(),
            netns: v.place.netns.clone(),
            iif: v.ifname(iif),
            oif: None,
            packet: pkt.to_string(),
            route: None,
            nat: Vec::new(),
            encap: None,
            netfilter: Vec::new(),
            seen: false,
            delivered: false,
            answer_seen: false,
            findings: Vec::new(),
        };
        let gs = groups(&v.events, &v.chains, &self.probe, self.vxlan_port);
        hop.seen = gs.iter().any(|g| g.kind == Kind::Request);
        hop.answer_seen = gs.iter().any(|g| g.kind == Kind::Reply);
        // The probe's first packet and the first answer: later ones (the
        // handshake's ACK, the closing reset) pass the same rules again.
        for kind in [Kind::Request, Kind::Reply] {
            if let Some(g) = gs.iter().find(|g| g.kind == kind) {
                hop.netfilter.extend(steps(g, &v.chains, &v.rules));
            }
        }
        let request_drop = hop
            .netfilter
            .iter()
            .find(|s| s.packet == "request" && s.verdict == "drop")
            .cloned();
        if let Some(step) = request_drop {
            hop.findings.push(findings::netfilter_drop(
                &hop.place,
                &step,
                pkt,
                &self.probe,
                self.cluster,
            ));
            return (hop, None);
        }
        // DNAT happens before routing, source NAT after it (postrouting).
        let snat = self.translate(v, &gs, pkt, &mut hop);
        if v.holds(pkt.dst).is_some() {
            hop.delivered = true;
            return (hop, None);
        }
        let next = self.route(views, at, iif, pkt, &mut hop);
        if let Some((src, sport)) = snat {
            pkt.src = src;
            pkt.sport = sport;
        }
        (hop, next)
    }

    /// NAT in this namespace: from conntrack when the flow was confirmed,
    /// else from the headers the trace events carried. The destination is
    /// translated in `pkt`; the new source, if any, is returned, to apply
    /// after the route decision.
    fn translate(
        &self,
        v: &View,
        gs: &[crate::events::Group<'_>],
        pkt: &mut Packet,
        hop: &mut Hop,
    ) -> Option<(IpAddr, u16)> {
        let before = *pkt;
        let flow = ConntrackHandle::in_netns(&v.netns)
            .and_then(|mut ct| ct.flows(pkt.dst.is_ipv6()))
            .ok()
            .and_then(|flows| {
                let icmp = pkt.proto == ProbeProto::Icmp;
                flows.into_iter().find(|f| {
                    f.original.proto == pkt.number()
                        && f.original.src == pkt.src
                        && f.original.dst == pkt.dst
                        && (icmp
                            || (f.original.src_port == pkt.sport
                                && f.original.dst_port == pkt.dport))
                })
            });
        let mut snat = None;
        if let Some(f) = flow {
            pkt.dst = f.reply.src;
            if pkt.proto != ProbeProto::Icmp {
                pkt.dport = f.reply.src_port;
            }
            if f.reply.dst != pkt.src {
                let sport = if pkt.proto == ProbeProto::Icmp {
                    pkt.sport
                } else {
                    f.reply.dst_port
                };
                snat = Some((f.reply.dst, sport));
            }
        } else if let Some(last) = gs
            .iter()
            .find(|g| g.kind == Kind::Request)
            .and_then(|g| g.last)
        {
            pkt.dst = last.dst;
            if pkt.proto != ProbeProto::Icmp {
                pkt.dport = last.dport;
            }
        }
        if (pkt.dst, pkt.dport) != (before.dst, before.dport) {
            hop.nat.push(format!(
                "dnat {} > {}",
                addr_port(before.dst, before.dport),
                addr_port(pkt.dst, pkt.dport)
            ));
        }
        if let Some((src, _)) = snat {
            hop.nat.push(format!("masquerade {} > {src}", before.src));
        }
        snat
    }

    /// The route for the packet here, its checks, and the next namespace.
    fn route(
        &self,
        views: &mut [View],
        at: usize,
        iif: Option<u32>,
        pkt: &Packet,
        hop: &mut Hop,
    ) -> Option<Next> {
        let place = views[at].place.name.clone();
        let q = RouteQuery {
            dst: pkt.dst,
            src: Some(pkt.src).filter(|_| iif.is_some() || views[at].holds(pkt.src).is_some()),
            iif,
            proto: (pkt.proto != ProbeProto::Icmp).then_some((pkt.number(), pkt.sport, pkt.dport)),
        };
        let d = match views[at].rt.route_get(&q) {
            Ok(d) => d,
            Err(e) => {
                let f = match e.errno() {
                    Some(libc::EINVAL) if iif.is_some() => self.rp_filter(&mut views[at], iif, pkt),
                    _ => findings::no_route(&place, pkt, &e.to_string()),
                };
                hop.findings.push(f);
                return None;
            }
        };
        let v = &views[at];
        let shown = describe(v, &d);
        hop.route = Some(shown.clone());
        hop.oif = v.ifname(d.oif);
        match d.kind {
            RouteKind::Local => {
                hop.delivered = true;
                return None;
            }
            RouteKind::Unicast => {}
            _ => {
                hop.findings
                    .push(findings::route_unreachable(&place, pkt, &shown));
                return None;
            }
        }
        self.check_block_route(v, &d, pkt, &shown, hop);
        let oif = v.link(d.oif?)?.clone();
        if pkt.size > oif.mtu as usize {
            hop.findings
                .push(findings::mtu(&place, pkt, (&oif.name, oif.mtu), None));
            return None;
        }
        let nh = d.gateway.unwrap_or(pkt.dst);
        let next = if oif.vxlan.is_some() {
            self.vxlan_next(views, at, &oif, nh, hop)?
        } else {
            if let Some(f) = unresolved_neighbour(&mut views[at], &oif, nh) {
                hop.findings.push(f);
                return None;
            }
            next_place(views, at, &oif, nh)?
        };
        let nv = &views[next.place];
        if let Some(l) = nv.link(next.iif) {
            if pkt.size > l.mtu as usize {
                let f = findings::mtu(
                    &place,
                    pkt,
                    (&oif.name, oif.mtu),
                    Some((&nv.place.name, &l.name, l.mtu)),
                );
                hop.findings.push(f);
                return None;
            }
        }
        Some(next)
    }

    fn check_block_route(
        &self,
        v: &View,
        d: &RouteDecision,
        pkt: &Packet,
        shown: &str,
        hop: &mut Hop,
    ) {
        if v.place.kind != PlaceKind::Node || d.protocol == RTPROT_PODNET_NODES {
            return;
        }
        if let Some((owner, block)) = self.cluster.block_of(pkt.dst) {
            if Some(&owner.name) != v.place.node.as_ref() {
                let f = findings::missing_block_route(
                    &v.place.name,
                    &owner.name,
                    &block.to_string(),
                    shown,
                );
                hop.findings.push(f);
            }
        }
    }

    fn rp_filter(&self, v: &mut View, iif: Option<u32>, pkt: &Packet) -> Finding {
        let ifname = v.ifname(iif).unwrap_or_default();
        let back =
            v.rt.route_get(&RouteQuery {
                dst: pkt.src,
                src: None,
                iif: None,
                proto: None,
            })
            .map(|d| {
                format!(
                    "leaves by {}",
                    v.ifname(d.oif).unwrap_or_else(|| "?".into())
                )
            })
            .unwrap_or_else(|e| format!("does not exist ({e})"));
        let setting = v
            .netns
            .run(|| {
                let all =
                    podnet_kernel::sysctl::read("net/ipv4/conf/all/rp_filter").unwrap_or_default();
                let dev = podnet_kernel::sysctl::read(&format!("net/ipv4/conf/{ifname}/rp_filter"))
                    .unwrap_or_default();
                format!("all={all} {ifname}={dev}")
            })
            .unwrap_or_default();
        findings::rp_filter(&v.place.name, &ifname, pkt, &back, &setting)
    }

    /// Encapsulation: the neighbour entry gives the VTEP MAC, the FDB its node.
    fn vxlan_next(
        &self,
        views: &mut [View],
        at: usize,
        oif: &Link,
        nh: IpAddr,
        hop: &mut Hop,
    ) -> Option<Next> {
        let place = views[at].place.name.clone();
        let owner = self
            .cluster
            .nodes
            .iter()
            .find(|n| n.pod_cidrs.iter().any(|c| c.contains(&nh)));
        let owner_name = owner.map(|n| format!("node {}", n.name));
        let neigh = views[at].rt.neighbours(oif.index).unwrap_or_default();
        let Some(mac) = neigh
            .iter()
            .find(|n| n.ip == nh)
            .and_then(|n| n.mac.clone())
        else {
            hop.findings.push(findings::missing_neighbour(
                &place,
                &oif.name,
                nh,
                owner_name.as_deref(),
            ));
            return None;
        };
        let fdb = views[at].rt.fdb(oif.index).unwrap_or_default();
        let Some(remote) = fdb.iter().find(|e| e.mac == mac).and_then(|e| e.dst) else {
            hop.findings.push(findings::missing_fdb(
                &place,
                &oif.name,
                &mac_text(&mac),
                owner_name.as_deref(),
            ));
            return None;
        };
        let vx = oif.vxlan.as_ref();
        let local = vx
            .and_then(|x| x.local)
            .map(|l| l.to_string())
            .unwrap_or_else(|| "?".into());
        hop.encap = Some(format!(
            "vxlan vni {} {local} > {remote} (VTEP {})",
            vx.map(|x| x.vni).unwrap_or(0),
            mac_text(&mac)
        ));
        let (place_idx, remote_if) = owner_of(views, at, remote)?;
        // A warning: a fabric that does not enforce its MTU (macvlan
        // siblings) carries the frame anyway; the verdict decides.
        if let Some(mut f) = outer_mtu(views, at, (place_idx, remote_if), oif, self.probe.size) {
            f.fatal = false;
            hop.findings.push(f);
        }
        let iif = views[place_idx]
            .links
            .iter()
            .find(|l| l.vxlan.is_some())
            .map(|l| l.index)?;
        Some(Next {
            place: place_idx,
            iif,
        })
    }
}

fn addr_port(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V6(_) => format!("[{ip}]:{port}"),
        IpAddr::V4(_) => format!("{ip}:{port}"),
    }
}

fn mac_text(mac: &[u8]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// `10.244.2.0/24 via 198.18.1.2 dev eth0 proto 113`.
fn describe(v: &View, d: &RouteDecision) -> String {
    let mut s = match d.kind {
        RouteKind::Local => format!("local {}", d.dst),
        RouteKind::Blackhole => format!("blackhole {}", d.dst),
        RouteKind::Unreachable => format!("unreachable {}", d.dst),
        RouteKind::Prohibit => format!("prohibit {}", d.dst),
        _ if d.dst.prefix_len() == 0 => "default".to_string(),
        _ => d.dst.to_string(),
    };
    if let Some(gw) = d.gateway {
        s.push_str(&format!(" via {gw}"));
    }
    if let Some(dev) = v.ifname(d.oif) {
        s.push_str(&format!(" dev {dev}"));
    }
    let proto = match d.protocol {
        2 => "kernel".to_string(),
        3 => "boot".to_string(),
        4 => "static".to_string(),
        112 => "podnet".to_string(),
        113 => "podnet-nodes".to_string(),
        p => p.to_string(),
    };
    s.push_str(&format!(" proto {proto}"));
    if d.table != 254 {
        s.push_str(&format!(" table {}", d.table));
    }
    s
}

/// The encapsulated packet against the underlay links at both ends.
fn outer_mtu(
    views: &[View],
    at: usize,
    (remote, remote_if): (usize, u32),
    vxlan: &Link,
    size: usize,
) -> Option<Finding> {
    let local_ip = vxlan.vxlan.as_ref()?.local?;
    let overhead = if local_ip.is_ipv4() { 50 } else { 70 };
    let v = &views[at];
    let out = v.link(v.holds(local_ip)?)?;
    let inn = views[remote].link(remote_if)?;
    let too_big = size + overhead > inn.mtu as usize && size + overhead <= out.mtu as usize;
    too_big.then(|| {
        let pkt = Packet {
            proto: ProbeProto::Udp,
            src: local_ip,
            sport: 0,
            dst: local_ip,
            dport: 0,
            size: size + overhead,
        };
        findings::mtu(
            &v.place.name,
            &pkt,
            (&out.name, out.mtu),
            Some((&views[remote].place.name, &inn.name, inn.mtu)),
        )
    })
}

/// A neighbour that did not resolve (after the probe had its chance).
fn unresolved_neighbour(v: &mut View, oif: &Link, nh: IpAddr) -> Option<Finding> {
    let n =
        v.rt.neighbours(oif.index)
            .ok()?
            .into_iter()
            .find(|n| n.ip == nh)?;
    n.unresolved()
        .then(|| findings::neighbour_failed(&v.place.name, &oif.name, nh, n.state_name()))
}

/// The namespace (other than `at`) holding `ip`, with the interface holding it.
fn owner_of(views: &[View], at: usize, ip: IpAddr) -> Option<(usize, u32)> {
    views
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != at)
        .find_map(|(i, v)| v.holds(ip).map(|idx| (i, idx)))
}

/// The namespace on the other side of `oif` towards `nh`: whoever holds the
/// next hop, or, from a pod whose gateway nobody holds (the routed model's
/// link-local gateway), its node, entered on the veth's peer.
fn next_place(views: &[View], at: usize, oif: &Link, nh: IpAddr) -> Option<Next> {
    if let Some((place, iif)) = owner_of(views, at, nh) {
        return Some(Next { place, iif });
    }
    let here = &views[at].place;
    if here.kind != PlaceKind::Pod {
        return None;
    }
    let node = views
        .iter()
        .position(|v| v.place.kind == PlaceKind::Node && v.place.node == here.node)?;
    Some(Next {
        place: node,
        iif: oif.link?,
    })
}
