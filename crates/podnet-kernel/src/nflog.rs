//! Packets logged by nf_tables `log group N` rules, read over
//! nfnetlink_log (`NFLOG`): what `podnet drops` shows.
//!
//! One listener binds a group per network namespace. The kernel copies the
//! first [`COPY_BYTES`] of each packet (headers are enough) and sends every
//! packet at once (queue threshold 1). A packet logged while nobody listens
//! costs the kernel one lookup and is gone.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use crate::error::Result;
use crate::netlink::codec::{self, MessageBuilder};
use crate::netlink::socket::{NetlinkSocket, Notifications, Protocol};
use crate::netns::Netns;

/// The group podnet's drop rules log to (NetworkPolicy denials, anti-spoofing).
pub const DROP_GROUP: u16 = 2700;
/// How much of each packet the kernel copies: headers only.
pub const COPY_BYTES: u32 = 128;

const NFNL_SUBSYS_ULOG: u16 = 4;
const NFULNL_MSG_PACKET: u16 = 0;
const NFULNL_MSG_CONFIG: u16 = 1;
const NFULA_CFG_CMD: u16 = 1;
const NFULA_CFG_MODE: u16 = 2;
const NFULA_CFG_QTHRESH: u16 = 4;
const NFULNL_CFG_CMD_BIND: u8 = 1;
const NFULNL_COPY_PACKET: u8 = 2;
const NFULA_PACKET_HDR: u16 = 1;
const NFULA_IFINDEX_INDEV: u16 = 4;
const NFULA_IFINDEX_OUTDEV: u16 = 5;
const NFULA_PAYLOAD: u16 = 9;
const NFULA_PREFIX: u16 = 10;
const ETH_P_ARP: u16 = 0x0806;

/// The addresses and ports of a logged packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    /// IP protocol number (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6; 0 for ARP).
    pub protocol: u8,
    /// Source address (an ARP packet's sender address).
    pub src: IpAddr,
    /// Destination address (an ARP packet's target address).
    pub dst: IpAddr,
    /// Source port (ICMP: type).
    pub sport: u16,
    /// Destination port (ICMP: code).
    pub dport: u16,
}

/// One logged packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedPacket {
    /// The rule's log prefix.
    pub prefix: String,
    /// Input interface index.
    pub indev: Option<u32>,
    /// Output interface index.
    pub outdev: Option<u32>,
    /// Its flow, when the headers could be read.
    pub flow: Option<Flow>,
}

/// A listener on one NFLOG group of one namespace.
#[derive(Debug)]
pub struct LogWatch {
    sock: NetlinkSocket,
    overruns: u64,
}

impl LogWatch {
    /// Binds `group` in `netns` (this namespace when `None`). Fails with
    /// EBUSY when another listener holds the group there.
    pub fn bind(netns: Option<&Netns>, group: u16) -> Result<Self> {
        let mut sock = match netns {
            Some(ns) => NetlinkSocket::open_in(ns, Protocol::Netfilter)?,
            None => NetlinkSocket::open(Protocol::Netfilter)?,
        };
        sock.set_receive_buffer(1 << 20);
        let mut bind = config(group);
        bind.attr(NFULA_CFG_CMD, &[NFULNL_CFG_CMD_BIND]);
        sock.request(bind, &format!("bind NFLOG group {group}"))?;
        let mut mode = config(group);
        let mut m = COPY_BYTES.to_be_bytes().to_vec();
        m.extend([NFULNL_COPY_PACKET, 0]);
        mode.attr(NFULA_CFG_MODE, &m);
        mode.attr(NFULA_CFG_QTHRESH, &1u32.to_be_bytes());
        sock.request(mode, &format!("configure NFLOG group {group}"))?;
        Ok(LogWatch { sock, overruns: 0 })
    }

    /// How many times the kernel dropped messages because we were too slow.
    pub fn overruns(&self) -> u64 {
        self.overruns
    }

    /// The packets logged within `timeout` (none when nothing came).
    pub fn recv(&mut self, timeout: Duration) -> Result<Vec<LoggedPacket>> {
        match self.sock.wait_notifications(timeout, "read NFLOG")? {
            Notifications::Overrun => {
                self.overruns += 1;
                Ok(Vec::new())
            }
            Notifications::Messages(m) => Ok(m
                .iter()
                .filter(|(ty, _)| *ty == (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET)
                .filter_map(|(_, p)| parse_packet(p))
                .collect()),
        }
    }
}

/// A config message for `group` (`nfgenmsg` with the group as resource id).
fn config(group: u16) -> MessageBuilder {
    let mut header = vec![libc::AF_UNSPEC as u8, 0];
    header.extend(group.to_be_bytes());
    MessageBuilder::new((NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG, 0).header(&header)
}

fn be32(p: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(p.get(0..4)?.try_into().ok()?))
}

/// Parses one `NFULNL_MSG_PACKET` payload (after the netlink header).
pub fn parse_packet(payload: &[u8]) -> Option<LoggedPacket> {
    let attrs = payload.get(4..)?;
    let find = |ty| codec::find_attr(attrs, ty);
    let ethertype = find(NFULA_PACKET_HDR)
        .and_then(|h| Some(u16::from_be_bytes(h.get(0..2)?.try_into().ok()?)));
    let flow = find(NFULA_PAYLOAD).and_then(|p| match ethertype {
        Some(ETH_P_ARP) => parse_arp(p),
        _ => parse_ip(p),
    });
    Some(LoggedPacket {
        prefix: find(NFULA_PREFIX).map(codec::attr_string)?,
        indev: find(NFULA_IFINDEX_INDEV).and_then(be32),
        outdev: find(NFULA_IFINDEX_OUTDEV).and_then(be32),
        flow,
    })
}

/// The flow of an IPv4 or IPv6 packet (extension headers are not followed).
pub fn parse_ip(p: &[u8]) -> Option<Flow> {
    let (protocol, src, dst, l4) = match p.first()? >> 4 {
        4 => {
            let ihl = usize::from(p.first()? & 0x0f) * 4;
            let a: [u8; 4] = p.get(12..16)?.try_into().ok()?;
            let b: [u8; 4] = p.get(16..20)?.try_into().ok()?;
            (*p.get(9)?, IpAddr::from(a), IpAddr::from(b), p.get(ihl..)?)
        }
        6 => {
            let a: [u8; 16] = p.get(8..24)?.try_into().ok()?;
            let b: [u8; 16] = p.get(24..40)?.try_into().ok()?;
            let (a, b) = (Ipv6Addr::from(a), Ipv6Addr::from(b));
            (*p.get(6)?, IpAddr::V6(a), IpAddr::V6(b), p.get(40..)?)
        }
        _ => return None,
    };
    let (sport, dport) = match protocol {
        1 | 58 => (
            u16::from(*l4.first().unwrap_or(&0)),
            u16::from(*l4.get(1).unwrap_or(&0)),
        ),
        _ => match (l4.get(0..2), l4.get(2..4)) {
            (Some(s), Some(d)) => (
                u16::from_be_bytes([s[0], s[1]]),
                u16::from_be_bytes([d[0], d[1]]),
            ),
            _ => (0, 0),
        },
    };
    Some(Flow {
        protocol,
        src,
        dst,
        sport,
        dport,
    })
}

/// An IPv4-over-Ethernet ARP packet's sender and target addresses.
fn parse_arp(p: &[u8]) -> Option<Flow> {
    let sender: [u8; 4] = p.get(14..18)?.try_into().ok()?;
    let target: [u8; 4] = p.get(24..28)?.try_into().ok()?;
    Some(Flow {
        protocol: 0,
        src: IpAddr::V4(Ipv4Addr::from(sender)),
        dst: IpAddr::V4(Ipv4Addr::from(target)),
        sport: 0,
        dport: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_tcp_syn_and_a_logged_message() {
        let mut ip = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0];
        ip.extend([10, 244, 0, 2, 10, 244, 1, 3]);
        ip.extend(40000u16.to_be_bytes());
        ip.extend(80u16.to_be_bytes());
        let flow = parse_ip(&ip).unwrap();
        assert_eq!(flow.protocol, 6);
        assert_eq!((flow.sport, flow.dport), (40000, 80));
        assert_eq!(flow.dst, "10.244.1.3".parse::<IpAddr>().unwrap());

        let mut m = MessageBuilder::new(0, 0).header(&[2, 0, 0x0a, 0x8c]);
        m.attr(NFULA_PACKET_HDR, &[0x08, 0x00, 2, 0]);
        m.attr(NFULA_IFINDEX_INDEV, &7u32.to_be_bytes());
        m.attr(NFULA_PAYLOAD, &ip);
        m.attr_str(NFULA_PREFIX, "podnet-policy in4");
        let bytes = m.finish(1);
        let msg = codec::messages(&bytes).next().unwrap();
        let p = parse_packet(msg.payload).unwrap();
        assert_eq!(p.prefix, "podnet-policy in4");
        assert_eq!(p.indev, Some(7));
        assert_eq!(p.flow, Some(flow));
    }
}
