//! [`Firewall`]: keeps one node's policy table equal to its [`Plan`].
//!
//! - [`Firewall::update`] for changes: the difference between the plan last
//!   applied and the new one, in one batch (all or nothing). Chains are
//!   rewritten only when the sets in use change, in the same batch.
//! - [`Firewall::sync`] at start and periodically: the kernel is read back and
//!   only what differs is changed, so a restarted agent adopts the table
//!   without touching it, and drift (a deleted rule or element) is repaired.
//!
//! Established connections never depend on these changes: the forward chain
//! lets established and related packets through before any lookup.

use std::collections::{BTreeSet, HashSet};

use podnet_kernel::nftables::{Family, NftHandle, SetElement, Transaction};
use podnet_kernel::Netns;

use crate::error::FirewallError;
use crate::layout::{Layout, SetId, TABLE};
use crate::plan::Plan;

/// What one update or sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Elements added.
    pub added: usize,
    /// Elements deleted.
    pub deleted: usize,
    /// Sets created.
    pub sets_created: usize,
    /// Sets deleted.
    pub sets_deleted: usize,
    /// Whether the chains were (re)written.
    pub chains_written: bool,
    /// Whether the table was removed (no local pod is isolated any more).
    pub table_removed: bool,
}

impl ApplyReport {
    /// True when the kernel was not changed.
    pub fn unchanged(&self) -> bool {
        *self == ApplyReport::default()
    }
}

impl std::fmt::Display for ApplyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.unchanged() {
            return f.write_str("kernel unchanged");
        }
        if self.table_removed {
            return f.write_str("table removed (no isolated pod)");
        }
        write!(f, "elements +{} -{}", self.added, self.deleted)?;
        if self.sets_created + self.sets_deleted > 0 {
            write!(f, ", sets +{} -{}", self.sets_created, self.sets_deleted)?;
        }
        if self.chains_written {
            f.write_str(", chains rewritten")?;
        }
        Ok(())
    }
}

/// The policy firewall of one node.
pub struct Firewall {
    nft: NftHandle,
    applied: Plan,
    /// The kernel's table is known to equal `applied`.
    synced: bool,
}

impl Firewall {
    /// A firewall programming `netns` (the caller's namespace when `None`).
    pub fn new(netns: Option<&Netns>) -> Result<Self, FirewallError> {
        let nft = match netns {
            Some(ns) => NftHandle::in_netns(ns)?,
            None => NftHandle::current()?,
        };
        Ok(Firewall {
            nft,
            applied: Plan::default(),
            synced: false,
        })
    }

    /// The plan last applied.
    pub fn applied(&self) -> &Plan {
        &self.applied
    }

    /// Applies `desired` as the difference from the plan last applied, in one
    /// batch. Before the first [`Firewall::sync`], this syncs instead.
    pub fn update(&mut self, desired: Plan) -> Result<ApplyReport, FirewallError> {
        if !self.synced {
            return self.sync(desired);
        }
        let mut report = ApplyReport::default();
        if desired.layout().is_empty() {
            if !self.applied.is_empty() {
                self.remove_table()?;
                report.table_removed = true;
            }
            self.applied = desired;
            return Ok(report);
        }
        let (old, new) = (self.applied.layout(), desired.layout());
        let (old_counters, new_counters) = (counters_of(&self.applied), counters_of(&desired));
        let mut tx = Transaction::new(Family::Inet, TABLE);
        for set in new.sets.difference(&old.sets) {
            tx.add_set(&set.spec());
            report.sets_created += 1;
        }
        for name in new_counters.difference(&old_counters) {
            tx.add_counter(name);
        }
        let empty = BTreeSet::new();
        for set in &new.sets {
            let have = self.applied.sets.get(set).unwrap_or(&empty);
            let want = &desired.sets[set];
            report.deleted += diff_into(&mut tx, set, have, want, &mut report.added);
        }
        if new != old {
            tx.replace_chains(&new.chains(), &old.chain_names());
            report.chains_written = true;
        }
        for set in old.sets.difference(&new.sets) {
            report.deleted += self.applied.sets[set].len();
            tx.delete_set(&set.name());
            report.sets_deleted += 1;
        }
        // Only once no element refers to them any more.
        for name in old_counters.difference(&new_counters) {
            tx.delete_counter(name);
        }
        if !tx.is_empty() {
            self.nft.commit(tx, "nft: apply policy changes")?;
        }
        self.applied = desired;
        Ok(report)
    }

    /// Makes the kernel hold exactly `desired`, reading it back and changing
    /// only what differs. When the chains are not the layout's (drift, or an
    /// earlier podnet's table), the table is rebuilt in the same batch.
    pub fn sync(&mut self, desired: Plan) -> Result<ApplyReport, FirewallError> {
        let mut report = ApplyReport::default();
        let mut existing: HashSet<String> = self
            .nft
            .set_names(Family::Inet, TABLE)?
            .into_iter()
            .collect();
        let mut chains = self.nft.chain_names(Family::Inet, TABLE)?;
        let layout = desired.layout();
        if layout.is_empty() {
            if !existing.is_empty() || !chains.is_empty() {
                self.remove_table()?;
                report.table_removed = true;
            }
            self.applied = desired;
            self.synced = true;
            return Ok(report);
        }
        let mut tx = Transaction::new(Family::Inet, TABLE);
        let mut counters: BTreeSet<String> = self
            .nft
            .counters(Family::Inet, TABLE)?
            .into_iter()
            .map(|c| c.name)
            .collect();
        let rebuild = !chains.is_empty() && !self.chains_current(&layout, &chains)?;
        if rebuild {
            tx.recreate_table();
            report.chains_written = true;
            report.sets_deleted += existing.len();
            existing.clear();
            chains.clear();
            counters.clear();
        }
        let wanted_counters = counters_of(&desired);
        for name in wanted_counters.difference(&counters) {
            tx.add_counter(name);
        }
        for (set, want) in &desired.sets {
            let name = set.name();
            let have: BTreeSet<SetElement> = if existing.contains(&name) {
                self.nft
                    .set_elements(Family::Inet, TABLE, &name)?
                    .into_iter()
                    .collect()
            } else {
                tx.add_set(&set.spec());
                report.sets_created += 1;
                BTreeSet::new()
            };
            report.deleted += diff_into(&mut tx, set, &have, want, &mut report.added);
        }
        if chains.is_empty() {
            tx.replace_chains(&layout.chains(), &[]);
            report.chains_written = true;
        }
        let wanted: HashSet<String> = layout.sets.iter().map(SetId::name).collect();
        for name in existing.difference(&wanted) {
            tx.delete_set(name);
            report.sets_deleted += 1;
        }
        for name in counters.difference(&wanted_counters) {
            tx.delete_counter(name);
        }
        if !tx.is_empty() {
            self.nft.commit(tx, "nft: sync policies")?;
        }
        self.applied = desired;
        self.synced = true;
        Ok(report)
    }

    /// Removes the table (nothing of it stays in the kernel).
    pub fn remove_all(&mut self) -> Result<(), FirewallError> {
        self.applied = Plan::default();
        self.synced = false;
        if self.nft.set_names(Family::Inet, TABLE)?.is_empty()
            && self.nft.chain_names(Family::Inet, TABLE)?.is_empty()
        {
            return Ok(());
        }
        self.remove_table()
    }

    fn remove_table(&mut self) -> Result<(), FirewallError> {
        let mut tx = Transaction::new(Family::Inet, TABLE);
        tx.delete_table();
        self.nft.commit(tx, "nft delete table inet podnet-policy")?;
        Ok(())
    }

    fn chains_current(
        &mut self,
        layout: &Layout,
        present: &[String],
    ) -> Result<bool, FirewallError> {
        let fp = layout.fingerprint();
        let chains = layout.chains();
        if present.len() != chains.len() {
            return Ok(false);
        }
        for chain in chains {
            if !present.contains(&chain.name) {
                return Ok(false);
            }
            let have = self.nft.rule_comments(Family::Inet, TABLE, &chain.name)?;
            let ours = |c: &String| c.strip_prefix(&fp).is_some_and(|r| r.starts_with(':'));
            if have.len() != chain.rules.len() || !have.iter().all(ours) {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// Adds to `tx` what turns `have` into `want` for one set; returns how many
/// elements it deletes (and counts additions into `added`).
fn diff_into(
    tx: &mut Transaction,
    set: &SetId,
    have: &BTreeSet<SetElement>,
    want: &BTreeSet<SetElement>,
    added: &mut usize,
) -> usize {
    let name = set.name();
    let stale: Vec<&SetElement> = have.difference(want).collect();
    let missing: Vec<&SetElement> = want.difference(have).collect();
    tx.delete_elements(&name, stale.iter().copied());
    if set.spec().counters {
        tx.add_counter_elements(&name, missing.iter().copied());
    } else {
        tx.add_elements(&name, missing.iter().copied());
    }
    *added += missing.len();
    stale.len()
}

/// The denial counters `plan` needs: one per isolated address and direction,
/// named by the isolated maps' elements.
fn counters_of(plan: &Plan) -> BTreeSet<String> {
    plan.sets
        .iter()
        .filter(|(set, _)| set.spec().counters)
        .flat_map(|(_, elements)| elements.iter())
        .filter_map(|e| e.data.as_ref())
        .map(|name| String::from_utf8_lossy(name).into_owned())
        .collect()
}
