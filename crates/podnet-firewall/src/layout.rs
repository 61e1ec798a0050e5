//! The table `inet podnet-policy`: its sets, maps, chains and rules.
//!
//! ## Why this shape
//! A packet's cost must not grow with the number of policies or pods, so a
//! verdict is a handful of set lookups, never a walk over rules. Peers are
//! reduced to *classes*: two addresses that every peer of every policy
//! treats alike (the same selectors match them, the same ipBlocks hold them,
//! their named ports agree) share a class. A class is a number; the sets
//! hold `local pod address . class . protocol . port`.
//!
//! ```text
//! map pod-class4 { ipv4_addr : mark }                           # pod address to class
//! map net-class4 { ipv4_addr . inet_proto : mark; interval }    # ipBlock ranges to class
//! map isolated-in4, isolated-out4 { ipv4_addr : counter }        # local pods some policy isolates, to their denial counter
//! set in-class-port4 { ipv4_addr . mark . inet_proto . inet_service }   # and -proto, -all, -range
//! set in-any-port4   { ipv4_addr . inet_proto . inet_service }          # peers "anyone"
//! (out-... the same for egress)
//! chain forward { type filter hook forward priority 0;
//!   ct state established,related accept
//!   ip saddr @isolated-out4 jump egress4
//!   ip daddr @isolated-in4 jump ingress4 }
//! chain ingress4 {
//!   ct mark set ip saddr map @pod-class4 goto ingress4-class
//!   ct mark set ip saddr . meta l4proto map @net-class4 goto ingress4-class
//!   goto ingress4-any }
//! chain ingress4-class {
//!   ip daddr . ct mark . meta l4proto . th dport @in-class-port4 return
//!   ...; goto ingress4-any }
//! chain ingress4-any { ip daddr . meta l4proto . th dport @in-any-port4 return; ...
//!   log group 2700 prefix "podnet-policy in4"; counter name ip daddr map @isolated-in4; drop }
//! ```
//! `return` means allowed: it goes back to `forward`, which checks the other
//! direction next. Only sets in use exist, and only rules for sets in use; a
//! node with no isolated pod has no table at all, so its packets pay nothing.
//! Established flows cost one conntrack state test. The same exists for IPv6
//! (`...6`). Every rule carries a fingerprint of the layout as its comment,
//! so a sync sees at once whether the chains are current.

use std::collections::BTreeSet;

use podnet_kernel::nftables::build::{
    cat, ct_state_any, dport, l4proto, load_addr, nfproto_is, ChainDef,
};
use podnet_kernel::nftables::consts::*;
use podnet_kernel::nftables::{datatype, ChainKind, Expr, Hook, Rule, SetSpec};

/// The firewall's table (family `inet`).
pub const TABLE: &str = "podnet-policy";

/// Traffic to local pods, or from them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dir {
    /// To local pods: the peer is the source.
    In,
    /// From local pods: the peer is the destination.
    Out,
}

impl Dir {
    /// `ingress` or `egress`, as NetworkPolicy says.
    fn policy_word(self) -> &'static str {
        match self {
            Dir::In => "ingress",
            Dir::Out => "egress",
        }
    }

    fn word(self) -> &'static str {
        match self {
            Dir::In => "in",
            Dir::Out => "out",
        }
    }
}

/// Which peers an allow set is keyed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PeerKey {
    /// A class: pods and ipBlock ranges that the policies treat alike.
    Class,
    /// Any address.
    Any,
}

/// Which ports an allow set is keyed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PortKey {
    /// Every protocol and port.
    All,
    /// Every port of one protocol.
    Proto,
    /// One protocol and port.
    Port,
    /// One protocol and a port range (`endPort`).
    Range,
}

/// One set or map of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SetId {
    /// Pod address to class.
    PodClass {
        /// IPv6 or IPv4.
        v6: bool,
    },
    /// ipBlock ranges (`address . protocol`, protocol always 0-255) to class.
    NetClass {
        /// IPv6 or IPv4.
        v6: bool,
    },
    /// Local pod addresses isolated for a direction.
    Isolated {
        /// Direction.
        dir: Dir,
        /// IPv6 or IPv4.
        v6: bool,
    },
    /// What is allowed: `local address [. class] [. protocol [. port]]`.
    Allow {
        /// Direction.
        dir: Dir,
        /// Keyed by class, or for any peer.
        peer: PeerKey,
        /// Which ports.
        ports: PortKey,
        /// IPv6 or IPv4.
        v6: bool,
    },
}

fn fam(v6: bool) -> u8 {
    if v6 {
        6
    } else {
        4
    }
}

/// Length in bytes of an address of the family.
pub fn addr_len(v6: bool) -> u32 {
    if v6 {
        16
    } else {
        4
    }
}

impl SetId {
    /// The set's name in the table.
    pub fn name(&self) -> String {
        match *self {
            SetId::PodClass { v6 } => format!("pod-class{}", fam(v6)),
            SetId::NetClass { v6 } => format!("net-class{}", fam(v6)),
            SetId::Isolated { dir, v6 } => format!("isolated-{}{}", dir.word(), fam(v6)),
            SetId::Allow {
                dir,
                peer,
                ports,
                v6,
            } => {
                let p = match peer {
                    PeerKey::Class => "class",
                    PeerKey::Any => "any",
                };
                let k = match ports {
                    PortKey::All => "all",
                    PortKey::Proto => "proto",
                    PortKey::Port => "port",
                    PortKey::Range => "range",
                };
                format!("{}-{p}-{k}{}", dir.word(), fam(v6))
            }
        }
    }

    /// Whether the set holds IPv6 addresses.
    pub fn v6(&self) -> bool {
        match *self {
            SetId::PodClass { v6 }
            | SetId::NetClass { v6 }
            | SetId::Isolated { v6, .. }
            | SetId::Allow { v6, .. } => v6,
        }
    }

    /// Its definition.
    pub fn spec(&self) -> SetSpec {
        use datatype::*;
        let v6 = self.v6();
        let addr_t = if v6 { IPV6_ADDR } else { IPV4_ADDR };
        let a = addr_len(v6);
        let mut spec = SetSpec {
            name: self.name(),
            key_type: addr_t,
            key_len: a,
            data: None,
            dynamic: false,
            range_fields: Vec::new(),
            counters: false,
        };
        match *self {
            SetId::PodClass { .. } => spec.data = Some((MARK, 4)),
            SetId::NetClass { .. } => {
                spec.key_type = concat(&[addr_t, INET_PROTO]);
                spec.key_len = a + 4;
                spec.data = Some((MARK, 4));
                spec.range_fields = vec![a, 1];
            }
            // Each isolated address names its denial counter.
            SetId::Isolated { .. } => spec.counters = true,
            SetId::Allow { peer, ports, .. } => {
                let mut types = vec![addr_t];
                let mut fields = vec![a];
                if peer == PeerKey::Class {
                    types.push(MARK);
                    fields.push(4);
                }
                if ports != PortKey::All {
                    types.push(INET_PROTO);
                    fields.push(1);
                }
                if matches!(ports, PortKey::Port | PortKey::Range) {
                    types.push(INET_SERVICE);
                    fields.push(2);
                }
                spec.key_type = concat(&types);
                spec.key_len = fields.iter().map(|f| f.div_ceil(4) * 4).sum();
                if ports == PortKey::Range {
                    spec.range_fields = fields;
                }
            }
        }
        spec
    }
}

/// The sets in use, from which the chains follow.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Layout {
    /// Every set that holds elements.
    pub sets: BTreeSet<SetId>,
}

impl Layout {
    /// Whether the table is needed at all: some local pod is isolated.
    pub fn is_empty(&self) -> bool {
        !self
            .sets
            .iter()
            .any(|s| matches!(s, SetId::Isolated { .. }))
    }

    /// Names of the chains this layout has.
    pub fn chain_names(&self) -> Vec<String> {
        if self.is_empty() {
            return Vec::new();
        }
        self.chains().into_iter().map(|c| c.name).collect()
    }

    /// The prefix of every rule's comment: a fingerprint of the layout and
    /// rule version (`podnet-policy HASH: what the rule does`).
    pub fn fingerprint(&self) -> String {
        let text = format!("v3 {:?}", self.sets);
        let h = podnet_kernel::hash::fnv1a64(text.as_bytes());
        format!("podnet-policy {h:016x}")
    }

    /// Every chain with its rules, regular chains first (base chains jump to them).
    pub fn chains(&self) -> Vec<ChainDef> {
        let c = self.fingerprint();
        let rule = |exprs: Vec<Expr>, what: &str| Rule {
            exprs,
            comment: format!("{c}: {what}"),
        };
        let mut out = Vec::new();
        let mut forward = vec![rule(
            cat(&[
                &ct_state_any(CT_STATE_ESTABLISHED | CT_STATE_RELATED),
                &[Expr::Accept],
            ]),
            "flows already allowed go on",
        )];
        for v6 in [false, true] {
            for dir in [Dir::Out, Dir::In] {
                if !self.sets.contains(&SetId::Isolated { dir, v6 }) {
                    continue;
                }
                let name = side_chain(dir, v6, "");
                let what = format!("a pod isolated for {}: check {name}", dir.policy_word());
                forward.push(rule(
                    cat(&[
                        &nfproto_is(v6),
                        &[load_addr(v6, dir == Dir::Out, 0)],
                        &[lookup(SetId::Isolated { dir, v6 }, 0, None)],
                        &[Expr::Jump(name)],
                    ]),
                    &what,
                ));
                out.extend(self.side_chains(dir, v6, &rule));
            }
        }
        out.push(ChainDef {
            name: "forward".into(),
            kind: ChainKind::Base {
                ty: "filter",
                hook: Hook::Forward,
                priority: 0,
            },
            rules: forward,
        });
        out
    }

    /// `ingress4` (the peer's class), `ingress4-class` (allow sets keyed by
    /// class) and `ingress4-any` (allow sets for any peer), or egress.
    ///
    /// The class travels from its lookup to the allow lookups in the
    /// connection's mark: a register would do (the kernel keeps registers
    /// across a goto) if the kernel did not refuse rules that read registers
    /// they did not write, and `nft` cannot print a map lookup inside a
    /// concatenation. Only new connections of isolated pods get here.
    fn side_chains(
        &self,
        dir: Dir,
        v6: bool,
        rule: &dyn Fn(Vec<Expr>, &str) -> Rule,
    ) -> Vec<ChainDef> {
        let any_chain = side_chain(dir, v6, "-any");
        let class_chain = side_chain(dir, v6, "-class");
        let mut entry_rules = Vec::new();
        for (map, peer) in [
            (SetId::PodClass { v6 }, "a pod"),
            (SetId::NetClass { v6 }, "an ipBlock"),
        ] {
            if self.sets.contains(&map) {
                let mut exprs = class_into_ct_mark(map, dir);
                exprs.push(Expr::Goto(class_chain.clone()));
                entry_rules.push(rule(exprs, &format!("the peer's class: {peer}")));
            }
        }
        let no_class = "rules for any peer";
        entry_rules.push(rule(vec![Expr::Goto(any_chain.clone())], no_class));
        let allowed = |set: SetId| rule(allow_rule(set), &format!("allowed by @{}", set.name()));
        let mut class_rules: Vec<Rule> = self
            .allow_sets(dir, v6, PeerKey::Class)
            .map(allowed)
            .collect();
        class_rules.push(rule(vec![Expr::Goto(any_chain.clone())], no_class));
        let mut any_rules: Vec<Rule> = self
            .allow_sets(dir, v6, PeerKey::Any)
            .map(allowed)
            .collect();
        any_rules.push(rule(
            deny_rule(dir, v6),
            "no policy allows it: default deny, logged and counted per pod",
        ));
        vec![
            regular(any_chain, any_rules),
            regular(class_chain, class_rules),
            regular(side_chain(dir, v6, ""), entry_rules),
        ]
    }

    /// The allow sets in use for one direction, family and peer key, most specific first.
    fn allow_sets(&self, dir: Dir, v6: bool, peer: PeerKey) -> impl Iterator<Item = SetId> + '_ {
        [PortKey::Port, PortKey::Proto, PortKey::All, PortKey::Range]
            .into_iter()
            .map(move |ports| SetId::Allow {
                dir,
                peer,
                ports,
                v6,
            })
            .filter(|s| self.sets.contains(s))
    }
}

fn regular(name: String, rules: Vec<Rule>) -> ChainDef {
    ChainDef {
        name,
        kind: ChainKind::Regular,
        rules,
    }
}

/// `ct mark set ip saddr map @pod-class4` (or `ip saddr . meta l4proto map
/// @net-class4`; `daddr` for egress). A peer the map does not know stops the rule.
fn class_into_ct_mark(map: SetId, dir: Dir) -> Vec<Expr> {
    let v6 = map.v6();
    let a = addr_len(v6) / 4;
    let (peer, data) = (8, 0);
    let mut exprs = vec![load_addr(v6, dir == Dir::In, peer)];
    if matches!(map, SetId::NetClass { .. }) {
        exprs.push(l4proto(peer + a));
    }
    exprs.push(lookup(map, peer, Some(data)));
    exprs.push(Expr::CtSetMark { sreg: reg(data) });
    exprs
}

/// `local [. ct mark] [. l4proto [. th dport]] @set return`.
fn allow_rule(set: SetId) -> Vec<Expr> {
    let SetId::Allow {
        dir,
        peer,
        ports,
        v6,
    } = set
    else {
        return Vec::new();
    };
    let mut exprs = vec![load_addr(v6, dir == Dir::Out, 0)];
    let mut next = addr_len(v6) / 4;
    if peer == PeerKey::Class {
        exprs.push(Expr::CtLoad {
            key: CT_MARK,
            dir: None,
            dreg: reg(next),
        });
        next += 1;
    }
    if ports != PortKey::All {
        exprs.push(l4proto(next));
        next += 1;
    }
    if matches!(ports, PortKey::Port | PortKey::Range) {
        exprs.push(dport(next));
    }
    exprs.push(lookup(set, 0, None));
    exprs.push(Expr::Return);
    exprs
}

/// `ingress4`, `egress6-class`, ...
pub fn side_chain(dir: Dir, v6: bool, suffix: &str) -> String {
    let side = match dir {
        Dir::In => "ingress",
        Dir::Out => "egress",
    };
    format!("{side}{}{suffix}", fam(v6))
}

/// The prefix of a denial's NFLOG message: `podnet-policy in4`, `podnet-policy out6`.
pub fn log_prefix(dir: Dir, v6: bool) -> String {
    format!("{TABLE} {}{}", dir.word(), fam(v6))
}

/// The named counter of the denials of one local pod address in one direction.
pub fn counter_name(dir: Dir, ip: std::net::IpAddr) -> String {
    format!("denied-{}-{ip}", dir.word())
}

/// The last rule of `ingress4-any` (and the others): nothing allowed the
/// packet. It is logged to NFLOG (the agent reads it for `podnet drops`),
/// counted in the local pod's named counter, and dropped.
fn deny_rule(dir: Dir, v6: bool) -> Vec<Expr> {
    vec![
        Expr::Log {
            group: podnet_kernel::nflog::DROP_GROUP,
            prefix: log_prefix(dir, v6),
        },
        load_addr(v6, dir == Dir::Out, 0),
        Expr::NamedCounterMap {
            sreg: reg(0),
            set: SetId::Isolated { dir, v6 }.name(),
        },
        Expr::Drop,
    ]
}

fn lookup(set: SetId, sreg: u32, dreg: Option<u32>) -> Expr {
    Expr::Lookup {
        set: set.name(),
        sreg: reg(sreg),
        dreg: dreg.map(reg),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_sets() -> Layout {
        let mut sets = BTreeSet::new();
        for v6 in [false, true] {
            sets.insert(SetId::PodClass { v6 });
            sets.insert(SetId::NetClass { v6 });
            for dir in [Dir::In, Dir::Out] {
                sets.insert(SetId::Isolated { dir, v6 });
                for peer in [PeerKey::Class, PeerKey::Any] {
                    for ports in [PortKey::All, PortKey::Proto, PortKey::Port, PortKey::Range] {
                        sets.insert(SetId::Allow {
                            dir,
                            peer,
                            ports,
                            v6,
                        });
                    }
                }
            }
        }
        Layout { sets }
    }

    #[test]
    fn registers_stay_inside_the_sixteen_words() {
        for chain in all_sets().chains() {
            for r in &chain.rules {
                for e in &r.exprs {
                    let last = match e {
                        Expr::PayloadLoad { dreg, len, .. } => dreg + (len - 1) / 4,
                        Expr::MetaLoad { dreg, .. } | Expr::CtLoad { dreg, .. } => *dreg,
                        Expr::Lookup { dreg: Some(d), .. } => *d,
                        _ => reg(0),
                    };
                    assert!(
                        (8..=23).contains(&last),
                        "{} uses register {last}",
                        chain.name
                    );
                }
            }
        }
    }

    #[test]
    fn key_lengths_follow_the_fields() {
        let s = SetId::Allow {
            dir: Dir::In,
            peer: PeerKey::Class,
            ports: PortKey::Range,
            v6: true,
        }
        .spec();
        assert_eq!(s.key_len, 16 + 4 + 4 + 4);
        assert_eq!(s.range_fields, vec![16, 4, 1, 2]);
        assert_eq!(s.name, "in-class-range6");
    }

    #[test]
    fn no_isolated_pod_no_table_and_rules_only_for_sets_in_use() {
        assert!(Layout::default().is_empty());
        let mut l = Layout::default();
        l.sets.insert(SetId::Isolated {
            dir: Dir::In,
            v6: false,
        });
        assert!(!l.is_empty());
        let chains = l.chains();
        let names: Vec<&str> = chains.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            ["ingress4-any", "ingress4-class", "ingress4", "forward"]
        );
        assert_eq!(chains[0].rules.len(), 1, "only the drop");
        assert_eq!(
            chains[3].rules.len(),
            2,
            "established, then the ingress jump"
        );
    }
}
