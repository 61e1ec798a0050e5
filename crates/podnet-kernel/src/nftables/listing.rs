//! What a namespace's nf_tables hold, whoever wrote it: tables, chains with
//! their hooks and policies, and rules with their handles, comments and
//! `nft` text (`nft list ruleset`).

use crate::error::Result;
use crate::netlink::codec;

use super::render::render_expressions;
use super::transaction::{dump_request, parse_table_and_name};
use super::wire::*;
use super::NftHandle;

const NFTA_RULE_HANDLE: u16 = 3;

/// A chain of any table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainInfo {
    /// The table's family.
    pub family: Family,
    /// Table name.
    pub table: String,
    /// Chain name.
    pub name: String,
    /// For a base chain: hook number (`NF_INET_*`) and priority.
    pub hook: Option<(u32, i32)>,
    /// For a base chain: its policy (`NF_ACCEPT` 1, `NF_DROP` 0).
    pub policy: Option<u32>,
    /// For a base chain: `filter`, `nat` or `route`.
    pub ty: Option<String>,
}

impl ChainInfo {
    /// The hook's name (`prerouting`, `input`, `forward`, `output`, `postrouting`).
    pub fn hook_name(&self) -> Option<&'static str> {
        let (hook, _) = self.hook?;
        ["prerouting", "input", "forward", "output", "postrouting"]
            .get(hook as usize)
            .copied()
    }

    /// Whether its policy drops what no rule accepted.
    pub fn drops_by_default(&self) -> bool {
        self.policy == Some(NF_DROP)
    }
}

/// A rule of any table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleInfo {
    /// The table's family.
    pub family: Family,
    /// Table name.
    pub table: String,
    /// Chain name.
    pub chain: String,
    /// The rule's handle (what trace events name).
    pub handle: u64,
    /// Its comment, if any.
    pub comment: Option<String>,
    /// Its expressions as `nft` prints them.
    pub text: String,
}

impl NftHandle {
    /// Every table as (family, name) (`nft list tables`).
    pub fn tables(&mut self) -> Result<Vec<(Family, String)>> {
        let m = dump_request(NFT_MSG_GETTABLE, libc::NFPROTO_UNSPEC as u8);
        Ok(self
            .sock
            .dump(m, "nft list tables")?
            .iter()
            .filter_map(|p| {
                let family = Family::from_raw(*p.first()?)?;
                let name = codec::find_attr(p.get(4..)?, NFTA_TABLE_NAME)?;
                Some((family, codec::attr_string(name)))
            })
            .collect())
    }

    /// Every chain of every table (`nft list chains`).
    pub fn chains(&mut self) -> Result<Vec<ChainInfo>> {
        let m = dump_request(NFT_MSG_GETCHAIN, libc::NFPROTO_UNSPEC as u8);
        Ok(self
            .sock
            .dump(m, "nft list chains")?
            .iter()
            .filter_map(|p| parse_chain(p))
            .collect())
    }

    /// Every rule of every table, in chain order (`nft -a list ruleset`).
    pub fn rules(&mut self) -> Result<Vec<RuleInfo>> {
        let m = dump_request(NFT_MSG_GETRULE, libc::NFPROTO_UNSPEC as u8);
        Ok(self
            .sock
            .dump(m, "nft list ruleset")?
            .iter()
            .filter_map(|p| parse_rule(p))
            .collect())
    }

    /// Deletes table `name` of `family` with everything in it; false when there was none.
    pub fn delete_table(&mut self, family: Family, name: &str) -> Result<bool> {
        let exists = self
            .tables()?
            .iter()
            .any(|(f, n)| *f == family && n == name);
        if !exists {
            return Ok(false);
        }
        let mut tx = super::Transaction::new(family, name);
        tx.delete_table();
        self.commit(tx, &format!("nft delete table {name}"))?;
        Ok(true)
    }
}

fn parse_chain(p: &[u8]) -> Option<ChainInfo> {
    let family = Family::from_raw(*p.first()?)?;
    let (table, name) = parse_table_and_name(p, NFTA_CHAIN_NAME)?;
    let attrs = p.get(4..)?;
    let hook = codec::find_attr(attrs, NFTA_CHAIN_HOOK).and_then(|h| {
        let num = codec::find_attr(h, NFTA_HOOK_HOOKNUM).and_then(be_u32)?;
        let prio = codec::find_attr(h, NFTA_HOOK_PRIORITY).and_then(be_u32)? as i32;
        Some((num, prio))
    });
    Some(ChainInfo {
        family,
        table,
        name,
        hook,
        policy: codec::find_attr(attrs, NFTA_CHAIN_POLICY).and_then(be_u32),
        ty: codec::find_attr(attrs, NFTA_CHAIN_TYPE).map(codec::attr_string),
    })
}

fn parse_rule(p: &[u8]) -> Option<RuleInfo> {
    let family = Family::from_raw(*p.first()?)?;
    let attrs = p.get(4..)?;
    let string = |ty| codec::find_attr(attrs, ty).map(codec::attr_string);
    Some(RuleInfo {
        family,
        table: string(NFTA_RULE_TABLE)?,
        chain: string(NFTA_RULE_CHAIN)?,
        handle: codec::find_attr(attrs, NFTA_RULE_HANDLE).and_then(be_u64)?,
        comment: codec::find_attr(attrs, NFTA_RULE_USERDATA).and_then(udata_comment),
        text: codec::find_attr(attrs, NFTA_RULE_EXPRESSIONS)
            .map(render_expressions)
            .unwrap_or_default(),
    })
}
