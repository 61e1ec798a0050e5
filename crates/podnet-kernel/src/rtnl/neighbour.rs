//! Static neighbour (ARP/NDP) entries.

use std::net::IpAddr;

use super::{family_of, ip_bytes, RouteHandle};
use crate::error::Result;
use crate::netlink::codec::MessageBuilder;

const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
const NUD_PERMANENT: u16 = 0x80;

impl RouteHandle {
    /// `ip neigh replace IP lladdr MAC dev INDEX nud permanent`.
    pub fn replace_neighbour(&mut self, index: u32, ip: IpAddr, mac: &[u8]) -> Result<()> {
        let mut h = [0u8; 12];
        h[0] = family_of(&ip);
        h[4..8].copy_from_slice(&(index as i32).to_ne_bytes());
        h[8..10].copy_from_slice(&NUD_PERMANENT.to_ne_bytes());
        let flags = libc::NLM_F_CREATE | libc::NLM_F_REPLACE;
        let mut m = MessageBuilder::new(libc::RTM_NEWNEIGH, flags as u16).header(&h);
        m.attr(NDA_DST, &ip_bytes(&ip)).attr(NDA_LLADDR, mac);
        self.sock
            .request(m, &format!("ip neigh replace {ip} dev {index}"))
    }
}
