//! One node's firewall as data: which elements every set must hold.
//!
//! [`plan`] is pure: the cluster's policies, namespaces and pods in, the
//! sets out. The firewall diffs two plans (or a plan and the kernel) and
//! applies only the difference.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use podnet_kernel::nftables::SetElement;
use podnet_policy::model::Protocol;
use podnet_policy::{Pod, PolicyPort, PolicyType, PortRef, World};

use crate::classes::{to_u128, Classes};
use crate::layout::{counter_name, Dir, Layout, PeerKey, PortKey, SetId};

/// The elements every set of one node's table must hold (sets in use only).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Set to elements; no empty entries.
    pub sets: BTreeMap<SetId, BTreeSet<SetElement>>,
}

impl Plan {
    /// The layout (sets in use, hence rules) the plan implies.
    pub fn layout(&self) -> Layout {
        Layout {
            sets: self.sets.keys().copied().collect(),
        }
    }

    /// Number of elements over every set.
    pub fn len(&self) -> usize {
        self.sets.values().map(BTreeSet::len).sum()
    }

    /// True when no set holds anything (no table needed).
    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }

    fn add(&mut self, set: SetId, e: SetElement) {
        self.sets.entry(set).or_default().insert(e);
    }
}

/// The ports part of an allow element, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ports {
    All,
    Proto(u8),
    Port(u8, u16),
    Range(u8, u16, u16),
}

impl Ports {
    fn key(self) -> PortKey {
        match self {
            Ports::All => PortKey::All,
            Ports::Proto(_) => PortKey::Proto,
            Ports::Port(..) => PortKey::Port,
            Ports::Range(..) => PortKey::Range,
        }
    }
}

/// A policy port, resolved where it can be without knowing the peer.
enum PortSpec {
    Resolved(Ports),
    /// A named port of the destination (egress: the peer).
    Named(String, Protocol),
}

fn port_spec(p: &PolicyPort, target: Option<&Pod>) -> Option<PortSpec> {
    let proto = p.protocol.number();
    let number = |n: u32| u16::try_from(n).ok();
    Some(PortSpec::Resolved(match (&p.port, p.end_port) {
        (None, _) => Ports::Proto(proto),
        (Some(PortRef::Number(n)), Some(end)) if end != *n => {
            Ports::Range(proto, number(*n)?, number(end)?)
        }
        (Some(PortRef::Number(n)), _) => Ports::Port(proto, number(*n)?),
        (Some(PortRef::Name(name)), _) => match target {
            Some(pod) => Ports::Port(proto, pod.named_port(name, p.protocol)?),
            None => return Some(PortSpec::Named(name.clone(), p.protocol)),
        },
    }))
}

/// The sets node `node` needs for the pods it runs.
pub fn plan(world: &World, node: &str) -> Plan {
    let classes = Classes::compute(world);
    let mut out = Plan::default();
    let mut local_classes_needed = false;
    for pod in world.pods.iter().filter(|p| p.node == node) {
        for dir in [PolicyType::Ingress, PolicyType::Egress] {
            local_classes_needed |= plan_side(world, &classes, pod, dir, &mut out);
        }
    }
    if local_classes_needed {
        for (ip, class) in &classes.by_addr {
            let set = SetId::PodClass { v6: ip.is_ipv6() };
            out.add(
                set,
                SetElement::new(addr(*ip), Some(class.to_ne_bytes().to_vec())),
            );
        }
        for r in &classes.nets {
            let set = SetId::NetClass {
                v6: r.start.is_ipv6(),
            };
            let mut e = SetElement::new(
                [addr(r.start), vec![0; 4]].concat(),
                Some(r.class.to_ne_bytes().to_vec()),
            );
            e.key_end = Some([addr(r.end), vec![255, 0, 0, 0]].concat());
            out.add(set, e);
        }
    }
    out
}

/// The elements of one local pod for one direction; whether any is keyed by class.
fn plan_side(world: &World, classes: &Classes, pod: &Pod, dir: PolicyType, out: &mut Plan) -> bool {
    let d = match dir {
        PolicyType::Ingress => Dir::In,
        PolicyType::Egress => Dir::Out,
    };
    let mut by_class = false;
    let policies = world
        .policies
        .iter()
        .filter(|p| p.selects(pod) && p.spec.isolates(dir));
    for (n, policy) in policies.enumerate() {
        if n == 0 {
            for ip in &pod.ips {
                out.add(
                    SetId::Isolated {
                        dir: d,
                        v6: ip.is_ipv6(),
                    },
                    SetElement::new(addr(*ip), Some(counter_name(d, *ip).into_bytes())),
                );
            }
        }
        for rule in policy.spec.rules(dir) {
            // Ingress ports are the local pod's; egress ports the peer's.
            let target = (dir == PolicyType::Ingress).then_some(pod);
            let specs: Vec<PortSpec> = if rule.ports.is_empty() {
                vec![PortSpec::Resolved(Ports::All)]
            } else {
                rule.ports
                    .iter()
                    .filter_map(|p| port_spec(p, target))
                    .collect()
            };
            let peers: Vec<Option<usize>> = if rule.peers.is_empty() {
                vec![None]
            } else {
                rule.peers
                    .iter()
                    .map(|p| classes.selector(policy, p))
                    .filter(Option::is_some)
                    .collect()
            };
            for ip in &pod.ips {
                let f = usize::from(ip.is_ipv6());
                for peer in &peers {
                    for spec in &specs {
                        by_class |= emit(classes, d, *ip, *peer, spec, f, out);
                    }
                }
            }
        }
    }
    by_class
}

/// Adds the elements of one (local address, peer, port) combination; whether
/// any is keyed by class.
fn emit(
    classes: &Classes,
    d: Dir,
    local: IpAddr,
    peer: Option<usize>,
    spec: &PortSpec,
    f: usize,
    out: &mut Plan,
) -> bool {
    let v6 = local.is_ipv6();
    let allow = |peer: PeerKey, ports: PortKey| SetId::Allow {
        dir: d,
        peer,
        ports,
        v6,
    };
    match (peer, spec) {
        (None, PortSpec::Resolved(p)) => {
            out.add(allow(PeerKey::Any, p.key()), element(local, None, *p));
            false
        }
        (None, PortSpec::Named(name, proto)) => {
            let Some(with) = classes.named.get(&(name.clone(), *proto)) else {
                return false;
            };
            for (class, port) in &with[f] {
                let p = Ports::Port(proto.number(), *port);
                out.add(
                    allow(PeerKey::Class, PortKey::Port),
                    element(local, Some(*class), p),
                );
            }
            !with[f].is_empty()
        }
        (Some(sel), spec) => {
            let members = &classes.members[sel][f];
            for class in members {
                let p = match spec {
                    PortSpec::Resolved(p) => *p,
                    PortSpec::Named(name, proto) => {
                        match classes.info[class].named.get(&(name.clone(), *proto)) {
                            Some(port) => Ports::Port(proto.number(), *port),
                            None => continue,
                        }
                    }
                };
                out.add(
                    allow(PeerKey::Class, p.key()),
                    element(local, Some(*class), p),
                );
            }
            !members.is_empty()
        }
    }
}

/// `local [. class] [. proto [. port]]`, with `key_end` for ranges.
fn element(local: IpAddr, class: Option<u32>, p: Ports) -> SetElement {
    let mut key = addr(local);
    if let Some(c) = class {
        key.extend_from_slice(&c.to_ne_bytes());
    }
    let head = key.clone();
    let with = |proto: u8, port: Option<u16>| {
        let mut k = head.clone();
        k.extend_from_slice(&[proto, 0, 0, 0]);
        if let Some(port) = port {
            let b = port.to_be_bytes();
            k.extend_from_slice(&[b[0], b[1], 0, 0]);
        }
        k
    };
    match p {
        Ports::All => SetElement::new(key, None),
        Ports::Proto(proto) => SetElement::new(with(proto, None), None),
        Ports::Port(proto, port) => SetElement::new(with(proto, Some(port)), None),
        Ports::Range(proto, lo, hi) => {
            let mut e = SetElement::new(with(proto, Some(lo)), None);
            e.key_end = Some(with(proto, Some(hi)));
            e
        }
    }
}

/// An address's bytes.
pub fn addr(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// Whether an address lies in a `net-class` element's range.
pub(crate) fn in_range(e: &SetElement, ip: IpAddr) -> bool {
    let n = addr(ip).len();
    let (Some(end), Some(start)) = (e.key_end.as_ref(), e.key.get(..n)) else {
        return false;
    };
    let (Ok(s), Ok(t)) = (
        bytes_to_ip(start),
        end.get(..n).map(bytes_to_ip).unwrap_or(Err(())),
    ) else {
        return false;
    };
    (to_u128(s)..=to_u128(t)).contains(&to_u128(ip))
}

fn bytes_to_ip(b: &[u8]) -> Result<IpAddr, ()> {
    match b.len() {
        4 => Ok(IpAddr::from(<[u8; 4]>::try_from(b).map_err(|_| ())?)),
        16 => Ok(IpAddr::from(<[u8; 16]>::try_from(b).map_err(|_| ())?)),
        _ => Err(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use podnet_policy::{NetworkPolicy, PolicyRule, PolicySpec};

    #[test]
    fn sctp_ports_are_programmed_with_their_protocol_number() {
        let pod = Pod {
            namespace: "x".into(),
            name: "a".into(),
            node: "n1".into(),
            ips: vec!["10.0.0.1".parse().unwrap()],
            labels: Default::default(),
            ports: vec![],
            ready: true,
        };
        let policy = NetworkPolicy {
            namespace: "x".into(),
            name: "p".into(),
            spec: PolicySpec {
                ingress: vec![PolicyRule {
                    peers: vec![],
                    ports: vec![PolicyPort {
                        protocol: Protocol::Sctp,
                        port: Some(PortRef::Number(9000)),
                        end_port: None,
                    }],
                }],
                ..PolicySpec::default()
            }
            .defaulted(),
        };
        let w = World {
            pods: vec![pod],
            policies: vec![policy],
            ..World::default()
        };
        let p = plan(&w, "n1");
        let set = SetId::Allow {
            dir: Dir::In,
            peer: PeerKey::Any,
            ports: PortKey::Port,
            v6: false,
        };
        let e = p.sets[&set].iter().next().unwrap();
        assert_eq!(
            e.key,
            [
                vec![10, 0, 0, 1],
                vec![132, 0, 0, 0],
                vec![0x23, 0x28, 0, 0]
            ]
            .concat()
        );
        assert!(p.passes(
            "10.9.9.9".parse().unwrap(),
            "10.0.0.1".parse().unwrap(),
            132,
            9000
        ));
        assert!(!p.passes(
            "10.9.9.9".parse().unwrap(),
            "10.0.0.1".parse().unwrap(),
            6,
            9000
        ));
    }
}
