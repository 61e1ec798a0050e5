//! For callers that build their own rules: the expressions every table
//! needs, and whole chains to (re)write in one transaction.

use super::ruleset::{consts::*, CmpOp, Expr, Rule};
use super::transaction::{ChainKind, Hook, Transaction};

/// A chain of a caller's table with its rules.
#[derive(Debug, Clone)]
pub struct ChainDef {
    /// Name.
    pub name: String,
    /// Regular or base.
    pub kind: ChainKind,
    /// Rules, in order.
    pub rules: Vec<Rule>,
}

impl ChainDef {
    /// The chain as `nft list table` prints it, one rule per line with its
    /// comment: what planners' golden files hold.
    pub fn render(&self) -> String {
        let mut out = format!("chain {} {{\n", self.name);
        if let ChainKind::Base { ty, hook, priority } = &self.kind {
            let hook = match hook {
                Hook::Prerouting => "prerouting",
                Hook::Input => "input",
                Hook::Forward => "forward",
                Hook::Output => "output",
                Hook::Postrouting => "postrouting",
            };
            out += &format!("\ttype {ty} hook {hook} priority {priority}; policy accept;\n");
        }
        for rule in &self.rules {
            out += &format!("\t{} comment \"{}\"\n", rule.render(), rule.comment);
        }
        out + "}\n"
    }
}

/// The expressions of `parts`, in order.
pub fn cat(parts: &[&[Expr]]) -> Vec<Expr> {
    parts.iter().flat_map(|p| p.iter().cloned()).collect()
}

/// `meta nfproto ipv4|ipv6` (in register word 0).
pub fn nfproto_is(v6: bool) -> Vec<Expr> {
    vec![
        Expr::MetaLoad {
            key: META_NFPROTO,
            dreg: reg(0),
        },
        Expr::CmpReg(CmpOp::Eq, reg(0), vec![if v6 { 10 } else { 2 }]),
    ]
}

/// `ip|ip6 saddr|daddr` into register word `word`.
pub fn load_addr(v6: bool, source: bool, word: u32) -> Expr {
    let (offset, len) = match (v6, source) {
        (false, true) => (12, 4),
        (false, false) => (16, 4),
        (true, true) => (8, 16),
        (true, false) => (24, 16),
    };
    Expr::PayloadLoad {
        base: PAYLOAD_NETWORK,
        offset,
        len,
        dreg: reg(word),
    }
}

/// `meta l4proto` into register word `word`.
pub fn l4proto(word: u32) -> Expr {
    Expr::MetaLoad {
        key: META_L4PROTO,
        dreg: reg(word),
    }
}

/// `ct state` holds any of the `CT_STATE_*` bits in `states` (`ct state established,related`).
pub fn ct_state_any(states: u32) -> Vec<Expr> {
    vec![
        Expr::CtLoad {
            key: CT_STATE,
            dir: None,
            dreg: reg(0),
        },
        Expr::Bitwise {
            reg: reg(0),
            mask: states.to_ne_bytes().to_vec(),
            xor: vec![0; 4],
        },
        Expr::CmpReg(CmpOp::Neq, reg(0), vec![0; 4]),
    ]
}

/// `meta nftrace set 1`: the packet's further way is traced (`nft monitor trace`).
pub fn set_nftrace() -> [Expr; 2] {
    [
        Expr::Immediate {
            dreg: reg(0),
            data: vec![1],
        },
        Expr::MetaSet {
            key: META_NFTRACE,
            sreg: reg(0),
        },
    ]
}

/// `th dport` into register word `word`.
pub fn dport(word: u32) -> Expr {
    Expr::PayloadLoad {
        base: PAYLOAD_TRANSPORT,
        offset: 2,
        len: 2,
        dreg: reg(word),
    }
}

impl Transaction {
    /// Rewrites a table's chains: creates `chains`, empties them and every
    /// chain in `present` (those the kernel holds), deletes the present ones
    /// no longer wanted, then adds the rules (list regular chains before the
    /// base chains that jump to them).
    pub fn replace_chains(&mut self, chains: &[ChainDef], present: &[String]) {
        for c in chains {
            self.add_chain(&c.name, c.kind);
        }
        let obsolete: Vec<&String> = present
            .iter()
            .filter(|n| !chains.iter().any(|c| &c.name == *n))
            .collect();
        for name in chains
            .iter()
            .map(|c| &c.name)
            .chain(obsolete.iter().copied())
        {
            self.flush_chain(name);
        }
        // Only once no rule refers to them any more.
        for name in obsolete {
            self.delete_chain(name);
        }
        for c in chains {
            for r in &c.rules {
                self.add_rule(&c.name, r);
            }
        }
    }
}
