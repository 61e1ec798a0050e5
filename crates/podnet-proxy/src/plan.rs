//! One service as the elements it owns in the table, seen from one node.

use std::collections::BTreeSet;
use std::net::IpAddr;

use podnet_kernel::nftables::SetElement;
use podnet_services::select::port_views_of_family;
use podnet_services::{Backend, Endpoints, Protocol, Service, TrafficPolicy};

use crate::layout::{encode, Frontends, SetId};

/// Where a client sends a service's traffic: an address and port, or a node port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Frontend {
    /// The cluster, external or load-balancer IP; `None` for a node port (any local address).
    pub addr: Option<IpAddr>,
    /// Protocol.
    pub protocol: Protocol,
    /// Port (the node port for node ports).
    pub port: u16,
}

/// A frontend served by one backend, with the affinity timeout if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Flow {
    /// Where clients connect.
    pub frontend: Frontend,
    /// Endpoint address.
    pub backend: IpAddr,
    /// Endpoint port.
    pub backend_port: u16,
    /// ClientIP affinity timeout (seconds), when on.
    pub affinity: Option<u32>,
}

/// Everything one service puts in the table on one node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fragment {
    /// `(set, element)` pairs. No two services own the same key (cluster IPs,
    /// node ports and external addresses are unique per port).
    pub elements: Vec<(SetId, SetElement)>,
    /// Local endpoint addresses: shared between services, so counted.
    pub hairpin: BTreeSet<IpAddr>,
    /// Every frontend-to-backend pair (for stale flow and affinity cleanup).
    pub flows: BTreeSet<Flow>,
    /// Affinity timeout and frontends with ClientIP affinity.
    pub affinity_frontends: BTreeSet<(u32, Frontend)>,
    /// The health-check node port and what it reports, when load balancers poll one.
    pub health_check: Option<HealthCheck>,
}

/// What a node answers on a service's health-check node port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthCheck {
    /// The port (TCP, every local address).
    pub port: u16,
    /// Ready endpoints on this node: 200 when any, 503 when none.
    pub local_endpoints: usize,
}

/// The elements of `svc` with `eps` on node `node`: per cluster IP (one
/// per family), its frontends and node ports over the endpoints of that family.
pub fn fragment(svc: &Service, eps: Option<&Endpoints>, node: &str) -> Fragment {
    let mut f = Fragment::default();
    // Headless, ExternalName and another proxy's services are not ours.
    if !svc.proxied() {
        return f;
    }
    for cluster_ip in svc.all_cluster_ips() {
        f.add_family(svc, eps, node, cluster_ip);
    }
    if let Some(port) = svc
        .health_check_node_port
        .filter(|_| svc.wants_health_check())
    {
        f.health_check = Some(HealthCheck {
            port: u16::try_from(port).unwrap_or(0),
            local_endpoints: local_ready(eps, node),
        });
    }
    f
}

/// Ready endpoints on `node` (what a health check reports).
fn local_ready(eps: Option<&Endpoints>, node: &str) -> usize {
    eps.map_or(0, |e| e.ready_on(node).count())
}

impl Fragment {
    /// The frontends of one family: the cluster IP, external and
    /// load-balancer IPs of that family, and node ports.
    fn add_family(
        &mut self,
        svc: &Service,
        eps: Option<&Endpoints>,
        node: &str,
        cluster_ip: IpAddr,
    ) {
        let v6 = cluster_ip.is_ipv6();
        let affinity = svc.affinity_timeout();
        let external_masq = svc.external_traffic_policy == TrafficPolicy::Cluster;
        for view in port_views_of_family(svc, eps, node, Some(v6)) {
            let Ok(port) = u16::try_from(view.port.port) else {
                continue;
            };
            let proto = view.port.protocol;
            let mut addresses = vec![(cluster_ip, &view.internal, false)];
            for ip in svc.external_ips.iter().chain(&svc.load_balancer_ips) {
                if ip.is_ipv6() == v6 {
                    addresses.push((*ip, &view.external, external_masq));
                }
            }
            for (ip, backends, masq) in addresses {
                let frontend = Frontend {
                    addr: Some(ip),
                    protocol: proto,
                    port,
                };
                self.add_frontend(frontend, v6, backends, masq, affinity);
            }
            for ip in svc.load_balancer_ips.iter().filter(|ip| ip.is_ipv6() == v6) {
                self.restrict_sources(svc, *ip, proto, port);
            }
            let node_port = view
                .port
                .node_port
                .filter(|_| svc.has_node_ports())
                .and_then(|n| u16::try_from(n).ok());
            if let Some(np) = node_port {
                let frontend = Frontend {
                    addr: None,
                    protocol: proto,
                    port: np,
                };
                self.add_frontend(frontend, v6, &view.external, external_masq, affinity);
            }
            for b in view.internal.iter().chain(&view.external) {
                if b.local {
                    self.hairpin.insert(b.addr);
                }
            }
        }
    }

    /// A frontend (an address and port, or a node port) balanced over
    /// `backends`, or rejected without any; with ClientIP affinity, its
    /// frontend is recorded, and affinity hits on a masquerading frontend
    /// (which bypass the masquerading map) learn that they must be marked.
    fn add_frontend(
        &mut self,
        frontend: Frontend,
        v6: bool,
        backends: &[Backend],
        masq: bool,
        affinity: Option<u32>,
    ) {
        let (kind, key) = match frontend.addr {
            Some(ip) => (
                Frontends::Addresses,
                encode::service(ip, frontend.protocol.number(), frontend.port),
            ),
            None => (
                Frontends::NodePorts,
                encode::node_port(frontend.protocol.number(), frontend.port),
            ),
        };
        if backends.is_empty() {
            self.elements
                .push((kind.reject(v6), encode::element(key.clone(), None)));
        }
        let set = kind.lb(v6, backends.len() as u32, masq);
        for (i, b) in backends.iter().enumerate() {
            let element = encode::element(
                encode::indexed(key.clone(), i as u32),
                Some(encode::endpoint(b.addr, b.port)),
            );
            self.elements.push((set, element));
        }
        if masq && affinity.is_some() {
            self.elements
                .push((kind.masq(v6), encode::element(key.clone(), None)));
        }
        if let Some(timeout) = affinity {
            self.elements
                .push((kind.affinity_keys(v6, timeout), encode::element(key, None)));
            self.affinity_frontends.insert((timeout, frontend));
        }
        self.note_flows(frontend, backends, affinity);
    }

    /// `loadBalancerSourceRanges`: the load-balancer frontend is restricted
    /// to the ranges of its family (none of its family: nobody passes).
    fn restrict_sources(&mut self, svc: &Service, ip: IpAddr, protocol: Protocol, port: u16) {
        if svc.load_balancer_source_ranges.is_empty() {
            return;
        }
        let v6 = ip.is_ipv6();
        let key = encode::service(ip, protocol.number(), port);
        self.elements.push((
            SetId::SourceRestricted { v6 },
            encode::element(key.clone(), None),
        ));
        for range in svc
            .load_balancer_source_ranges
            .iter()
            .filter(|r| r.addr().is_ipv6() == v6)
        {
            let element = encode::source_range(key.clone(), range.network(), range.broadcast());
            self.elements.push((SetId::SourceAllowed { v6 }, element));
        }
    }

    fn note_flows(&mut self, frontend: Frontend, backends: &[Backend], affinity: Option<u32>) {
        for b in backends {
            self.flows.insert(Flow {
                frontend,
                backend: b.addr,
                backend_port: b.port,
                affinity,
            });
        }
    }
}

/// The hairpin element of a local endpoint address.
pub fn hairpin_element(ip: IpAddr) -> (SetId, SetElement) {
    let mut key = encode::addr(ip);
    key.extend(encode::addr(ip));
    (
        SetId::Hairpin { v6: ip.is_ipv6() },
        encode::element(key, None),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(v: serde_json::Value) -> Service {
        serde_json::from_value(v).unwrap()
    }

    fn eps(v: serde_json::Value) -> Endpoints {
        serde_json::from_value(serde_json::json!({"name": "web", "endpoints": v})).unwrap()
    }

    #[test]
    fn headless_external_name_and_other_proxies_services_get_no_elements() {
        let e = eps(serde_json::json!([{"address": "10.244.1.2", "node": "a"}]));
        for s in [
            svc(serde_json::json!({"name": "web", "headless": true, "ports": [{"port": 80}]})),
            svc(
                serde_json::json!({"name": "web", "type": "ExternalName", "externalName": "x.example", "ports": []}),
            ),
            svc(serde_json::json!({
                "name": "web", "clusterIP": "10.96.0.10", "ports": [{"port": 80}],
                "labels": {"service.kubernetes.io/service-proxy-name": "other"}
            })),
            svc(serde_json::json!({
                "name": "web", "clusterIP": "10.96.0.10", "ports": [{"port": 80}],
                "labels": {"service.kubernetes.io/headless": ""}
            })),
        ] {
            assert_eq!(fragment(&s, Some(&e), "a"), Fragment::default(), "{s:?}");
        }
        let ours = svc(
            serde_json::json!({"name": "web", "clusterIP": "10.96.0.10", "ports": [{"port": 80}]}),
        );
        assert!(!fragment(&ours, Some(&e), "a").elements.is_empty());
    }

    #[test]
    fn three_endpoints_make_three_indexed_elements_in_the_size_3_map() {
        let s = svc(serde_json::json!({
            "name": "web", "clusterIP": "10.96.0.10", "ports": [{"port": 80, "targetPort": 8080}]
        }));
        let e = eps(serde_json::json!([
            {"address": "10.244.1.2", "node": "a"},
            {"address": "10.244.2.2", "node": "b"},
            {"address": "10.244.3.2", "node": "c"},
        ]));
        let f = fragment(&s, Some(&e), "a");
        let lb: Vec<_> = f
            .elements
            .iter()
            .filter(|(s, _)| *s == SetId::Lb { v6: false, size: 3 })
            .collect();
        assert_eq!(lb.len(), 3);
        assert_eq!(lb[0].1.key[..12], [10, 96, 0, 10, 6, 0, 0, 0, 0, 80, 0, 0]);
        assert_eq!(lb[2].1.key[12..], 2u32.to_ne_bytes());
        assert_eq!(
            lb[1].1.data.as_deref(),
            Some(&[10, 244, 2, 2, 0x1f, 0x90, 0, 0][..])
        );
        assert_eq!(f.hairpin.len(), 1, "only the local endpoint");
        assert_eq!(f.elements.len(), 3);
    }

    #[test]
    fn no_endpoints_means_reject_and_local_policy_means_no_masquerade() {
        let s = svc(serde_json::json!({
            "name": "web", "clusterIP": "10.96.0.10", "type": "NodePort",
            "externalTrafficPolicy": "Local", "externalIPs": ["192.0.2.7"],
            "ports": [{"port": 80, "nodePort": 30080}]
        }));
        let e = eps(serde_json::json!([{"address": "10.244.2.2", "node": "b"}]));
        let on_a = fragment(&s, Some(&e), "a");
        let sets: Vec<SetId> = on_a.elements.iter().map(|(s, _)| *s).collect();
        assert_eq!(
            sets,
            vec![
                SetId::Lb { v6: false, size: 1 },
                SetId::Reject { v6: false },
                SetId::NodePortReject { v6: false }
            ]
        );
        let on_b = fragment(&s, Some(&e), "b");
        assert!(on_b
            .elements
            .iter()
            .all(|(s, _)| !matches!(s, SetId::Masq { .. } | SetId::NodePortMasq { .. })));
        assert_eq!(on_b.elements.len(), 3);
    }
}
