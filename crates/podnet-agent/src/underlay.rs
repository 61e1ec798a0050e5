//! The node's underlay: the interface holding the node address, its MTU and its segments.

use std::net::{IpAddr, Ipv6Addr};

use ipnet::IpNet;
use podnet_kernel::RouteHandle;
use serde::{Deserialize, Serialize};

use crate::error::{kernel, AgentError};

/// The interface other nodes reach this node through.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Underlay {
    /// The node's address.
    pub address: IpAddr,
    /// Index of the interface holding it.
    pub index: u32,
    /// Its name.
    pub name: String,
    /// Its MTU: pods' MTU is derived from it.
    pub mtu: u32,
    /// Prefixes connected to it: nodes inside them are on our L2 segment.
    pub segments: Vec<IpNet>,
    /// Its IPv6 link-local address, if it has one.
    #[serde(default)]
    pub link_local: Option<Ipv6Addr>,
    /// Its first global IPv6 address, if any: the next hop BGP gives the
    /// node's IPv6 blocks.
    #[serde(default)]
    pub global_v6: Option<Ipv6Addr>,
}

impl Underlay {
    /// Finds the interface that holds `address` in the handle's namespace.
    pub fn discover(h: &mut RouteHandle, address: IpAddr) -> Result<Self, AgentError> {
        let addrs = h.addresses(None).map_err(kernel("list addresses"))?;
        let index = addrs
            .iter()
            .find(|a| a.net.addr() == address)
            .map(|a| a.index)
            .ok_or(AgentError::NoUnderlay(address))?;
        let link = h
            .link_by_index(index)
            .map_err(kernel("look up the underlay interface"))?
            .ok_or(AgentError::NoUnderlay(address))?;
        let mut link_local = None;
        let mut global_v6 = None;
        let mut segments = Vec::new();
        for a in addrs.iter().filter(|a| a.index == index) {
            match a.net.addr() {
                IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80 => link_local = Some(v6),
                IpAddr::V6(v6) => {
                    global_v6 = global_v6.or(Some(v6));
                    segments.push(a.net.trunc());
                }
                _ if a.net.prefix_len() < a.net.max_prefix_len() => segments.push(a.net.trunc()),
                _ => {}
            }
        }
        Ok(Underlay {
            address,
            index,
            name: link.name,
            mtu: link.mtu,
            segments,
            link_local,
            global_v6,
        })
    }
}
