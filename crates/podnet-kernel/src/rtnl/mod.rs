//! rtnetlink: links, addresses, routes and neighbours of one namespace.
//!
//! [`RouteHandle`] owns a `NETLINK_ROUTE` socket bound to one namespace. Each
//! method documents its `ip` equivalent.

use std::net::IpAddr;

use crate::error::Result;
use crate::netlink::{NetlinkSocket, Protocol};
use crate::netns::Netns;

mod address;
mod events;
mod link;
mod macvlan;
mod neighbour;
mod route;
mod vxlan;

pub use address::Address;
pub use events::{Removal, RemovalWatch};
pub use link::{delete_link_unregistered, set_up_by_name, Link, VethSpec};
pub use neighbour::{FdbEntry, Neighbour};
pub use route::{Route, RouteDecision, RouteKind, RouteQuery, RouteScope};
pub use vxlan::{VxlanInfo, VxlanSpec};

/// The route protocol number podnet marks its routes with (`proto 112`).
///
/// It lets GC and CHECK find exactly podnet's routes, as `proto bird` does for Calico.
pub const RTPROT_PODNET: u8 = 112;

/// The route protocol of the node agent's routes to other nodes' pods (`proto 113`).
///
/// Separate from the plugin's [`RTPROT_PODNET`] so that each owner finds exactly its own routes.
pub const RTPROT_PODNET_NODES: u8 = 113;

/// The route protocol BIRD marks the routes it installs with (`proto bird`,
/// 12): with backend `bgp` the routes to other nodes' blocks are BIRD's.
pub const RTPROT_BIRD: u8 = 12;

/// A `NETLINK_ROUTE` socket bound to one network namespace.
#[derive(Debug)]
pub struct RouteHandle {
    sock: NetlinkSocket,
}

impl RouteHandle {
    /// Opens a handle on the caller's current namespace.
    pub fn current() -> Result<Self> {
        Ok(RouteHandle {
            sock: NetlinkSocket::open(Protocol::Route)?,
        })
    }

    /// Opens a handle bound to `netns`.
    pub fn in_netns(netns: &Netns) -> Result<Self> {
        Ok(RouteHandle {
            sock: NetlinkSocket::open_in(netns, Protocol::Route)?,
        })
    }
}

/// Address family byte (`AF_INET` / `AF_INET6`) of an address.
pub(crate) fn family_of(ip: &IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => libc::AF_INET as u8,
        IpAddr::V6(_) => libc::AF_INET6 as u8,
    }
}

/// Network-order bytes of an address.
pub(crate) fn ip_bytes(ip: &IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// Decodes an address attribute of `family`.
pub(crate) fn parse_ip(family: u8, bytes: &[u8]) -> Option<IpAddr> {
    match (family as i32, bytes.len()) {
        (libc::AF_INET, 4) => Some(IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        (libc::AF_INET6, 16) => Some(IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => None,
    }
}
