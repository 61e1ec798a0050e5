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

mod ruleset;
mod wire;

use ipnet::IpNet;

use crate::error::Result;
use crate::netlink::codec::{self, MessageBuilder};
use crate::netlink::{NetlinkSocket, Protocol};
use crate::netns::Netns;

pub use ruleset::{match_prefix, CmpOp, Direction, Expr, NetworkRuleset, Rule};
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
            let have = match self.chain_comments(Family::Inet, TABLE, &name) {
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
            if self
                .chain_comments(chain.family, &chain.table, &chain.name)?
                .iter()
                .any(|c| c == &tag)
            {
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
