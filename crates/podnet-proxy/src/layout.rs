//! The table `inet podnet-services`: sets, maps, chains, rules, and the
//! byte encoding of their elements.
//!
//! ## Why this shape
//! kube-proxy's nftables mode gives every service a chain and a
//! `numgen random mod N vmap { ... }` of jumps to per-endpoint chains. The
//! kernel checks for loops on every jump it is handed and walks verdict maps
//! to do it, which makes loading and changing such a table grow much faster
//! than linearly (FIELD-NOTES: 110 s to load 10k services). podnet has no
//! per-service chain and no verdict map. A service is only elements of a few
//! shared maps, and the rules are a fixed handful:
//!
//! ```text
//! map lb4-N   { ip daddr . l4proto . th dport . (numgen random mod N) : endpoint ip . port }
//! chain services {
//!   dnat ip to ip saddr . ip daddr . l4proto . th dport map @affinity4-T   # ClientIP affinity
//!   dnat ip to ip daddr . l4proto . th dport . numgen random mod N map @lb4-N
//!   fib daddr type local jump nodeports
//! }
//! ```
//!
//! Services are grouped by endpoint count N: one map and one rule per count
//! in use, not per service. A new connection costs one hash lookup per count
//! in use until it hits (counts in use are few; 1 in the 100k benchmark), and
//! established flows never reach the nat chains at all.
//! - `reject4`/`nodeport-reject4`: services without endpoints answer with a TCP
//!   reset or ICMP port unreachable (checked after DNAT, so only undiverted
//!   packets match);
//! - `lb-masq4-N`/`nodeport-lb-masq4-N`: like `lb4-N`/`nodeport-lb4-N`, for
//!   external and load-balancer addresses and node ports with policy Cluster:
//!   a hit also sets mark `0x4000`, which postrouting masquerades (and clears);
//! - `hairpin4` (`endpoint . endpoint` of local endpoints): a pod that reaches
//!   itself through its service is masqueraded;
//! - `affinity4-T` and `affinity-np4-T` (filled by the packet path, entries
//!   expire after T seconds), `affinity-keys4-T` and `affinity-nodeports4-T`
//!   (which frontends record affinity), `masq4`/`nodeport-masq4` (which
//!   affinity hits must also be marked): ClientIP session affinity.
//!
//! The filter chains (reject, affinity recording) are entered for
//! `ct state new` only; with no services at all there is no table.
//!
//! The same exists for IPv6 (`...6`). Every rule carries a comment with a
//! fingerprint of the layout, so a sync sees at once whether the chains are
//! current.

use std::collections::BTreeSet;
use std::net::IpAddr;

use podnet_kernel::nftables::build::{cat, dport, load_addr, nfproto_is, ChainDef};
use podnet_kernel::nftables::consts::*;
use podnet_kernel::nftables::{datatype, ChainKind, CmpOp, Expr, Hook, Rule, SetElement, SetSpec};

/// The proxy's table (family `inet`).
pub const TABLE: &str = "podnet-services";
/// The packet mark that asks postrouting to masquerade (kube-proxy's bit).
pub const MASQ_MARK: u32 = 0x4000;

/// One set or map of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SetId {
    /// Services (by address, protocol, port) with `size` endpoints: index to endpoint.
    Lb {
        /// IPv6 or IPv4.
        v6: bool,
        /// Number of endpoints.
        size: u32,
    },
    /// Like [`SetId::Lb`], for external and load-balancer addresses with
    /// policy Cluster: a hit also marks the connection for masquerade.
    LbMasq {
        /// IPv6 or IPv4.
        v6: bool,
        /// Number of endpoints.
        size: u32,
    },
    /// Node ports (by protocol, port) with `size` endpoints: index to endpoint.
    NodePortLb {
        /// IPv6 or IPv4.
        v6: bool,
        /// Number of endpoints.
        size: u32,
    },
    /// Like [`SetId::NodePortLb`], for policy Cluster: a hit also marks for masquerade.
    NodePortLbMasq {
        /// IPv6 or IPv4.
        v6: bool,
        /// Number of endpoints.
        size: u32,
    },
    /// Service addresses and ports without endpoints: rejected.
    Reject {
        /// IPv6 or IPv4.
        v6: bool,
    },
    /// Node ports without endpoints on this node: rejected.
    NodePortReject {
        /// IPv6 or IPv4.
        v6: bool,
    },
    /// External and load-balancer addresses with policy Cluster and ClientIP
    /// affinity: an affinity hit on them is marked for masquerade.
    Masq {
        /// IPv6 or IPv4.
        v6: bool,
    },
    /// Node ports with policy Cluster and ClientIP affinity: an affinity hit
    /// on them is marked for masquerade.
    NodePortMasq {
        /// IPv6 or IPv4.
        v6: bool,
    },
    /// `endpoint . endpoint` of local endpoints: hairpin traffic is masqueraded.
    Hairpin {
        /// IPv6 or IPv4.
        v6: bool,
    },
    /// Load-balancer addresses and ports with `loadBalancerSourceRanges`:
    /// new connections to them are dropped unless their source is allowed.
    SourceRestricted {
        /// IPv6 or IPv4.
        v6: bool,
    },
    /// `address . protocol . port . source range` allowed to reach a
    /// restricted load-balancer frontend (an interval set).
    SourceAllowed {
        /// IPv6 or IPv4.
        v6: bool,
    },
    /// Service addresses and ports with ClientIP affinity of `timeout` seconds.
    AffinityKeys {
        /// IPv6 or IPv4.
        v6: bool,
        /// Seconds.
        timeout: u32,
    },
    /// Node ports with ClientIP affinity of `timeout` seconds.
    AffinityNodePorts {
        /// IPv6 or IPv4.
        v6: bool,
        /// Seconds.
        timeout: u32,
    },
    /// Client and service to endpoint, filled by the packet path, expiring.
    Affinity {
        /// IPv6 or IPv4.
        v6: bool,
        /// Seconds.
        timeout: u32,
    },
    /// Client and node port to endpoint, filled by the packet path, expiring.
    AffinityNodePortMap {
        /// IPv6 or IPv4.
        v6: bool,
        /// Seconds.
        timeout: u32,
    },
}

impl SetId {
    /// The set's name in the table.
    pub fn name(&self) -> String {
        let f = |v6: bool| if v6 { 6 } else { 4 };
        match *self {
            SetId::Lb { v6, size } => format!("lb{}-{size}", f(v6)),
            SetId::LbMasq { v6, size } => format!("lb-masq{}-{size}", f(v6)),
            SetId::NodePortLb { v6, size } => format!("nodeport-lb{}-{size}", f(v6)),
            SetId::NodePortLbMasq { v6, size } => format!("nodeport-lb-masq{}-{size}", f(v6)),
            SetId::Reject { v6 } => format!("reject{}", f(v6)),
            SetId::NodePortReject { v6 } => format!("nodeport-reject{}", f(v6)),
            SetId::Masq { v6 } => format!("masq{}", f(v6)),
            SetId::NodePortMasq { v6 } => format!("nodeport-masq{}", f(v6)),
            SetId::Hairpin { v6 } => format!("hairpin{}", f(v6)),
            SetId::SourceRestricted { v6 } => format!("lb-restricted{}", f(v6)),
            SetId::SourceAllowed { v6 } => format!("lb-allowed{}", f(v6)),
            SetId::AffinityKeys { v6, timeout } => format!("affinity-keys{}-{timeout}", f(v6)),
            SetId::AffinityNodePorts { v6, timeout } => {
                format!("affinity-nodeports{}-{timeout}", f(v6))
            }
            SetId::Affinity { v6, timeout } => format!("affinity{}-{timeout}", f(v6)),
            SetId::AffinityNodePortMap { v6, timeout } => {
                format!("affinity-np{}-{timeout}", f(v6))
            }
        }
    }

    /// Its definition.
    pub fn spec(&self) -> SetSpec {
        use datatype::*;
        let (addr_t, a) = if self.v6() {
            (IPV6_ADDR, 16)
        } else {
            (IPV4_ADDR, 4)
        };
        let endpoint = Some((concat(&[addr_t, INET_SERVICE]), a + 4));
        let (types, len, data, dynamic): (Vec<u32>, u32, _, bool) = match self {
            SetId::Lb { .. } | SetId::LbMasq { .. } => (
                vec![addr_t, INET_PROTO, INET_SERVICE, MARK],
                a + 12,
                endpoint,
                false,
            ),
            SetId::NodePortLb { .. } | SetId::NodePortLbMasq { .. } => {
                (vec![INET_PROTO, INET_SERVICE, MARK], 12, endpoint, false)
            }
            SetId::Reject { .. }
            | SetId::Masq { .. }
            | SetId::AffinityKeys { .. }
            | SetId::SourceRestricted { .. } => {
                (vec![addr_t, INET_PROTO, INET_SERVICE], a + 8, None, false)
            }
            SetId::SourceAllowed { .. } => (
                vec![addr_t, INET_PROTO, INET_SERVICE, addr_t],
                2 * a + 8,
                None,
                false,
            ),
            SetId::NodePortReject { .. }
            | SetId::NodePortMasq { .. }
            | SetId::AffinityNodePorts { .. } => (vec![INET_PROTO, INET_SERVICE], 8, None, false),
            SetId::Hairpin { .. } => (vec![addr_t, addr_t], 2 * a, None, false),
            SetId::Affinity { .. } => (
                vec![addr_t, addr_t, INET_PROTO, INET_SERVICE],
                2 * a + 8,
                endpoint,
                true,
            ),
            SetId::AffinityNodePortMap { .. } => (
                vec![addr_t, INET_PROTO, INET_SERVICE],
                a + 8,
                endpoint,
                true,
            ),
        };
        // Source ranges are intervals of the last field; the others are
        // exact (a range from a value to itself).
        let range_fields = match self {
            SetId::SourceAllowed { .. } => vec![a, 1, 2, a],
            _ => Vec::new(),
        };
        SetSpec {
            name: self.name(),
            key_type: concat(&types),
            key_len: len,
            data,
            dynamic,
            range_fields,
            counters: false,
        }
    }

    /// Whether the set holds IPv6 keys.
    pub fn v6(&self) -> bool {
        match *self {
            SetId::Lb { v6, .. }
            | SetId::LbMasq { v6, .. }
            | SetId::NodePortLb { v6, .. }
            | SetId::NodePortLbMasq { v6, .. }
            | SetId::Reject { v6 }
            | SetId::NodePortReject { v6 }
            | SetId::Masq { v6 }
            | SetId::NodePortMasq { v6 }
            | SetId::Hairpin { v6 }
            | SetId::SourceRestricted { v6 }
            | SetId::SourceAllowed { v6 }
            | SetId::AffinityKeys { v6, .. }
            | SetId::AffinityNodePorts { v6, .. }
            | SetId::Affinity { v6, .. }
            | SetId::AffinityNodePortMap { v6, .. } => v6,
        }
    }

    /// The fields of the set's key, in order.
    fn key_fields(&self) -> Vec<Field> {
        use Field::*;
        match self {
            SetId::Lb { .. } | SetId::LbMasq { .. } => vec![Addr, Proto, Port, Index],
            SetId::NodePortLb { .. } | SetId::NodePortLbMasq { .. } => vec![Proto, Port, Index],
            SetId::Reject { .. }
            | SetId::Masq { .. }
            | SetId::AffinityKeys { .. }
            | SetId::SourceRestricted { .. } => vec![Addr, Proto, Port],
            SetId::SourceAllowed { .. } => vec![Addr, Proto, Port, Addr],
            SetId::NodePortReject { .. }
            | SetId::NodePortMasq { .. }
            | SetId::AffinityNodePorts { .. } => vec![Proto, Port],
            SetId::Hairpin { .. } => vec![Addr, Addr],
            SetId::Affinity { .. } => vec![Addr, Addr, Proto, Port],
            SetId::AffinityNodePortMap { .. } => vec![Addr, Proto, Port],
        }
    }

    /// An element as nft prints it: `10.96.0.10 . tcp . 80 . 0 : 10.244.1.2 . 8080`
    /// (an interval's last field as `first-last`).
    pub fn render_element(&self, e: &SetElement) -> String {
        let a = if self.v6() { 16 } else { 4 };
        let fields = self.key_fields();
        let mut key = Field::render_all(&fields, &e.key, a);
        if let Some(end) = &e.key_end {
            let last = Field::render_all(&fields, end, a);
            if let (Some(first), Some(last)) = (key.last_mut(), last.last()) {
                if first != last {
                    *first = format!("{first}-{last}");
                }
            }
        }
        let mut text = key.join(" . ");
        if let Some(data) = &e.data {
            text += &format!(
                " : {}",
                Field::render_all(&[Field::Addr, Field::Port], data, a).join(" . ")
            );
        }
        text
    }

    /// The sets that exist whatever the services are.
    pub fn fixed() -> Vec<SetId> {
        let mut out = Vec::new();
        for v6 in [false, true] {
            out.extend([
                SetId::Reject { v6 },
                SetId::NodePortReject { v6 },
                SetId::Masq { v6 },
                SetId::NodePortMasq { v6 },
                SetId::Hairpin { v6 },
                SetId::SourceRestricted { v6 },
                SetId::SourceAllowed { v6 },
            ]);
        }
        out
    }
}

/// One field of a set key, as [`encode`] writes it.
#[derive(Debug, Clone, Copy)]
enum Field {
    Addr,
    Proto,
    Port,
    Index,
}

impl Field {
    /// Decodes `bytes` field by field (`a`: address length).
    fn render_all(fields: &[Field], bytes: &[u8], a: usize) -> Vec<String> {
        let mut out = Vec::new();
        let mut at = 0;
        for f in fields {
            let len = if matches!(f, Field::Addr) { a } else { 4 };
            let Some(b) = bytes.get(at..at + len) else {
                break;
            };
            at += len;
            out.push(match f {
                Field::Addr => match <[u8; 16]>::try_from(b) {
                    Ok(v6) => IpAddr::from(v6).to_string(),
                    Err(_) => IpAddr::from([b[0], b[1], b[2], b[3]]).to_string(),
                },
                Field::Proto => match b[0] {
                    6 => "tcp".into(),
                    17 => "udp".into(),
                    132 => "sctp".into(),
                    n => n.to_string(),
                },
                Field::Port => u16::from_be_bytes([b[0], b[1]]).to_string(),
                Field::Index => u32::from_ne_bytes([b[0], b[1], b[2], b[3]]).to_string(),
            });
        }
        out
    }
}

/// Element encodings: every concatenated field is padded to 4 bytes, as in registers.
pub mod encode {
    use super::*;

    /// An address's bytes.
    pub fn addr(ip: IpAddr) -> Vec<u8> {
        match ip {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        }
    }

    /// A protocol number as a register word.
    pub fn proto(p: u8) -> [u8; 4] {
        [p, 0, 0, 0]
    }

    /// A port (network order) as a register word.
    pub fn port(p: u16) -> [u8; 4] {
        let b = p.to_be_bytes();
        [b[0], b[1], 0, 0]
    }

    /// An endpoint as map data: `addr . port`.
    pub fn endpoint(ip: IpAddr, p: u16) -> Vec<u8> {
        let mut v = addr(ip);
        v.extend_from_slice(&port(p));
        v
    }

    /// `addr . proto . port`.
    pub fn service(ip: IpAddr, proto_num: u8, p: u16) -> Vec<u8> {
        let mut v = addr(ip);
        v.extend_from_slice(&proto(proto_num));
        v.extend_from_slice(&port(p));
        v
    }

    /// `proto . port`.
    pub fn node_port(proto_num: u8, p: u16) -> Vec<u8> {
        [proto(proto_num), port(p)].concat()
    }

    /// A key followed by a `numgen` index (host order, as numgen writes it).
    pub fn indexed(mut key: Vec<u8>, index: u32) -> Vec<u8> {
        key.extend_from_slice(&index.to_ne_bytes());
        key
    }

    /// `addr . proto . port . source` for every source from `first` to
    /// `last`: one interval element.
    pub fn source_range(frontend: Vec<u8>, first: IpAddr, last: IpAddr) -> SetElement {
        let mut element = SetElement::new([frontend.clone(), addr(first)].concat(), None);
        element.key_end = Some([frontend, addr(last)].concat());
        element
    }

    /// An element.
    pub fn element(key: Vec<u8>, data: Option<Vec<u8>>) -> SetElement {
        SetElement::new(key, data)
    }
}

/// The sets whose existence depends on the services: endpoint counts and
/// affinity timeouts in use, per family.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Layout {
    /// `(v6, endpoint count)` of service maps in use.
    pub lb: BTreeSet<(bool, u32)>,
    /// `(v6, endpoint count)` of masquerading service maps in use.
    pub lb_masq: BTreeSet<(bool, u32)>,
    /// `(v6, endpoint count)` of node-port maps in use.
    pub node_port_lb: BTreeSet<(bool, u32)>,
    /// `(v6, endpoint count)` of masquerading node-port maps in use.
    pub node_port_lb_masq: BTreeSet<(bool, u32)>,
    /// `(v6, timeout)` of affinity maps in use.
    pub affinity: BTreeSet<(bool, u32)>,
}

impl Layout {
    /// The layout implied by the variable sets in use.
    pub fn from_sets<'a>(sets: impl IntoIterator<Item = &'a SetId>) -> Self {
        let mut l = Layout::default();
        for s in sets {
            match *s {
                SetId::Lb { v6, size } => {
                    l.lb.insert((v6, size));
                }
                SetId::LbMasq { v6, size } => {
                    l.lb_masq.insert((v6, size));
                }
                SetId::NodePortLb { v6, size } => {
                    l.node_port_lb.insert((v6, size));
                }
                SetId::NodePortLbMasq { v6, size } => {
                    l.node_port_lb_masq.insert((v6, size));
                }
                SetId::AffinityKeys { v6, timeout } | SetId::AffinityNodePorts { v6, timeout } => {
                    l.affinity.insert((v6, timeout));
                }
                _ => {}
            }
        }
        l
    }

    /// Every set and map of the table under this layout.
    pub fn sets(&self) -> Vec<SetId> {
        let mut out = SetId::fixed();
        out.extend(self.lb.iter().map(|&(v6, size)| SetId::Lb { v6, size }));
        out.extend(
            self.lb_masq
                .iter()
                .map(|&(v6, size)| SetId::LbMasq { v6, size }),
        );
        out.extend(
            self.node_port_lb
                .iter()
                .map(|&(v6, size)| SetId::NodePortLb { v6, size }),
        );
        out.extend(
            self.node_port_lb_masq
                .iter()
                .map(|&(v6, size)| SetId::NodePortLbMasq { v6, size }),
        );
        for &(v6, timeout) in &self.affinity {
            out.extend([
                SetId::AffinityKeys { v6, timeout },
                SetId::AffinityNodePorts { v6, timeout },
                SetId::Affinity { v6, timeout },
                SetId::AffinityNodePortMap { v6, timeout },
            ]);
        }
        out
    }

    /// The comment every rule carries: a fingerprint of the layout and rule version.
    pub fn fingerprint(&self) -> String {
        let text = format!(
            "v3 {:?} {:?} {:?} {:?} {:?}",
            self.lb, self.lb_masq, self.node_port_lb, self.node_port_lb_masq, self.affinity
        );
        let h = podnet_kernel::hash::fnv1a64(text.as_bytes());
        format!("podnet-services {h:016x}")
    }

    /// Every chain with its rules, regular chains first (base chains jump to them).
    ///
    /// Only the first packet of a connection reaches these rules: the nat
    /// chains see nothing else, and the filter chains are entered for
    /// `ct state new` only. A connection to a cluster IP costs one map lookup
    /// per endpoint count in use until one hits (plus one per affinity
    /// timeout in use). Masquerading maps set the mark after their lookup
    /// hit, in the same rule, so no separate classification pass is needed.
    pub fn chains(&self) -> Vec<ChainDef> {
        let r = RuleMaker {
            comment: self.fingerprint(),
        };
        let (mut services, mut nodeports, mut filter) = (Vec::new(), Vec::new(), Vec::new());
        for v6 in [false, true] {
            services.extend(self.service_rules(&r, v6));
            nodeports.extend(self.node_port_rules(&r, v6));
            filter.extend(self.filter_rules(&r, v6));
        }
        services.push(r.rule(cat(&[&local_daddr(), &[Expr::Jump("nodeports".into())]])));
        let regular = |name: &str, rules| ChainDef {
            name: name.into(),
            kind: ChainKind::Regular,
            rules,
        };
        let mut chains = vec![
            regular("nodeports", nodeports),
            regular("services", services),
            regular("service-filter", filter),
        ];
        chains.extend(base_chains(&r));
        chains
    }

    /// The affinity timeouts in use for a family.
    fn timeouts(&self, v6: bool) -> Vec<u32> {
        let of_family = |(f, t): &(bool, u32)| (*f == v6).then_some(*t);
        self.affinity.iter().filter_map(of_family).collect()
    }

    /// The endpoint counts in use for a family in one of the count sets.
    fn sizes(counts: &BTreeSet<(bool, u32)>, v6: bool) -> impl Iterator<Item = u32> + '_ {
        counts
            .iter()
            .filter(move |(f, _)| *f == v6)
            .map(|(_, n)| *n)
    }

    /// `services`: a remembered ClientIP affinity first, then the balancing
    /// maps by endpoint count (masquerading ones mark the packet).
    fn service_rules(&self, r: &RuleMaker, v6: bool) -> Vec<Rule> {
        self.frontend_rules(r, v6, Frontends::Addresses)
    }

    /// `nodeports` (reached for local destinations only): as `services`,
    /// keyed by protocol and port.
    fn node_port_rules(&self, r: &RuleMaker, v6: bool) -> Vec<Rule> {
        self.frontend_rules(r, v6, Frontends::NodePorts)
    }

    /// The rules of one kind of frontend: for each affinity timeout, a
    /// remembered endpoint (marked for masquerade where the frontend is
    /// external with policy Cluster); then one balancing rule per endpoint
    /// count in use.
    fn frontend_rules(&self, r: &RuleMaker, v6: bool, kind: Frontends) -> Vec<Rule> {
        let a = words(v6);
        let g = nfproto_is(v6);
        let key = |word| kind.key(v6, word);
        let mut rules = Vec::new();
        for timeout in self.timeouts(v6) {
            let hit = cat(&[
                &[load_addr(v6, true, 0)],
                &key(a),
                &[lookup(kind.affinity(v6, timeout), 0, Some(0))],
            ]);
            let external = cat(&[&key(0), &[lookup(kind.masq(v6), 0, None)]]);
            let marked = cat(&[&g, &external, &hit, &set_mark(a + 1), &[dnat(v6, 0, a)]]);
            rules.push(r.rule(marked));
            rules.push(r.rule(cat(&[&g, &hit, &[dnat(v6, 0, a)]])));
        }
        let (plain, masqueraded) = match kind {
            Frontends::Addresses => (&self.lb, &self.lb_masq),
            Frontends::NodePorts => (&self.node_port_lb, &self.node_port_lb_masq),
        };
        for (counts, masq) in [(plain, false), (masqueraded, true)] {
            for size in Self::sizes(counts, v6) {
                let numgen = Expr::NumgenRandom {
                    modulus: size,
                    dreg: reg(kind.index_word(v6)),
                };
                let pick = [numgen, lookup(kind.lb(v6, size, masq), 0, Some(0))];
                let mark = if masq { set_mark(a + 1) } else { Vec::new() };
                rules.push(r.rule(cat(&[&g, &key(0), &pick, &mark, &[dnat(v6, 0, a)]])));
            }
        }
        rules
    }

    /// `service-filter` (new connections, after DNAT): sources a
    /// load-balancer address does not allow are dropped; frontends without
    /// endpoints are rejected; ClientIP affinity is recorded.
    fn filter_rules(&self, r: &RuleMaker, v6: bool) -> Vec<Rule> {
        let g = nfproto_is(v6);
        let mut rules = vec![r.rule(cat(&[&g, &source_not_allowed(v6), &[Expr::Drop]]))];
        for reset in [true, false] {
            let frontend = [
                &daddr_proto_port(v6, 0)[..],
                &[lookup(SetId::Reject { v6 }, 0, None)],
            ]
            .concat();
            rules.push(r.rule(cat(&[&g, &frontend, &reject(reset)])));
            let node_port = [
                &proto_port(0)[..],
                &[lookup(SetId::NodePortReject { v6 }, 0, None)],
            ]
            .concat();
            rules.push(r.rule(cat(&[&g, &node_port, &local_daddr(), &reject(reset)])));
        }
        for timeout in self.timeouts(v6) {
            // The client, the frontend it asked for (the original
            // destination), and from `data` on the endpoint DNAT chose.
            let a = words(v6);
            let remember = |keys: SetId, map: SetId, frontend: fn(bool, u32) -> Vec<Expr>, data| {
                r.rule(cat(&[
                    &ct_status_dnat(),
                    &g,
                    &frontend(v6, 0),
                    &[lookup(keys, 0, None), load_addr(v6, true, 0)],
                    &frontend(v6, a),
                    &[load_addr(v6, false, data), dport(data + a)],
                    &[Expr::DynsetUpdate {
                        set: map.name(),
                        sreg_key: reg(0),
                        sreg_data: reg(data),
                        timeout_ms: u64::from(timeout) * 1000,
                    }],
                ]))
            };
            rules.push(remember(
                SetId::AffinityKeys { v6, timeout },
                SetId::Affinity { v6, timeout },
                original_daddr_proto_port,
                2 * a + 2,
            ));
            rules.push(remember(
                SetId::AffinityNodePorts { v6, timeout },
                SetId::AffinityNodePortMap { v6, timeout },
                original_proto_port,
                a + 2,
            ));
        }
        rules
    }
}

/// The two kinds of frontend the nat chains balance, and their sets.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Frontends {
    /// Cluster, external and load-balancer addresses: `daddr . proto . port`.
    Addresses,
    /// Node ports, on any local address: `proto . port`.
    NodePorts,
}

impl Frontends {
    /// The key's expressions, loaded from register word `word`.
    fn key(self, v6: bool, word: u32) -> Vec<Expr> {
        match self {
            Frontends::Addresses => daddr_proto_port(v6, word),
            Frontends::NodePorts => proto_port(word),
        }
    }

    /// Where the endpoint index goes: right after the key.
    fn index_word(self, v6: bool) -> u32 {
        match self {
            Frontends::Addresses => words(v6) + 2,
            Frontends::NodePorts => 2,
        }
    }

    /// Where the frontend goes when it has no endpoints.
    pub(crate) fn reject(self, v6: bool) -> SetId {
        match self {
            Frontends::Addresses => SetId::Reject { v6 },
            Frontends::NodePorts => SetId::NodePortReject { v6 },
        }
    }

    /// Frontends whose new connections record their ClientIP affinity.
    pub(crate) fn affinity_keys(self, v6: bool, timeout: u32) -> SetId {
        match self {
            Frontends::Addresses => SetId::AffinityKeys { v6, timeout },
            Frontends::NodePorts => SetId::AffinityNodePorts { v6, timeout },
        }
    }

    /// Frontends whose affinity hits are masqueraded.
    pub(crate) fn masq(self, v6: bool) -> SetId {
        match self {
            Frontends::Addresses => SetId::Masq { v6 },
            Frontends::NodePorts => SetId::NodePortMasq { v6 },
        }
    }

    fn affinity(self, v6: bool, timeout: u32) -> SetId {
        match self {
            Frontends::Addresses => SetId::Affinity { v6, timeout },
            Frontends::NodePorts => SetId::AffinityNodePortMap { v6, timeout },
        }
    }

    /// The balancing map for `size` endpoints.
    pub(crate) fn lb(self, v6: bool, size: u32, masq: bool) -> SetId {
        match (self, masq) {
            (Frontends::Addresses, false) => SetId::Lb { v6, size },
            (Frontends::Addresses, true) => SetId::LbMasq { v6, size },
            (Frontends::NodePorts, false) => SetId::NodePortLb { v6, size },
            (Frontends::NodePorts, true) => SetId::NodePortLbMasq { v6, size },
        }
    }
}

/// Rules carrying the layout's fingerprint as their comment.
struct RuleMaker {
    comment: String,
}

impl RuleMaker {
    fn rule(&self, exprs: Vec<Expr>) -> Rule {
        Rule {
            exprs,
            comment: self.comment.clone(),
        }
    }
}

/// 32-bit register words an address takes.
fn words(v6: bool) -> u32 {
    if v6 {
        4
    } else {
        1
    }
}

/// The base chains: the hooks into `services` and `service-filter`, and
/// postrouting's masquerade (marked connections, hairpin traffic).
fn base_chains(r: &RuleMaker) -> Vec<ChainDef> {
    let jump = |to: &str| vec![r.rule(vec![Expr::Jump(to.into())])];
    let new_flow_jump = |to: &str| {
        let new = [Expr::CtLoad {
            key: CT_STATE,
            dir: None,
            dreg: reg(0),
        }];
        vec![r.rule(cat(&[
            &new,
            &mask_neq_zero(CT_STATE_NEW),
            &[Expr::Jump(to.into())],
        ]))]
    };
    let base = |name: &str, ty, hook, priority, rules| ChainDef {
        name: name.into(),
        kind: ChainKind::Base { ty, hook, priority },
        rules,
    };
    vec![
        base(
            "nat-prerouting",
            "nat",
            Hook::Prerouting,
            -100,
            jump("services"),
        ),
        base("nat-output", "nat", Hook::Output, -100, jump("services")),
        base(
            "filter-prerouting",
            "filter",
            Hook::Prerouting,
            -99,
            new_flow_jump("service-filter"),
        ),
        base(
            "filter-output",
            "filter",
            Hook::Output,
            -99,
            new_flow_jump("service-filter"),
        ),
        base(
            "nat-postrouting",
            "nat",
            Hook::Postrouting,
            100,
            postrouting_rules(r),
        ),
    ]
}

/// Marked connections are masqueraded (and the mark cleared); so is a pod
/// reaching itself through its service (hairpin).
fn postrouting_rules(r: &RuleMaker) -> Vec<Rule> {
    let mark = || Expr::MetaLoad {
        key: META_MARK,
        dreg: reg(0),
    };
    let clear = Expr::Bitwise {
        reg: reg(0),
        mask: (!MASQ_MARK).to_ne_bytes().to_vec(),
        xor: vec![0; 4],
    };
    let mut rules = vec![r.rule(cat(&[
        &[mark()],
        &mask_neq_zero(MASQ_MARK),
        &[
            mark(),
            clear,
            Expr::MetaSetMark { sreg: reg(0) },
            Expr::Masquerade,
        ],
    ]))];
    for v6 in [false, true] {
        let a = words(v6);
        rules.push(r.rule(cat(&[
            &ct_status_dnat(),
            &nfproto_is(v6),
            &[load_addr(v6, true, 0), load_addr(v6, false, a)],
            &[lookup(SetId::Hairpin { v6 }, 0, None), Expr::Masquerade],
        ])));
    }
    rules
}

/// A new connection to a restricted load-balancer frontend from a source
/// its ranges do not allow (matched on the original destination, which
/// DNAT has rewritten by now).
fn source_not_allowed(v6: bool) -> Vec<Expr> {
    let a = words(v6);
    let mut exprs = original_daddr_proto_port(v6, 0);
    exprs.push(lookup(SetId::SourceRestricted { v6 }, 0, None));
    exprs.push(load_addr(v6, true, a + 2));
    exprs.push(Expr::LookupAbsent {
        set: SetId::SourceAllowed { v6 }.name(),
        sreg: reg(0),
    });
    exprs
}

/// `ct original ip daddr . meta l4proto . ct original proto-dst` from `word`.
fn original_daddr_proto_port(v6: bool, word: u32) -> Vec<Expr> {
    let mut v = vec![ct_original_daddr(v6, word)];
    v.extend(original_proto_port(v6, word + words(v6)));
    v
}

/// `meta l4proto . ct original proto-dst` from `word`.
fn original_proto_port(_v6: bool, word: u32) -> Vec<Expr> {
    vec![
        Expr::MetaLoad {
            key: META_L4PROTO,
            dreg: reg(word),
        },
        ct_original_dport(word + 1),
    ]
}

/// `meta l4proto . th dport` from `word`.
fn proto_port(word: u32) -> Vec<Expr> {
    vec![
        Expr::MetaLoad {
            key: META_L4PROTO,
            dreg: reg(word),
        },
        dport(word + 1),
    ]
}

/// `ip daddr . meta l4proto . th dport` from `word`.
fn daddr_proto_port(v6: bool, word: u32) -> Vec<Expr> {
    let a = if v6 { 4 } else { 1 };
    let mut v = vec![load_addr(v6, false, word)];
    v.extend(proto_port(word + a));
    v
}

fn lookup(set: SetId, sreg: u32, dreg: Option<u32>) -> Expr {
    Expr::Lookup {
        set: set.name(),
        sreg: reg(sreg),
        dreg: dreg.map(reg),
    }
}

fn dnat(v6: bool, addr_word: u32, port_word: u32) -> Expr {
    Expr::Dnat {
        family: if v6 { 10 } else { 2 },
        reg_addr: reg(addr_word),
        reg_proto: reg(port_word),
    }
}

/// `fib daddr type local`
fn local_daddr() -> Vec<Expr> {
    vec![
        Expr::FibDaddrType { dreg: reg(0) },
        Expr::CmpReg(CmpOp::Eq, reg(0), RTN_LOCAL.to_ne_bytes().to_vec()),
    ]
}

/// `meta mark set mark | 0x4000`, computed in register `word` (keeping the others).
fn set_mark(word: u32) -> Vec<Expr> {
    vec![
        Expr::MetaLoad {
            key: META_MARK,
            dreg: reg(word),
        },
        Expr::Bitwise {
            reg: reg(word),
            mask: (!MASQ_MARK).to_ne_bytes().to_vec(),
            xor: MASQ_MARK.to_ne_bytes().to_vec(),
        },
        Expr::MetaSetMark { sreg: reg(word) },
    ]
}

/// `reg 0 & bits != 0` (host-order 32-bit values: mark, ct state, ct status).
fn mask_neq_zero(bits: u32) -> Vec<Expr> {
    vec![
        Expr::Bitwise {
            reg: reg(0),
            mask: bits.to_ne_bytes().to_vec(),
            xor: vec![0; 4],
        },
        Expr::CmpReg(CmpOp::Neq, reg(0), vec![0; 4]),
    ]
}

/// `ct status dnat`
fn ct_status_dnat() -> Vec<Expr> {
    let mut v = vec![Expr::CtLoad {
        key: CT_STATUS,
        dir: None,
        dreg: reg(0),
    }];
    v.extend(mask_neq_zero(IPS_DST_NAT));
    v
}

/// `ct original ip daddr` into `word`.
fn ct_original_daddr(v6: bool, word: u32) -> Expr {
    Expr::CtLoad {
        key: if v6 { CT_DST_IP6 } else { CT_DST_IP },
        dir: Some(0),
        dreg: reg(word),
    }
}

/// `ct original proto-dst` into `word`.
fn ct_original_dport(word: u32) -> Expr {
    Expr::CtLoad {
        key: CT_PROTO_DST,
        dir: Some(0),
        dreg: reg(word),
    }
}

/// `meta l4proto tcp reject with tcp reset`, or `reject with icmpx port-unreachable`.
fn reject(tcp_reset: bool) -> Vec<Expr> {
    if tcp_reset {
        vec![
            Expr::MetaLoad {
                key: META_L4PROTO,
                dreg: reg(0),
            },
            Expr::CmpReg(CmpOp::Eq, reg(0), vec![6]),
            Expr::Reject {
                ty: REJECT_TCP_RST,
                code: 0,
            },
        ]
    } else {
        vec![Expr::Reject {
            ty: REJECT_ICMPX,
            code: ICMPX_PORT_UNREACH,
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affinity_registers_fit_for_ipv6() {
        let mut l = Layout::default();
        l.affinity.insert((true, 10800));
        l.lb.insert((true, 3));
        for chain in l.chains() {
            for r in &chain.rules {
                for e in &r.exprs {
                    let regs: Vec<u32> = match e {
                        Expr::PayloadLoad { dreg, len, .. } => vec![dreg + (len - 1) / 4],
                        Expr::CtLoad { dreg, key, .. } => {
                            vec![dreg + if *key == CT_DST_IP6 { 3 } else { 0 }]
                        }
                        Expr::MetaLoad { dreg, .. } | Expr::NumgenRandom { dreg, .. } => {
                            vec![*dreg]
                        }
                        _ => vec![],
                    };
                    for r in regs {
                        assert!((8..=23).contains(&r), "{} uses register {r}", chain.name);
                    }
                }
            }
        }
    }

    #[test]
    fn fingerprint_follows_the_layout() {
        let a = Layout::default();
        let mut b = Layout::default();
        b.lb.insert((false, 3));
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_eq!(Layout::from_sets(&b.sets()).fingerprint(), b.fingerprint());
    }

    #[test]
    fn key_lengths_match_encodings() {
        let ip: IpAddr = "10.96.0.10".parse().unwrap();
        let key = encode::indexed(encode::service(ip, 6, 80), 2);
        assert_eq!(
            key.len() as u32,
            SetId::Lb { v6: false, size: 3 }.spec().key_len
        );
        let ip6: IpAddr = "fd00::10".parse().unwrap();
        let data = encode::endpoint(ip6, 8080);
        assert_eq!(
            Some(data.len() as u32),
            SetId::Lb { v6: true, size: 3 }.spec().data.map(|d| d.1)
        );
    }
}
