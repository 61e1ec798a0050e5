//! The bridge (L2) model: host-side veths are ports of a bridge that owns the gateway.

use std::net::IpAddr;

use ipnet::IpNet;
use podnet_kernel::{Link, RouteHandle};

use crate::attach::{PodLayout, PodNetwork, PodRoute, Result};
use crate::error::DataplaneError;
use crate::spec::{NetworkSpec, PodAttachment};

/// Flannel/Docker style pod networking on a Linux bridge.
#[derive(Debug, Clone, Copy, Default)]
pub struct BridgePodNetwork;

fn default_dst(ip: &IpAddr) -> IpNet {
    match ip {
        IpAddr::V4(_) => "0.0.0.0/0".parse().expect("static prefix"),
        IpAddr::V6(_) => "::/0".parse().expect("static prefix"),
    }
}

/// The gateway of each pod address; the bridge model cannot work without one.
fn gateways(pod: &PodAttachment) -> Result<Vec<IpNet>> {
    pod.addresses
        .iter()
        .map(|a| {
            let gw = a.gateway.ok_or_else(|| {
                DataplaneError::Invalid(format!(
                    "bridge model needs a gateway for {} (set ipam gateway)",
                    a.address
                ))
            })?;
            IpNet::new(gw, a.address.prefix_len())
                .map_err(|e| DataplaneError::Invalid(e.to_string()))
        })
        .collect()
}

impl PodNetwork for BridgePodNetwork {
    fn prepare_host(
        &self,
        host: &mut RouteHandle,
        net: &NetworkSpec,
        pod: &PodAttachment,
    ) -> Result<Option<Link>> {
        let bridge = host.ensure_bridge(&net.bridge, net.mtu)?;
        for gw in gateways(pod)? {
            host.replace_address(bridge.index, gw)?;
        }
        Ok(Some(bridge))
    }

    fn host_mac(&self) -> Option<[u8; 6]> {
        None
    }

    fn configure_host_port(
        &self,
        _host: &mut RouteHandle,
        _port: &Link,
        _pod: &PodAttachment,
    ) -> Result<()> {
        Ok(())
    }

    fn host_sysctls(&self, _port: &str, pod: &PodAttachment) -> Vec<(String, String)> {
        // Bridged pod-to-pod traffic must cross the IP hooks: NetworkPolicy
        // and service replies (un-DNAT) are enforced there (kubeadm requires the same).
        let mut s = vec![
            ("net/ipv4/ip_forward".to_string(), "1".to_string()),
            ("net/bridge/bridge-nf-call-iptables".into(), "1".into()),
            ("net/bridge/bridge-nf-call-ip6tables".into(), "1".into()),
        ];
        if pod.addresses.iter().any(|a| a.address.addr().is_ipv6()) {
            s.push(("net/ipv6/conf/all/forwarding".into(), "1".into()));
        }
        s
    }

    fn pod_layout(&self, pod: &PodAttachment, _port: &Link) -> Result<PodLayout> {
        let mut layout = PodLayout::default();
        for a in &pod.addresses {
            layout.addresses.push((a.address, a.gateway));
            if let Some(gw) = a.gateway {
                layout.routes.push(PodRoute {
                    dst: default_dst(&gw),
                    gw,
                    onlink: false,
                });
            }
        }
        for r in &pod.routes {
            if r.dst.prefix_len() == 0 && r.gw.is_none() {
                continue; // the default route is already there
            }
            let family_gw = pod
                .addresses
                .iter()
                .filter_map(|a| a.gateway)
                .find(|g| g.is_ipv4() == r.dst.addr().is_ipv4());
            let Some(gw) = r.gw.or(family_gw) else {
                return Err(DataplaneError::Invalid(format!(
                    "route {} has no gateway of its family",
                    r.dst
                )));
            };
            layout.routes.retain(|x| x.dst != r.dst);
            layout.routes.push(PodRoute {
                dst: r.dst,
                gw,
                onlink: false,
            });
        }
        Ok(layout)
    }

    fn check_host(
        &self,
        host: &mut RouteHandle,
        net: &NetworkSpec,
        port: &Link,
        pod: &PodAttachment,
    ) -> Result<()> {
        let Some(bridge) = host.link_by_name(&net.bridge)? else {
            return Err(DataplaneError::CheckFailed(format!(
                "bridge {} is missing",
                net.bridge
            )));
        };
        if port.master != Some(bridge.index) {
            return Err(DataplaneError::CheckFailed(format!(
                "{} is not a port of bridge {}",
                port.name, net.bridge
            )));
        }
        let have = host.addresses(Some(bridge.index))?;
        for gw in gateways(pod)? {
            if !have.iter().any(|a| a.net == gw) {
                return Err(DataplaneError::CheckFailed(format!(
                    "gateway {gw} is missing on bridge {}",
                    net.bridge
                )));
            }
        }
        Ok(())
    }
}
