//! The rules podnet wants, as data: pure, no I/O, tested without root.

use ipnet::IpNet;

/// Comparison operators of the `cmp` expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `==`
    Eq,
    /// `!=`
    Neq,
}

/// The numbers rules are written with (from `linux/netfilter/nf_tables.h`
/// and its neighbours), for callers that build their own rules.
pub mod consts {
    /// The 32-bit data register `word` (0-15): registers 8-23 address 4-byte
    /// words, and word 0 is the start of what `nft` prints as `reg 1`.
    pub const fn reg(word: u32) -> u32 {
        8 + word
    }
    /// Payload base: the network header.
    pub const PAYLOAD_NETWORK: u32 = 1;
    /// Payload base: the transport header.
    pub const PAYLOAD_TRANSPORT: u32 = 2;
    /// `meta protocol` (the ethertype)
    pub const META_PROTOCOL: u32 = 1;
    /// `meta mark`
    pub const META_MARK: u32 = 3;
    /// `meta iifname` (16 bytes)
    pub const META_IIFNAME: u32 = 6;
    /// `meta nfproto`
    pub const META_NFPROTO: u32 = 15;
    /// `meta nftrace`
    pub const META_NFTRACE: u32 = 12;
    /// `meta l4proto`
    pub const META_L4PROTO: u32 = 16;
    /// `ct state`
    pub const CT_STATE: u32 = 0;
    /// `ct status`
    pub const CT_STATUS: u32 = 2;
    /// `ct mark`
    pub const CT_MARK: u32 = 3;
    /// `ct proto-dst`
    pub const CT_PROTO_DST: u32 = 12;
    /// `ct ip daddr`
    pub const CT_DST_IP: u32 = 20;
    /// `ct ip6 daddr`
    pub const CT_DST_IP6: u32 = 22;
    /// The `ct state new` bit.
    pub const CT_STATE_NEW: u32 = 8;
    /// The `ct state established` bit.
    pub const CT_STATE_ESTABLISHED: u32 = 2;
    /// The `ct state related` bit.
    pub const CT_STATE_RELATED: u32 = 4;
    /// The `ct status dnat` bit.
    pub const IPS_DST_NAT: u32 = 0x20;
    /// `fib ... type local`
    pub const RTN_LOCAL: u32 = 2;
    /// `reject with tcp reset`
    pub const REJECT_TCP_RST: u32 = 1;
    /// `reject with icmpx ...`
    pub const REJECT_ICMPX: u32 = 2;
    /// `icmpx port-unreachable`
    pub const ICMPX_PORT_UNREACH: u8 = 1;
}

/// One nf_tables expression, as `nft --debug=netlink` prints them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// `[ immediate reg 0 accept ]`
    Accept,
    /// `[ masq ]`
    Masquerade,
    /// `[ meta load KEY => reg DREG ]` (`NFT_META_*` key, any register).
    MetaLoad {
        /// `NFT_META_*` key.
        key: u32,
        /// Destination register (32-bit numbering: 8 is the first word of reg 1).
        dreg: u32,
    },
    /// `[ meta set mark with reg SREG ]`
    MetaSetMark {
        /// Source register.
        sreg: u32,
    },
    /// `[ ct set mark with reg SREG ]`: the connection's mark.
    CtSetMark {
        /// Source register.
        sreg: u32,
    },
    /// `[ payload load LEN b @ BASE header + OFFSET => reg DREG ]`
    PayloadLoad {
        /// `NFT_PAYLOAD_*_HEADER` base.
        base: u32,
        /// Offset from the base.
        offset: u32,
        /// Length in bytes.
        len: u32,
        /// Destination register.
        dreg: u32,
    },
    /// `[ bitwise reg REG = ( reg REG & MASK ) ^ XOR ]`
    Bitwise {
        /// Source and destination register.
        reg: u32,
        /// AND mask.
        mask: Vec<u8>,
        /// XOR value, as long as the mask.
        xor: Vec<u8>,
    },
    /// `[ cmp OP reg REG DATA ]`
    CmpReg(CmpOp, u32, Vec<u8>),
    /// `[ ct load KEY => reg DREG (, dir DIR) ]`
    CtLoad {
        /// `NFT_CT_*` key.
        key: u32,
        /// Direction for tuple keys (0 original, 1 reply).
        dir: Option<u8>,
        /// Destination register.
        dreg: u32,
    },
    /// `[ fib daddr type => reg DREG ]` (the address type of the destination).
    FibDaddrType {
        /// Destination register.
        dreg: u32,
    },
    /// `[ numgen reg DREG = random mod MODULUS ]`
    NumgenRandom {
        /// Modulus.
        modulus: u32,
        /// Destination register.
        dreg: u32,
    },
    /// `[ lookup reg SREG set SET (dreg DREG) ]`
    Lookup {
        /// Set name in the rule's table.
        set: String,
        /// First register of the key.
        sreg: u32,
        /// First register of the data, for maps.
        dreg: Option<u32>,
    },
    /// `[ lookup reg SREG set SET 0x1 ]`: matches when the key is *not* in the set.
    LookupAbsent {
        /// Set name in the rule's table.
        set: String,
        /// First register of the key.
        sreg: u32,
    },
    /// `[ dynset update reg_key K set SET sreg_data D timeout T ]`
    DynsetUpdate {
        /// Map name in the rule's table.
        set: String,
        /// First register of the key.
        sreg_key: u32,
        /// First register of the data.
        sreg_data: u32,
        /// Element timeout in milliseconds.
        timeout_ms: u64,
    },
    /// `[ nat dnat FAMILY addr_min reg A proto_min reg P ]`
    Dnat {
        /// `NFPROTO_IPV4` or `NFPROTO_IPV6`.
        family: u32,
        /// Register holding the address.
        reg_addr: u32,
        /// Register holding the port.
        reg_proto: u32,
    },
    /// `[ reject type TYPE code CODE ]`
    Reject {
        /// `NFT_REJECT_*` type.
        ty: u32,
        /// ICMP(x) code.
        code: u8,
    },
    /// `[ immediate reg 0 jump CHAIN ]`
    Jump(String),
    /// `[ immediate reg 0 goto CHAIN ]`: continue there; its `return` goes to our caller.
    Goto(String),
    /// `[ immediate reg 0 return ]`: back to the calling chain.
    Return,
    /// `[ immediate reg 0 drop ]`
    Drop,
    /// `[ counter ]`: packets and bytes that reached it.
    Counter,
    /// `[ immediate reg DREG DATA ]`: a constant into a register.
    Immediate {
        /// Destination register.
        dreg: u32,
        /// The bytes.
        data: Vec<u8>,
    },
    /// `[ meta set KEY with reg SREG ]` (`meta nftrace set 1`, ...).
    MetaSet {
        /// `NFT_META_*` key.
        key: u32,
        /// Source register.
        sreg: u32,
    },
    /// `[ log group GROUP prefix PREFIX ]`: the packet to `NFLOG` listeners of the group.
    Log {
        /// The nfnetlink_log group.
        group: u16,
        /// The prefix the listener receives with it.
        prefix: String,
    },
    /// `[ objref type 1 name NAME ]`: count in the table's named counter `NAME`.
    NamedCounter(String),
    /// `[ objref sreg SREG set SET ]`: count in the named counter that object
    /// map `SET` gives for the key in `SREG` (`counter name ip daddr map @SET`).
    NamedCounterMap {
        /// Register holding the key.
        sreg: u32,
        /// The object map.
        set: String,
    },
}

/// Which address of the IP header a match looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// `ip saddr`
    Source,
    /// `ip daddr`
    Destination,
}

/// Expressions matching `[ip|ip6] saddr|daddr [!=] NET` (with the nfproto guard for inet tables).
pub fn match_prefix(net: &IpNet, dir: Direction, op: CmpOp, with_nfproto: bool) -> Vec<Expr> {
    let (proto, offset, len) = match (net, dir) {
        (IpNet::V4(_), Direction::Source) => (libc::NFPROTO_IPV4, 12, 4),
        (IpNet::V4(_), Direction::Destination) => (libc::NFPROTO_IPV4, 16, 4),
        (IpNet::V6(_), Direction::Source) => (libc::NFPROTO_IPV6, 8, 16),
        (IpNet::V6(_), Direction::Destination) => (libc::NFPROTO_IPV6, 24, 16),
    };
    let r = consts::reg(0);
    let mut out = Vec::new();
    if with_nfproto {
        out.push(Expr::MetaLoad {
            key: consts::META_NFPROTO,
            dreg: r,
        });
        out.push(Expr::CmpReg(CmpOp::Eq, r, vec![proto as u8]));
    }
    out.push(Expr::PayloadLoad {
        base: consts::PAYLOAD_NETWORK,
        offset,
        len,
        dreg: r,
    });
    let (netaddr, mask) = match net {
        IpNet::V4(n) => (n.network().octets().to_vec(), n.netmask().octets().to_vec()),
        IpNet::V6(n) => (n.network().octets().to_vec(), n.netmask().octets().to_vec()),
    };
    if mask.iter().any(|b| *b != 0xff) {
        let xor = vec![0; mask.len()];
        out.push(Expr::Bitwise { reg: r, mask, xor });
    }
    out.push(Expr::CmpReg(op, r, netaddr));
    out
}

/// A rule: expressions plus a comment stored as userdata (as iptables-nft does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The expressions, in order.
    pub exprs: Vec<Expr>,
    /// Comment that tags the rule as podnet's.
    pub comment: String,
}

impl Rule {
    /// The rule as `nft list` prints it (its comment left out): what a plan
    /// is compared with in golden files, without a kernel.
    pub fn render(&self) -> String {
        super::render::render_expressions(&super::wire::rule_expressions(self))
    }
}

/// The desired content of one network's chain in podnet's table.
///
/// Only a masquerade chain: podnet has no forward chain of its own. A base
/// chain whose policy is accept and whose rules all accept changes no
/// verdict (every base chain on a hook sees the packet anyway), yet its hook
/// costs every forwarded packet, about 4% of pod-to-pod throughput here.
/// Where forwarding must be allowed explicitly, a foreign forward chain with
/// a drop policy, podnet inserts its accept rules into that chain
/// ([`super::NftHandle::accept_in_foreign_drop_chains`]). Likewise, without
/// masquerade there is no nat chain at all: an empty one would still register
/// its hook and turn on connection tracking for every packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkRuleset {
    /// The CNI network name; the chain is `postrouting-NAME`.
    pub network: String,
    /// Rules of the nat postrouting chain (none: no chain).
    pub postrouting: Vec<Rule>,
}

impl NetworkRuleset {
    /// The masquerade rules for pod `subnets` of `network`.
    ///
    /// Traffic from a pod subnet to anything outside `cluster` (and not
    /// multicast) is masqueraded when `masquerade` is set; pod-to-pod never is.
    pub fn for_pods(network: &str, subnets: &[IpNet], cluster: &[IpNet], masquerade: bool) -> Self {
        let tag = format!("podnet:{network}");
        let mut postrouting = Vec::new();
        for subnet in subnets {
            if masquerade {
                let mut exprs = match_prefix(subnet, Direction::Source, CmpOp::Eq, true);
                let multicast: IpNet = match subnet {
                    IpNet::V4(_) => "224.0.0.0/4".parse().expect("static prefix"),
                    IpNet::V6(_) => "ff00::/8".parse().expect("static prefix"),
                };
                let excluded = cluster
                    .iter()
                    .filter(|c| c.addr().is_ipv4() == subnet.addr().is_ipv4());
                for net in excluded.chain(std::iter::once(&multicast)) {
                    exprs.extend(match_prefix(net, Direction::Destination, CmpOp::Neq, false));
                }
                exprs.push(Expr::Masquerade);
                postrouting.push(Rule {
                    exprs,
                    comment: tag.clone(),
                });
            }
        }
        // Tag every rule with a fingerprint of the whole ruleset, so that
        // `apply_network` recognises chains that are already up to date.
        let fingerprint = fnv1a(format!("{postrouting:?}").as_bytes());
        for r in postrouting.iter_mut() {
            r.comment = format!("{tag} {fingerprint:08x}");
        }
        NetworkRuleset {
            network: network.to_string(),
            postrouting,
        }
    }

    /// Name of the forward chain earlier podnet versions kept; removed when found.
    pub fn legacy_forward_chain(&self) -> String {
        format!("forward-{}", self.network)
    }

    /// Name of the network's masquerade chain.
    pub fn postrouting_chain(&self) -> String {
        format!("postrouting-{}", self.network)
    }
}

/// 32-bit FNV-1a: stable across releases, unlike std's hasher.
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, b| {
        (h ^ *b as u32).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masquerade_rule_excludes_cluster_and_multicast() {
        let subnet: IpNet = "10.244.1.0/24".parse().unwrap();
        let cluster: IpNet = "10.244.0.0/16".parse().unwrap();
        let rs = NetworkRuleset::for_pods("n", &[subnet], &[cluster], true);
        let masq = &rs.postrouting[0].exprs;
        assert_eq!(masq.last(), Some(&Expr::Masquerade));
        let neq: Vec<_> = masq
            .iter()
            .filter(|e| matches!(e, Expr::CmpReg(CmpOp::Neq, ..)))
            .collect();
        assert_eq!(
            neq,
            vec![
                &Expr::CmpReg(CmpOp::Neq, consts::reg(0), vec![10, 244, 0, 0]),
                &Expr::CmpReg(CmpOp::Neq, consts::reg(0), vec![224, 0, 0, 0])
            ]
        );
        assert!(
            rs.postrouting[0].comment.starts_with("podnet:n "),
            "{}",
            rs.postrouting[0].comment
        );
        let other = NetworkRuleset::for_pods("n", &[subnet], &[], true);
        assert_ne!(
            rs.postrouting[0].comment, other.postrouting[0].comment,
            "fingerprint follows the rules"
        );
    }

    #[test]
    fn no_masquerade_rules_when_disabled() {
        let subnet: IpNet = "fd00::/64".parse().unwrap();
        let rs = NetworkRuleset::for_pods("n", &[subnet], &[], false);
        assert!(rs.postrouting.is_empty());
    }

    #[test]
    fn host_prefix_has_no_mask() {
        let e = match_prefix(
            &"10.0.0.1/32".parse().unwrap(),
            Direction::Destination,
            CmpOp::Eq,
            false,
        );
        assert_eq!(
            e,
            vec![
                Expr::PayloadLoad {
                    base: consts::PAYLOAD_NETWORK,
                    offset: 16,
                    len: 4,
                    dreg: consts::reg(0)
                },
                Expr::CmpReg(CmpOp::Eq, consts::reg(0), vec![10, 0, 0, 1])
            ]
        );
    }
}
