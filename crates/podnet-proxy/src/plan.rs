//! One service as the elements it owns in the table, seen from one node.

use std::collections::BTreeSet;
use std::net::IpAddr;

use podnet_kernel::nftables::SetElement;
use podnet_services::select::port_views;
use podnet_services::{Backend, Endpoints, Protocol, Service, TrafficPolicy};

use crate::layout::{encode, SetId};

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
}

/// The elements of `svc` with `eps` on node `node`.
pub fn fragment(svc: &Service, eps: Option<&Endpoints>, node: &str) -> Fragment {
    let mut f = Fragment::default();
    // Headless, ExternalName and another proxy's services are not ours.
    let Some(cluster_ip) = svc.cluster_ip.filter(|_| svc.proxied()) else {
        return f;
    };
    let v6 = cluster_ip.is_ipv6();
    let affinity = svc.affinity_timeout();
    let external_masq = svc.external_traffic_policy == TrafficPolicy::Cluster;
    for view in port_views(svc, eps, node) {
        let proto = view.port.protocol;
        let Ok(port) = u16::try_from(view.port.port) else {
            continue;
        };
        let mut addresses = vec![(cluster_ip, &view.internal, false)];
        for ip in svc.external_ips.iter().chain(&svc.load_balancer_ips) {
            if ip.is_ipv6() == v6 {
                addresses.push((*ip, &view.external, external_masq));
            }
        }
        for (ip, backends, masq) in addresses {
            let key = encode::service(ip, proto.number(), port);
            let frontend = Frontend {
                addr: Some(ip),
                protocol: proto,
                port,
            };
            let lb = if masq {
                SetId::LbMasq { v6, size: 0 }
            } else {
                SetId::Lb { v6, size: 0 }
            };
            f.balance(lb, SetId::Reject { v6 }, key.clone(), backends);
            // Affinity hits bypass the masquerading map: they learn from here
            // that they must be marked too.
            if masq && affinity.is_some() {
                f.elements
                    .push((SetId::Masq { v6 }, encode::element(key.clone(), None)));
            }
            if let Some(timeout) = affinity {
                f.elements.push((
                    SetId::AffinityKeys { v6, timeout },
                    encode::element(key, None),
                ));
                f.affinity_frontends.insert((timeout, frontend));
            }
            f.note_flows(frontend, backends, affinity);
        }
        let node_port = view
            .port
            .node_port
            .filter(|_| svc.has_node_ports())
            .and_then(|n| u16::try_from(n).ok());
        if let Some(np) = node_port {
            let key = encode::node_port(proto.number(), np);
            let frontend = Frontend {
                addr: None,
                protocol: proto,
                port: np,
            };
            let lb = if external_masq {
                SetId::NodePortLbMasq { v6, size: 0 }
            } else {
                SetId::NodePortLb { v6, size: 0 }
            };
            f.balance(
                lb,
                SetId::NodePortReject { v6 },
                key.clone(),
                &view.external,
            );
            if external_masq && affinity.is_some() {
                f.elements.push((
                    SetId::NodePortMasq { v6 },
                    encode::element(key.clone(), None),
                ));
            }
            if let Some(timeout) = affinity {
                f.elements.push((
                    SetId::AffinityNodePorts { v6, timeout },
                    encode::element(key, None),
                ));
                f.affinity_frontends.insert((timeout, frontend));
            }
            f.note_flows(frontend, &view.external, affinity);
        }
        for b in view.internal.iter().chain(&view.external) {
            if b.local {
                f.hairpin.insert(b.addr);
            }
        }
    }
    f
}

impl Fragment {
    /// Elements that balance `key` over `backends`, or reject it when there are none.
    fn balance(&mut self, lb: SetId, reject: SetId, key: Vec<u8>, backends: &[Backend]) {
        if backends.is_empty() {
            self.elements.push((reject, encode::element(key, None)));
            return;
        }
        let size = backends.len() as u32;
        let set = match lb {
            SetId::Lb { v6, .. } => SetId::Lb { v6, size },
            SetId::LbMasq { v6, .. } => SetId::LbMasq { v6, size },
            SetId::NodePortLb { v6, .. } => SetId::NodePortLb { v6, size },
            SetId::NodePortLbMasq { v6, .. } => SetId::NodePortLbMasq { v6, size },
            other => other,
        };
        for (i, b) in backends.iter().enumerate() {
            self.elements.push((
                set,
                encode::element(
                    encode::indexed(key.clone(), i as u32),
                    Some(encode::endpoint(b.addr, b.port)),
                ),
            ));
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
