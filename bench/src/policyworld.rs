//! The benchmark's cluster: 1,000 pods in 100 namespaces on two nodes and
//! 500 NetworkPolicies, five per namespace, shaped like a multi-team cluster:
//! default deny ingress; frontend to backend on 8080; a team's namespaces to
//! metrics on 9090; monitoring (namespace AND pod) to a named port; egress
//! to DNS and to 10.0.0.0/8 but the service range on 443.

use std::collections::BTreeMap;
use std::net::IpAddr;

use podnet_policy::model::Protocol;
use podnet_policy::{
    ContainerPort, IpBlock, LabelSelector, Namespace, NetworkPolicy, Peer, Pod, PolicyPort,
    PolicyRule, PolicySpec, PolicyType, PortRef, World,
};

/// Namespaces.
pub const NAMESPACES: usize = 100;
/// Pods per namespace.
pub const PODS_PER_NAMESPACE: usize = 10;
const APPS: [&str; 5] = ["frontend", "backend", "metrics", "prometheus", "worker"];

fn labels(pairs: &[(&str, String)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

fn port(protocol: Protocol, p: PortRef) -> PolicyPort {
    PolicyPort {
        protocol,
        port: Some(p),
        end_port: None,
    }
}

/// The pod `i` of namespace `n`, on `node1` or `node2` (alternating), its
/// address in the node's block.
pub fn pod(n: usize, i: usize) -> Pod {
    let k = n * PODS_PER_NAMESPACE + i;
    let node = 1 + k % 2;
    let host = k / 2;
    let ip: IpAddr = format!("10.244.{}.{}", (node - 1) * 8 + host / 250, 2 + host % 250)
        .parse()
        .expect("address");
    Pod {
        namespace: format!("ns{n}"),
        name: format!("pod{i}"),
        node: format!("node{node}"),
        ips: vec![ip],
        labels: labels(&[
            ("app", APPS[i % APPS.len()].to_string()),
            ("pod", format!("pod{i}")),
        ]),
        ports: vec![
            ContainerPort {
                name: "http".into(),
                container_port: 8080,
                protocol: Protocol::Tcp,
            },
            ContainerPort {
                name: "metrics".into(),
                container_port: 9090,
                protocol: Protocol::Tcp,
            },
        ],
        ready: true,
    }
}

/// The five policies of namespace `n`.
pub fn policies(n: usize) -> Vec<NetworkPolicy> {
    let ns = format!("ns{n}");
    let team = format!("team{}", n % 10);
    let mk = |name: &str, spec: PolicySpec| NetworkPolicy {
        namespace: ns.clone(),
        name: name.into(),
        spec: spec.defaulted(),
    };
    vec![
        mk(
            "default-deny",
            PolicySpec {
                policy_types: vec![PolicyType::Ingress],
                ..PolicySpec::default()
            },
        ),
        mk(
            "frontend-to-backend",
            PolicySpec {
                pod_selector: LabelSelector::matching(&[("app", "backend")]),
                ingress: vec![PolicyRule {
                    peers: vec![Peer {
                        pod_selector: Some(LabelSelector::matching(&[("app", "frontend")])),
                        ..Peer::default()
                    }],
                    ports: vec![port(Protocol::Tcp, PortRef::Number(8080))],
                }],
                ..PolicySpec::default()
            },
        ),
        mk(
            "team-metrics",
            PolicySpec {
                pod_selector: LabelSelector::matching(&[("app", "metrics")]),
                ingress: vec![PolicyRule {
                    peers: vec![Peer {
                        namespace_selector: Some(LabelSelector::matching(&[("team", &team)])),
                        ..Peer::default()
                    }],
                    ports: vec![port(Protocol::Tcp, PortRef::Number(9090))],
                }],
                ..PolicySpec::default()
            },
        ),
        mk(
            "monitoring",
            PolicySpec {
                pod_selector: LabelSelector::default(),
                ingress: vec![PolicyRule {
                    peers: vec![Peer {
                        namespace_selector: Some(LabelSelector::matching(&[(
                            "monitoring",
                            "true",
                        )])),
                        pod_selector: Some(LabelSelector::matching(&[("app", "prometheus")])),
                        ip_block: None,
                    }],
                    ports: vec![port(Protocol::Tcp, PortRef::Name("metrics".into()))],
                }],
                ..PolicySpec::default()
            },
        ),
        mk(
            "egress",
            PolicySpec {
                pod_selector: LabelSelector::matching(&[("app", "worker")]),
                policy_types: vec![PolicyType::Egress],
                egress: vec![
                    PolicyRule {
                        peers: vec![Peer {
                            namespace_selector: Some(LabelSelector::matching(&[(
                                "kubernetes.io/metadata.name",
                                "kube-system",
                            )])),
                            pod_selector: Some(LabelSelector::matching(&[("k8s-app", "kube-dns")])),
                            ip_block: None,
                        }],
                        ports: vec![port(Protocol::Udp, PortRef::Number(53))],
                    },
                    PolicyRule {
                        peers: vec![Peer {
                            ip_block: Some(IpBlock {
                                cidr: "10.0.0.0/8".parse().expect("cidr"),
                                except: vec!["10.96.0.0/12".parse().expect("cidr")],
                            }),
                            ..Peer::default()
                        }],
                        ports: vec![port(Protocol::Tcp, PortRef::Number(443))],
                    },
                ],
                ..PolicySpec::default()
            },
        ),
    ]
}

/// The namespace `n` with its labels (every tenth is a monitoring namespace).
pub fn namespace(n: usize) -> Namespace {
    let mut l = labels(&[
        ("team", format!("team{}", n % 10)),
        (
            "env",
            if n.is_multiple_of(2) { "prod" } else { "dev" }.to_string(),
        ),
    ]);
    if n.is_multiple_of(10) {
        l.insert("monitoring".into(), "true".into());
    }
    Namespace {
        name: format!("ns{n}"),
        labels: l,
    }
}

/// The whole cluster.
pub fn world() -> World {
    world_of(NAMESPACES)
}

/// The cluster with `namespaces` namespaces (ten pods and five policies each).
pub fn world_of(namespaces: usize) -> World {
    let mut w = World::default();
    for n in 0..namespaces {
        w.namespaces.insert(format!("ns{n}"), namespace(n));
        w.pods.extend((0..PODS_PER_NAMESPACE).map(|i| pod(n, i)));
        w.policies.extend(policies(n));
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_as_stated() {
        let w = world();
        assert_eq!((w.pods.len(), w.policies.len()), (1000, 500));
    }
}
