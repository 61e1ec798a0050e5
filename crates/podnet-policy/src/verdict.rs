//! The API's semantics as one plain function: is this flow allowed?
//!
//! This is the reference the firewall's plan is tested against. It follows
//! the NetworkPolicy API reference:
//! - a pod is isolated for a direction when some policy that lists the
//!   direction in `policyTypes` selects it; a pod that is not isolated allows
//!   everything in that direction;
//! - an isolated pod allows the union of the rules of every policy selecting it;
//! - a rule with no peers matches every peer, with no ports every port;
//! - `podSelector` alone means pods of the policy's namespace, with
//!   `namespaceSelector` (in one peer) pods of the selected namespaces, and
//!   `namespaceSelector` alone every pod of those namespaces; `ipBlock`
//!   matches addresses, pods' included;
//! - a named port means the port of that name (and protocol) on the
//!   destination pod;
//! - a flow needs the source's egress and the destination's ingress;
//! - traffic between a pod and its own node is always allowed.
//!
//! Replies of allowed connections are not flows of their own here; the
//! firewall lets them pass by connection tracking.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::model::{
    Namespace, NetworkPolicy, ObjectName, Peer, Pod, PolicyPort, PolicyType, PortRef, Protocol,
};
use crate::selector::Labels;

/// Which end of a flow the policies of a pod are asked about.
pub type Direction = PolicyType;

/// One end of a flow.
#[derive(Debug, Clone, Copy)]
pub enum FlowEnd<'a> {
    /// A pod, at one of its addresses.
    Pod(&'a Pod, IpAddr),
    /// A node, by name and address.
    Node(&'a str, IpAddr),
    /// Anything else: an address outside the cluster.
    External(IpAddr),
}

impl FlowEnd<'_> {
    /// The address of this end.
    pub fn addr(&self) -> IpAddr {
        match *self {
            FlowEnd::Pod(_, ip) | FlowEnd::Node(_, ip) | FlowEnd::External(ip) => ip,
        }
    }
}

/// A new connection (or datagram) from `src` to `dst`.
#[derive(Debug, Clone, Copy)]
pub struct Flow<'a> {
    /// Who sends.
    pub src: FlowEnd<'a>,
    /// Who receives.
    pub dst: FlowEnd<'a>,
    /// Transport protocol.
    pub protocol: Protocol,
    /// Destination port.
    pub port: u16,
}

/// Everything policies are evaluated over.
#[derive(Debug, Clone, Default)]
pub struct World {
    /// Namespaces by name.
    pub namespaces: BTreeMap<String, Namespace>,
    /// Every pod of the cluster.
    pub pods: Vec<Pod>,
    /// Every policy of the cluster.
    pub policies: Vec<NetworkPolicy>,
}

impl World {
    /// The labels namespace selectors see for `namespace` (only the name
    /// label for a namespace that has no record).
    pub fn namespace_labels(&self, namespace: &str) -> Labels {
        match self.namespaces.get(namespace) {
            Some(ns) => ns.effective_labels(),
            None => Namespace {
                name: namespace.to_string(),
                labels: Labels::new(),
            }
            .effective_labels(),
        }
    }

    /// The policies that isolate `pod` for `direction` (those that select it
    /// and have that policy type), in store order.
    pub fn isolating(&self, pod: &Pod, direction: Direction) -> Vec<ObjectName> {
        self.policies
            .iter()
            .filter(|p| p.selects(pod) && p.spec.isolates(direction))
            .map(|p| p.key())
            .collect()
    }

    /// Whether `flow` is allowed: the source's egress and the destination's ingress.
    pub fn allows(&self, flow: &Flow<'_>) -> bool {
        let egress_ok = match flow.src {
            FlowEnd::Pod(pod, _) => self.side_allows(PolicyType::Egress, pod, &flow.dst, flow),
            _ => true,
        };
        let ingress_ok = match flow.dst {
            FlowEnd::Pod(pod, _) => self.side_allows(PolicyType::Ingress, pod, &flow.src, flow),
            _ => true,
        };
        egress_ok && ingress_ok
    }

    /// Whether `pod`'s policies for `direction` allow `flow`, whose other end is `peer`.
    fn side_allows(
        &self,
        direction: Direction,
        pod: &Pod,
        peer: &FlowEnd<'_>,
        flow: &Flow<'_>,
    ) -> bool {
        if let FlowEnd::Node(name, _) = peer {
            if *name == pod.node {
                return true;
            }
        }
        let mut isolated = false;
        for policy in self
            .policies
            .iter()
            .filter(|p| p.selects(pod) && p.spec.isolates(direction))
        {
            isolated = true;
            let target = match flow.dst {
                FlowEnd::Pod(p, _) => Some(p),
                _ => None,
            };
            for rule in policy.spec.rules(direction) {
                let peer_ok = rule.peers.is_empty()
                    || rule
                        .peers
                        .iter()
                        .any(|p| self.peer_matches(policy, p, peer));
                let port_ok = rule.ports.is_empty()
                    || rule
                        .ports
                        .iter()
                        .any(|p| port_matches(p, target, flow.protocol, flow.port));
                if peer_ok && port_ok {
                    return true;
                }
            }
        }
        !isolated
    }

    /// Whether `peer` of a rule of `policy` matches the flow end `end`.
    pub fn peer_matches(&self, policy: &NetworkPolicy, peer: &Peer, end: &FlowEnd<'_>) -> bool {
        if let Some(block) = &peer.ip_block {
            return block.contains(end.addr());
        }
        let FlowEnd::Pod(pod, _) = end else {
            return false;
        };
        let ns_ok = match &peer.namespace_selector {
            Some(sel) => sel.matches(&self.namespace_labels(&pod.namespace)),
            None => pod.namespace == policy.namespace,
        };
        let pod_ok = peer
            .pod_selector
            .as_ref()
            .is_none_or(|sel| sel.matches(&pod.labels));
        ns_ok && pod_ok
    }
}

/// Whether a policy port matches `protocol`/`port` on the destination pod `target`.
pub fn port_matches(p: &PolicyPort, target: Option<&Pod>, protocol: Protocol, port: u16) -> bool {
    if p.protocol != protocol {
        return false;
    }
    match (&p.port, p.end_port) {
        (None, _) => true,
        (Some(PortRef::Number(n)), Some(end)) => (*n..=end).contains(&u32::from(port)),
        (Some(PortRef::Number(n)), None) => *n == u32::from(port),
        (Some(PortRef::Name(name)), _) => {
            target.and_then(|t| t.named_port(name, protocol)) == Some(port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ContainerPort, IpBlock, PolicyRule, PolicySpec};
    use crate::selector::LabelSelector;

    fn pod(ns: &str, name: &str, node: &str, ip: &str, labels: &[(&str, &str)]) -> Pod {
        Pod {
            namespace: ns.into(),
            name: name.into(),
            node: node.into(),
            ips: vec![ip.parse().unwrap()],
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ports: vec![ContainerPort {
                name: "serve-80-tcp".into(),
                container_port: 80,
                protocol: Protocol::Tcp,
            }],
            ready: true,
        }
    }

    fn flow<'a>(src: FlowEnd<'a>, dst: FlowEnd<'a>, port: u16) -> Flow<'a> {
        Flow {
            src,
            dst,
            protocol: Protocol::Tcp,
            port,
        }
    }

    fn end(p: &Pod) -> FlowEnd<'_> {
        FlowEnd::Pod(p, p.ips[0])
    }

    #[test]
    fn and_versus_or_of_selectors() {
        let a = pod("x", "a", "n1", "10.0.0.1", &[("pod", "a")]);
        let b = pod("y", "b", "n1", "10.0.0.2", &[("pod", "b")]);
        let c = pod("y", "c", "n1", "10.0.0.3", &[("pod", "a")]);
        let mut w = World {
            pods: vec![a.clone(), b.clone(), c.clone()],
            ..World::default()
        };
        w.namespaces.insert(
            "y".into(),
            Namespace {
                name: "y".into(),
                labels: [("ns".to_string(), "y".to_string())].into(),
            },
        );
        let and_peer = Peer {
            pod_selector: Some(LabelSelector::matching(&[("pod", "a")])),
            namespace_selector: Some(LabelSelector::matching(&[("ns", "y")])),
            ip_block: None,
        };
        let or_peers = vec![
            Peer {
                pod_selector: Some(LabelSelector::matching(&[("pod", "a")])),
                ..Peer::default()
            },
            Peer {
                namespace_selector: Some(LabelSelector::matching(&[("ns", "y")])),
                ..Peer::default()
            },
        ];
        let target = pod("x", "t", "n1", "10.0.0.9", &[("pod", "t")]);
        let mk = |peers: Vec<Peer>| NetworkPolicy {
            namespace: "x".into(),
            name: "p".into(),
            spec: PolicySpec {
                pod_selector: LabelSelector::matching(&[("pod", "t")]),
                ingress: vec![PolicyRule {
                    peers,
                    ports: vec![],
                }],
                ..PolicySpec::default()
            }
            .defaulted(),
        };
        w.policies = vec![mk(vec![and_peer])];
        assert!(
            !w.allows(&flow(end(&a), end(&target), 80)),
            "x/a is not in ns y"
        );
        assert!(
            !w.allows(&flow(end(&b), end(&target), 80)),
            "y/b is not pod=a"
        );
        assert!(w.allows(&flow(end(&c), end(&target), 80)), "y/c is both");
        w.policies = vec![mk(or_peers)];
        assert!(w.allows(&flow(end(&a), end(&target), 80)));
        assert!(w.allows(&flow(end(&b), end(&target), 80)));
        assert!(w.allows(&flow(end(&c), end(&target), 80)));
    }

    #[test]
    fn isolation_is_per_direction_and_the_own_node_is_exempt() {
        let a = pod("x", "a", "n1", "10.0.0.1", &[]);
        let b = pod("x", "b", "n2", "10.0.1.1", &[]);
        let deny_ingress = NetworkPolicy {
            namespace: "x".into(),
            name: "deny".into(),
            spec: PolicySpec::default().defaulted(),
        };
        let w = World {
            pods: vec![a.clone(), b.clone()],
            policies: vec![deny_ingress],
            ..World::default()
        };
        let n1: IpAddr = "198.18.1.1".parse().unwrap();
        let n2: IpAddr = "198.18.1.2".parse().unwrap();
        assert!(!w.allows(&flow(end(&a), end(&b), 80)));
        assert!(
            w.allows(&flow(FlowEnd::Node("n2", n2), end(&b), 80)),
            "own node"
        );
        assert!(
            !w.allows(&flow(FlowEnd::Node("n1", n1), end(&b), 80)),
            "another node"
        );
        assert!(
            w.allows(&flow(
                end(&a),
                FlowEnd::External("192.0.2.1".parse().unwrap()),
                80
            )),
            "egress not isolated"
        );
    }

    #[test]
    fn ip_blocks_with_except_and_named_ports() {
        let a = pod("x", "a", "n1", "10.0.0.1", &[]);
        let t = pod("x", "t", "n1", "10.0.0.9", &[("pod", "t")]);
        let policy = NetworkPolicy {
            namespace: "x".into(),
            name: "p".into(),
            spec: PolicySpec {
                pod_selector: LabelSelector::matching(&[("pod", "t")]),
                ingress: vec![PolicyRule {
                    peers: vec![Peer {
                        ip_block: Some(IpBlock {
                            cidr: "10.0.0.0/24".parse().unwrap(),
                            except: vec!["10.0.0.0/30".parse().unwrap()],
                        }),
                        ..Peer::default()
                    }],
                    ports: vec![PolicyPort {
                        protocol: Protocol::Tcp,
                        port: Some(PortRef::Name("serve-80-tcp".into())),
                        end_port: None,
                    }],
                }],
                ..PolicySpec::default()
            }
            .defaulted(),
        };
        let w = World {
            pods: vec![a.clone(), t.clone()],
            policies: vec![policy],
            ..World::default()
        };
        let ext = |s: &str| FlowEnd::External(s.parse().unwrap());
        assert!(w.allows(&flow(ext("10.0.0.7"), end(&t), 80)));
        assert!(
            !w.allows(&flow(ext("10.0.0.7"), end(&t), 81)),
            "named port is 80 only"
        );
        assert!(!w.allows(&flow(ext("10.0.0.2"), end(&t), 80)), "except");
        assert!(
            !w.allows(&flow(end(&a), end(&t), 80)),
            "a pod in the except"
        );
        assert!(!w.allows(&flow(ext("10.0.1.7"), end(&t), 80)), "outside");
    }
}
