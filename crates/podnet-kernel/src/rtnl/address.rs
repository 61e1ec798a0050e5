//! Interface addresses.

use std::net::IpAddr;

use ipnet::IpNet;

use super::{family_of, ip_bytes, parse_ip, RouteHandle};
use crate::error::Result;
use crate::netlink::codec::{self, MessageBuilder};

const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_FLAGS: u16 = 8;
const IFA_F_NODAD: u32 = 0x02;

/// An address assigned to an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// Index of the interface holding it.
    pub index: u32,
    /// The address with its prefix length.
    pub net: IpNet,
}

fn ifaddrmsg(family: u8, prefix: u8, scope: u8, index: u32) -> [u8; 8] {
    let mut h = [0u8; 8];
    h[0] = family;
    h[1] = prefix;
    h[3] = scope;
    h[4..8].copy_from_slice(&index.to_ne_bytes());
    h
}

impl RouteHandle {
    /// `ip addr replace ADDR/PREFIX dev INDEX nodad`.
    ///
    /// Replace, not add: a retried ADD converges instead of failing. `nodad`
    /// because the pod's address must be usable at once (IPAM guarantees uniqueness).
    pub fn replace_address(&mut self, index: u32, net: IpNet) -> Result<()> {
        let ip = net.addr();
        let scope = match ip {
            IpAddr::V6(a) if a.segments()[0] & 0xffc0 == 0xfe80 => libc::RT_SCOPE_LINK,
            _ => libc::RT_SCOPE_UNIVERSE,
        };
        let flags = libc::NLM_F_CREATE | libc::NLM_F_REPLACE;
        let mut m = MessageBuilder::new(libc::RTM_NEWADDR, flags as u16).header(&ifaddrmsg(
            family_of(&ip),
            net.prefix_len(),
            scope,
            index,
        ));
        let bytes = ip_bytes(&ip);
        m.attr(IFA_LOCAL, &bytes)
            .attr(IFA_ADDRESS, &bytes)
            .attr_u32(IFA_FLAGS, IFA_F_NODAD);
        self.sock
            .request(m, &format!("ip addr replace {net} dev {index}"))
    }

    /// `ip addr show [dev INDEX]`.
    pub fn addresses(&mut self, index: Option<u32>) -> Result<Vec<Address>> {
        let m = MessageBuilder::new(libc::RTM_GETADDR, libc::NLM_F_DUMP as u16).header(&ifaddrmsg(
            libc::AF_UNSPEC as u8,
            0,
            0,
            0,
        ));
        let all = self.sock.dump(m, "ip addr show")?;
        Ok(all
            .iter()
            .filter_map(|p| parse_address(p))
            .filter(|a| index.is_none_or(|i| a.index == i))
            .collect())
    }
}

fn parse_address(p: &[u8]) -> Option<Address> {
    let family = *p.first()?;
    let prefix = *p.get(1)?;
    let index = u32::from_ne_bytes(p.get(4..8)?.try_into().ok()?);
    let attrs = p.get(8..)?;
    let raw =
        codec::find_attr(attrs, IFA_LOCAL).or_else(|| codec::find_attr(attrs, IFA_ADDRESS))?;
    let ip = parse_ip(family, raw)?;
    Some(Address {
        index,
        net: IpNet::new(ip, prefix).ok()?,
    })
}
