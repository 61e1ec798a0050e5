//! The plan, replayed as the kernel's rules would run it, agrees with the
//! API's reference verdict on many random clusters: every flow between pods,
//! nodes and outside addresses, on several ports and protocols.
//! Pure: no root, no kernel.

use std::collections::BTreeMap;
use std::net::IpAddr;

use podnet_firewall::{plan, Plan};
use podnet_policy::model::{Protocol, NAMESPACE_NAME_LABEL};
use podnet_policy::{
    ContainerPort, Flow, FlowEnd, IpBlock, LabelSelector, Namespace, NetworkPolicy, Operator, Peer,
    Pod, PolicyPort, PolicyRule, PolicySpec, PolicyType, PortRef, Requirement, World,
};

/// xorshift64*: a small deterministic generator, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const KEYS: [&str; 3] = ["app", "tier", "team"];
const VALUES: [&str; 3] = ["a", "b", "c"];
const NAMESPACES: [&str; 3] = ["x", "y", "z"];
const NODES: [&str; 2] = ["n1", "n2"];
const PORTS: [u16; 4] = [80, 81, 82, 1000];

fn labels(rng: &mut Rng) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for k in KEYS {
        if rng.chance(50) {
            out.insert(k.to_string(), rng.pick(&VALUES).to_string());
        }
    }
    out
}

fn selector(rng: &mut Rng) -> LabelSelector {
    let mut s = LabelSelector::default();
    if rng.chance(40) {
        s.match_labels
            .insert(rng.pick(&KEYS).to_string(), rng.pick(&VALUES).to_string());
    }
    if rng.chance(40) {
        let operator = *rng.pick(&[
            Operator::In,
            Operator::NotIn,
            Operator::Exists,
            Operator::DoesNotExist,
        ]);
        let values = match operator {
            Operator::In | Operator::NotIn => (0..1 + rng.below(2))
                .map(|_| rng.pick(&VALUES).to_string())
                .collect(),
            _ => Default::default(),
        };
        s.match_expressions.push(Requirement {
            key: rng.pick(&KEYS).to_string(),
            operator,
            values,
        });
    }
    s
}

fn peer(rng: &mut Rng) -> Peer {
    match rng.below(5) {
        0 => Peer {
            pod_selector: Some(selector(rng)),
            ..Peer::default()
        },
        1 => Peer {
            namespace_selector: Some(selector(rng)),
            ..Peer::default()
        },
        2 => Peer {
            pod_selector: Some(selector(rng)),
            namespace_selector: Some(selector(rng)),
            ip_block: None,
        },
        3 => {
            let ns = rng.pick(&NAMESPACES).to_string();
            let sel = LabelSelector {
                match_labels: [(NAMESPACE_NAME_LABEL.to_string(), ns)].into(),
                ..LabelSelector::default()
            };
            Peer {
                namespace_selector: Some(sel),
                ..Peer::default()
            }
        }
        _ => {
            let (cidr, except) = *rng.pick(&[
                ("10.0.0.0/16", &[][..]),
                ("10.0.1.0/24", &["10.0.1.0/30"][..]),
                ("192.0.2.0/24", &["192.0.2.8/29"][..]),
                ("0.0.0.0/0", &["10.0.0.0/8"][..]),
                ("fd00::/64", &["fd00::/126"][..]),
            ]);
            Peer {
                ip_block: Some(IpBlock {
                    cidr: cidr.parse().unwrap(),
                    except: except.iter().map(|e| e.parse().unwrap()).collect(),
                }),
                ..Peer::default()
            }
        }
    }
}

fn port(rng: &mut Rng) -> PolicyPort {
    let protocol = *rng.pick(&[Protocol::Tcp, Protocol::Udp]);
    let (port, end_port) = match rng.below(4) {
        0 => (None, None),
        1 => (Some(PortRef::Number(u32::from(*rng.pick(&PORTS)))), None),
        2 => (
            Some(PortRef::Number(80)),
            Some(*rng.pick(&[81u32, 82, 999])),
        ),
        _ => (
            Some(PortRef::Name(
                rng.pick(&["serve-80", "serve-81", "other"]).to_string(),
            )),
            None,
        ),
    };
    PolicyPort {
        protocol,
        port,
        end_port,
    }
}

fn rule(rng: &mut Rng) -> PolicyRule {
    PolicyRule {
        peers: (0..rng.below(3)).map(|_| peer(rng)).collect(),
        ports: (0..rng.below(3)).map(|_| port(rng)).collect(),
    }
}

fn world(rng: &mut Rng) -> World {
    let mut w = World::default();
    for ns in NAMESPACES {
        w.namespaces.insert(
            ns.into(),
            Namespace {
                name: ns.into(),
                labels: labels(rng),
            },
        );
    }
    for i in 0..(4 + rng.below(5)) {
        let node = rng.pick(&NODES).to_string();
        let n: u8 = if node == "n1" { 1 } else { 2 };
        let mut ips: Vec<IpAddr> = vec![format!("10.0.{n}.{}", i + 1).parse().unwrap()];
        if rng.chance(40) {
            ips.push(format!("fd00::{n}:{}", i + 1).parse().unwrap());
        }
        // Named ports: the same name means different numbers on different pods.
        let mut ports = Vec::new();
        for (name, number) in [("serve-80", 80), ("serve-81", 81)] {
            if rng.chance(60) {
                let number = if rng.chance(20) { 82 } else { number };
                ports.push(ContainerPort {
                    name: name.into(),
                    container_port: number,
                    protocol: *rng.pick(&[Protocol::Tcp, Protocol::Udp]),
                });
            }
        }
        w.pods.push(Pod {
            namespace: rng.pick(&NAMESPACES).to_string(),
            name: format!("p{i}"),
            node,
            ips,
            labels: labels(rng),
            ports,
            ready: true,
        });
    }
    for i in 0..(1 + rng.below(4)) {
        let mut spec = PolicySpec {
            pod_selector: selector(rng),
            ingress: (0..rng.below(3)).map(|_| rule(rng)).collect(),
            egress: (0..rng.below(3)).map(|_| rule(rng)).collect(),
            policy_types: Vec::new(),
        };
        if rng.chance(50) {
            spec.policy_types = match rng.below(3) {
                0 => vec![PolicyType::Ingress],
                1 => vec![PolicyType::Egress],
                _ => vec![PolicyType::Ingress, PolicyType::Egress],
            };
        }
        w.policies.push(NetworkPolicy {
            namespace: rng.pick(&NAMESPACES).to_string(),
            name: format!("pol{i}"),
            spec: spec.defaulted(),
        });
    }
    w
}

/// The kernel's verdict: the source node's forward chain, then the destination node's.
fn node_of<'a>(e: &FlowEnd<'a>) -> Option<&'a str> {
    match e {
        FlowEnd::Pod(p, _) => Some(p.node.as_str()),
        _ => None,
    }
}

fn kernel_allows(plans: &BTreeMap<&str, Plan>, flow: &Flow<'_>) -> bool {
    let proto = flow.protocol.number();
    let (src, dst) = (flow.src.addr(), flow.dst.addr());
    // A node reaches its own pods through its output path: no forward chain.
    if let (FlowEnd::Node(n, _), Some(d)) = (&flow.src, node_of(&flow.dst)) {
        if *n == d {
            return true;
        }
    }
    if let (FlowEnd::Node(n, _), Some(s)) = (&flow.dst, node_of(&flow.src)) {
        if *n == s {
            return true;
        }
    }
    let mut nodes: Vec<&str> = [node_of(&flow.src), node_of(&flow.dst)]
        .into_iter()
        .flatten()
        .collect();
    nodes.dedup();
    nodes
        .iter()
        .all(|n| plans[n].passes(src, dst, proto, flow.port))
}

#[test]
fn plan_agrees_with_the_reference_on_random_clusters() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut checked = 0;
    let mut denied = 0;
    for round in 0..300 {
        let w = world(&mut rng);
        let plans: BTreeMap<&str, Plan> = NODES.iter().map(|n| (*n, plan(&w, n))).collect();
        let node_ip: BTreeMap<&str, IpAddr> = [
            ("n1", "198.18.1.1".parse().unwrap()),
            ("n2", "198.18.1.2".parse().unwrap()),
        ]
        .into();
        let mut ends: Vec<FlowEnd<'_>> = Vec::new();
        for p in &w.pods {
            for ip in &p.ips {
                ends.push(FlowEnd::Pod(p, *ip));
            }
        }
        for (n, ip) in &node_ip {
            ends.push(FlowEnd::Node(n, *ip));
        }
        // Outside addresses, one of them inside the pod range (when no pod has it).
        for ext in [
            "192.0.2.9",
            "192.0.2.77",
            "10.0.1.9",
            "8.8.8.8",
            "fd00::1",
            "2001:db8::1",
        ] {
            let ip: IpAddr = ext.parse().unwrap();
            if !w.pods.iter().any(|p| p.ips.contains(&ip)) {
                ends.push(FlowEnd::External(ip));
            }
        }
        for src in &ends {
            for dst in &ends {
                let pod_involved =
                    matches!(src, FlowEnd::Pod(..)) || matches!(dst, FlowEnd::Pod(..));
                if src.addr().is_ipv6() != dst.addr().is_ipv6()
                    || !pod_involved
                    || src.addr() == dst.addr()
                {
                    continue;
                }
                for protocol in [Protocol::Tcp, Protocol::Udp] {
                    for port in PORTS {
                        let flow = Flow {
                            src: *src,
                            dst: *dst,
                            protocol,
                            port,
                        };
                        let want = w.allows(&flow);
                        let got = kernel_allows(&plans, &flow);
                        assert_eq!(
                            got, want,
                            "round {round}: {} -> {} {protocol:?}/{port}: plan says {got}, the API {want}\nworld: {w:#?}",
                            src.addr(), dst.addr()
                        );
                        checked += 1;
                        denied += usize::from(!want);
                    }
                }
            }
        }
    }
    // The worlds must exercise both outcomes, or the comparison proves nothing.
    assert!(
        denied > checked / 10 && denied < checked * 9 / 10,
        "{denied} of {checked} denied"
    );
}
