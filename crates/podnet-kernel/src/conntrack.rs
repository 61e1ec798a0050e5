//! Connection tracking over ctnetlink: find and delete flows.
//!
//! The service proxy uses it for the stale-UDP-flow problem: a UDP "connection"
//! to a service stays pinned (by its conntrack entry) to the endpoint it was
//! first sent to, even after that endpoint is gone, for as long as the client
//! keeps sending. Deleting the entries lets the next packet be balanced anew.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::error::Result;
use crate::netlink::codec::{self, MessageBuilder};
use crate::netlink::{NetlinkSocket, Protocol};
use crate::netns::Netns;

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;

/// One direction of a tracked flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuple {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// IP protocol number.
    pub proto: u8,
    /// Source port (0 when the protocol has none).
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
}

/// A tracked flow: as the client sent it, and as the reply comes back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    /// The original direction.
    pub original: Tuple,
    /// The reply direction (after NAT: its source is the real destination).
    pub reply: Tuple,
    orig_attr: Vec<u8>,
}

/// A ctnetlink socket bound to one namespace.
#[derive(Debug)]
pub struct ConntrackHandle {
    sock: NetlinkSocket,
}

impl ConntrackHandle {
    /// Opens a handle on the caller's namespace.
    pub fn current() -> Result<Self> {
        Ok(ConntrackHandle {
            sock: NetlinkSocket::open(Protocol::Netfilter)?,
        })
    }

    /// Opens a handle bound to `netns`.
    pub fn in_netns(netns: &Netns) -> Result<Self> {
        Ok(ConntrackHandle {
            sock: NetlinkSocket::open_in(netns, Protocol::Netfilter)?,
        })
    }

    /// Every tracked flow of one address family (`conntrack -L -f ipv4|ipv6`).
    pub fn flows(&mut self, ipv6: bool) -> Result<Vec<Flow>> {
        let family = if ipv6 { libc::AF_INET6 } else { libc::AF_INET } as u8;
        let m = MessageBuilder::new(
            (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET,
            libc::NLM_F_DUMP as u16,
        )
        .header(&[family, 0, 0, 0]);
        Ok(self
            .sock
            .dump(m, "conntrack -L")?
            .iter()
            .filter_map(|p| parse_flow(p.get(4..)?))
            .collect())
    }

    /// Deletes one flow (`conntrack -D` with its original tuple); a flow
    /// that is already gone counts as deleted.
    pub fn delete(&mut self, flow: &Flow) -> Result<()> {
        let family = if flow.original.src.is_ipv6() {
            libc::AF_INET6
        } else {
            libc::AF_INET
        } as u8;
        let mut m = MessageBuilder::new((NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE, 0)
            .header(&[family, 0, 0, 0]);
        let n = m.begin_nested(CTA_TUPLE_ORIG);
        m.raw(&flow.orig_attr);
        m.end_nested(n);
        match self.sock.request(m, "conntrack -D") {
            Err(e) if e.is_not_found() => Ok(()),
            other => other,
        }
    }
}

fn parse_flow(attrs: &[u8]) -> Option<Flow> {
    let orig_attr = codec::find_attr(attrs, CTA_TUPLE_ORIG)?;
    Some(Flow {
        original: parse_tuple(orig_attr)?,
        reply: parse_tuple(codec::find_attr(attrs, CTA_TUPLE_REPLY)?)?,
        orig_attr: orig_attr.to_vec(),
    })
}

fn parse_tuple(attr: &[u8]) -> Option<Tuple> {
    let ip = codec::find_attr(attr, CTA_TUPLE_IP)?;
    let proto = codec::find_attr(attr, CTA_TUPLE_PROTO)?;
    let addr = |v4: u16, v6: u16| -> Option<IpAddr> {
        if let Some(b) = codec::find_attr(ip, v4) {
            let o: [u8; 4] = b.get(0..4)?.try_into().ok()?;
            return Some(IpAddr::V4(Ipv4Addr::from(o)));
        }
        let o: [u8; 16] = codec::find_attr(ip, v6)?.get(0..16)?.try_into().ok()?;
        Some(IpAddr::V6(Ipv6Addr::from(o)))
    };
    let port = |ty| {
        codec::find_attr(proto, ty)
            .and_then(|b| b.get(0..2))
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .unwrap_or(0)
    };
    Some(Tuple {
        src: addr(CTA_IP_V4_SRC, CTA_IP_V6_SRC)?,
        dst: addr(CTA_IP_V4_DST, CTA_IP_V6_DST)?,
        proto: *codec::find_attr(proto, CTA_PROTO_NUM)?.first()?,
        src_port: port(CTA_PROTO_SRC_PORT),
        dst_port: port(CTA_PROTO_DST_PORT),
    })
}
