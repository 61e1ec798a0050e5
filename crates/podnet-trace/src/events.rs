//! Trace events sorted into packets: the kernel reports a trace id per
//! packet and namespace, and the headers only with the first event of each
//! hook, so events are grouped by id and each group is told apart by its
//! headers: the probe, its reply, its VXLAN packet, or an ICMP error.

use std::fmt;
use std::net::IpAddr;

use podnet_kernel::nftables::{ChainInfo, RuleInfo, TraceEvent, TraceKind};
use podnet_kernel::probe::ProbeProto;

use crate::report::NfStep;
use crate::session::TRACE_TABLE;

/// A packet as a trace follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    /// Protocol.
    pub proto: ProbeProto,
    /// Source address.
    pub src: IpAddr,
    /// Source port (echo identifier for ICMP).
    pub sport: u16,
    /// Destination address.
    pub dst: IpAddr,
    /// Destination port.
    pub dport: u16,
    /// IP packet size.
    pub size: usize,
}

impl Packet {
    /// The IP protocol number.
    pub fn number(&self) -> u8 {
        self.proto.number(self.dst.is_ipv6())
    }
}

impl fmt::Display for Packet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = |ip: IpAddr, port: u16| match ip {
            IpAddr::V6(_) => format!("[{ip}]:{port}"),
            IpAddr::V4(_) => format!("{ip}:{port}"),
        };
        match self.proto {
            ProbeProto::Icmp => write!(f, "icmp {} > {} id {}", self.src, self.dst, self.sport),
            ProbeProto::Tcp => write!(
                f,
                "tcp {} > {}",
                at(self.src, self.sport),
                at(self.dst, self.dport)
            ),
            ProbeProto::Udp => write!(
                f,
                "udp {} > {}",
                at(self.src, self.sport),
                at(self.dst, self.dport)
            ),
        }
    }
}

/// Which packet a group of events is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The probe, in its direction.
    Request,
    /// The answer.
    Reply,
    /// An encapsulating (VXLAN) packet.
    Encap,
    /// An ICMP error.
    Icmp,
    /// Headers not seen.
    Unknown,
}

impl Kind {
    fn word(self) -> &'static str {
        match self {
            Kind::Request => "request",
            Kind::Reply => "reply",
            Kind::Encap => "encap",
            Kind::Icmp => "icmp",
            Kind::Unknown => "unknown",
        }
    }
}

/// The addresses and ports of a traced header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// IP protocol.
    pub proto: u8,
    /// Source.
    pub src: IpAddr,
    /// Destination.
    pub dst: IpAddr,
    /// Source port (ICMP: type and code).
    pub sport: u16,
    /// Destination port (ICMP: the echo identifier).
    pub dport: u16,
}

/// Reads the network and transport headers of an event.
pub fn header(e: &TraceEvent) -> Option<Header> {
    let n = &e.network_header;
    let (proto, src, dst) = match n.first()? >> 4 {
        4 => (
            *n.get(9)?,
            IpAddr::from(<[u8; 4]>::try_from(n.get(12..16)?).ok()?),
            IpAddr::from(<[u8; 4]>::try_from(n.get(16..20)?).ok()?),
        ),
        6 => (
            *n.get(6)?,
            IpAddr::from(<[u8; 16]>::try_from(n.get(8..24)?).ok()?),
            IpAddr::from(<[u8; 16]>::try_from(n.get(24..40)?).ok()?),
        ),
        _ => return None,
    };
    let t = &e.transport_header;
    let word = |i: usize| Some(u16::from_be_bytes([*t.get(i)?, *t.get(i + 1)?]));
    let (sport, dport) = if proto == 1 || proto == 58 {
        (word(0)?, word(4)?)
    } else {
        (word(0)?, word(2)?)
    };
    Some(Header {
        proto,
        src,
        dst,
        sport,
        dport,
    })
}

/// The events of one packet in one namespace.
#[derive(Debug, Clone)]
pub struct Group<'a> {
    /// Which packet.
    pub kind: Kind,
    /// The headers as first seen, and as last seen (after NAT).
    pub first: Option<Header>,
    /// As last seen.
    pub last: Option<Header>,
    /// The events, in order.
    pub events: Vec<&'a TraceEvent>,
}

/// Order of the hooks a packet passes in one namespace: a header at an
/// earlier hook than the last one (or at a base chain already passed)
/// starts a new packet, since the kernel reuses trace ids.
fn hook_rank(hook: u32) -> u8 {
    match hook {
        0 | 3 => 0, // prerouting, output
        2 => 1,     // forward
        _ => 2,     // input, postrouting
    }
}

/// Sorts events into packets, in order of first appearance.
pub fn groups<'a>(
    events: &'a [TraceEvent],
    chains: &[ChainInfo],
    probe: &Packet,
    vxlan_port: Option<u16>,
) -> Vec<Group<'a>> {
    struct Open<'a> {
        id: u32,
        rank: u8,
        bases: Vec<(String, String)>,
        group: Group<'a>,
    }
    let mut out: Vec<Open<'a>> = Vec::new();
    for e in events {
        let h = header(e);
        // The trace table is gone when chains are listed; its chains are entry hooks.
        let base = if e.table == TRACE_TABLE {
            Some(0)
        } else {
            chains
                .iter()
                .find(|c| c.table == e.table && c.name == e.chain && Some(c.family) == e.family)
                .and_then(|c| c.hook.map(|(hook, _)| hook_rank(hook)))
        };
        let key = (e.table.clone(), e.chain.clone());
        let current = out.iter().rposition(|o| o.id == e.id);
        let starts_new = match (current, h.is_some(), base) {
            (None, _, _) => true,
            (Some(i), true, Some(rank)) => rank < out[i].rank || out[i].bases.contains(&key),
            _ => false,
        };
        let i = if starts_new {
            out.push(Open {
                id: e.id,
                rank: 0,
                bases: Vec::new(),
                group: Group {
                    kind: Kind::Unknown,
                    first: None,
                    last: None,
                    events: Vec::new(),
                },
            });
            out.len() - 1
        } else {
            current.unwrap_or(0)
        };
        let o = &mut out[i];
        if let (Some(rank), true) = (base, h.is_some()) {
            o.rank = rank;
            o.bases.push(key);
        }
        o.group.events.push(e);
        if let Some(h) = h {
            o.group.first.get_or_insert(h);
            o.group.last = Some(h);
            if o.group.kind == Kind::Unknown {
                o.group.kind = classify(&h, probe, vxlan_port);
            }
        }
    }
    out.into_iter().map(|o| o.group).collect()
}

fn classify(h: &Header, probe: &Packet, vxlan_port: Option<u16>) -> Kind {
    let number = probe.number();
    if probe.proto == ProbeProto::Icmp && h.proto == number {
        let ty = (h.sport >> 8) as u8;
        return match ty {
            8 | 128 => Kind::Request,
            0 | 129 => Kind::Reply,
            _ => Kind::Icmp,
        };
    }
    if h.proto == number && h.sport == probe.sport {
        return Kind::Request;
    }
    if h.proto == number && h.dport == probe.sport {
        return Kind::Reply;
    }
    if h.proto == 17 && Some(h.dport) == vxlan_port {
        return Kind::Encap;
    }
    if h.proto == 1 || h.proto == 58 {
        return Kind::Icmp;
    }
    Kind::Unknown
}

/// The nf_tables steps of a group, rendered, without the trace table's own.
pub fn steps(group: &Group<'_>, chains: &[ChainInfo], rules: &[RuleInfo]) -> Vec<NfStep> {
    let mut hook: Option<String> = None;
    let mut out = Vec::new();
    for e in &group.events {
        let family = e.family.map(|f| f.nft_name()).unwrap_or("?");
        let chain = chains
            .iter()
            .find(|c| c.table == e.table && c.name == e.chain && Some(c.family) == e.family);
        if let Some(h) = chain.and_then(|c| c.hook_name()) {
            hook = Some(h.to_string());
        }
        // The trace table's own events, and the "continue" reported when a
        // jump returns (no rule handle), say nothing about the packet.
        let resumed = e.kind == TraceKind::Rule && e.handle.is_none();
        if e.table == TRACE_TABLE || resumed {
            continue;
        }
        let rule = e.handle.and_then(|h| {
            rules.iter().find(|r| {
                r.handle == h
                    && r.table == e.table
                    && r.chain == e.chain
                    && Some(r.family) == e.family
            })
        });
        out.push(NfStep {
            table: format!("{family} {}", e.table),
            chain: e.chain.clone(),
            hook: hook.clone(),
            kind: match e.kind {
                TraceKind::Rule => "rule",
                TraceKind::Policy => "policy",
                TraceKind::Return => "return",
                TraceKind::Other => "other",
            }
            .into(),
            handle: e.handle,
            rule: rule.map(|r| r.text.clone()),
            comment: rule.and_then(|r| r.comment.clone()),
            verdict: e
                .verdict
                .as_ref()
                .map(|v| v.to_string())
                .unwrap_or_else(|| "continue".into()),
            packet: group.kind.word().into(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: u32, net: Vec<u8>, th: Vec<u8>) -> TraceEvent {
        TraceEvent {
            family: None,
            table: "t".into(),
            chain: "c".into(),
            handle: None,
            kind: TraceKind::Rule,
            verdict: None,
            id,
            iif: None,
            oif: None,
            mark: 0,
            nfproto: None,
            network_header: net,
            transport_header: th,
        }
    }

    fn v4(proto: u8, src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
        let mut h = vec![0x45, 0, 0, 60, 0, 0, 0, 0, 64, proto, 0, 0];
        h.extend_from_slice(&src);
        h.extend_from_slice(&dst);
        h
    }

    #[test]
    fn groups_by_id_and_tells_request_from_reply() {
        let probe = Packet {
            proto: ProbeProto::Tcp,
            src: "10.0.0.1".parse().expect("ip"),
            sport: 41000,
            dst: "10.96.0.10".parse().expect("ip"),
            dport: 80,
            size: 60,
        };
        let ports = |s: u16, d: u16| [s.to_be_bytes(), d.to_be_bytes()].concat();
        let events = vec![
            event(1, v4(6, [10, 0, 0, 1], [10, 96, 0, 10]), ports(41000, 80)),
            event(2, v4(6, [10, 0, 0, 2], [10, 0, 0, 1]), ports(8080, 41000)),
            // The request again, at a later hook, after DNAT.
            event(1, v4(6, [10, 0, 0, 1], [10, 0, 0, 2]), ports(41000, 8080)),
            event(1, vec![], vec![]),
        ];
        let g = groups(&events, &[], &probe, Some(4789));
        assert_eq!(g.len(), 2);
        assert_eq!((g[0].kind, g[1].kind), (Kind::Request, Kind::Reply));
        assert_eq!(g[0].events.len(), 3);
        let last = g[0].last.expect("header");
        assert_eq!(
            (last.dst, last.dport),
            ("10.0.0.2".parse().expect("ip"), 8080)
        );
        assert_eq!(probe.to_string(), "tcp 10.0.0.1:41000 > 10.96.0.10:80");
    }
}
