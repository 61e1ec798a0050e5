//! The node's underlay: the interface holding the node address, its MTU and its segments.

use std::net::IpAddr;

use ipnet::IpNet;
use podnet_kernel::RouteHandle;

use crate::error::{kernel, AgentError};

/// The interface other nodes reach this node through.
#[derive(Debug, Clone, PartialEq, Eq)]
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
        let links = h.links().map_err(kernel("list links"))?;
        let link = links
            .into_iter()
            .find(|l| l.index == index)
            .ok_or(AgentError::NoUnderlay(address))?;
        let segments = addrs
            .iter()
            .filter(|a| a.index == index && a.net.prefix_len() < a.net.max_prefix_len())
            .map(|a| a.net.trunc())
            .collect();
        Ok(Underlay {
            address,
            index,
            name: link.name,
            mtu: link.mtu,
            segments,
        })
    }
}
