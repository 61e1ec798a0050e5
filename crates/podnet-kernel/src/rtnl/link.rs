//! Links: veth pairs, bridges, up/down, lookup and delete.

use std::os::fd::{AsRawFd, BorrowedFd};

use super::RouteHandle;
use crate::error::{KernelError, Result};
use crate::netlink::codec::{self, MessageBuilder};

pub(super) const IFLA_ADDRESS: u16 = 1;
pub(super) const IFLA_IFNAME: u16 = 3;
pub(super) const IFLA_MTU: u16 = 4;
const IFLA_LINK: u16 = 5;
const IFLA_MASTER: u16 = 10;
const IFLA_STATS64: u16 = 23;
const IFLA_IFALIAS: u16 = 20;
pub(super) const IFLA_LINKINFO: u16 = 18;
const IFLA_GROUP: u16 = 27;
pub(super) const IFLA_NET_NS_FD: u16 = 28;
pub(super) const IFLA_INFO_KIND: u16 = 1;
pub(super) const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
pub(super) const IFF_UP: u32 = libc::IFF_UP as u32;

/// A network interface as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// MTU in bytes.
    pub mtu: u32,
    /// Administratively up.
    pub up: bool,
    /// Hardware address.
    pub mac: Vec<u8>,
    /// Index of the bridge this link is a port of.
    pub master: Option<u32>,
    /// Link kind (`veth`, `bridge`, ...), if any.
    pub kind: Option<String>,
    /// Interface alias (`ip link set NAME alias TEXT`), if any.
    pub alias: Option<String>,
    /// Interface group (`ip link set NAME group N`).
    pub group: u32,
    /// VXLAN settings, for a VXLAN link.
    pub vxlan: Option<super::vxlan::VxlanInfo>,
    /// The link it is stacked on or paired with (`IFLA_LINK`: a veth's peer,
    /// a macvlan's lower device), as an index in that link's namespace.
    pub link: Option<u32>,
    /// Packets dropped on receive and on transmit (`ip -s link`).
    pub dropped: (u64, u64),
}

/// A veth pair to create with its peer placed directly in another namespace.
///
/// Creating the peer in its namespace saves a move, which costs ~20 ms (FIELD-NOTES).
#[derive(Debug, Clone)]
pub struct VethSpec<'a> {
    /// Name of the end that stays in this namespace.
    pub name: &'a str,
    /// Name of the peer end, inside `peer_netns`.
    pub peer_name: &'a str,
    /// Namespace of the peer end.
    pub peer_netns: BorrowedFd<'a>,
    /// MTU of both ends.
    pub mtu: u32,
    /// MAC of the local end, or kernel-chosen.
    pub mac: Option<[u8; 6]>,
    /// Bridge (by index) to enslave the local end to.
    pub master: Option<u32>,
    /// Interface group of the local end; unlike an alias, it is applied at creation.
    pub group: u32,
}

pub(super) fn ifinfomsg(index: u32, flags: u32, change: u32) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[0] = libc::AF_UNSPEC as u8;
    h[4..8].copy_from_slice(&(index as i32).to_ne_bytes());
    h[8..12].copy_from_slice(&flags.to_ne_bytes());
    h[12..16].copy_from_slice(&change.to_ne_bytes());
    h
}

impl RouteHandle {
    /// `ip link add NAME mtu M [address A] [master BR] up type veth peer name PEER netns NS mtu M`.
    pub fn create_veth(&mut self, spec: &VethSpec<'_>) -> Result<()> {
        let flags = libc::NLM_F_CREATE | libc::NLM_F_EXCL;
        let mut m = MessageBuilder::new(libc::RTM_NEWLINK, flags as u16)
            .header(&ifinfomsg(0, IFF_UP, IFF_UP));
        m.attr_str(IFLA_IFNAME, spec.name)
            .attr_u32(IFLA_MTU, spec.mtu);
        if let Some(mac) = spec.mac {
            m.attr(IFLA_ADDRESS, &mac);
        }
        if let Some(master) = spec.master {
            m.attr_u32(IFLA_MASTER, master);
        }
        if spec.group != 0 {
            m.attr_u32(IFLA_GROUP, spec.group);
        }
        let info = m.begin_nested(IFLA_LINKINFO);
        m.attr_str(IFLA_INFO_KIND, "veth");
        let data = m.begin_nested(IFLA_INFO_DATA);
        let peer = m.begin_nested(VETH_INFO_PEER);
        // The peer cannot be created up: veth_open() refuses (ENOTCONN) until
        // both ends are linked. The caller brings it up from the peer's side.
        m.raw(&ifinfomsg(0, 0, 0));
        m.attr_str(IFLA_IFNAME, spec.peer_name)
            .attr_u32(IFLA_MTU, spec.mtu)
            .attr_u32(IFLA_NET_NS_FD, spec.peer_netns.as_raw_fd() as u32);
        m.end_nested(peer);
        m.end_nested(data);
        m.end_nested(info);
        self.sock.request(
            m,
            &format!(
                "ip link add {} type veth peer name {}",
                spec.name, spec.peer_name
            ),
        )
    }

    /// `ip link add NAME mtu M up type bridge`; an existing bridge is not an error.
    ///
    /// Returns the bridge as it is after the call.
    pub fn ensure_bridge(&mut self, name: &str, mtu: u32) -> Result<Link> {
        let flags = libc::NLM_F_CREATE | libc::NLM_F_EXCL;
        let mut m = MessageBuilder::new(libc::RTM_NEWLINK, flags as u16)
            .header(&ifinfomsg(0, IFF_UP, IFF_UP));
        m.attr_str(IFLA_IFNAME, name).attr_u32(IFLA_MTU, mtu);
        let info = m.begin_nested(IFLA_LINKINFO);
        m.attr_str(IFLA_INFO_KIND, "bridge");
        m.end_nested(info);
        match self
            .sock
            .request(m, &format!("ip link add {name} type bridge"))
        {
            Ok(()) => {}
            // A concurrent ADD made it first: fine, as long as it is a bridge.
            Err(e) if e.is_exists() => {}
            Err(e) => return Err(e),
        }
        let link = self
            .link_by_name(name)?
            .ok_or_else(|| KernelError::Protocol {
                op: format!("ip link add {name} type bridge"),
                detail: "bridge vanished right after creation".into(),
            })?;
        if link.kind.as_deref() != Some("bridge") {
            return Err(KernelError::Netlink {
                op: format!("ip link add {name} type bridge"),
                errno: libc::EEXIST,
                extack: Some(format!(
                    "{name} exists and is a {} link, not a bridge",
                    link.kind.unwrap_or_default()
                )),
            });
        }
        if !link.up {
            self.set_up(link.index)?;
        }
        Ok(link)
    }

    /// `ip link set dev INDEX up`.
    pub fn set_up(&mut self, index: u32) -> Result<()> {
        let m = MessageBuilder::new(libc::RTM_NEWLINK, 0).header(&ifinfomsg(index, IFF_UP, IFF_UP));
        self.sock.request(m, &format!("ip link set {index} up"))
    }

    /// `ip link set dev INDEX alias TEXT` (the kernel ignores an alias given at creation).
    pub fn set_alias(&mut self, index: u32, alias: &str) -> Result<()> {
        let mut m = MessageBuilder::new(libc::RTM_NEWLINK, 0).header(&ifinfomsg(index, 0, 0));
        m.attr(IFLA_IFALIAS, alias.as_bytes());
        self.sock
            .request(m, &format!("ip link set {index} alias {alias}"))
    }

    /// `ip link show NAME`; `None` when there is no such link.
    pub fn link_by_name(&mut self, name: &str) -> Result<Option<Link>> {
        let mut m = MessageBuilder::new(libc::RTM_GETLINK, 0).header(&ifinfomsg(0, 0, 0));
        m.attr_str(IFLA_IFNAME, name);
        match self.sock.request_one(m, &format!("ip link show {name}")) {
            Ok(payload) => Ok(parse_link(&payload)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `ip link show dev INDEX`; `None` when there is no such link.
    pub fn link_by_index(&mut self, index: u32) -> Result<Option<Link>> {
        let m = MessageBuilder::new(libc::RTM_GETLINK, 0).header(&ifinfomsg(index, 0, 0));
        match self
            .sock
            .request_one(m, &format!("ip link show dev {index}"))
        {
            Ok(payload) => Ok(parse_link(&payload)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `ip link show`.
    pub fn links(&mut self) -> Result<Vec<Link>> {
        let m = MessageBuilder::new(libc::RTM_GETLINK, libc::NLM_F_DUMP as u16)
            .header(&ifinfomsg(0, 0, 0));
        Ok(self
            .sock
            .dump(m, "ip link show")?
            .iter()
            .filter_map(|p| parse_link(p))
            .collect())
    }

    /// `ip link del NAME`; returns false when there was no such link.
    pub fn delete_link(&mut self, name: &str) -> Result<bool> {
        let mut m = MessageBuilder::new(libc::RTM_DELLINK, 0).header(&ifinfomsg(0, 0, 0));
        m.attr_str(IFLA_IFNAME, name);
        match self.sock.request(m, &format!("ip link del {name}")) {
            Ok(()) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// `ip link del NAME` in `netns`, returning once the kernel has unregistered the link.
///
/// Why: `ip link del` blocks until `netdev_run_todo()` finishes an
/// `rcu_barrier()` (about 20 ms here, most of a CNI DEL), although by then the
/// link is already gone: unlisted from its namespace (and a veth's peer from
/// its own), its addresses and routes flushed, RTM_DELLINK sent. So a forked
/// child sends the delete and sits out that wait, and this call returns when
/// the RTM_DELLINK notification for the link arrives. If the child fails, the
/// delete is retried in-process to report the kernel's error.
///
/// Returns false when there was no such link.
pub fn delete_link_unregistered(netns: &crate::Netns, name: &str) -> Result<bool> {
    use crate::netlink::{NetlinkSocket, Notifications, Protocol};
    const RTNLGRP_LINK: u32 = 1;
    const GIVE_UP: std::time::Duration = std::time::Duration::from_secs(5);
    // Subscribe first, so that the notification cannot slip past.
    let mut watch = NetlinkSocket::open_in(netns, Protocol::Route)?;
    watch.set_receive_buffer(1 << 20);
    watch.join_group(RTNLGRP_LINK)?;
    let mut handle = RouteHandle::in_netns(netns)?;
    let Some(link) = handle.link_by_name(name)? else {
        return Ok(false);
    };
    let m = MessageBuilder::new(libc::RTM_DELLINK, 0).header(&ifinfomsg(link.index, 0, 0));
    let op = format!("ip link del {name}");
    // The child gets a socket of its own: this process keeps reading its own.
    let mut child = NetlinkSocket::open_in(netns, Protocol::Route)?.request_in_child(m, &op)?;
    let deadline = std::time::Instant::now() + GIVE_UP;
    while std::time::Instant::now() < deadline {
        match watch.wait_notifications(std::time::Duration::from_millis(10), &op)? {
            Notifications::Messages(msgs) => {
                let gone = msgs.iter().any(|(ty, payload)| {
                    *ty == libc::RTM_DELLINK
                        && parse_link(payload).is_some_and(|l| l.index == link.index)
                });
                if gone {
                    return Ok(true);
                }
            }
            // Notifications were dropped: ask directly. A link is unlisted before
            // its RTM_DELLINK is sent, so its absence means the same.
            Notifications::Overrun => {
                if handle
                    .link_by_name(name)?
                    .is_none_or(|l| l.index != link.index)
                {
                    return Ok(true);
                }
            }
        }
        match child.finished() {
            Some(true) => return Ok(true), // deleted; the notification was lost (e.g. ENOBUFS)
            Some(false) => break,          // the child failed: an in-process delete says why
            None => {}
        }
    }
    handle.delete_link(name)
}

/// `ip link set NAME up` in the caller's current namespace.
pub fn set_up_by_name(name: &str) -> Result<()> {
    let mut h = RouteHandle::current()?;
    let link = h.link_by_name(name)?.ok_or_else(|| KernelError::Netlink {
        op: format!("ip link set {name} up"),
        errno: libc::ENODEV,
        extack: None,
    })?;
    h.set_up(link.index)
}

fn parse_link(payload: &[u8]) -> Option<Link> {
    let hdr = payload.get(0..16)?;
    let index = i32::from_ne_bytes(hdr[4..8].try_into().ok()?) as u32;
    let flags = u32::from_ne_bytes(hdr[8..12].try_into().ok()?);
    let mut link = Link {
        index,
        name: String::new(),
        mtu: 0,
        up: flags & IFF_UP != 0,
        mac: vec![],
        master: None,
        kind: None,
        alias: None,
        group: 0,
        vxlan: None,
        link: None,
        dropped: (0, 0),
    };
    for (ty, p) in codec::attrs(&payload[16..]) {
        match ty {
            IFLA_IFNAME => link.name = codec::attr_string(p),
            IFLA_MTU => link.mtu = codec::attr_u32(p).unwrap_or(0),
            IFLA_ADDRESS => link.mac = p.to_vec(),
            IFLA_MASTER => link.master = codec::attr_u32(p),
            IFLA_IFALIAS => link.alias = Some(codec::attr_string(p)),
            IFLA_GROUP => link.group = codec::attr_u32(p).unwrap_or(0),
            IFLA_LINK => link.link = codec::attr_u32(p),
            IFLA_STATS64 => {
                let word = |i: usize| {
                    p.get(i * 8..i * 8 + 8)
                        .and_then(|b| b.try_into().ok())
                        .map(u64::from_ne_bytes)
                        .unwrap_or(0)
                };
                link.dropped = (word(6), word(7));
            }
            IFLA_LINKINFO => {
                link.kind = codec::find_attr(p, IFLA_INFO_KIND).map(codec::attr_string);
                if link.kind.as_deref() == Some("vxlan") {
                    link.vxlan = codec::find_attr(p, IFLA_INFO_DATA).map(super::vxlan::parse_info);
                }
            }
            _ => {}
        }
    }
    Some(link)
}
