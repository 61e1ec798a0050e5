//! macvlan links in bridge mode: siblings on one parent reach each other
//! directly, which makes them the cheapest L2 segment between namespaces.

use std::os::fd::{AsRawFd, BorrowedFd};

use super::link::{
    ifinfomsg, IFLA_IFNAME, IFLA_INFO_DATA, IFLA_INFO_KIND, IFLA_LINKINFO, IFLA_MTU, IFLA_NET_NS_FD,
};
use super::RouteHandle;
use crate::error::Result;
use crate::netlink::codec::MessageBuilder;

const IFLA_LINK: u16 = 5;
const IFLA_MACVLAN_MODE: u16 = 1;
const MACVLAN_MODE_BRIDGE: u32 = 4;

impl RouteHandle {
    /// `ip link add link PARENT name NAME netns NS mtu M type macvlan mode bridge`:
    /// a macvlan on `parent` (in this handle's namespace), created directly in
    /// `netns`, down (bring it up once it has its addresses, so that it
    /// announces them).
    pub fn create_macvlan(
        &mut self,
        parent: u32,
        name: &str,
        netns: BorrowedFd<'_>,
        mtu: u32,
    ) -> Result<()> {
        let flags = libc::NLM_F_CREATE | libc::NLM_F_EXCL;
        let mut m =
            MessageBuilder::new(libc::RTM_NEWLINK, flags as u16).header(&ifinfomsg(0, 0, 0));
        m.attr_str(IFLA_IFNAME, name)
            .attr_u32(IFLA_MTU, mtu)
            .attr_u32(IFLA_LINK, parent)
            .attr_u32(IFLA_NET_NS_FD, netns.as_raw_fd() as u32);
        let info = m.begin_nested(IFLA_LINKINFO);
        m.attr_str(IFLA_INFO_KIND, "macvlan");
        let data = m.begin_nested(IFLA_INFO_DATA);
        m.attr_u32(IFLA_MACVLAN_MODE, MACVLAN_MODE_BRIDGE);
        m.end_nested(data);
        m.end_nested(info);
        self.sock.request(
            m,
            &format!("ip link add link {parent} name {name} type macvlan mode bridge"),
        )
    }
}
