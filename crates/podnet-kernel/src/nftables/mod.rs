//! nf_tables over nfnetlink: podnet's own table and its per-network chains.
//!
//! Layout (`nft list table inet podnet`):
//! ```text
//! table inet podnet {
//!   chain postrouting-NET { type nat hook postrouting priority 100;
//!                           ip saddr SUBNET ip daddr != CLUSTER ... masquerade }
//! }
//! ```
//! Each network's chain is rewritten whole in one batch (create table, create
//! the chain, flush it, add rules): all or nothing, and concurrent plugin
//! invocations converge to the same content without a lock or duplicate rules.
//! There is no forward chain of podnet's own: see [`NetworkRuleset`] for why.
//!
//! An `accept` in our table cannot overrule a `drop` policy in someone else's
//! base chain (every base chain on a hook sees the packet), so, as Flannel and
//! Calico do with iptables, [`NftHandle::accept_in_foreign_drop_chains`]
//! inserts a tagged accept rule at the head of every foreign forward chain whose
//! policy is drop (for example `iptables -P FORWARD DROP` under iptables-nft).

pub mod build;
mod events;
mod listing;
mod render;
mod ruleset;
mod trace;
mod transaction;
mod wire;

use ipnet::IpNet;

use crate::error::Result;
use crate::netlink::codec::{self, MessageBuilder};
use crate::netlink::{NetlinkSocket, Protocol};
use crate::netns::Netns;

pub use events::{Commit, CommitWatch};
pub use listing::{ChainInfo, RuleInfo};
pub use ruleset::{consts, match_prefix, CmpOp, Direction, Expr, NetworkRuleset, Rule};
pub use trace::{parse_trace, TraceEvent, TraceKind, TraceWatch, Verdict};
pub use transaction::{datatype, ChainKind, Hook, SetElement, SetSpec, Transaction};
pub use wire::Family;
// The wire vocabulary (NFTA_*, NFT_MSG_*, message builders) reads best unqualified.
use wire::*;

/// Name of podnet's own table (family `inet`).
pub const TABLE: &str = "podnet";

/// A `NETLINK_NETFILTER` socket bound to one namespace.
#[derive(Debug)]
pub struct NftHandle {
    sock: NetlinkSocket,
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

    /// Makes one network's chain hold `ruleset`; returns whether anything changed.
    ///
    /// When the chain already carries exactly the desired rules (recognised by
    /// their comments, which include a fingerprint of the whole ruleset), and
    /// no chain that should not exist is there, nothing is sent. Otherwise one
    /// atomic batch, `nft -f -` with: add table, add the chain, flush it, add
    /// rules; an empty chain (no masquerade) and an earlier version's forward
    /// chain are flushed and deleted instead.
    ///
    /// Why check first: a batch that replaces rules leaves the old ones for the
    /// kernel to free after an RCU grace period, and closing the socket then
    /// waits for that grace period (10-15 ms here). In steady state every pod
    /// ADD would pay it for rules that did not change.
    pub fn apply_network(&mut self, ruleset: &NetworkRuleset) -> Result<bool> {
        if self.network_current(ruleset)? {
            return Ok(false);
        }
        let post = ruleset.postrouting_chain();
        let rules = &ruleset.postrouting;
        // An earlier version's forward chain changes the fingerprint, so a
        // node that has one comes through here once and loses it.
        let legacy = ruleset.legacy_forward_chain();
        let legacy_exists = self.chain_exists(Family::Inet, TABLE, &legacy)?;
        let mut msgs = vec![batch_delimiter(NFNL_MSG_BATCH_BEGIN)];
        let mut t = nft_msg(NFT_MSG_NEWTABLE, libc::NLM_F_CREATE, Family::Inet);
        t.attr_str(NFTA_TABLE_NAME, TABLE);
        msgs.push(t);
        if rules.is_empty() {
            msgs.extend(delete_chain(&post));
        } else {
            msgs.push(nat_postrouting_chain(&post));
            msgs.push(flush_chain(&post));
            for r in rules {
                msgs.push(rule_msg(Family::Inet, TABLE, &post, r, true));
            }
        }
        if legacy_exists {
            msgs.extend(delete_chain(&legacy));
        }
        msgs.push(batch_delimiter(NFNL_MSG_BATCH_END));
        self.sock.batch(
            msgs,
            &format!("nft: apply chains of network {}", ruleset.network),
        )?;
        Ok(true)
    }

    /// Whether one network's chain holds exactly `ruleset` (what
    /// [`Self::apply_network`] would leave unchanged).
    ///
    /// Steady state costs one round trip. With rules, the chain is current
    /// when it lists exactly their comments (a rule dump of a missing chain
    /// is empty, never equal). Without, it is current when it is absent.
    pub fn network_current(&mut self, ruleset: &NetworkRuleset) -> Result<bool> {
        let post = ruleset.postrouting_chain();
        let rules = &ruleset.postrouting;
        if rules.is_empty() {
            return Ok(!self.chain_exists(Family::Inet, TABLE, &post)?);
        }
        let want: Vec<&String> = rules.iter().map(|r| &r.comment).collect();
        let have = self.chain_comments(Family::Inet, TABLE, &post)?;
        Ok(have.iter().collect::<Vec<_>>() == want)
    }

    /// The foreign forward base chains whose policy is drop and that lack
    /// `network`'s accept rules: where pod traffic is dropped until
    /// [`Self::accept_in_foreign_drop_chains`] runs.
    pub fn foreign_drop_chains_without(&mut self, network: &str) -> Result<Vec<ChainInfo>> {
        let tag = format!("podnet:{network}");
        let mut out = Vec::new();
        for chain in self.chains()? {
            let forward = chain.hook.is_some_and(|(hook, _)| hook == NF_INET_FORWARD);
            if chain.table == TABLE || !forward || !chain.drops_by_default() {
                continue;
            }
            let comments = self.chain_comments(chain.family, &chain.table, &chain.name)?;
            if !comments.iter().any(|c| c == &tag) {
                out.push(chain);
            }
        }
        Ok(out)
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
        for chain in self.foreign_drop_chains_without(network)? {
            let mut msgs = vec![batch_delimiter(NFNL_MSG_BATCH_BEGIN)];
            for subnet in subnets {
                let fits = match chain.family {
                    Family::Inet => true,
                    Family::Ipv4 => subnet.addr().is_ipv4(),
                    Family::Ipv6 => subnet.addr().is_ipv6(),
                    Family::Bridge => false,
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

    /// Applies `tx` as one batch: all of it, or nothing.
    pub fn commit(&mut self, tx: Transaction, op: &str) -> Result<()> {
        self.sock.batch(tx.into_messages(), op)
    }

    /// Names of the sets and maps of `table`, sorted (none when the table is missing).
    pub fn set_names(&mut self, family: Family, table: &str) -> Result<Vec<String>> {
        self.names_in(
            NFT_MSG_GETSET,
            NFTA_SET_NAME,
            family,
            table,
            "nft list sets",
        )
    }

    /// Names of the chains of `table`, sorted (none when the table is missing).
    pub fn chain_names(&mut self, family: Family, table: &str) -> Result<Vec<String>> {
        self.names_in(
            NFT_MSG_GETCHAIN,
            NFTA_CHAIN_NAME,
            family,
            table,
            "nft list chains",
        )
    }

    fn names_in(
        &mut self,
        kind: u16,
        name_attr: u16,
        family: Family,
        table: &str,
        op: &str,
    ) -> Result<Vec<String>> {
        let mut out: Vec<String> = self
            .sock
            .dump(transaction::dump_request(kind, family.raw()), op)?
            .iter()
            .filter_map(|p| transaction::parse_table_and_name(p, name_attr))
            .filter(|(t, _)| t == table)
            .map(|(_, n)| n)
            .collect();
        out.sort();
        Ok(out)
    }

    /// The named counters of `table` with what they counted, sorted by
    /// name (`nft list counters table`; none when the table is missing).
    pub fn counters(&mut self, family: Family, table: &str) -> Result<Vec<CounterInfo>> {
        let req = transaction::dump_request(NFT_MSG_GETOBJ, family.raw());
        let mut out: Vec<CounterInfo> = self
            .sock
            .dump(req, "nft list counters")?
            .iter()
            .filter_map(|p| parse_counter(p.get(4..)?, table))
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The elements of one set or map (`nft list set`), in the kernel's order.
    pub fn set_elements(
        &mut self,
        family: Family,
        table: &str,
        set: &str,
    ) -> Result<Vec<SetElement>> {
        let mut out = Vec::new();
        for p in self.sock.dump(
            transaction::elements_request(family, table, set),
            &format!("nft list set {table} {set}"),
        )? {
            transaction::parse_elements(&p, &mut out);
        }
        Ok(out)
    }

    /// The comments of the rules in one chain, in order (empty when the chain is missing).
    pub fn rule_comments(
        &mut self,
        family: Family,
        table: &str,
        chain: &str,
    ) -> Result<Vec<String>> {
        self.chain_comments(family, table, chain)
    }

    /// Whether chain `table chain` exists (`nft list chain`, without the rules).
    fn chain_exists(&mut self, family: Family, table: &str, chain: &str) -> Result<bool> {
        let mut m = MessageBuilder::new((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETCHAIN, 0)
            .header(&nfgenmsg(family.raw(), 0));
        m.attr_str(NFTA_CHAIN_TABLE, table)
            .attr_str(NFTA_CHAIN_NAME, chain);
        match self.sock.request_one(m, "nft list chain") {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The comments of the rules in one chain, in order (`nft list chain`).
    fn chain_comments(&mut self, family: Family, table: &str, chain: &str) -> Result<Vec<String>> {
        let mut m = MessageBuilder::new(
            (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETRULE,
            libc::NLM_F_DUMP as u16,
        )
        .header(&nfgenmsg(family.raw(), 0));
        m.attr_str(NFTA_RULE_TABLE, table)
            .attr_str(NFTA_RULE_CHAIN, chain);
        let rules = self.sock.dump(m, "nft list chain")?;
        Ok(rules
            .iter()
            .filter_map(|p| {
                codec::find_attr(p.get(4..)?, NFTA_RULE_USERDATA).and_then(udata_comment)
            })
            .collect())
    }
}

/// `nft add chain inet podnet NAME { type nat hook postrouting priority 100; policy accept; }`.
fn nat_postrouting_chain(name: &str) -> MessageBuilder {
    let mut c = nft_msg(NFT_MSG_NEWCHAIN, libc::NLM_F_CREATE, Family::Inet);
    c.attr_str(NFTA_CHAIN_TABLE, TABLE)
        .attr_str(NFTA_CHAIN_NAME, name);
    let h = c.begin_nested(NFTA_CHAIN_HOOK);
    c.attr_u32_be(NFTA_HOOK_HOOKNUM, NF_INET_POSTROUTING)
        .attr_u32_be(NFTA_HOOK_PRIORITY, 100);
    c.end_nested(h);
    c.attr_u32_be(NFTA_CHAIN_POLICY, NF_ACCEPT)
        .attr_str(NFTA_CHAIN_TYPE, "nat");
    c
}

/// `nft flush chain inet podnet NAME; nft delete chain inet podnet NAME`.
fn delete_chain(name: &str) -> [MessageBuilder; 2] {
    let mut d = nft_msg(NFT_MSG_DELCHAIN, 0, Family::Inet);
    d.attr_str(NFTA_CHAIN_TABLE, TABLE)
        .attr_str(NFTA_CHAIN_NAME, name);
    [flush_chain(name), d]
}

/// `nft flush chain inet podnet NAME`.
fn flush_chain(name: &str) -> MessageBuilder {
    let mut flush = nft_msg(NFT_MSG_DELRULE, 0, Family::Inet);
    flush
        .attr_str(NFTA_RULE_TABLE, TABLE)
        .attr_str(NFTA_RULE_CHAIN, name);
    flush
}

/// A named counter and what it has counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterInfo {
    /// Its name in the table.
    pub name: String,
    /// Packets counted.
    pub packets: u64,
    /// Bytes counted.
    pub bytes: u64,
}

/// One `NFT_MSG_NEWOBJ` dump message, when it is a counter of `table`.
fn parse_counter(attrs: &[u8], table: &str) -> Option<CounterInfo> {
    let text = |ty| codec::find_attr(attrs, ty).map(codec::attr_string);
    if text(NFTA_OBJ_TABLE)? != table {
        return None;
    }
    let ty = codec::find_attr(attrs, NFTA_OBJ_TYPE).and_then(be_u32)?;
    if ty != NFT_OBJECT_COUNTER {
        return None;
    }
    let data = codec::find_attr(attrs, NFTA_OBJ_DATA)?;
    let count = |ty| codec::find_attr(data, ty).and_then(be_u64).unwrap_or(0);
    Some(CounterInfo {
        name: text(NFTA_OBJ_NAME)?,
        packets: count(NFTA_COUNTER_PACKETS),
        bytes: count(NFTA_COUNTER_BYTES),
    })
}
