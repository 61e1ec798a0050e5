//! Anti-spoofing: a pod sends only from its own addresses.
//!
//! Each pod's host-side interface and its addresses are elements of sets in
//! a table of its own, `podnet-antispoof`; two fixed chains check every
//! frame or packet a pod sends, before connection tracking:
//!
//! ```text
//! set pod-ifaces   { type ifname }                 # host sides of pod veths
//! set pod-sources4 { type ifname . ipv4_addr }     # interface . its pod's address
//! set pod-sources6 { type ifname . ipv6_addr }
//! chain prerouting { type filter hook prerouting priority -300;
//!                    iifname @pod-ifaces jump pod-source }
//! chain pod-source { iifname . ip saddr @pod-sources4 return
//!                    ip6 saddr fe80::/10 return; ip6 saddr :: return   # neighbour discovery, DAD
//!                    iifname . ip6 saddr @pod-sources6 return
//!                    log group 2700 prefix "podnet-antispoof"; counter name "spoofed"; drop }
//! ```
//! The routed model uses family `inet` (pod packets arrive on their veth).
//! The bridge model uses family `bridge`, where the input interface is the
//! pod's bridge port, and also checks ARP (the sender address, or 0.0.0.0
//! for a probe) and IPv6 neighbour advertisements (the target), so a pod
//! cannot claim another pod's address on the bridge.
//!
//! The plugin adds a pod's elements at ADD (with the table and chains, in
//! one batch); the node agent (or GC) removes those of deleted pods (see
//! [`remove_absent`]). The per-packet cost is one set lookup for frames from
//! pods and one for the rest.

use std::net::IpAddr;

use ipnet::IpNet;
use podnet_kernel::nftables::build::{nfproto_is, ChainDef};
use podnet_kernel::nftables::consts::*;
use podnet_kernel::nftables::{
    datatype, match_prefix, ChainKind, CmpOp, Direction, Expr, Family, Hook, NftHandle, Rule,
    SetElement, SetSpec, Transaction,
};

use crate::attach::Result;
use crate::spec::Model;

/// The anti-spoofing table (family `inet` in the routed model, `bridge` in the bridge model).
pub const TABLE: &str = "podnet-antispoof";
const IFACES: &str = "pod-ifaces";
const SOURCES4: &str = "pod-sources4";
const SOURCES6: &str = "pod-sources6";
/// Rule comment: the table's version, so a stale layout is rewritten.
const COMMENT: &str = "podnet-antispoof v3";
/// The named counter of every packet dropped as spoofed.
pub const COUNTER: &str = "spoofed";
/// The prefix of a spoofed packet's NFLOG message.
pub const LOG_PREFIX: &str = "podnet-antispoof";

fn family(model: Model) -> Family {
    match model {
        Model::Routed => Family::Inet,
        Model::Bridge => Family::Bridge,
    }
}

fn sets() -> [SetSpec; 3] {
    let set = |name: &str, key_type, key_len| SetSpec {
        name: name.into(),
        key_type,
        key_len,
        data: None,
        dynamic: false,
        range_fields: Vec::new(),
        counters: false,
    };
    use datatype::*;
    [
        set(IFACES, IFNAME, 16),
        set(SOURCES4, concat(&[IFNAME, IPV4_ADDR]), 20),
        set(SOURCES6, concat(&[IFNAME, IPV6_ADDR]), 32),
    ]
}

/// An interface name as nft keys hold it: 16 bytes, NUL padded.
fn ifname(name: &str) -> Vec<u8> {
    let mut b = name.as_bytes().to_vec();
    b.resize(16, 0);
    b
}

/// The elements of one pod: its interface, and interface . address for each address.
pub fn pod_elements(iface: &str, addrs: &[IpAddr]) -> Vec<(&'static str, SetElement)> {
    let mut out = vec![(IFACES, SetElement::new(ifname(iface), None))];
    for a in addrs {
        let (set, bytes) = match a {
            IpAddr::V4(v4) => (SOURCES4, v4.octets().to_vec()),
            IpAddr::V6(v6) => (SOURCES6, v6.octets().to_vec()),
        };
        out.push((set, SetElement::new([ifname(iface), bytes].concat(), None)));
    }
    out
}

/// Every element the anti-spoofing sets hold now, as `(set, element)`
/// (none when the table is absent).
pub fn held(nft: &mut NftHandle, model: Model) -> Result<Vec<(&'static str, SetElement)>> {
    let fam = family(model);
    let present = nft.set_names(fam, TABLE)?;
    let mut out = Vec::new();
    for set in [IFACES, SOURCES4, SOURCES6] {
        if present.iter().any(|p| p == set) {
            for e in nft.set_elements(fam, TABLE, set)? {
                out.push((set, e));
            }
        }
    }
    Ok(out)
}

/// An element as `nft` would show it: `pod-sources4 { "pnX" . 10.244.0.2 }`.
pub fn describe(set: &str, e: &SetElement) -> String {
    let name_end = e.key.len().min(16);
    let iface = String::from_utf8_lossy(&e.key[..name_end])
        .trim_end_matches('\0')
        .to_string();
    let addr = match e.key.get(16..) {
        Some(b) if b.len() == 4 => <[u8; 4]>::try_from(b)
            .ok()
            .map(|a| IpAddr::from(a).to_string()),
        Some(b) if b.len() == 16 => <[u8; 16]>::try_from(b)
            .ok()
            .map(|a| IpAddr::from(a).to_string()),
        _ => None,
    };
    match addr {
        Some(a) => format!("element {set} {{ \"{iface}\" . {a} }}"),
        None => format!("element {set} {{ \"{iface}\" }}"),
    }
}

/// Lets `iface` send from `addrs` only: table, sets and chains (when not
/// current) and the pod's elements, in one batch.
pub fn add_pod(nft: &mut NftHandle, model: Model, iface: &str, addrs: &[IpAddr]) -> Result<()> {
    let fam = family(model);
    let want: Vec<String> = chains(model)
        .into_iter()
        .filter(|c| c.name == "pod-source")
        .flat_map(|c| c.rules.into_iter().map(|r| r.comment))
        .collect();
    let current = nft.rule_comments(fam, TABLE, "pod-source")? == want;
    let mut tx = Transaction::new(fam, TABLE);
    for s in sets() {
        tx.add_set(&s);
    }
    tx.add_counter(COUNTER);
    if !current {
        tx.replace_chains(&chains(model), &[]);
    }
    for (set, e) in pod_elements(iface, addrs) {
        tx.add_elements(set, [&e]);
    }
    nft.commit(tx, &format!("nft: anti-spoofing for {iface}"))?;
    Ok(())
}

/// Removes the elements of every interface not in `present` (the pods
/// deleted since); returns how many. Nothing when the table is absent.
///
/// DEL does not remove a pod's elements itself: a commit that deletes leaves
/// the kernel an RCU grace period of freeing, which the next close of an
/// nf_tables socket in the namespace waits for (10-15 ms here), and a
/// one-shot plugin closes its socket at once. The node agent, whose socket
/// lives as long as it does, sweeps after pods go (and GC does without an
/// agent). A vanished interface sends nothing, so its elements allow nothing.
pub fn remove_absent(nft: &mut NftHandle, model: Model, present: &[String]) -> Result<usize> {
    let fam = family(model);
    if nft.set_names(fam, TABLE)?.is_empty() {
        return Ok(0);
    }
    let present: Vec<Vec<u8>> = present.iter().map(|n| ifname(n)).collect();
    let mut tx = Transaction::new(fam, TABLE);
    let mut n = 0;
    for set in [IFACES, SOURCES4, SOURCES6] {
        let gone: Vec<SetElement> = nft
            .set_elements(fam, TABLE, set)?
            .into_iter()
            .filter(|e| !present.iter().any(|p| e.key.starts_with(p)))
            .collect();
        n += gone.len();
        tx.delete_elements(set, &gone);
    }
    if n > 0 {
        nft.commit(tx, "nft: remove anti-spoofing of deleted pods")?;
    }
    Ok(n)
}

fn chains(model: Model) -> Vec<ChainDef> {
    let rules = |exprs: Vec<Vec<Expr>>| {
        exprs
            .into_iter()
            .map(|exprs| Rule {
                comment: describe_rule(&exprs),
                exprs,
            })
            .collect()
    };
    let entry = vec![
        iifname(0),
        lookup(IFACES, 0),
        Expr::Jump("pod-source".into()),
    ];
    let chain = |name: &str, kind, r| ChainDef {
        name: name.into(),
        kind,
        rules: rules(r),
    };
    vec![
        chain("na-target", ChainKind::Regular, na_rules()),
        chain("pod-source", ChainKind::Regular, source_rules(model)),
        chain(
            "prerouting",
            ChainKind::Base {
                ty: "filter",
                hook: Hook::Prerouting,
                priority: -300,
            },
            vec![entry],
        ),
    ]
}

/// The rules of `pod-source`: allowed sources return, the rest is dropped.
fn source_rules(model: Model) -> Vec<Vec<Expr>> {
    let v4 = |guard: Vec<Expr>| {
        [
            guard,
            vec![
                iifname(0),
                payload(PAYLOAD_NETWORK, 12, 4, 4),
                lookup(SOURCES4, 0),
                Expr::Return,
            ],
        ]
        .concat()
    };
    let v6 = |guard: &dyn Fn() -> Vec<Expr>| {
        vec![
            [guard(), prefix_match("fe80::/10"), vec![Expr::Return]].concat(),
            [guard(), prefix_match("::/128"), vec![Expr::Return]].concat(),
            [
                guard(),
                vec![
                    iifname(0),
                    payload(PAYLOAD_NETWORK, 8, 16, 4),
                    lookup(SOURCES6, 0),
                    Expr::Return,
                ],
            ]
            .concat(),
        ]
    };
    match model {
        Model::Routed => {
            let mut rules = vec![v4(nfproto_is(false))];
            rules.extend(v6(&|| nfproto_is(true)));
            rules.push(spoofed());
            rules
        }
        Model::Bridge => {
            let (ip, arp, ip6) = ([0x08, 0x00], [0x08, 0x06], [0x86, 0xdd]);
            let mut rules = vec![v4(ethertype(ip))];
            rules.push(
                [
                    ethertype(arp),
                    vec![
                        payload(PAYLOAD_NETWORK, 14, 4, 0),
                        Expr::CmpReg(CmpOp::Eq, reg(0), vec![0; 4]),
                        Expr::Return,
                    ],
                ]
                .concat(),
            );
            rules.push(
                [
                    ethertype(arp),
                    vec![
                        iifname(0),
                        payload(PAYLOAD_NETWORK, 14, 4, 4),
                        lookup(SOURCES4, 0),
                        Expr::Return,
                    ],
                ]
                .concat(),
            );
            // A neighbour advertisement must name the pod's own address as its target.
            rules.push(
                [
                    ethertype(ip6),
                    neighbour_advert(),
                    vec![Expr::Jump("na-target".into())],
                ]
                .concat(),
            );
            rules.extend(v6(&|| ethertype(ip6)));
            for t in [ip, arp, ip6] {
                rules.push([ethertype(t), spoofed()].concat());
            }
            rules
        }
    }
}

/// `na-target`: the advertised target is the pod's own (or link-local).
fn na_rules() -> Vec<Vec<Expr>> {
    vec![
        vec![
            iifname(0),
            payload(PAYLOAD_TRANSPORT, 8, 16, 4),
            lookup(SOURCES6, 0),
            Expr::Return,
        ],
        {
            let net: IpNet = "fe80::/10".parse().expect("static prefix");
            let mut e = vec![payload(PAYLOAD_TRANSPORT, 8, 16, 0)];
            e.push(Expr::Bitwise {
                reg: reg(0),
                mask: net_mask(&net),
                xor: vec![0; 16],
            });
            e.push(Expr::CmpReg(CmpOp::Eq, reg(0), net_addr(&net)));
            e.push(Expr::Return);
            e
        },
        spoofed(),
    ]
}

/// A rule's comment: the table's version and what the rule does.
fn describe_rule(exprs: &[Expr]) -> String {
    let what = match exprs.last() {
        Some(Expr::Drop) => "a source the pod does not hold: logged, counted, dropped",
        Some(Expr::Return) => "the pod's own address (or neighbour discovery): allowed",
        Some(Expr::Jump(_)) => "a packet from a pod: check its source",
        _ => "anti-spoofing",
    };
    format!("{COMMENT}: {what}")
}

/// A packet from a source its pod does not hold: logged to NFLOG (the
/// agent reads it for `podnet drops`), counted by the rule and in the
/// table's named counter [`COUNTER`], dropped.
fn spoofed() -> Vec<Expr> {
    vec![
        Expr::Log {
            group: podnet_kernel::nflog::DROP_GROUP,
            prefix: LOG_PREFIX.into(),
        },
        Expr::Counter,
        Expr::NamedCounter(COUNTER.into()),
        Expr::Drop,
    ]
}

fn net_mask(n: &IpNet) -> Vec<u8> {
    match n {
        IpNet::V4(n) => n.netmask().octets().to_vec(),
        IpNet::V6(n) => n.netmask().octets().to_vec(),
    }
}

fn net_addr(n: &IpNet) -> Vec<u8> {
    match n {
        IpNet::V4(n) => n.network().octets().to_vec(),
        IpNet::V6(n) => n.network().octets().to_vec(),
    }
}

/// `ip6 saddr NET` (no family guard: the caller's rule has one).
fn prefix_match(net: &str) -> Vec<Expr> {
    let net: IpNet = net.parse().expect("static prefix");
    match_prefix(&net, Direction::Source, CmpOp::Eq, false)
}

/// `icmpv6 type nd-neighbor-advert`.
fn neighbour_advert() -> Vec<Expr> {
    vec![
        Expr::MetaLoad {
            key: META_L4PROTO,
            dreg: reg(0),
        },
        Expr::CmpReg(CmpOp::Eq, reg(0), vec![58]),
        payload(PAYLOAD_TRANSPORT, 0, 1, 0),
        Expr::CmpReg(CmpOp::Eq, reg(0), vec![136]),
    ]
}

fn ethertype(t: [u8; 2]) -> Vec<Expr> {
    vec![
        Expr::MetaLoad {
            key: META_PROTOCOL,
            dreg: reg(0),
        },
        Expr::CmpReg(CmpOp::Eq, reg(0), t.to_vec()),
    ]
}

fn iifname(word: u32) -> Expr {
    Expr::MetaLoad {
        key: META_IIFNAME,
        dreg: reg(word),
    }
}

fn payload(base: u32, offset: u32, len: u32, word: u32) -> Expr {
    Expr::PayloadLoad {
        base,
        offset,
        len,
        dreg: reg(word),
    }
}

fn lookup(set: &str, word: u32) -> Expr {
    Expr::Lookup {
        set: set.into(),
        sreg: reg(word),
        dreg: None,
    }
}

#[cfg(test)]
mod describe_tests {
    use super::*;

    #[test]
    fn elements_read_as_nft_shows_them() {
        let els = pod_elements("pn1", &["10.0.0.2".parse().unwrap()]);
        assert_eq!(
            describe(els[0].0, &els[0].1),
            "element pod-ifaces { \"pn1\" }"
        );
        assert_eq!(
            describe(els[1].0, &els[1].1),
            "element pod-sources4 { \"pn1\" . 10.0.0.2 }"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_elements_key_interface_and_address() {
        let e = pod_elements(
            "pn1234",
            &["10.0.0.5".parse().unwrap(), "fd00::5".parse().unwrap()],
        );
        assert_eq!(e.len(), 3);
        assert_eq!(e[1].0, SOURCES4);
        assert_eq!(e[1].1.key.len(), 20);
        assert_eq!(&e[1].1.key[..6], b"pn1234");
        assert_eq!(&e[1].1.key[16..], &[10, 0, 0, 5]);
        assert_eq!(e[2].1.key.len(), 32);
    }

    #[test]
    fn the_bridge_model_also_checks_arp_and_neighbour_advertisements() {
        assert_eq!(source_rules(Model::Routed).len(), 5);
        assert_eq!(source_rules(Model::Bridge).len(), 10);
    }
}
