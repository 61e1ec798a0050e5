//! VXLAN devices: one per node, no learning, entries programmed by the agent.

use std::net::IpAddr;

use super::link::{
    ifinfomsg, IFF_UP, IFLA_ADDRESS, IFLA_IFNAME, IFLA_INFO_DATA, IFLA_INFO_KIND, IFLA_LINKINFO,
    IFLA_MTU,
};
use super::{ip_bytes, RouteHandle};
use crate::error::Result;
use crate::netlink::codec::{self, MessageBuilder};

const IFLA_VXLAN_ID: u16 = 1;
const IFLA_VXLAN_LINK: u16 = 3;
const IFLA_VXLAN_LOCAL: u16 = 4;
const IFLA_VXLAN_LEARNING: u16 = 7;
const IFLA_VXLAN_PORT: u16 = 15;
const IFLA_VXLAN_LOCAL6: u16 = 17;

/// A VXLAN device to create.
#[derive(Debug, Clone)]
pub struct VxlanSpec<'a> {
    /// Device name.
    pub name: &'a str,
    /// VXLAN network identifier.
    pub vni: u32,
    /// UDP destination port.
    pub port: u16,
    /// Source address of encapsulated packets (the node's underlay address).
    pub local: IpAddr,
    /// Underlay interface index the device is bound to.
    pub underlay: u32,
    /// MTU of the device.
    pub mtu: u32,
    /// MAC of the device (stable, so remote FDB entries stay valid across re-creation).
    pub mac: [u8; 6],
}

/// The settings of an existing VXLAN device that the agent cares about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanInfo {
    /// VNI.
    pub vni: u32,
    /// UDP destination port.
    pub port: u16,
    /// Local (source) address.
    pub local: Option<IpAddr>,
}

impl RouteHandle {
    /// `ip link add NAME address MAC mtu M up type vxlan id VNI local IP dev UNDERLAY
    /// dstport PORT nolearning`: unicast only; remote endpoints come from static FDB entries.
    pub fn create_vxlan(&mut self, spec: &VxlanSpec<'_>) -> Result<()> {
        let flags = libc::NLM_F_CREATE | libc::NLM_F_EXCL;
        let mut m = MessageBuilder::new(libc::RTM_NEWLINK, flags as u16)
            .header(&ifinfomsg(0, IFF_UP, IFF_UP));
        m.attr_str(IFLA_IFNAME, spec.name)
            .attr_u32(IFLA_MTU, spec.mtu)
            .attr(IFLA_ADDRESS, &spec.mac);
        let info = m.begin_nested(IFLA_LINKINFO);
        m.attr_str(IFLA_INFO_KIND, "vxlan");
        let data = m.begin_nested(IFLA_INFO_DATA);
        m.attr_u32(IFLA_VXLAN_ID, spec.vni)
            .attr_u32(IFLA_VXLAN_LINK, spec.underlay)
            .attr(IFLA_VXLAN_PORT, &spec.port.to_be_bytes())
            .attr(IFLA_VXLAN_LEARNING, &[0]);
        let local_attr = match spec.local {
            IpAddr::V4(_) => IFLA_VXLAN_LOCAL,
            IpAddr::V6(_) => IFLA_VXLAN_LOCAL6,
        };
        m.attr(local_attr, &ip_bytes(&spec.local));
        m.end_nested(data);
        m.end_nested(info);
        self.sock.request(
            m,
            &format!(
                "ip link add {} type vxlan id {} local {} dstport {} nolearning",
                spec.name, spec.vni, spec.local, spec.port
            ),
        )
    }
}

/// Decodes the `IFLA_INFO_DATA` of a VXLAN link.
pub(super) fn parse_info(data: &[u8]) -> VxlanInfo {
    let mut info = VxlanInfo {
        vni: 0,
        port: 0,
        local: None,
    };
    for (ty, a) in codec::attrs(data) {
        match ty {
            IFLA_VXLAN_ID => info.vni = codec::attr_u32(a).unwrap_or(0),
            IFLA_VXLAN_PORT if a.len() == 2 => info.port = u16::from_be_bytes([a[0], a[1]]),
            IFLA_VXLAN_LOCAL => info.local = super::parse_ip(libc::AF_INET as u8, a),
            IFLA_VXLAN_LOCAL6 => info.local = super::parse_ip(libc::AF_INET6 as u8, a),
            _ => {}
        }
    }
    info
}
