//! Routes in the main table.

use std::net::IpAddr;

use ipnet::IpNet;

use super::{family_of, ip_bytes, parse_ip, RouteHandle};
use crate::error::Result;
use crate::netlink::codec::{self, MessageBuilder};

const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_TABLE: u16 = 15;
const RTNH_F_ONLINK: u32 = 4;
const RT_TABLE_MAIN: u32 = 254;

/// Scope of a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteScope {
    /// `scope global`: reached through a gateway.
    Universe,
    /// `scope link`: directly on the link.
    Link,
    /// `scope host`.
    Host,
}

impl RouteScope {
    fn raw(self) -> u8 {
        match self {
            RouteScope::Universe => libc::RT_SCOPE_UNIVERSE,
            RouteScope::Link => libc::RT_SCOPE_LINK,
            RouteScope::Host => libc::RT_SCOPE_HOST,
        }
    }

    fn from_raw(raw: u8) -> Self {
        match raw {
            libc::RT_SCOPE_LINK => RouteScope::Link,
            libc::RT_SCOPE_HOST => RouteScope::Host,
            _ => RouteScope::Universe,
        }
    }
}

/// A unicast route in the main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Destination prefix (`0.0.0.0/0` for the default route).
    pub dst: IpNet,
    /// Next hop, if any.
    pub gateway: Option<IpAddr>,
    /// Output interface index.
    pub oif: Option<u32>,
    /// Route scope.
    pub scope: RouteScope,
    /// Route protocol (who installed it).
    pub protocol: u8,
    /// `onlink`: the gateway is on the link even without a covering prefix.
    pub onlink: bool,
    /// `blackhole`: packets to `dst` are dropped (no gateway, no interface).
    pub blackhole: bool,
}

impl Route {
    /// A route to `dst` straight out of interface `oif` (`ip route add DST dev OIF scope link`).
    pub fn direct(dst: IpNet, oif: u32, protocol: u8) -> Self {
        Route {
            dst,
            gateway: None,
            oif: Some(oif),
            scope: RouteScope::Link,
            protocol,
            onlink: false,
            blackhole: false,
        }
    }

    /// `ip route add blackhole DST`: packets to `dst` are dropped. A BGP
    /// speaker originates a node's block from it.
    pub fn blackhole(dst: IpNet, protocol: u8) -> Self {
        Route {
            dst,
            gateway: None,
            oif: None,
            scope: RouteScope::Universe,
            protocol,
            onlink: false,
            blackhole: true,
        }
    }

    /// A route to `dst` via `gateway` on `oif` (`ip route add DST via GW dev OIF`).
    pub fn via(dst: IpNet, gateway: IpAddr, oif: u32, protocol: u8) -> Self {
        Route {
            dst,
            gateway: Some(gateway),
            oif: Some(oif),
            scope: RouteScope::Universe,
            protocol,
            onlink: false,
            blackhole: false,
        }
    }

    fn rtmsg(&self, for_delete: bool) -> [u8; 12] {
        let mut h = [0u8; 12];
        h[0] = family_of(&self.dst.addr());
        h[1] = self.dst.prefix_len();
        h[4] = RT_TABLE_MAIN as u8;
        h[5] = if for_delete { 0 } else { self.protocol };
        h[6] = if for_delete {
            libc::RT_SCOPE_NOWHERE
        } else {
            self.scope.raw()
        };
        h[7] = if self.blackhole {
            libc::RTN_BLACKHOLE
        } else {
            libc::RTN_UNICAST
        };
        let flags = if self.onlink { RTNH_F_ONLINK } else { 0 };
        h[8..12].copy_from_slice(&flags.to_ne_bytes());
        h
    }

    fn encode(&self, m: &mut MessageBuilder) {
        m.attr(RTA_DST, &ip_bytes(&self.dst.network()));
        m.attr_u32(RTA_TABLE, RT_TABLE_MAIN);
        if let Some(gw) = self.gateway {
            m.attr(RTA_GATEWAY, &ip_bytes(&gw));
        }
        if let Some(oif) = self.oif {
            m.attr_u32(RTA_OIF, oif);
        }
    }

    fn describe(&self) -> String {
        let mut s = self.dst.to_string();
        if self.blackhole {
            s.insert_str(0, "blackhole ");
        }
        if let Some(gw) = self.gateway {
            s.push_str(&format!(" via {gw}"));
        }
        if let Some(oif) = self.oif {
            s.push_str(&format!(" dev {oif}"));
        }
        if self.onlink {
            s.push_str(" onlink");
        }
        s
    }
}

impl RouteHandle {
    /// `ip route replace ROUTE`: converges on retry instead of failing with EEXIST.
    pub fn replace_route(&mut self, route: &Route) -> Result<()> {
        let flags = libc::NLM_F_CREATE | libc::NLM_F_REPLACE;
        let mut m =
            MessageBuilder::new(libc::RTM_NEWROUTE, flags as u16).header(&route.rtmsg(false));
        route.encode(&mut m);
        self.sock
            .request(m, &format!("ip route replace {}", route.describe()))
    }

    /// `ip route del ROUTE`; returns false when there was no such route.
    pub fn delete_route(&mut self, route: &Route) -> Result<bool> {
        let mut m = MessageBuilder::new(libc::RTM_DELROUTE, 0).header(&route.rtmsg(true));
        route.encode(&mut m);
        match self
            .sock
            .request(m, &format!("ip route del {}", route.describe()))
        {
            Ok(()) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `ip route show` and `ip -6 route show`: unicast and blackhole routes of the main table.
    pub fn routes(&mut self) -> Result<Vec<Route>> {
        let mut out = Vec::new();
        for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
            let mut h = [0u8; 12];
            h[0] = family;
            let m = MessageBuilder::new(libc::RTM_GETROUTE, libc::NLM_F_DUMP as u16).header(&h);
            for p in self.sock.dump(m, "ip route show")? {
                if let Some(r) = parse_route(&p) {
                    out.push(r);
                }
            }
        }
        Ok(out)
    }
}

fn parse_route(p: &[u8]) -> Option<Route> {
    let h = p.get(0..12)?;
    let (family, dst_len, table, protocol, scope, rtype) = (h[0], h[1], h[4], h[5], h[6], h[7]);
    let flags = u32::from_ne_bytes(h[8..12].try_into().ok()?);
    if rtype != libc::RTN_UNICAST && rtype != libc::RTN_BLACKHOLE {
        return None;
    }
    let mut table = table as u32;
    let mut dst = None;
    let mut gateway = None;
    let mut oif = None;
    for (ty, a) in codec::attrs(&p[12..]) {
        match ty {
            RTA_DST => dst = parse_ip(family, a),
            RTA_GATEWAY => gateway = parse_ip(family, a),
            RTA_OIF => oif = codec::attr_u32(a),
            RTA_TABLE => table = codec::attr_u32(a).unwrap_or(table),
            _ => {}
        }
    }
    if table != RT_TABLE_MAIN {
        return None;
    }
    let dst = match dst {
        Some(ip) => IpNet::new(ip, dst_len).ok()?,
        None if family == libc::AF_INET as u8 => IpNet::new(IpAddr::from([0u8; 4]), 0).ok()?,
        None => IpNet::new(IpAddr::from([0u8; 16]), 0).ok()?,
    };
    Some(Route {
        dst,
        gateway,
        oif,
        scope: RouteScope::from_raw(scope),
        protocol,
        onlink: flags & RTNH_F_ONLINK != 0,
        blackhole: rtype == libc::RTN_BLACKHOLE,
    })
}

const RTA_SRC: u16 = 2;
const RTA_IIF: u16 = 3;
const RTA_PREFSRC: u16 = 7;
const RTA_IP_PROTO: u16 = 27;
const RTA_SPORT: u16 = 28;
const RTA_DPORT: u16 = 29;
const RTM_F_FIB_MATCH: u32 = 0x2000;

/// A question for the kernel's routing decision (`ip route get`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteQuery {
    /// The packet's destination.
    pub dst: IpAddr,
    /// The packet's source, if known.
    pub src: Option<IpAddr>,
    /// The interface it arrived on: asks the input path (forwarding,
    /// reverse-path and martian checks included). `None` asks the output path.
    pub iif: Option<u32>,
    /// IP protocol and ports, for policy routing that looks at them.
    pub proto: Option<(u8, u16, u16)>,
}

/// What kind of route the kernel chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    /// Forwarded or sent to a next hop.
    Unicast,
    /// Delivered to this namespace.
    Local,
    /// A broadcast address.
    Broadcast,
    /// `blackhole`: dropped silently.
    Blackhole,
    /// `unreachable`: dropped with ICMP host unreachable.
    Unreachable,
    /// `prohibit`: dropped with ICMP administratively prohibited.
    Prohibit,
    /// Another `RTN_*` type.
    Other(u8),
}

/// The kernel's routing decision for one packet (`ip route get ... fibmatch`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteDecision {
    /// What kind of route.
    pub kind: RouteKind,
    /// The route that matched (its prefix).
    pub dst: IpNet,
    /// Next hop, if any.
    pub gateway: Option<IpAddr>,
    /// Output interface index.
    pub oif: Option<u32>,
    /// Preferred source address.
    pub prefsrc: Option<IpAddr>,
    /// Routing table.
    pub table: u32,
    /// Who installed the route (`proto`).
    pub protocol: u8,
}

impl RouteHandle {
    /// `ip route get DST [from SRC] [iif IIF] fibmatch`: the route the kernel
    /// chooses for one packet, through the same code path a packet takes.
    /// Errors are the kernel's: `ENETUNREACH` for no route, `EINVAL` for a
    /// reverse-path (rp_filter) or martian failure on the input path.
    pub fn route_get(&mut self, q: &RouteQuery) -> Result<RouteDecision> {
        let family = family_of(&q.dst);
        let mut h = [0u8; 12];
        h[0] = family;
        h[1] = if q.dst.is_ipv4() { 32 } else { 128 };
        h[8..12].copy_from_slice(&RTM_F_FIB_MATCH.to_ne_bytes());
        let mut m = MessageBuilder::new(libc::RTM_GETROUTE, 0).header(&h);
        m.attr(RTA_DST, &ip_bytes(&q.dst));
        if let Some(src) = q.src {
            m.attr(RTA_SRC, &ip_bytes(&src));
        }
        if let Some(iif) = q.iif {
            m.attr_u32(RTA_IIF, iif);
        }
        if let Some((proto, sport, dport)) = q.proto {
            m.attr(RTA_IP_PROTO, &[proto]);
            m.attr(RTA_SPORT, &sport.to_be_bytes());
            m.attr(RTA_DPORT, &dport.to_be_bytes());
        }
        let op = format!(
            "ip route get {}{}{}",
            q.dst,
            q.src.map(|s| format!(" from {s}")).unwrap_or_default(),
            q.iif.map(|i| format!(" iif {i}")).unwrap_or_default()
        );
        let answer = self.sock.request_one(m, &op)?;
        parse_decision(&answer).ok_or_else(|| crate::error::KernelError::Protocol {
            op,
            detail: "unreadable answer".into(),
        })
    }
}

fn parse_decision(p: &[u8]) -> Option<RouteDecision> {
    let h = p.get(0..12)?;
    let (family, dst_len, protocol, rtype) = (h[0], h[1], h[5], h[7]);
    let mut d = RouteDecision {
        kind: match rtype {
            libc::RTN_UNICAST => RouteKind::Unicast,
            libc::RTN_LOCAL => RouteKind::Local,
            libc::RTN_BROADCAST => RouteKind::Broadcast,
            libc::RTN_BLACKHOLE => RouteKind::Blackhole,
            libc::RTN_UNREACHABLE => RouteKind::Unreachable,
            libc::RTN_PROHIBIT => RouteKind::Prohibit,
            other => RouteKind::Other(other),
        },
        dst: IpNet::new(
            if family == libc::AF_INET as u8 {
                IpAddr::from([0u8; 4])
            } else {
                IpAddr::from([0u8; 16])
            },
            0,
        )
        .ok()?,
        gateway: None,
        oif: None,
        prefsrc: None,
        table: h[4] as u32,
        protocol,
    };
    for (ty, a) in codec::attrs(&p[12..]) {
        match ty {
            RTA_DST => {
                if let Some(ip) = parse_ip(family, a) {
                    d.dst = IpNet::new(ip, dst_len).ok()?;
                }
            }
            RTA_GATEWAY => d.gateway = parse_ip(family, a),
            RTA_OIF => d.oif = codec::attr_u32(a),
            RTA_PREFSRC => d.prefsrc = parse_ip(family, a),
            RTA_TABLE => d.table = codec::attr_u32(a).unwrap_or(d.table),
            _ => {}
        }
    }
    Some(d)
}
