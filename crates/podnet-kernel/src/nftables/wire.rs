//! nf_tables wire format: message kinds, attributes, expression encoding, rule comments.

use crate::netlink::codec::{self, MessageBuilder};

use super::ruleset::{consts, CmpOp, Expr, Rule};

pub(super) const NFNL_SUBSYS_NFTABLES: u16 = 10;
pub(super) const NFNL_MSG_BATCH_BEGIN: u16 = 16;
pub(super) const NFNL_MSG_BATCH_END: u16 = 17;
pub(super) const NFT_MSG_NEWTABLE: u16 = 0;
pub(super) const NFT_MSG_GETTABLE: u16 = 1;
pub(super) const NFT_OBJECT_COUNTER: u32 = 1;
pub(super) const NFT_MSG_NEWOBJ: u16 = 18;
pub(super) const NFT_MSG_GETOBJ: u16 = 19;
pub(super) const NFT_MSG_DELOBJ: u16 = 20;
pub(super) const NFTA_OBJ_TABLE: u16 = 1;
pub(super) const NFTA_OBJ_NAME: u16 = 2;
pub(super) const NFTA_OBJ_TYPE: u16 = 3;
pub(super) const NFTA_OBJ_DATA: u16 = 4;
pub(super) const NFTA_COUNTER_BYTES: u16 = 1;
pub(super) const NFTA_COUNTER_PACKETS: u16 = 2;
pub(super) const NFTA_SET_OBJ_TYPE: u16 = 15;
pub(super) const NFTA_SET_ELEM_OBJREF: u16 = 9;
pub(super) const NFT_MSG_NEWCHAIN: u16 = 3;
pub(super) const NFT_MSG_GETCHAIN: u16 = 4;
pub(super) const NFT_MSG_DELCHAIN: u16 = 5;
pub(super) const NFT_MSG_NEWRULE: u16 = 6;
pub(super) const NFT_MSG_GETRULE: u16 = 7;
pub(super) const NFT_MSG_DELRULE: u16 = 8;
pub(super) const NFTA_TABLE_NAME: u16 = 1;
pub(super) const NFTA_CHAIN_TABLE: u16 = 1;
pub(super) const NFTA_CHAIN_NAME: u16 = 3;
pub(super) const NFTA_CHAIN_HOOK: u16 = 4;
pub(super) const NFTA_CHAIN_POLICY: u16 = 5;
pub(super) const NFTA_CHAIN_TYPE: u16 = 7;
pub(super) const NFTA_HOOK_HOOKNUM: u16 = 1;
pub(super) const NFTA_HOOK_PRIORITY: u16 = 2;
pub(super) const NFTA_RULE_TABLE: u16 = 1;
pub(super) const NFTA_RULE_CHAIN: u16 = 2;
pub(super) const NFTA_RULE_EXPRESSIONS: u16 = 4;
pub(super) const NFTA_RULE_USERDATA: u16 = 7;
pub(super) const NFTA_LIST_ELEM: u16 = 1;
pub(super) const NFTA_EXPR_NAME: u16 = 1;
pub(super) const NFTA_EXPR_DATA: u16 = 2;
pub(super) const NFTA_DATA_VALUE: u16 = 1;
pub(super) const NFTA_DATA_VERDICT: u16 = 2;
pub(super) const NFTA_VERDICT_CODE: u16 = 1;
pub(super) const NFT_REG_VERDICT: u32 = 0;
pub(super) const NF_INET_FORWARD: u32 = 2;
pub(super) const NF_INET_POSTROUTING: u32 = 4;
pub(super) const NF_ACCEPT: u32 = 1;
pub(super) const NF_DROP: u32 = 0;
pub(super) const NFTNL_UDATA_RULE_COMMENT: u8 = 0;
pub(super) const NFT_MSG_DELTABLE: u16 = 2;
pub(super) const NFT_MSG_NEWSET: u16 = 9;
pub(super) const NFT_MSG_GETSET: u16 = 10;
pub(super) const NFT_MSG_DELSET: u16 = 11;
pub(super) const NFT_MSG_NEWSETELEM: u16 = 12;
pub(super) const NFT_MSG_GETSETELEM: u16 = 13;
pub(super) const NFT_MSG_DELSETELEM: u16 = 14;
pub(super) const NFT_MSG_NEWGEN: u16 = 15;
pub(super) const NFTA_VERDICT_CHAIN: u16 = 2;
pub(super) const NFT_JUMP: i32 = -3;
pub(super) const NFT_GOTO: i32 = -4;
pub(super) const NFT_RETURN: i32 = -5;
pub(super) const NFT_LOOKUP_F_INV: u32 = 1;
pub(super) const NFTA_SET_DESC: u16 = 9;
pub(super) const NFTA_SET_DESC_CONCAT: u16 = 2;
pub(super) const NFTA_SET_FIELD_LEN: u16 = 1;
pub(super) const NFTA_SET_ELEM_KEY_END: u16 = 10;
pub(super) const NFTA_SET_USERDATA: u16 = 13;
pub(super) const NFTNL_UDATA_SET_KEYBYTEORDER: u8 = 0;
pub(super) const NFT_FIB_RESULT_ADDRTYPE: u32 = 3;
pub(super) const NFTA_FIB_F_DADDR: u32 = 2;
pub(super) const NFT_NG_RANDOM: u32 = 1;
pub(super) const NFT_DYNSET_OP_UPDATE: u32 = 1;
pub(super) const NFT_NAT_DNAT: u32 = 1;
pub(super) const NFTA_SET_TABLE: u16 = 1;
pub(super) const NFTA_SET_NAME: u16 = 2;
pub(super) const NFTA_SET_FLAGS: u16 = 3;
pub(super) const NFTA_SET_KEY_TYPE: u16 = 4;
pub(super) const NFTA_SET_KEY_LEN: u16 = 5;
pub(super) const NFTA_SET_DATA_TYPE: u16 = 6;
pub(super) const NFTA_SET_DATA_LEN: u16 = 7;
pub(super) const NFTA_SET_ID: u16 = 10;
pub(super) const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
pub(super) const NFTA_SET_ELEM_LIST_SET: u16 = 2;
pub(super) const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
pub(super) const NFTA_SET_ELEM_KEY: u16 = 1;
pub(super) const NFTA_SET_ELEM_DATA: u16 = 2;

/// nf_tables address families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `inet`: IPv4 and IPv6.
    Inet,
    /// `ip`.
    Ipv4,
    /// `ip6`.
    Ipv6,
    /// `bridge`: frames crossing a Linux bridge.
    Bridge,
}

impl Family {
    /// The `nfgenmsg` family byte.
    pub(super) fn raw(self) -> u8 {
        match self {
            Family::Inet => libc::NFPROTO_INET as u8,
            Family::Ipv4 => libc::NFPROTO_IPV4 as u8,
            Family::Ipv6 => libc::NFPROTO_IPV6 as u8,
            Family::Bridge => libc::NFPROTO_BRIDGE as u8,
        }
    }

    /// The family as `nft` names it (`inet`, `ip`, `ip6`, `bridge`).
    pub fn nft_name(self) -> &'static str {
        match self {
            Family::Inet => "inet",
            Family::Ipv4 => "ip",
            Family::Ipv6 => "ip6",
            Family::Bridge => "bridge",
        }
    }

    /// The family of an `nfgenmsg` family byte.
    pub(super) fn from_raw(raw: u8) -> Option<Self> {
        match raw as i32 {
            libc::NFPROTO_INET => Some(Family::Inet),
            libc::NFPROTO_IPV4 => Some(Family::Ipv4),
            libc::NFPROTO_IPV6 => Some(Family::Ipv6),
            libc::NFPROTO_BRIDGE => Some(Family::Bridge),
            _ => None,
        }
    }
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
            Expr::Accept | Expr::Return | Expr::Drop => "immediate",
            Expr::LookupAbsent { .. } => "lookup",
            Expr::Counter => "counter",
            Expr::Masquerade => "masq",
            Expr::MetaLoad { .. } | Expr::MetaSetMark { .. } => "meta",
            Expr::PayloadLoad { .. } => "payload",
            Expr::Bitwise { .. } => "bitwise",
            Expr::CmpReg(..) => "cmp",
            Expr::CtLoad { .. } | Expr::CtSetMark { .. } => "ct",
            Expr::FibDaddrType { .. } => "fib",
            Expr::NumgenRandom { .. } => "numgen",
            Expr::Lookup { .. } => "lookup",
            Expr::DynsetUpdate { .. } => "dynset",
            Expr::Dnat { .. } => "nat",
            Expr::Reject { .. } => "reject",
            Expr::Jump(_) | Expr::Goto(_) | Expr::Immediate { .. } => "immediate",
            Expr::MetaSet { .. } => "meta",
            Expr::Log { .. } => "log",
            Expr::NamedCounter(_) | Expr::NamedCounterMap { .. } => "objref",
        };
        m.attr_str(NFTA_EXPR_NAME, name);
        let data = m.begin_nested(NFTA_EXPR_DATA);
        match self {
            Expr::Accept => verdict(m, NF_ACCEPT),
            Expr::Drop => verdict(m, NF_DROP),
            Expr::Return => verdict(m, NFT_RETURN as u32),
            Expr::Counter => {}
            Expr::LookupAbsent { set, sreg } => {
                m.attr_str(1, set)
                    .attr_u32_be(2, *sreg)
                    .attr_u32_be(5, NFT_LOOKUP_F_INV);
            }
            Expr::Masquerade => {}
            Expr::MetaLoad { key, dreg } => {
                m.attr_u32_be(1, *dreg).attr_u32_be(2, *key);
            }
            Expr::MetaSetMark { sreg } => {
                m.attr_u32_be(2, consts::META_MARK).attr_u32_be(3, *sreg);
            }
            Expr::PayloadLoad {
                base,
                offset,
                len,
                dreg,
            } => {
                m.attr_u32_be(1, *dreg)
                    .attr_u32_be(2, *base)
                    .attr_u32_be(3, *offset)
                    .attr_u32_be(4, *len);
            }
            Expr::Bitwise { reg, mask, xor } => {
                m.attr_u32_be(1, *reg)
                    .attr_u32_be(2, *reg)
                    .attr_u32_be(3, mask.len() as u32);
                data_value(m, 4, mask);
                data_value(m, 5, xor);
            }
            Expr::CmpReg(op, reg, bytes) => {
                let op = match op {
                    CmpOp::Eq => 0,
                    CmpOp::Neq => 1,
                };
                m.attr_u32_be(1, *reg).attr_u32_be(2, op);
                data_value(m, 3, bytes);
            }
            Expr::CtSetMark { sreg } => {
                m.attr_u32_be(2, consts::CT_MARK).attr_u32_be(4, *sreg);
            }
            Expr::CtLoad { key, dir, dreg } => {
                m.attr_u32_be(1, *dreg).attr_u32_be(2, *key);
                if let Some(d) = dir {
                    m.attr(3, &[*d]);
                }
            }
            Expr::FibDaddrType { dreg } => {
                m.attr_u32_be(1, *dreg)
                    .attr_u32_be(2, NFT_FIB_RESULT_ADDRTYPE)
                    .attr_u32_be(3, NFTA_FIB_F_DADDR);
            }
            Expr::NumgenRandom { modulus, dreg } => {
                m.attr_u32_be(1, *dreg)
                    .attr_u32_be(2, *modulus)
                    .attr_u32_be(3, NFT_NG_RANDOM);
            }
            Expr::Lookup { set, sreg, dreg } => {
                m.attr_str(1, set).attr_u32_be(2, *sreg);
                if let Some(d) = dreg {
                    m.attr_u32_be(3, *d);
                }
            }
            Expr::DynsetUpdate {
                set,
                sreg_key,
                sreg_data,
                timeout_ms,
            } => {
                m.attr_str(1, set)
                    .attr_u32_be(3, NFT_DYNSET_OP_UPDATE)
                    .attr_u32_be(4, *sreg_key)
                    .attr_u32_be(5, *sreg_data)
                    .attr(6, &timeout_ms.to_be_bytes());
            }
            Expr::Dnat {
                family,
                reg_addr,
                reg_proto,
            } => {
                m.attr_u32_be(1, NFT_NAT_DNAT)
                    .attr_u32_be(2, *family)
                    .attr_u32_be(3, *reg_addr)
                    .attr_u32_be(5, *reg_proto);
            }
            Expr::Reject { ty, code } => {
                m.attr_u32_be(1, *ty).attr(2, &[*code]);
            }
            Expr::Immediate { dreg, data } => {
                m.attr_u32_be(1, *dreg);
                data_value(m, 2, data);
            }
            Expr::MetaSet { key, sreg } => {
                m.attr_u32_be(2, *key).attr_u32_be(3, *sreg);
            }
            Expr::Log { group, prefix } => {
                m.attr(1, &group.to_be_bytes()).attr_str(2, prefix);
            }
            Expr::NamedCounter(name) => {
                m.attr_u32_be(1, NFT_OBJECT_COUNTER).attr_str(2, name);
            }
            Expr::NamedCounterMap { sreg, set } => {
                m.attr_u32_be(3, *sreg).attr_str(4, set);
            }
            Expr::Jump(chain) => chain_verdict(m, NFT_JUMP, chain),
            Expr::Goto(chain) => chain_verdict(m, NFT_GOTO, chain),
        }
        m.end_nested(data);
        m.end_nested(elem);
    }
}

/// `[ immediate reg 0 VERDICT ]`
fn verdict(m: &mut MessageBuilder, code: u32) {
    m.attr_u32_be(1, NFT_REG_VERDICT);
    let d = m.begin_nested(2);
    let v = m.begin_nested(NFTA_DATA_VERDICT);
    m.attr_u32_be(NFTA_VERDICT_CODE, code);
    m.end_nested(v);
    m.end_nested(d);
}

/// `[ immediate reg 0 jump|goto CHAIN ]`
fn chain_verdict(m: &mut MessageBuilder, code: i32, chain: &str) {
    m.attr_u32_be(1, NFT_REG_VERDICT);
    let d = m.begin_nested(2);
    let v = m.begin_nested(NFTA_DATA_VERDICT);
    m.attr_u32_be(NFTA_VERDICT_CODE, code as u32);
    m.attr_str(NFTA_VERDICT_CHAIN, chain);
    m.end_nested(v);
    m.end_nested(d);
}

pub(super) fn nfgenmsg(family: u8, res_id: u16) -> [u8; 4] {
    let r = res_id.to_be_bytes();
    [family, 0, r[0], r[1]]
}

pub(super) fn nft_msg(kind: u16, flags: i32, family: Family) -> MessageBuilder {
    MessageBuilder::new((NFNL_SUBSYS_NFTABLES << 8) | kind, flags as u16)
        .header(&nfgenmsg(family.raw(), 0))
}

pub(super) fn rule_msg(
    family: Family,
    table: &str,
    chain: &str,
    rule: &Rule,
    append: bool,
) -> MessageBuilder {
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

/// The payload of a rule's `NFTA_RULE_EXPRESSIONS`, as the kernel lists it back.
pub(super) fn rule_expressions(rule: &Rule) -> Vec<u8> {
    let mut m = MessageBuilder::new(0, 0);
    for e in &rule.exprs {
        e.encode(&mut m);
    }
    m.finish(0)[codec::NLMSG_HDRLEN..].to_vec()
}

pub(super) fn comment_udata(comment: &str) -> Vec<u8> {
    let mut v = vec![NFTNL_UDATA_RULE_COMMENT, (comment.len() + 1).min(255) as u8];
    v.extend_from_slice(&comment.as_bytes()[..comment.len().min(254)]);
    v.push(0);
    v
}

pub(super) fn udata_comment(udata: &[u8]) -> Option<String> {
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

pub(super) fn be_u32(p: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(p.get(0..4)?.try_into().ok()?))
}

/// A big-endian u64 attribute (rule handles, counters).
pub(super) fn be_u64(p: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(p.get(0..8)?.try_into().ok()?))
}

pub(super) fn batch_delimiter(kind: u16) -> MessageBuilder {
    MessageBuilder::new(kind, 0).header(&nfgenmsg(libc::AF_UNSPEC as u8, NFNL_SUBSYS_NFTABLES))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comment_udata_round_trips() {
        assert_eq!(
            udata_comment(&comment_udata("podnet:x")).as_deref(),
            Some("podnet:x")
        );
    }
}
