//! Removals the node agent cares about, from rtnetlink's multicast groups
//! (`ip monitor link route neigh`): so that someone deleting a route, a
//! device or a static entry is repaired at once, not at the next resync.

use std::time::Duration;

use crate::error::Result;
use crate::netlink::{NetlinkSocket, Notifications, Protocol};
use libc::{RTM_DELLINK, RTM_DELNEIGH, RTM_DELROUTE};

const RTNLGRP_LINK: u32 = 1;
const RTNLGRP_NEIGH: u32 = 3;
const RTNLGRP_IPV4_ROUTE: u32 = 7;
const RTNLGRP_IPV6_ROUTE: u32 = 11;
const NUD_PERMANENT: u16 = 0x80;

/// Something removed from the kernel's networking state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removal {
    /// A link was deleted.
    Link {
        /// Its index.
        index: u32,
    },
    /// A route was deleted.
    Route {
        /// Its protocol (who installed it).
        protocol: u8,
    },
    /// A permanent neighbour or FDB entry was deleted.
    StaticEntry {
        /// The interface it was on.
        index: u32,
    },
    /// The kernel dropped notifications: anything may have changed.
    Unknown,
}

/// A subscription to link, route and neighbour removals in one namespace.
#[derive(Debug)]
pub struct RemovalWatch {
    sock: NetlinkSocket,
}

impl RemovalWatch {
    /// Subscribes in the caller's namespace.
    pub fn open() -> Result<Self> {
        let sock = NetlinkSocket::open(Protocol::Route)?;
        for group in [
            RTNLGRP_LINK,
            RTNLGRP_NEIGH,
            RTNLGRP_IPV4_ROUTE,
            RTNLGRP_IPV6_ROUTE,
        ] {
            sock.join_group(group)?;
        }
        sock.set_receive_buffer(1 << 20);
        Ok(RemovalWatch { sock })
    }

    /// Removals seen within `timeout` (possibly none). Additions and dynamic
    /// neighbour churn are skipped.
    pub fn wait(&mut self, timeout: Duration) -> Result<Vec<Removal>> {
        let messages = match self.sock.wait_notifications(timeout, "ip monitor")? {
            Notifications::Overrun => return Ok(vec![Removal::Unknown]),
            Notifications::Messages(m) => m,
        };
        Ok(messages
            .iter()
            .filter_map(|(ty, p)| classify(*ty, p))
            .collect())
    }
}

fn classify(ty: u16, p: &[u8]) -> Option<Removal> {
    match ty {
        RTM_DELLINK => Some(Removal::Link {
            index: u32::from_ne_bytes(p.get(4..8)?.try_into().ok()?),
        }),
        RTM_DELROUTE => Some(Removal::Route {
            protocol: *p.get(5)?,
        }),
        RTM_DELNEIGH => {
            let state = u16::from_ne_bytes(p.get(8..10)?.try_into().ok()?);
            let index = i32::from_ne_bytes(p.get(4..8)?.try_into().ok()?) as u32;
            (state & NUD_PERMANENT != 0).then_some(Removal::StaticEntry { index })
        }
        _ => None,
    }
}
