//! Static neighbour (ARP/NDP) entries and bridge/VXLAN forwarding-database entries.

use std::net::IpAddr;

use super::{family_of, ip_bytes, parse_ip, RouteHandle};
use crate::error::Result;
use crate::netlink::codec::{self, MessageBuilder};

const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
const NDA_IFINDEX: u16 = 8;
const NUD_PERMANENT: u16 = 0x80;
const NTF_SELF: u8 = 0x02;
const AF_BRIDGE: u8 = libc::AF_BRIDGE as u8;

/// A neighbour entry (`ip neigh show`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour {
    /// Interface index.
    pub index: u32,
    /// Neighbour address.
    pub ip: IpAddr,
    /// Link-layer address, if resolved.
    pub mac: Option<Vec<u8>>,
    /// Whether the entry is permanent (static).
    pub permanent: bool,
    /// The `NUD_*` state bits.
    pub state: u16,
}

impl Neighbour {
    /// The state as `ip neigh` names it (`REACHABLE`, `FAILED`, ...).
    pub fn state_name(&self) -> &'static str {
        match self.state {
            0x01 => "INCOMPLETE",
            0x02 => "REACHABLE",
            0x04 => "STALE",
            0x08 => "DELAY",
            0x10 => "PROBE",
            0x20 => "FAILED",
            0x40 => "NOARP",
            0x80 => "PERMANENT",
            _ => "NONE",
        }
    }

    /// Whether resolution failed or is still under way without an answer.
    pub fn unresolved(&self) -> bool {
        self.state & (0x01 | 0x20) != 0
    }
}

/// A forwarding-database entry of a VXLAN device: MAC to remote endpoint
/// (`bridge fdb show dev DEV`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdbEntry {
    /// Interface index (the VXLAN device).
    pub index: u32,
    /// Destination MAC.
    pub mac: Vec<u8>,
    /// Remote endpoint (underlay address), if any.
    pub dst: Option<IpAddr>,
    /// Whether the entry is permanent (static).
    pub permanent: bool,
}

fn ndmsg(family: u8, index: u32, state: u16, flags: u8) -> [u8; 12] {
    let mut h = [0u8; 12];
    h[0] = family;
    h[4..8].copy_from_slice(&(index as i32).to_ne_bytes());
    h[8..10].copy_from_slice(&state.to_ne_bytes());
    h[10] = flags;
    h
}

impl RouteHandle {
    /// `ip neigh replace IP lladdr MAC dev INDEX nud permanent`.
    pub fn replace_neighbour(&mut self, index: u32, ip: IpAddr, mac: &[u8]) -> Result<()> {
        let flags = libc::NLM_F_CREATE | libc::NLM_F_REPLACE;
        let mut m = MessageBuilder::new(libc::RTM_NEWNEIGH, flags as u16).header(&ndmsg(
            family_of(&ip),
            index,
            NUD_PERMANENT,
            0,
        ));
        m.attr(NDA_DST, &ip_bytes(&ip)).attr(NDA_LLADDR, mac);
        self.sock
            .request(m, &format!("ip neigh replace {ip} dev {index}"))
    }

    /// `ip neigh del IP dev INDEX`; false when there was no such entry.
    pub fn delete_neighbour(&mut self, index: u32, ip: IpAddr) -> Result<bool> {
        let mut m =
            MessageBuilder::new(libc::RTM_DELNEIGH, 0).header(&ndmsg(family_of(&ip), index, 0, 0));
        m.attr(NDA_DST, &ip_bytes(&ip));
        not_found_is_false(
            self.sock
                .request(m, &format!("ip neigh del {ip} dev {index}")),
        )
    }

    /// `ip neigh show dev INDEX` (IPv4 and IPv6).
    pub fn neighbours(&mut self, index: u32) -> Result<Vec<Neighbour>> {
        let mut out = Vec::new();
        for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
            // NDA_IFINDEX has the kernel dump only this device's entries, not
            // every pod veth's; the index check below stays for older kernels.
            let mut m = MessageBuilder::new(libc::RTM_GETNEIGH, libc::NLM_F_DUMP as u16)
                .header(&ndmsg(family, 0, 0, 0));
            m.attr_u32(NDA_IFINDEX, index);
            for p in self.sock.dump(m, "ip neigh show")? {
                let Some((i, state, _, attrs)) = parse_ndmsg(&p) else {
                    continue;
                };
                let ip = codec::find_attr(attrs, NDA_DST).and_then(|a| parse_ip(p[0], a));
                if let (true, Some(ip)) = (i == index, ip) {
                    out.push(Neighbour {
                        index: i,
                        ip,
                        mac: codec::find_attr(attrs, NDA_LLADDR).map(<[u8]>::to_vec),
                        permanent: state & NUD_PERMANENT != 0,
                        state,
                    });
                }
            }
        }
        Ok(out)
    }

    /// `bridge fdb replace MAC dev INDEX dst IP self permanent`.
    pub fn replace_fdb(&mut self, index: u32, mac: &[u8], dst: IpAddr) -> Result<()> {
        let flags = libc::NLM_F_CREATE | libc::NLM_F_REPLACE;
        let mut m = MessageBuilder::new(libc::RTM_NEWNEIGH, flags as u16).header(&ndmsg(
            AF_BRIDGE,
            index,
            NUD_PERMANENT,
            NTF_SELF,
        ));
        m.attr(NDA_LLADDR, mac).attr(NDA_DST, &ip_bytes(&dst));
        self.sock.request(
            m,
            &format!("bridge fdb replace {mac:02x?} dev {index} dst {dst}"),
        )
    }

    /// `bridge fdb del MAC dev INDEX dst IP self`; false when there was no such entry.
    pub fn delete_fdb(&mut self, index: u32, mac: &[u8], dst: Option<IpAddr>) -> Result<bool> {
        let mut m = MessageBuilder::new(libc::RTM_DELNEIGH, 0)
            .header(&ndmsg(AF_BRIDGE, index, 0, NTF_SELF));
        m.attr(NDA_LLADDR, mac);
        if let Some(dst) = dst {
            m.attr(NDA_DST, &ip_bytes(&dst));
        }
        not_found_is_false(
            self.sock
                .request(m, &format!("bridge fdb del {mac:02x?} dev {index}")),
        )
    }

    /// `bridge fdb show dev INDEX`.
    pub fn fdb(&mut self, index: u32) -> Result<Vec<FdbEntry>> {
        let m = MessageBuilder::new(libc::RTM_GETNEIGH, libc::NLM_F_DUMP as u16)
            .header(&ndmsg(AF_BRIDGE, 0, 0, 0));
        let mut out = Vec::new();
        for p in self.sock.dump(m, "bridge fdb show")? {
            let Some((i, state, _, attrs)) = parse_ndmsg(&p) else {
                continue;
            };
            let Some(mac) = codec::find_attr(attrs, NDA_LLADDR) else {
                continue;
            };
            if i != index {
                continue;
            }
            let dst = codec::find_attr(attrs, NDA_DST).and_then(|a| {
                parse_ip(libc::AF_INET as u8, a).or_else(|| parse_ip(libc::AF_INET6 as u8, a))
            });
            out.push(FdbEntry {
                index: i,
                mac: mac.to_vec(),
                dst,
                permanent: state & NUD_PERMANENT != 0,
            });
        }
        Ok(out)
    }
}

/// Splits an ndmsg into index, state, flags and the attribute bytes.
fn parse_ndmsg(p: &[u8]) -> Option<(u32, u16, u8, &[u8])> {
    let h = p.get(0..12)?;
    let index = i32::from_ne_bytes(h[4..8].try_into().ok()?) as u32;
    let state = u16::from_ne_bytes(h[8..10].try_into().ok()?);
    Some((index, state, h[10], &p[12..]))
}

fn not_found_is_false(r: Result<()>) -> Result<bool> {
    match r {
        Ok(()) => Ok(true),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(e),
    }
}
