//! Generic nf_tables objects for callers that own a table: chains, sets and
//! maps, their elements, and one all-or-nothing transaction that changes them.
//!
//! The service proxy builds its table from these; the per-network pod chains
//! (`super::NetworkRuleset`) keep their own narrower path.

use crate::netlink::codec::{self, MessageBuilder};

use super::ruleset::Rule;
use super::wire::*;

/// nf_tables data types for set keys and data, as `nft` names them.
pub mod datatype {
    /// `ipv4_addr`
    pub const IPV4_ADDR: u32 = 7;
    /// `ipv6_addr`
    pub const IPV6_ADDR: u32 = 8;
    /// `inet_proto`
    pub const INET_PROTO: u32 = 12;
    /// `inet_service`
    pub const INET_SERVICE: u32 = 13;
    /// `mark` (a 32-bit integer in host order, used for indexes)
    pub const MARK: u32 = 19;
    /// `ifname` (16 bytes, NUL padded)
    pub const IFNAME: u32 = 41;

    /// The type id of a concatenation (`a . b . c`), as `nft` encodes it.
    pub fn concat(types: &[u32]) -> u32 {
        types.iter().fold(0, |acc, t| (acc << 6) | t)
    }
}

/// Hooks of the `inet` family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// `prerouting`
    Prerouting,
    /// `input`
    Input,
    /// `forward`
    Forward,
    /// `output`
    Output,
    /// `postrouting`
    Postrouting,
}

/// What kind of chain to create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainKind {
    /// A regular chain, entered by `jump`.
    Regular,
    /// A base chain: `type TYPE hook HOOK priority PRIORITY; policy accept;`.
    Base {
        /// `"filter"` or `"nat"`.
        ty: &'static str,
        /// The hook.
        hook: Hook,
        /// The priority.
        priority: i32,
    },
}

/// A named set or map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetSpec {
    /// Name in the table.
    pub name: String,
    /// Key type (see [`datatype`]).
    pub key_type: u32,
    /// Key length in bytes (each concatenated field padded to 4).
    pub key_len: u32,
    /// For maps: data type and length.
    pub data: Option<(u32, u32)>,
    /// Elements expire and the packet path may add them (`flags timeout, dynamic`).
    pub dynamic: bool,
    /// For sets of concatenated ranges (`flags interval`, each element a
    /// `key`..`key_end` range per field): the length in bytes of each field,
    /// unpadded. Empty for sets of exact keys.
    pub range_fields: Vec<u32>,
    /// An object map of named counters (`type KEY : counter`): each
    /// element's data is the name of a counter of the table.
    pub counters: bool,
}

/// One element of a set or map.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SetElement {
    /// The key bytes (for range sets: the first key of the range).
    pub key: Vec<u8>,
    /// The data bytes, for maps; for counter maps, the counter's name.
    pub data: Option<Vec<u8>>,
    /// For range sets: the last key of the range (inclusive).
    pub key_end: Option<Vec<u8>>,
}

impl SetElement {
    /// An element with an exact key.
    pub fn new(key: Vec<u8>, data: Option<Vec<u8>>) -> Self {
        SetElement {
            key,
            data,
            key_end: None,
        }
    }
}

const NFT_SET_INTERVAL: u32 = 0x4;
const NFT_SET_CONCAT: u32 = 0x80;
const NFT_SET_MAP: u32 = 0x8;
const NFT_SET_TIMEOUT: u32 = 0x10;
const NFT_SET_EVAL: u32 = 0x20;
const NFT_SET_OBJECT: u32 = 0x40;
/// Room for elements in one message: a nested attribute's length is 16 bits.
const ELEMENTS_PER_MESSAGE_BYTES: usize = 60 * 1024;

/// One nf_tables transaction on a table: every change in it applies, or none.
#[derive(Debug)]
pub struct Transaction {
    family: Family,
    table: String,
    msgs: Vec<MessageBuilder>,
}

impl Transaction {
    /// A transaction on `table` that first makes sure the table exists.
    pub fn new(family: Family, table: &str) -> Self {
        let mut t = nft_msg(NFT_MSG_NEWTABLE, libc::NLM_F_CREATE, family);
        t.attr_str(NFTA_TABLE_NAME, table);
        Transaction {
            family,
            table: table.to_string(),
            msgs: vec![t],
        }
    }

    /// How many changes (messages) the transaction holds, beyond creating the table.
    pub fn len(&self) -> usize {
        self.msgs.len() - 1
    }

    /// True when the transaction changes nothing but ensuring the table.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `nft add chain` (no error when it exists).
    pub fn add_chain(&mut self, name: &str, kind: ChainKind) {
        let mut c = nft_msg(NFT_MSG_NEWCHAIN, libc::NLM_F_CREATE, self.family);
        c.attr_str(NFTA_CHAIN_TABLE, &self.table)
            .attr_str(NFTA_CHAIN_NAME, name);
        if let ChainKind::Base { ty, hook, priority } = kind {
            let h = c.begin_nested(NFTA_CHAIN_HOOK);
            c.attr_u32_be(NFTA_HOOK_HOOKNUM, hook_number(hook))
                .attr_u32_be(NFTA_HOOK_PRIORITY, priority as u32);
            c.end_nested(h);
            c.attr_u32_be(NFTA_CHAIN_POLICY, NF_ACCEPT)
                .attr_str(NFTA_CHAIN_TYPE, ty);
        }
        self.msgs.push(c);
    }

    /// `nft flush chain`.
    pub fn flush_chain(&mut self, name: &str) {
        let mut m = nft_msg(NFT_MSG_DELRULE, 0, self.family);
        m.attr_str(NFTA_RULE_TABLE, &self.table)
            .attr_str(NFTA_RULE_CHAIN, name);
        self.msgs.push(m);
    }

    /// `nft delete chain` (it must be empty and unreferenced by then).
    pub fn delete_chain(&mut self, name: &str) {
        let mut m = nft_msg(NFT_MSG_DELCHAIN, 0, self.family);
        m.attr_str(NFTA_CHAIN_TABLE, &self.table)
            .attr_str(NFTA_CHAIN_NAME, name);
        self.msgs.push(m);
    }

    /// `nft add rule` (appended).
    pub fn add_rule(&mut self, chain: &str, rule: &Rule) {
        self.msgs
            .push(rule_msg(self.family, &self.table, chain, rule, true));
    }

    /// `nft add set|map` (no error when it exists with the same definition).
    pub fn add_set(&mut self, set: &SetSpec) {
        let mut m = nft_msg(NFT_MSG_NEWSET, libc::NLM_F_CREATE, self.family);
        let mut flags = 0;
        if set.data.is_some() {
            flags |= NFT_SET_MAP;
        }
        if set.dynamic {
            flags |= NFT_SET_TIMEOUT | NFT_SET_EVAL;
        }
        if !set.range_fields.is_empty() {
            flags |= NFT_SET_INTERVAL | NFT_SET_CONCAT;
        }
        if set.counters {
            flags |= NFT_SET_OBJECT;
        }
        m.attr_str(NFTA_SET_TABLE, &self.table)
            .attr_str(NFTA_SET_NAME, &set.name)
            .attr_u32_be(NFTA_SET_FLAGS, flags)
            .attr_u32_be(NFTA_SET_KEY_TYPE, set.key_type)
            .attr_u32_be(NFTA_SET_KEY_LEN, set.key_len)
            .attr_u32_be(NFTA_SET_ID, self.msgs.len() as u32);
        if let Some((ty, len)) = set.data {
            m.attr_u32_be(NFTA_SET_DATA_TYPE, ty)
                .attr_u32_be(NFTA_SET_DATA_LEN, len);
        }
        if set.counters {
            m.attr_u32_be(NFTA_SET_OBJ_TYPE, NFT_OBJECT_COUNTER);
        }
        if set.key_type == datatype::IFNAME {
            // `nft` prints a lone ifname key right only when told it is in host order.
            m.attr(
                NFTA_SET_USERDATA,
                &[NFTNL_UDATA_SET_KEYBYTEORDER, 4, 1, 0, 0, 0],
            );
        }
        if !set.range_fields.is_empty() {
            let desc = m.begin_nested(NFTA_SET_DESC);
            let concat = m.begin_nested(NFTA_SET_DESC_CONCAT);
            for len in &set.range_fields {
                let field = m.begin_nested(NFTA_LIST_ELEM);
                m.attr_u32_be(NFTA_SET_FIELD_LEN, *len);
                m.end_nested(field);
            }
            m.end_nested(concat);
            m.end_nested(desc);
        }
        self.msgs.push(m);
    }

    /// `nft delete set|map` (no rule may refer to it by then).
    pub fn delete_set(&mut self, name: &str) {
        let mut m = nft_msg(NFT_MSG_DELSET, 0, self.family);
        m.attr_str(NFTA_SET_TABLE, &self.table)
            .attr_str(NFTA_SET_NAME, name);
        self.msgs.push(m);
    }

    /// `nft add element`: as many messages as the elements need.
    pub fn add_elements<'a>(
        &mut self,
        set: &str,
        elements: impl IntoIterator<Item = &'a SetElement>,
    ) {
        self.element_messages(NFT_MSG_NEWSETELEM, libc::NLM_F_CREATE, set, elements, false);
    }

    /// `nft add element` to a counter map: each element's data names a
    /// counter, which must exist by then ([`Self::add_counter`]).
    pub fn add_counter_elements<'a>(
        &mut self,
        set: &str,
        elements: impl IntoIterator<Item = &'a SetElement>,
    ) {
        self.element_messages(NFT_MSG_NEWSETELEM, libc::NLM_F_CREATE, set, elements, true);
    }

    /// `nft add counter NAME` (no error, and no reset, when it exists).
    pub fn add_counter(&mut self, name: &str) {
        let mut m = nft_msg(NFT_MSG_NEWOBJ, libc::NLM_F_CREATE, self.family);
        m.attr_str(NFTA_OBJ_TABLE, &self.table)
            .attr_str(NFTA_OBJ_NAME, name)
            .attr_u32_be(NFTA_OBJ_TYPE, NFT_OBJECT_COUNTER);
        let d = m.begin_nested(NFTA_OBJ_DATA);
        m.end_nested(d);
        self.msgs.push(m);
    }

    /// `nft delete counter NAME` (no rule or element may refer to it by then).
    pub fn delete_counter(&mut self, name: &str) {
        let mut m = nft_msg(NFT_MSG_DELOBJ, 0, self.family);
        m.attr_str(NFTA_OBJ_TABLE, &self.table)
            .attr_str(NFTA_OBJ_NAME, name)
            .attr_u32_be(NFTA_OBJ_TYPE, NFT_OBJECT_COUNTER);
        self.msgs.push(m);
    }

    /// `nft delete element` (only keys matter).
    pub fn delete_elements<'a>(
        &mut self,
        set: &str,
        elements: impl IntoIterator<Item = &'a SetElement>,
    ) {
        self.element_messages(NFT_MSG_DELSETELEM, 0, set, elements, false);
    }

    /// `nft delete table` then `nft add table`: what follows starts from an
    /// empty table, and the whole change still applies at once.
    pub fn recreate_table(&mut self) {
        self.delete_table();
        let mut t = nft_msg(NFT_MSG_NEWTABLE, libc::NLM_F_CREATE, self.family);
        t.attr_str(NFTA_TABLE_NAME, &self.table);
        self.msgs.push(t);
    }

    /// `nft delete table`.
    pub fn delete_table(&mut self) {
        let mut m = nft_msg(NFT_MSG_DELTABLE, 0, self.family);
        m.attr_str(NFTA_TABLE_NAME, &self.table);
        self.msgs.push(m);
    }

    fn element_messages<'a>(
        &mut self,
        kind: u16,
        flags: i32,
        set: &str,
        elements: impl IntoIterator<Item = &'a SetElement>,
        objref: bool,
    ) {
        let mut current: Option<(MessageBuilder, usize, usize)> = None;
        for e in elements {
            let (m, _, start) = current.get_or_insert_with(|| {
                let mut m = nft_msg(kind, flags, self.family);
                m.attr_str(NFTA_SET_ELEM_LIST_TABLE, &self.table)
                    .attr_str(NFTA_SET_ELEM_LIST_SET, set);
                let list = m.begin_nested(NFTA_SET_ELEM_LIST_ELEMENTS);
                let start = m.len();
                (m, list, start)
            });
            let item = m.begin_nested(NFTA_LIST_ELEM);
            let k = m.begin_nested(NFTA_SET_ELEM_KEY);
            m.attr(NFTA_DATA_VALUE, &e.key);
            m.end_nested(k);
            if let Some(end) = &e.key_end {
                let k = m.begin_nested(NFTA_SET_ELEM_KEY_END);
                m.attr(NFTA_DATA_VALUE, end);
                m.end_nested(k);
            }
            match (&e.data, kind == NFT_MSG_NEWSETELEM, objref) {
                (Some(name), true, true) => {
                    m.attr_str(NFTA_SET_ELEM_OBJREF, &String::from_utf8_lossy(name));
                }
                (Some(data), true, false) => {
                    let d = m.begin_nested(NFTA_SET_ELEM_DATA);
                    m.attr(NFTA_DATA_VALUE, data);
                    m.end_nested(d);
                }
                _ => {}
            }
            m.end_nested(item);
            if m.len() - *start > ELEMENTS_PER_MESSAGE_BYTES {
                let (mut m, list, _) = current.take().expect("just filled");
                m.end_nested(list);
                self.msgs.push(m);
            }
        }
        if let Some((mut m, list, _)) = current {
            m.end_nested(list);
            self.msgs.push(m);
        }
    }

    /// The batch: begin, the messages, end.
    pub(super) fn into_messages(self) -> Vec<MessageBuilder> {
        let mut out = Vec::with_capacity(self.msgs.len() + 2);
        out.push(batch_delimiter(NFNL_MSG_BATCH_BEGIN));
        out.extend(self.msgs);
        out.push(batch_delimiter(NFNL_MSG_BATCH_END));
        out
    }
}

fn hook_number(hook: Hook) -> u32 {
    match hook {
        Hook::Prerouting => 0,
        Hook::Input => 1,
        Hook::Forward => 2,
        Hook::Output => 3,
        Hook::Postrouting => 4,
    }
}

/// Parses the elements of one `GETSETELEM` dump message.
pub(super) fn parse_elements(payload: &[u8], out: &mut Vec<SetElement>) {
    let Some(list) = payload
        .get(4..)
        .and_then(|a| codec::find_attr(a, NFTA_SET_ELEM_LIST_ELEMENTS))
    else {
        return;
    };
    for (_, item) in codec::attrs(list) {
        let value = |ty| {
            codec::find_attr(item, ty)
                .and_then(|v| codec::find_attr(v, NFTA_DATA_VALUE))
                .map(<[u8]>::to_vec)
        };
        if let Some(key) = value(NFTA_SET_ELEM_KEY) {
            // A counter map's element names its counter instead of holding data.
            let objref = codec::find_attr(item, NFTA_SET_ELEM_OBJREF)
                .map(|name| codec::attr_string(name).into_bytes());
            out.push(SetElement {
                key,
                data: value(NFTA_SET_ELEM_DATA).or(objref),
                key_end: value(NFTA_SET_ELEM_KEY_END),
            });
        }
    }
}

/// The request for the elements of one set (`nft list set`).
pub(super) fn elements_request(family: Family, table: &str, set: &str) -> MessageBuilder {
    let mut m = MessageBuilder::new(
        (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETSETELEM,
        libc::NLM_F_DUMP as u16,
    )
    .header(&nfgenmsg(family.raw(), 0));
    m.attr_str(NFTA_SET_ELEM_LIST_TABLE, table)
        .attr_str(NFTA_SET_ELEM_LIST_SET, set);
    m
}

/// A dump request of one kind of object (`NFT_MSG_GETSET`, `NFT_MSG_GETCHAIN`)
/// over every table of `family` (a raw `NFPROTO_*`, `NFPROTO_UNSPEC` for all).
pub(super) fn dump_request(kind: u16, family: u8) -> MessageBuilder {
    MessageBuilder::new((NFNL_SUBSYS_NFTABLES << 8) | kind, libc::NLM_F_DUMP as u16)
        .header(&nfgenmsg(family, 0))
}

/// `(table, name)` of one set or chain dump message; `name_attr` is the
/// kind's name attribute (both kinds carry the table as attribute 1).
pub(super) fn parse_table_and_name(payload: &[u8], name_attr: u16) -> Option<(String, String)> {
    let attrs = payload.get(4..)?;
    Some((
        codec::attr_string(codec::find_attr(attrs, NFTA_SET_TABLE)?),
        codec::attr_string(codec::find_attr(attrs, name_attr)?),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_elements_split_into_messages_under_the_attribute_limit() {
        let elems: Vec<SetElement> = (0..5000u32)
            .map(|i| {
                SetElement::new(
                    [i.to_be_bytes(), [6, 0, 0, 0], [0, 80, 0, 0], [0; 4]].concat(),
                    Some(vec![10, 0, 0, 1, 0, 80, 0, 0]),
                )
            })
            .collect();
        let mut tx = Transaction::new(Family::Inet, "t");
        tx.add_elements("s", &elems);
        assert!(tx.len() > 1, "{} messages", tx.len());
        for m in tx.into_messages() {
            assert!(m.len() < 65535);
        }
    }

    #[test]
    fn concat_type_puts_the_first_field_highest() {
        use datatype::*;
        assert_eq!(
            concat(&[IPV4_ADDR, INET_PROTO, INET_SERVICE]),
            (7 << 12) | (12 << 6) | 13
        );
    }
}
