//! Which endpoints serve one service port, for cluster traffic and for
//! external traffic arriving at one node.
//!
//! Rules, as kube-proxy applies them:
//! - ready endpoints serve; when none is ready, serving endpoints that are
//!   terminating do (so connections drain instead of failing);
//! - a `Local` policy keeps only endpoints on this node (internal traffic
//!   policy for the cluster IP, external traffic policy for node ports,
//!   external and load-balancer IPs), applied before the fallback above;
//! - `trafficDistribution: PreferClose` keeps cluster IP traffic on this
//!   node's ready endpoints when it has any, and spreads it over all
//!   otherwise (the client's node is the closest there is);
//! - a target port given by name is looked up on each endpoint; endpoints
//!   without that port do not serve it;
//! - only endpoints of the cluster IP's address family serve.

use std::net::IpAddr;

use crate::model::{
    Endpoint, Endpoints, Service, ServicePort, TargetPort, TrafficDistribution, TrafficPolicy,
};

/// One endpoint of one service port: where its traffic is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Backend {
    /// The endpoint address.
    pub addr: IpAddr,
    /// The target port on it.
    pub port: u16,
    /// Whether the endpoint runs on this node.
    pub local: bool,
}

/// One service port as seen from one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortView<'a> {
    /// The service port.
    pub port: &'a ServicePort,
    /// Backends for traffic to the cluster IP, sorted.
    pub internal: Vec<Backend>,
    /// Backends for node-port, external-IP and load-balancer traffic, sorted.
    pub external: Vec<Backend>,
}

/// The views of every port of `svc` on node `node`, for the family of its
/// primary cluster IP.
pub fn port_views<'a>(svc: &'a Service, eps: Option<&Endpoints>, node: &str) -> Vec<PortView<'a>> {
    port_views_of_family(svc, eps, node, svc.cluster_ip.map(|ip| ip.is_ipv6()))
}

/// The views of every port of `svc` on node `node` for one family (`v6`),
/// or every endpoint when `None`: a dual-stack service is two of these.
pub fn port_views_of_family<'a>(
    svc: &'a Service,
    eps: Option<&Endpoints>,
    node: &str,
    v6: Option<bool>,
) -> Vec<PortView<'a>> {
    let family_v4 = v6.map(|v6| !v6);
    let endpoints: Vec<&Endpoint> = eps
        .map(|e| e.endpoints.iter())
        .into_iter()
        .flatten()
        .filter(|e| family_v4.is_none_or(|v4| e.address.is_ipv4() == v4))
        .collect();
    svc.ports
        .iter()
        .map(|port| {
            let resolved: Vec<(&Endpoint, Backend)> = endpoints
                .iter()
                .filter_map(|e| {
                    let p = match eps.is_some_and(|e| e.by_port_name) {
                        true => port_by_name(port, e)?,
                        false => target_port(port, e)?,
                    };
                    Some((
                        *e,
                        Backend {
                            addr: e.address,
                            port: p,
                            local: e.node == node,
                        },
                    ))
                })
                .collect();
            PortView {
                port,
                internal: prefer_close(
                    choose(&resolved, svc.internal_traffic_policy),
                    svc.traffic_distribution,
                ),
                external: choose(&resolved, svc.external_traffic_policy),
            }
        })
        .collect()
}

/// The endpoint's port named as the service port is (EndpointSlice
/// semantics: `targetPort` plays no part).
fn port_by_name(port: &ServicePort, e: &Endpoint) -> Option<u16> {
    let p = e
        .ports
        .iter()
        .find(|p| p.name == port.name && p.protocol == port.protocol)?;
    u16::try_from(p.port).ok().filter(|p| *p != 0)
}

fn target_port(port: &ServicePort, e: &Endpoint) -> Option<u16> {
    let n = match &port.target_port {
        None => port.port,
        Some(TargetPort::Number(n)) => *n,
        Some(TargetPort::Name(name)) => {
            e.ports
                .iter()
                .find(|p| &p.name == name && p.protocol == port.protocol)?
                .port
        }
    };
    u16::try_from(n).ok().filter(|p| *p != 0)
}

/// The local backends when `PreferClose` asks for them and there are any.
fn prefer_close(chosen: Vec<Backend>, distribution: Option<TrafficDistribution>) -> Vec<Backend> {
    if distribution != Some(TrafficDistribution::PreferClose) || !chosen.iter().any(|b| b.local) {
        return chosen;
    }
    chosen.into_iter().filter(|b| b.local).collect()
}

fn choose(resolved: &[(&Endpoint, Backend)], policy: TrafficPolicy) -> Vec<Backend> {
    let scoped = resolved
        .iter()
        .filter(|(_, b)| policy == TrafficPolicy::Cluster || b.local);
    let ready: Vec<Backend> = scoped
        .clone()
        .filter(|(e, _)| e.ready && !e.terminating)
        .map(|(_, b)| *b)
        .collect();
    let mut out = if ready.is_empty() {
        scoped
            .filter(|(e, _)| e.serving && e.terminating)
            .map(|(_, b)| *b)
            .collect()
    } else {
        ready
    };
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(extra: serde_json::Value) -> Service {
        let mut v = serde_json::json!({
            "name": "web", "clusterIP": "10.96.0.10",
            "ports": [{"port": 80, "targetPort": "http"}]
        });
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        serde_json::from_value(v).unwrap()
    }

    fn endpoints(list: serde_json::Value) -> Endpoints {
        serde_json::from_value(serde_json::json!({"name": "web", "endpoints": list})).unwrap()
    }

    #[test]
    fn prefer_close_keeps_cluster_traffic_on_the_node_when_it_can() {
        let svc = service(serde_json::json!({"trafficDistribution": "PreferClose"}));
        let eps = endpoints(serde_json::json!([
            {"address": "10.244.1.2", "node": "a", "ports": [{"name": "http", "port": 80}]},
            {"address": "10.244.2.2", "node": "b", "ports": [{"name": "http", "port": 80}]},
            {"address": "10.244.2.3", "node": "b", "ready": false, "ports": [{"name": "http", "port": 80}]},
        ]));
        let internal = |node: &str| -> Vec<String> {
            port_views(&svc, Some(&eps), node)[0]
                .internal
                .iter()
                .map(|b| b.addr.to_string())
                .collect()
        };
        assert_eq!(internal("a"), ["10.244.1.2"]);
        assert_eq!(
            internal("b"),
            ["10.244.2.2"],
            "only ready local endpoints count"
        );
        assert_eq!(
            internal("c"),
            ["10.244.1.2", "10.244.2.2"],
            "none local: all"
        );
        // External traffic is not affected.
        assert_eq!(port_views(&svc, Some(&eps), "a")[0].external.len(), 2);
    }

    #[test]
    fn named_ports_resolve_per_endpoint_and_missing_names_do_not_serve() {
        let svc = service(serde_json::json!({}));
        let eps = endpoints(serde_json::json!([
            {"address": "10.244.1.2", "node": "a", "ports": [{"name": "http", "port": 8080}]},
            {"address": "10.244.2.2", "node": "b", "ports": [{"name": "http", "port": 9090}]},
            {"address": "10.244.3.2", "node": "c", "ports": [{"name": "other", "port": 1}]},
        ]));
        let v = port_views(&svc, Some(&eps), "a");
        let got: Vec<(String, u16, bool)> = v[0]
            .internal
            .iter()
            .map(|b| (b.addr.to_string(), b.port, b.local))
            .collect();
        assert_eq!(
            got,
            vec![
                ("10.244.1.2".into(), 8080, true),
                ("10.244.2.2".into(), 9090, false)
            ]
        );
    }

    #[test]
    fn terminating_endpoints_serve_only_when_none_is_ready() {
        let svc = service(serde_json::json!({"ports": [{"port": 80}]}));
        let eps = endpoints(serde_json::json!([
            {"address": "10.244.1.2", "node": "a", "ready": false, "terminating": true},
            {"address": "10.244.1.3", "node": "a"},
            {"address": "10.244.1.4", "node": "a", "ready": false},
        ]));
        let v = port_views(&svc, Some(&eps), "a");
        assert_eq!(v[0].internal.len(), 1);
        assert_eq!(v[0].internal[0].addr.to_string(), "10.244.1.3");
        let eps = endpoints(serde_json::json!([
            {"address": "10.244.1.2", "node": "a", "ready": false, "terminating": true},
            {"address": "10.244.1.4", "node": "a", "ready": false},
            {"address": "10.244.1.5", "node": "a", "ready": false, "serving": false, "terminating": true},
        ]));
        let v = port_views(&svc, Some(&eps), "a");
        assert_eq!(v[0].internal.len(), 1);
        assert_eq!(v[0].internal[0].addr.to_string(), "10.244.1.2");
    }

    #[test]
    fn local_policies_keep_only_this_nodes_endpoints() {
        let svc = service(serde_json::json!({
            "type": "NodePort", "ports": [{"port": 80}], "externalTrafficPolicy": "Local"
        }));
        let eps = endpoints(serde_json::json!([
            {"address": "10.244.1.2", "node": "a"},
            {"address": "10.244.2.2", "node": "b"},
        ]));
        let on_a = port_views(&svc, Some(&eps), "a");
        assert_eq!(on_a[0].internal.len(), 2);
        assert_eq!(on_a[0].external.len(), 1);
        assert!(on_a[0].external[0].local);
        let on_c = port_views(&svc, Some(&eps), "c");
        assert!(on_c[0].external.is_empty());
    }
}
