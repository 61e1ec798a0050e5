//! nf_tables over nfnetlink: podnet's own table and its per-network chains.
//!
//! Layout (`nft list table inet podnet`):
//! ```text
//! table inet podnet {
//!   chain forward-NET     { type filter hook forward priority 0; policy accept;
//!                           ip saddr SUBNET accept; ip daddr SUBNET accept }
//!   chain postrouting-NET { type nat hook postrouting priority 100;
//!                           ip saddr SUBNET ip daddr != CLUSTER ... masquerade }
//! }
//! ```
//! Each network's chains are rewritten whole in one batch (create table, create
//! chains, flush them, add rules): all or nothing, and concurrent plugin
//! invocations converge to the same content without a lock or duplicate rules.
//!
//! An `accept` in our table cannot overrule a `drop` policy in someone else's
//! base chain (every base chain on a hook sees the packet), so, as Flannel and
//! Calico do with iptables, [`NftHandle::accept_in_foreign_drop_chains`]
//! inserts a tagged accept rule at the head of every foreign forward chain whose
//! policy is drop (for example `iptables -P FORWARD DROP` under iptables-nft).

use ipnet::IpNet;

use crate::error::Result;
use crate::netlink::codec::{self, MessageBuilder};
use crate::netlink::{NetlinkSocket, Protocol};
use crate::netns::Netns;

/// Name of podnet's own table (family `inet`).
pub const TABLE: &str = "podnet";

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 16;
const NFNL_MSG_BATCH_END: u16 = 17;
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_GETCHAIN: u16 = 4;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_GETRULE: u16 = 7;
const NFT_MSG_DELRULE: u16 = 8;
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_RULE_USERDATA: u16 = 7;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFT_REG_VERDICT: u32 = 0;
const NFT_REG_1: u32 = 1;
const NFT_META_NFPROTO: u32 = 15;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NF_INET_FORWARD: u32 = 2;
const NF_INET_POSTROUTING: u32 = 4;
const NF_ACCEPT: u32 = 1;
const NF_DROP: u32 = 0;
const NFTNL_UDATA_RULE_COMMENT: u8 = 0;

/// nf_tables address families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `inet`: IPv4 and IPv6.
    Inet,
    /// `ip`.
    Ipv4,
    /// `ip6`.
    Ipv6,
}

impl Family {
    fn raw(self) -> u8 {
        match self {
            Family::Inet => libc::NFPROTO_INET as u8,
            Family::Ipv4 => libc::NFPROTO_IPV4 as u8,
            Family::Ipv6 => libc::NFPROTO_IPV6 as u8,
        }
    }

    fn from_raw(raw: u8) -> Option<Self> {
        match raw as i32 {
            libc::NFPROTO_INET => Some(Family::Inet),
            libc::NFPROTO_IPV4 => Some(Family::Ipv4),
            libc::NFPROTO_IPV6 => Some(Family::Ipv6),
            _ => None,
        }
    }
}

/// Comparison operators of the `cmp` expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `==`
    Eq,
    /// `!=`
    Neq,
}

/// One nf_tables expression, as `nft --debug=netlink` prints them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// `[ meta load nfproto => reg 1 ]`
    MetaNfproto,
    /// `[ payload load LEN b @ network header + OFFSET => reg 1 ]`
    Payload {
        /// Offset in the network header.
        offset: u32,
        /// Length in bytes.
        len: u32,
    },
    /// `[ bitwise reg 1 = ( reg 1 & MASK ) ^ 0 ]`
    Mask(Vec<u8>),
    /// `[ cmp OP reg 1 DATA ]`
    Cmp(CmpOp, Vec<u8>),
    /// `[ immediate reg 0 accept ]`
    Accept,
    /// `[ masq ]`
    Masquerade,
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
    let mut out = Vec::new();
    if with_nfproto {
        out.push(Expr::MetaNfproto);
        out.push(Expr::Cmp(CmpOp::Eq, vec![proto as u8]));
    }
    out.push(Expr::Payload { offset, len });
    let (netaddr, mask) = match net {
        IpNet::V4(n) => (n.network().octets().to_vec(), n.netmask().octets().to_vec()),
        IpNet::V6(n) => (n.network().octets().to_vec(), n.netmask().octets().to_vec()),
    };
    if mask.iter().any(|b| *b != 0xff) {
        out.push(Expr::Mask(mask));
    }
    out.push(Expr::Cmp(op, netaddr));
    out
}

fn data_value(m: &mut MessageBuilder, ty: u16, bytes: &[u8]) {
    let n = m.begin_nested(ty);
    m.attr(NFTA_DATA_VALUE, bytes);
    m.end_nested(n);
}

impl Expr {
    fn encode(&self, m: &mut MessageBuilder) {
        let elem = m.begin_nested(NFTA_LIST_ELEM);
        let name = match self {
            Expr::MetaNfproto => "meta",
            Expr::Payload { .. } => "payload",
            Expr::Mask(_) => "bitwise",
            Expr::Cmp(..) => "cmp",
            Expr::Accept => "immediate",
            Expr::Masquerade => "masq",
        };
        m.attr_str(NFTA_EXPR_NAME, name);
        let data = m.begin_nested(NFTA_EXPR_DATA);
        match self {
            Expr::MetaNfproto => {
                m.attr_u32_be(1, NFT_REG_1).attr_u32_be(2, NFT_META_NFPROTO);
            }
            Expr::Payload { offset, len } => {
                m.attr_u32_be(1, NFT_REG_1)
                    .attr_u32_be(2, NFT_PAYLOAD_NETWORK_HEADER)
                    .attr_u32_be(3, *offset)
                    .attr_u32_be(4, *len);
            }
            Expr::Mask(mask) => {
                m.attr_u32_be(1, NFT_REG_1)
                    .attr_u32_be(2, NFT_REG_1)
                    .attr_u32_be(3, mask.len() as u32);
                data_value(m, 4, mask);
                data_value(m, 5, &vec![0u8; mask.len()]);
            }
            Expr::Cmp(op, bytes) => {
                let op = match op {
                    CmpOp::Eq => 0,
                    CmpOp::Neq => 1,
                };
                m.attr_u32_be(1, NFT_REG_1).attr_u32_be(2, op);
                data_value(m, 3, bytes);
            }
            Expr::Accept => {
                m.attr_u32_be(1, NFT_REG_VERDICT);
                let d = m.begin_nested(2);
                let v = m.begin_nested(NFTA_DATA_VERDICT);
                m.attr_u32_be(NFTA_VERDICT_CODE, NF_ACCEPT);
                m.end_nested(v);
                m.end_nested(d);
            }
            Expr::Masquerade => {}
        }
        m.end_nested(data);
        m.end_nested(elem);
    }
}

/// A rule: expressions plus a comment stored as userdata (as iptables-nft does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The expressions, in order.
    pub exprs: Vec<Expr>,
    /// Comment that tags the rule as podnet's.
    pub comment: String,
}

/// The desired content of one network's chains in podnet's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkRuleset {
    /// The CNI network name; chains are `forward-NAME` and `postrouting-NAME`.
    pub network: String,
    /// Rules of the forward chain.
    pub forward: Vec<Rule>,
    /// Rules of the nat postrouting chain.
    pub postrouting: Vec<Rule>,
}

impl NetworkRuleset {
    /// The forward and masquerade rules for pod `subnets` of `network`.
    ///
    /// Traffic from a pod subnet to anything outside `cluster` (and not
    /// multicast) is masqueraded when `masquerade` is set; pod-to-pod never is.
    pub fn for_pods(network: &str, subnets: &[IpNet], cluster: &[IpNet], masquerade: bool) -> Self {
        let tag = format!("podnet:{network}");
        let mut forward = Vec::new();
        let mut postrouting = Vec::new();
        for subnet in subnets {
            for dir in [Direction::Source, Direction::Destination] {
                let mut exprs = match_prefix(subnet, dir, CmpOp::Eq, true);
                exprs.push(Expr::Accept);
                forward.push(Rule {
                    exprs,
                    comment: tag.clone(),
                });
            }
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
        let fingerprint = fnv1a(format!("{forward:?}{postrouting:?}").as_bytes());
        for r in forward.iter_mut().chain(postrouting.iter_mut()) {
            r.comment = format!("{tag} {fingerprint:08x}");
        }
        NetworkRuleset {
            network: network.to_string(),
            forward,
            postrouting,
        }
    }

    fn forward_chain(&self) -> String {
        format!("forward-{}", self.network)
    }

    fn postrouting_chain(&self) -> String {
        format!("postrouting-{}", self.network)
    }
}

/// A `NETLINK_NETFILTER` socket bound to one namespace.
#[derive(Debug)]
pub struct NftHandle {
    sock: NetlinkSocket,
}

fn nfgenmsg(family: u8, res_id: u16) -> [u8; 4] {
    let r = res_id.to_be_bytes();
    [family, 0, r[0], r[1]]
}

fn nft_msg(kind: u16, flags: i32, family: Family) -> MessageBuilder {
    MessageBuilder::new((NFNL_SUBSYS_NFTABLES << 8) | kind, flags as u16)
        .header(&nfgenmsg(family.raw(), 0))
}

fn rule_msg(family: Family, table: &str, chain: &str, rule: &Rule, append: bool) -> MessageBuilder {
    let mut flags = libc::NLM_F_CREATE;
    if append {
        flags |= libc::NLM_F_APPEND;
    }
    let mut m = nft_msg(NFT_MSG_NEWRULE, flags, family);
    m.attr_str(NFTA_RULE_TABLE, table)
        .attr_str(NFTA_RULE_CHAIN, chain);
    let list = m.begin_nested(NFTA_RULE_EXPRESSIONS);
    for e in &rule.exprs {
        e.encode(&mut m);
    }
    m.end_nested(list);
    m.attr(NFTA_RULE_USERDATA, &comment_udata(&rule.comment));
    m
}

fn comment_udata(comment: &str) -> Vec<u8> {
    let mut v = vec![NFTNL_UDATA_RULE_COMMENT, (comment.len() + 1).min(255) as u8];
    v.extend_from_slice(&comment.as_bytes()[..comment.len().min(254)]);
    v.push(0);
    v
}

fn udata_comment(udata: &[u8]) -> Option<String> {
    let mut rest = udata;
    while rest.len() >= 2 {
        let (ty, len) = (rest[0], rest[1] as usize);
        let value = rest.get(2..2 + len)?;
        if ty == NFTNL_UDATA_RULE_COMMENT {
            return Some(codec::attr_string(value));
        }
        rest = &rest[2 + len..];
    }
    None
}

/// A base chain found in the kernel.
#[derive(Debug, Clone)]
struct BaseChain {
    family: Family,
    table: String,
    name: String,
    hook: u32,
    policy: u32,
}

impl NftHandle {
    /// Opens a handle on the caller's namespace.
    pub fn current() -> Result<Self> {
        Ok(NftHandle {
            sock: NetlinkSocket::open(Protocol::Netfilter)?,
        })
    }

    /// Opens a handle bound to `netns`.
    pub fn in_netns(netns: &Netns) -> Result<Self> {
        Ok(NftHandle {
            sock: NetlinkSocket::open_in(netns, Protocol::Netfilter)?,
        })
    }

    /// Makes one network's chains hold `ruleset`; returns whether anything changed.
    ///
    /// When the chains already carry exactly the desired rules (recognised by
    /// their comments, which include a fingerprint of the whole ruleset),
    /// nothing is sent. Otherwise one atomic batch, `nft -f -` with: add table,
    /// add chains, flush chains, add rules.
    ///
    /// Why check first: a batch that replaces rules leaves the old ones for the
    /// kernel to free after an RCU grace period, and closing the socket then
    /// waits for that grace period (10-15 ms here). In steady state every pod
    /// ADD would pay it for rules that did not change.
    pub fn apply_network(&mut self, ruleset: &NetworkRuleset) -> Result<bool> {
        if self.network_is_current(ruleset)? {
            return Ok(false);
        }
        let mut msgs = vec![batch_delimiter(NFNL_MSG_BATCH_BEGIN)];
        let mut t = nft_msg(NFT_MSG_NEWTABLE, libc::NLM_F_CREATE, Family::Inet);
        t.attr_str(NFTA_TABLE_NAME, TABLE);
        msgs.push(t);
        let chains = [
            (
                ruleset.forward_chain(),
                "filter",
                NF_INET_FORWARD,
                0i32,
                &ruleset.forward,
            ),
            (
                ruleset.postrouting_chain(),
                "nat",
                NF_INET_POSTROUTING,
                100,
                &ruleset.postrouting,
            ),
        ];
        for (name, kind, hook, prio, _) in &chains {
            let mut c = nft_msg(NFT_MSG_NEWCHAIN, libc::NLM_F_CREATE, Family::Inet);
            c.attr_str(NFTA_CHAIN_TABLE, TABLE)
                .attr_str(NFTA_CHAIN_NAME, name);
            let h = c.begin_nested(NFTA_CHAIN_HOOK);
            c.attr_u32_be(NFTA_HOOK_HOOKNUM, *hook)
                .attr_u32_be(NFTA_HOOK_PRIORITY, *prio as u32);
            c.end_nested(h);
            c.attr_u32_be(NFTA_CHAIN_POLICY, NF_ACCEPT)
                .attr_str(NFTA_CHAIN_TYPE, kind);
            msgs.push(c);
            let mut flush = nft_msg(NFT_MSG_DELRULE, 0, Family::Inet);
            flush
                .attr_str(NFTA_RULE_TABLE, TABLE)
                .attr_str(NFTA_RULE_CHAIN, name);
            msgs.push(flush);
        }
        for (name, _, _, _, rules) in &chains {
            for r in rules.iter() {
                msgs.push(rule_msg(Family::Inet, TABLE, name, r, true));
            }
        }
        msgs.push(batch_delimiter(NFNL_MSG_BATCH_END));
        self.sock.batch(
            msgs,
            &format!("nft: apply chains of network {}", ruleset.network),
        )?;
        Ok(true)
    }

    fn network_is_current(&mut self, ruleset: &NetworkRuleset) -> Result<bool> {
        let chains = [
            (ruleset.forward_chain(), &ruleset.forward),
            (ruleset.postrouting_chain(), &ruleset.postrouting),
        ];
        for (name, rules) in chains {
            let chain = BaseChain {
                family: Family::Inet,
                table: TABLE.into(),
                name,
                hook: 0,
                policy: 0,
            };
            let have = match self.chain_comments(&chain) {
                Ok(c) => c,
                Err(e) if e.is_not_found() => return Ok(false),
                Err(e) => return Err(e),
            };
            let want: Vec<&String> = rules.iter().map(|r| &r.comment).collect();
            if have.iter().collect::<Vec<_>>() != want {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Inserts `accept` rules for `subnets` at the head of every foreign
    /// forward base chain whose policy is drop, once (tagged `podnet:NETWORK`).
    ///
    /// Returns the chains that were changed, as `family table chain`.
    pub fn accept_in_foreign_drop_chains(
        &mut self,
        network: &str,
        subnets: &[IpNet],
    ) -> Result<Vec<String>> {
        let tag = format!("podnet:{network}");
        let mut changed = Vec::new();
        for chain in self.base_chains()? {
            if chain.table == TABLE || chain.hook != NF_INET_FORWARD || chain.policy != NF_DROP {
                continue;
            }
            if self.chain_comments(&chain)?.iter().any(|c| c == &tag) {
                continue;
            }
            let mut msgs = vec![batch_delimiter(NFNL_MSG_BATCH_BEGIN)];
            for subnet in subnets {
                let fits = match chain.family {
                    Family::Inet => true,
                    Family::Ipv4 => subnet.addr().is_ipv4(),
                    Family::Ipv6 => subnet.addr().is_ipv6(),
                };
                if !fits {
                    continue;
                }
                for dir in [Direction::Destination, Direction::Source] {
                    let mut exprs =
                        match_prefix(subnet, dir, CmpOp::Eq, chain.family == Family::Inet);
                    exprs.push(Expr::Accept);
                    let rule = Rule {
                        exprs,
                        comment: tag.clone(),
                    };
                    msgs.push(rule_msg(
                        chain.family,
                        &chain.table,
                        &chain.name,
                        &rule,
                        false,
                    ));
                }
            }
            if msgs.len() == 1 {
                continue;
            }
            msgs.push(batch_delimiter(NFNL_MSG_BATCH_END));
            let what = format!(
                "{} {} {}",
                format!("{:?}", chain.family).to_lowercase(),
                chain.table,
                chain.name
            );
            self.sock
                .batch(msgs, &format!("nft insert rule {what} accept"))?;
            changed.push(what);
        }
        Ok(changed)
    }

    fn base_chains(&mut self) -> Result<Vec<BaseChain>> {
        let m = MessageBuilder::new(
            (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETCHAIN,
            libc::NLM_F_DUMP as u16,
        )
        .header(&nfgenmsg(libc::NFPROTO_UNSPEC as u8, 0));
        let mut out = Vec::new();
        for p in self.sock.dump(m, "nft list chains")? {
            let Some(family) = p.first().and_then(|f| Family::from_raw(*f)) else {
                continue;
            };
            let attrs = &p[4..];
            let Some(hook) = codec::find_attr(attrs, NFTA_CHAIN_HOOK) else {
                continue;
            };
            let hooknum = codec::find_attr(hook, NFTA_HOOK_HOOKNUM).and_then(be_u32);
            let policy = codec::find_attr(attrs, NFTA_CHAIN_POLICY).and_then(be_u32);
            if let (Some(hook), Some(policy)) = (hooknum, policy) {
                out.push(BaseChain {
                    family,
                    table: codec::find_attr(attrs, NFTA_CHAIN_TABLE)
                        .map(codec::attr_string)
                        .unwrap_or_default(),
                    name: codec::find_attr(attrs, NFTA_CHAIN_NAME)
                        .map(codec::attr_string)
                        .unwrap_or_default(),
                    hook,
                    policy,
                });
            }
        }
        Ok(out)
    }

    fn chain_comments(&mut self, chain: &BaseChain) -> Result<Vec<String>> {
        let mut m = MessageBuilder::new(
            (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETRULE,
            libc::NLM_F_DUMP as u16,
        )
        .header(&nfgenmsg(chain.family.raw(), 0));
        m.attr_str(NFTA_RULE_TABLE, &chain.table)
            .attr_str(NFTA_RULE_CHAIN, &chain.name);
        let rules = self.sock.dump(m, "nft list chain")?;
        Ok(rules
            .iter()
            .filter_map(|p| {
                codec::find_attr(p.get(4..)?, NFTA_RULE_USERDATA).and_then(udata_comment)
            })
            .collect())
    }
}

/// 32-bit FNV-1a: stable across releases, unlike std's hasher.
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, b| {
        (h ^ *b as u32).wrapping_mul(0x0100_0193)
    })
}

fn be_u32(p: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(p.get(0..4)?.try_into().ok()?))
}

fn batch_delimiter(kind: u16) -> MessageBuilder {
    MessageBuilder::new(kind, 0).header(&nfgenmsg(libc::AF_UNSPEC as u8, NFNL_SUBSYS_NFTABLES))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masquerade_rule_excludes_cluster_and_multicast() {
        let subnet: IpNet = "10.244.1.0/24".parse().unwrap();
        let cluster: IpNet = "10.244.0.0/16".parse().unwrap();
        let rs = NetworkRuleset::for_pods("n", &[subnet], &[cluster], true);
        assert_eq!(rs.forward.len(), 2);
        let masq = &rs.postrouting[0].exprs;
        assert_eq!(masq.last(), Some(&Expr::Masquerade));
        let neq: Vec<_> = masq
            .iter()
            .filter(|e| matches!(e, Expr::Cmp(CmpOp::Neq, _)))
            .collect();
        assert_eq!(
            neq,
            vec![
                &Expr::Cmp(CmpOp::Neq, vec![10, 244, 0, 0]),
                &Expr::Cmp(CmpOp::Neq, vec![224, 0, 0, 0])
            ]
        );
        assert!(
            rs.postrouting[0].comment.starts_with("podnet:n "),
            "{}",
            rs.postrouting[0].comment
        );
        let other = NetworkRuleset::for_pods("n", &[subnet], &[], true);
        assert_ne!(
            rs.forward[0].comment, other.forward[0].comment,
            "fingerprint follows the rules"
        );
    }

    #[test]
    fn no_masquerade_rules_when_disabled() {
        let subnet: IpNet = "fd00::/64".parse().unwrap();
        let rs = NetworkRuleset::for_pods("n", &[subnet], &[], false);
        assert!(rs.postrouting.is_empty());
        assert_eq!(rs.forward[0].exprs[2], Expr::Payload { offset: 8, len: 16 });
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
                Expr::Payload { offset: 16, len: 4 },
                Expr::Cmp(CmpOp::Eq, vec![10, 0, 0, 1])
            ]
        );
    }

    #[test]
    fn comment_udata_round_trips() {
        assert_eq!(
            udata_comment(&comment_udata("podnet:x")).as_deref(),
            Some("podnet:x")
        );
    }
}
