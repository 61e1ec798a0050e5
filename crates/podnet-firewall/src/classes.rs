//! Peers reduced to classes: addresses every peer of every policy treats alike.
//!
//! Every distinct peer of every rule becomes a *selector* (pods by namespace
//! and labels, or an ipBlock). An address's signature is the set of
//! selectors that match it, plus the numbers of the named ports egress rules
//! ask about; addresses with one signature share a class. Pods get their
//! class per address (an ipBlock holds one family), non-pod addresses by the
//! ipBlock ranges they fall in.
//!
//! Class numbers are a hash of the signature (selectors by content, not by
//! position), so they are the same on every node and across agent restarts,
//! and a change to one pod renumbers nothing else. Collisions are resolved
//! deterministically (the next free number, in signature order).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use podnet_policy::model::Protocol;
use podnet_policy::{IpBlock, LabelSelector, NetworkPolicy, Peer, PolicyType, PortRef, World};
use serde::Serialize;

/// A peer of a rule, in canonical form.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum PeerSel {
    /// Pods of some namespaces, all of them or those a selector picks.
    Pods {
        /// Which namespaces.
        namespaces: NsScope,
        /// Which pods in them (`None`: all).
        pods: Option<LabelSelector>,
    },
    /// Addresses.
    Block(IpBlock),
}

/// The namespaces a pod peer is drawn from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum NsScope {
    /// The policy's own namespace.
    Exact(String),
    /// Namespaces whose labels match.
    Selected(LabelSelector),
}

impl PeerSel {
    /// The canonical form of `peer` in `policy` (an empty selector means "all").
    pub fn of(policy: &NetworkPolicy, peer: &Peer) -> PeerSel {
        if let Some(block) = &peer.ip_block {
            return PeerSel::Block(block.clone());
        }
        let namespaces = match &peer.namespace_selector {
            Some(sel) => NsScope::Selected(sel.clone()),
            None => NsScope::Exact(policy.namespace.clone()),
        };
        let pods = peer.pod_selector.clone().filter(|s| !s.is_empty());
        PeerSel::Pods { namespaces, pods }
    }
}

/// A named port egress rules ask about: name and protocol.
pub type NamedPort = (String, Protocol);

/// What one class stands for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClassInfo {
    /// Indexes (into [`Classes::selectors`]) of the selectors that match its addresses.
    pub selectors: BTreeSet<usize>,
    /// Its named ports, resolved.
    pub named: BTreeMap<NamedPort, u16>,
}

/// An ipBlock range of non-pod addresses and its class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetRange {
    /// First address.
    pub start: IpAddr,
    /// Last address.
    pub end: IpAddr,
    /// Its class.
    pub class: u32,
}

/// Every selector in use, and the class of every address they tell apart.
#[derive(Debug, Default)]
pub struct Classes {
    /// The distinct peers of every rule, in first-seen order.
    pub selectors: Vec<PeerSel>,
    index: HashMap<PeerSel, usize>,
    /// Pod address to class (addresses that match nothing have none).
    pub by_addr: HashMap<IpAddr, u32>,
    /// ipBlock ranges to class, both families, sorted.
    pub nets: Vec<NetRange>,
    /// Class to what it stands for.
    pub info: HashMap<u32, ClassInfo>,
    /// Per selector, the classes containing it: `[IPv4, IPv6]`.
    pub members: Vec<[BTreeSet<u32>; 2]>,
    /// Per named port, the classes with it and its number there: `[IPv4, IPv6]`.
    pub named: BTreeMap<NamedPort, [BTreeMap<u32, u16>; 2]>,
}

/// A signature: selector content hashes (sorted) and resolved named ports.
type Signature = (Vec<u64>, Vec<(NamedPort, u16)>);

impl Classes {
    /// The selector index of a peer of `policy` (every peer of every policy has one).
    pub fn selector(&self, policy: &NetworkPolicy, peer: &Peer) -> Option<usize> {
        self.index.get(&PeerSel::of(policy, peer)).copied()
    }

    /// Computes selectors and classes for `world`.
    pub fn compute(world: &World) -> Classes {
        let mut c = Classes::default();
        let mut named_in_use = BTreeSet::new();
        for policy in &world.policies {
            for dir in [PolicyType::Ingress, PolicyType::Egress] {
                for rule in policy.spec.rules(dir) {
                    for peer in &rule.peers {
                        c.intern(PeerSel::of(policy, peer));
                    }
                    if dir == PolicyType::Egress {
                        for p in &rule.ports {
                            if let Some(PortRef::Name(n)) = &p.port {
                                named_in_use.insert((n.clone(), p.protocol));
                            }
                        }
                    }
                }
            }
        }
        let hashes: Vec<u64> = c.selectors.iter().map(content_hash).collect();
        let per_addr = c.pod_addresses(world, &named_in_use);
        let ranges = c.block_ranges();
        let sig = |info: &ClassInfo| signature(&info.selectors, &info.named, &hashes);
        let mut signatures: BTreeSet<Signature> = per_addr.iter().map(|(_, i)| sig(i)).collect();
        signatures.extend(ranges.iter().map(|(_, _, i)| sig(i)));
        let ids = assign_ids(&signatures);
        c.members = vec![[BTreeSet::new(), BTreeSet::new()]; c.selectors.len()];
        for (ip, info) in per_addr {
            let id = ids[&sig(&info)];
            c.by_addr.insert(ip, id);
            c.record(id, ip.is_ipv6(), info);
        }
        for (start, end, info) in ranges {
            let id = ids[&sig(&info)];
            c.record(id, start.is_ipv6(), info);
            c.nets.push(NetRange {
                start,
                end,
                class: id,
            });
        }
        c
    }

    /// What each pod address is to the policies (addresses that are nothing are left out).
    fn pod_addresses(
        &self,
        world: &World,
        named_in_use: &BTreeSet<NamedPort>,
    ) -> Vec<(IpAddr, ClassInfo)> {
        let mut out = Vec::new();
        for (pod, sels) in world.pods.iter().zip(self.pod_selector_matches(world)) {
            let named: BTreeMap<NamedPort, u16> = named_in_use
                .iter()
                .filter_map(|(n, p)| pod.named_port(n, *p).map(|port| ((n.clone(), *p), port)))
                .collect();
            for ip in &pod.ips {
                let mut selectors = sels.clone();
                selectors.extend(self.blocks_containing(*ip));
                if selectors.is_empty() && named.is_empty() {
                    continue;
                }
                out.push((
                    *ip,
                    ClassInfo {
                        selectors,
                        named: named.clone(),
                    },
                ));
            }
        }
        out
    }

    fn intern(&mut self, sel: PeerSel) -> usize {
        if let Some(i) = self.index.get(&sel) {
            return *i;
        }
        self.selectors.push(sel.clone());
        self.index.insert(sel, self.selectors.len() - 1);
        self.selectors.len() - 1
    }

    fn record(&mut self, id: u32, v6: bool, info: ClassInfo) {
        let f = usize::from(v6);
        for s in &info.selectors {
            self.members[*s][f].insert(id);
        }
        for (n, port) in &info.named {
            self.named
                .entry(n.clone())
                .or_insert_with(|| [BTreeMap::new(), BTreeMap::new()])[f]
                .insert(id, *port);
        }
        self.info.entry(id).or_insert(info);
    }

    /// For each pod of `world` (in order), the pod selectors that match it.
    /// Namespaces are matched once per selector, then only their pods are looked at.
    fn pod_selector_matches(&self, world: &World) -> Vec<BTreeSet<usize>> {
        let mut by_ns: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, p) in world.pods.iter().enumerate() {
            by_ns.entry(p.namespace.as_str()).or_default().push(i);
        }
        let ns_labels: BTreeMap<&str, _> = by_ns
            .keys()
            .map(|ns| (*ns, world.namespace_labels(ns)))
            .collect();
        let mut out = vec![BTreeSet::new(); world.pods.len()];
        for (s, sel) in self.selectors.iter().enumerate() {
            let PeerSel::Pods { namespaces, pods } = sel else {
                continue;
            };
            for (ns, members) in &by_ns {
                let ns_ok = match namespaces {
                    NsScope::Exact(n) => n == ns,
                    NsScope::Selected(ls) => ls.matches(&ns_labels[ns]),
                };
                if !ns_ok {
                    continue;
                }
                for &i in members {
                    if pods
                        .as_ref()
                        .is_none_or(|ls| ls.matches(&world.pods[i].labels))
                    {
                        out[i].insert(s);
                    }
                }
            }
        }
        out
    }

    fn blocks(&self) -> impl Iterator<Item = (usize, &IpBlock)> {
        self.selectors
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match s {
                PeerSel::Block(b) => Some((i, b)),
                PeerSel::Pods { .. } => None,
            })
    }

    fn blocks_containing(&self, ip: IpAddr) -> Vec<usize> {
        self.blocks()
            .filter(|(_, b)| b.contains(ip))
            .map(|(i, _)| i)
            .collect()
    }

    /// The address space cut at every ipBlock boundary: each piece that some
    /// block holds, with the blocks holding it (adjacent pieces held alike merged).
    fn block_ranges(&self) -> Vec<(IpAddr, IpAddr, ClassInfo)> {
        let mut out = Vec::new();
        for v6 in [false, true] {
            let mut cuts: BTreeSet<u128> = BTreeSet::new();
            for (_, b) in self.blocks().filter(|(_, b)| b.cidr.addr().is_ipv6() == v6) {
                for net in std::iter::once(&b.cidr).chain(&b.except) {
                    let (lo, hi) = (to_u128(net.network()), to_u128(net.broadcast()));
                    cuts.insert(lo);
                    if let Some(next) = hi.checked_add(1) {
                        cuts.insert(next);
                    }
                }
            }
            let max = if v6 { u128::MAX } else { u128::from(u32::MAX) };
            let cuts: Vec<u128> = cuts.into_iter().filter(|c| *c <= max).collect();
            let mut pieces: Vec<(u128, u128, BTreeSet<usize>)> = Vec::new();
            for (k, lo) in cuts.iter().enumerate() {
                let hi = cuts.get(k + 1).map(|n| n - 1).unwrap_or(max);
                let sels: BTreeSet<usize> = self
                    .blocks_containing(from_u128(*lo, v6))
                    .into_iter()
                    .collect();
                if sels.is_empty() {
                    continue;
                }
                match pieces.last_mut() {
                    Some(last) if last.2 == sels && last.1.checked_add(1) == Some(*lo) => {
                        last.1 = hi
                    }
                    _ => pieces.push((*lo, hi, sels)),
                }
            }
            out.extend(pieces.into_iter().map(|(lo, hi, selectors)| {
                let info = ClassInfo {
                    selectors,
                    named: BTreeMap::new(),
                };
                (from_u128(lo, v6), from_u128(hi, v6), info)
            }));
        }
        out
    }
}

fn content_hash(sel: &PeerSel) -> u64 {
    podnet_kernel::hash::fnv1a64(serde_json::to_string(sel).unwrap_or_default().as_bytes())
}

fn signature(
    sels: &BTreeSet<usize>,
    named: &BTreeMap<NamedPort, u16>,
    hashes: &[u64],
) -> Signature {
    let mut h: Vec<u64> = sels.iter().map(|i| hashes[*i]).collect();
    h.sort_unstable();
    (h, named.iter().map(|(k, v)| (k.clone(), *v)).collect())
}

/// Class numbers: a hash of each signature, the next free one on collision
/// (in signature order, so the outcome is the same everywhere). 0 is never used.
fn assign_ids(signatures: &BTreeSet<Signature>) -> HashMap<Signature, u32> {
    let mut taken: HashMap<u32, ()> = HashMap::new();
    let mut out = HashMap::new();
    for sig in signatures {
        let text = format!("{sig:?}");
        let h = podnet_kernel::hash::fnv1a64(text.as_bytes());
        let mut id = ((h >> 32) as u32 ^ h as u32).max(1);
        while taken.contains_key(&id) {
            id = id.wrapping_add(1).max(1);
        }
        taken.insert(id, ());
        out.insert(sig.clone(), id);
    }
    out
}

/// An address as a number.
pub fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// A number as an address of the family.
pub fn from_u128(n: u128, v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(n.into())
    } else {
        IpAddr::V4((n as u32).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use podnet_policy::{Pod, PolicyRule, PolicySpec};

    fn pod(ns: &str, name: &str, ip: &str, labels: &[(&str, &str)]) -> Pod {
        Pod {
            namespace: ns.into(),
            name: name.into(),
            node: "n1".into(),
            ips: vec![ip.parse().unwrap()],
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ports: vec![],
            ready: true,
        }
    }

    fn policy(peers: Vec<Peer>) -> NetworkPolicy {
        NetworkPolicy {
            namespace: "x".into(),
            name: "p".into(),
            spec: PolicySpec {
                ingress: vec![PolicyRule {
                    peers,
                    ports: vec![],
                }],
                ..PolicySpec::default()
            }
            .defaulted(),
        }
    }

    fn block(cidr: &str, except: &[&str]) -> Peer {
        Peer {
            ip_block: Some(IpBlock {
                cidr: cidr.parse().unwrap(),
                except: except.iter().map(|e| e.parse().unwrap()).collect(),
            }),
            ..Peer::default()
        }
    }

    #[test]
    fn pods_alike_share_a_class_and_ids_do_not_depend_on_order() {
        let sel = Peer {
            pod_selector: Some(LabelSelector {
                match_labels: [("app".to_string(), "web".to_string())].into(),
                ..LabelSelector::default()
            }),
            ..Peer::default()
        };
        let pods = vec![
            pod("x", "a", "10.0.0.1", &[("app", "web")]),
            pod("x", "b", "10.0.0.2", &[("app", "web")]),
            pod("x", "c", "10.0.0.3", &[("app", "db")]),
            pod("y", "d", "10.0.0.4", &[("app", "web")]),
        ];
        let w = World {
            pods: pods.clone(),
            policies: vec![policy(vec![block("10.0.0.0/30", &[]), sel.clone()])],
            ..World::default()
        };
        let c = Classes::compute(&w);
        let class = |s: &str| c.by_addr.get(&s.parse::<IpAddr>().unwrap()).copied();
        assert_eq!(class("10.0.0.1"), class("10.0.0.2"));
        assert_ne!(
            class("10.0.0.2"),
            class("10.0.0.3"),
            "block only vs block and selector"
        );
        assert_eq!(
            class("10.0.0.4"),
            None,
            "y/d matches nothing (the selector is for x)"
        );
        let mut reordered = w.clone();
        reordered.policies = vec![policy(vec![sel, block("10.0.0.0/30", &[])])];
        reordered.pods.reverse();
        let c2 = Classes::compute(&reordered);
        assert_eq!(c2.by_addr, c.by_addr);
    }

    #[test]
    fn block_ranges_cut_at_excepts_and_merge() {
        let w = World {
            policies: vec![policy(vec![
                block("10.0.0.0/8", &["10.1.0.0/16"]),
                block("10.1.2.0/24", &[]),
                block("0.0.0.0/0", &[]),
            ])],
            ..World::default()
        };
        let c = Classes::compute(&w);
        let text: Vec<String> = c
            .nets
            .iter()
            .map(|r| format!("{}-{}", r.start, r.end))
            .collect();
        assert_eq!(
            text,
            [
                "0.0.0.0-9.255.255.255",
                "10.0.0.0-10.0.255.255",
                "10.1.0.0-10.1.1.255",
                "10.1.2.0-10.1.2.255",
                "10.1.3.0-10.1.255.255",
                "10.2.0.0-10.255.255.255",
                "11.0.0.0-255.255.255.255"
            ]
        );
        assert_eq!(c.nets[0].class, c.nets[6].class, "both only in 0.0.0.0/0");
        assert_eq!(c.nets[2].class, c.nets[4].class, "both in the except");
        assert_eq!(c.nets[1].class, c.nets[5].class);
    }
}
