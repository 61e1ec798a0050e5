//! The routed (L3) model, Calico style.
//!
//! The pod holds a /32 (and /128); every packet leaves it through the fixed
//! gateway `169.254.1.1` (IPv6: `fe80::1`), which nobody owns: the host-side
//! veth answers for it. A permanent neighbour entry in the pod maps the gateway
//! to the host veth's fixed MAC, so the pod never has to ARP (which proxy_arp
//! would only answer when the node has a route to 169.254.1.1, and an isolated
//! node may have none); proxy_arp is on as well, for anything that does ARP.
//! The node reaches the pod by one host route per address.

use std::net::IpAddr;

use ipnet::IpNet;
use podnet_kernel::rtnl::RTPROT_PODNET;
use podnet_kernel::{Link, Route, RouteHandle};

use crate::attach::{PodLayout, PodNetwork, PodRoute, Result};
use crate::error::DataplaneError;
use crate::spec::{NetworkSpec, PodAttachment};

/// The IPv4 gateway every routed pod uses.
pub const GATEWAY_V4: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(169, 254, 1, 1));
/// The IPv6 gateway every routed pod uses: the host veth's link-local address.
pub const GATEWAY_V6: IpAddr = IpAddr::V6(std::net::Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1));
/// MAC of every host-side veth in the routed model.
pub const HOST_MAC: [u8; 6] = [0xee; 6];

/// Calico style routed pod networking.
#[derive(Debug, Clone, Copy, Default)]
pub struct RoutedPodNetwork;

fn host_prefix(ip: IpAddr) -> IpNet {
    IpNet::new(ip, if ip.is_ipv4() { 32 } else { 128 }).expect("full-length prefix is valid")
}

fn gateway_for(ip: &IpAddr) -> IpAddr {
    if ip.is_ipv4() {
        GATEWAY_V4
    } else {
        GATEWAY_V6
    }
}

fn has_v6(pod: &PodAttachment) -> bool {
    pod.addresses.iter().any(|a| a.address.addr().is_ipv6())
}

impl PodNetwork for RoutedPodNetwork {
    fn prepare_host(
        &self,
        _host: &mut RouteHandle,
        _net: &NetworkSpec,
        _pod: &PodAttachment,
    ) -> Result<Option<Link>> {
        Ok(None)
    }

    fn host_mac(&self) -> Option<[u8; 6]> {
        Some(HOST_MAC)
    }

    fn configure_host_port(
        &self,
        host: &mut RouteHandle,
        port: &Link,
        pod: &PodAttachment,
    ) -> Result<()> {
        if has_v6(pod) {
            host.replace_address(
                port.index,
                IpNet::new(GATEWAY_V6, 64).expect("valid prefix"),
            )?;
        }
        for a in &pod.addresses {
            host.replace_route(&Route::direct(
                host_prefix(a.address.addr()),
                port.index,
                RTPROT_PODNET,
            ))?;
        }
        Ok(())
    }

    fn host_sysctls(&self, port: &str, pod: &PodAttachment) -> Vec<(String, String)> {
        let mut s = vec![
            ("net/ipv4/ip_forward".to_string(), "1".to_string()),
            (format!("net/ipv4/conf/{port}/proxy_arp"), "1".into()),
            (format!("net/ipv4/neigh/{port}/proxy_delay"), "0".into()),
        ];
        if has_v6(pod) {
            s.push(("net/ipv6/conf/all/forwarding".into(), "1".into()));
        }
        s
    }

    fn pod_layout(&self, pod: &PodAttachment, _port: &Link) -> Result<PodLayout> {
        let mut layout = PodLayout::default();
        for a in &pod.addresses {
            let ip = a.address.addr();
            let gw = gateway_for(&ip);
            layout.addresses.push((host_prefix(ip), Some(gw)));
            let dst = if ip.is_ipv4() { "0.0.0.0/0" } else { "::/0" };
            layout.routes.push(PodRoute {
                dst: dst.parse().expect("static prefix"),
                gw,
                onlink: ip.is_ipv4(),
            });
            layout.neighbours.push((gw, HOST_MAC.to_vec()));
        }
        for r in &pod.routes {
            if r.dst.prefix_len() == 0 {
                continue; // every packet already leaves through the gateway
            }
            let gw = gateway_for(&r.dst.addr());
            layout.routes.push(PodRoute {
                dst: r.dst,
                gw,
                onlink: gw.is_ipv4(),
            });
        }
        Ok(layout)
    }

    fn check_host(
        &self,
        host: &mut RouteHandle,
        _net: &NetworkSpec,
        port: &Link,
        pod: &PodAttachment,
    ) -> Result<()> {
        let routes = host.routes()?;
        for a in &pod.addresses {
            let dst = host_prefix(a.address.addr());
            if !routes
                .iter()
                .any(|r| r.dst == dst && r.oif == Some(port.index))
            {
                return Err(DataplaneError::CheckFailed(format!(
                    "host route {dst} dev {} is missing",
                    port.name
                )));
            }
        }
        Ok(())
    }
}
