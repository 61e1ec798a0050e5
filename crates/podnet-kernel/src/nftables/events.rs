//! nf_tables commits as they happen (`nft monitor`): every transaction the
//! kernel commits ends with a new generation, announced to listeners of the
//! namespace. Benchmarks time "the kernel holds the change" by it.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::netlink::{NetlinkSocket, Notifications, Protocol};
use crate::netns::Netns;

use super::wire::{NFNL_SUBSYS_NFTABLES, NFT_MSG_NEWGEN};

/// `NFNLGRP_NFTABLES`.
const NFNLGRP_NFTABLES: u32 = 7;

/// One committed transaction: when it was heard, and the tables it touched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// When the notification arrived.
    pub at: Instant,
    /// Names of the tables its messages named.
    pub tables: BTreeSet<String>,
}

/// A subscription to nf_tables commits in one namespace.
#[derive(Debug)]
pub struct CommitWatch {
    sock: NetlinkSocket,
    pending: BTreeSet<String>,
}

impl CommitWatch {
    /// Subscribes in `netns`.
    pub fn open_in(netns: &Netns) -> Result<Self> {
        let sock = NetlinkSocket::open_in(netns, Protocol::Netfilter)?;
        sock.join_group(NFNLGRP_NFTABLES)?;
        sock.set_receive_buffer(8 << 20);
        Ok(CommitWatch {
            sock,
            pending: BTreeSet::new(),
        })
    }

    /// Commits heard within `timeout` (none when nothing was committed). An
    /// overrun (the kernel dropped notifications) reports one commit of unknown tables.
    pub fn wait(&mut self, timeout: Duration) -> Result<Vec<Commit>> {
        let messages = match self.sock.wait_notifications(timeout, "nft monitor")? {
            Notifications::Overrun => {
                return Ok(vec![Commit {
                    at: Instant::now(),
                    tables: BTreeSet::new(),
                }]);
            }
            Notifications::Messages(m) => m,
        };
        let mut out = Vec::new();
        for (ty, payload) in messages {
            if ty == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN {
                out.push(Commit {
                    at: Instant::now(),
                    tables: std::mem::take(&mut self.pending),
                });
            } else if ty >> 8 == NFNL_SUBSYS_NFTABLES {
                // Every object message carries its table as attribute 1.
                if let Some(t) = payload
                    .get(4..)
                    .and_then(|a| crate::netlink::codec::find_attr(a, 1))
                {
                    self.pending.insert(crate::netlink::codec::attr_string(t));
                }
            }
        }
        Ok(out)
    }
}
