//! [`ServiceProxy`]: keeps the kernel's service table in step with the services.
//!
//! Two ways in:
//! - [`ServiceProxy::update`] for changes: only the changed services'
//!   elements are deleted and added, in one batch (all or nothing). Chains are
//!   rewritten only when the layout changes (an endpoint count or an affinity
//!   timeout appears or disappears), in the same batch.
//! - [`ServiceProxy::sync`] for everything: at start (adopting whatever an
//!   earlier agent left, without touching elements that are right, so
//!   established connections and their conntrack NAT bindings are never
//!   disturbed) and periodically (repairing drift: a deleted rule, element or
//!   set is put back, a foreign element is removed).
//!
//! Both plan first, without touching the kernel ([`crate::update`],
//! [`crate::table`]), then apply the plan in one transaction. After a batch
//! lands, flows that can outlive their endpoint are cleaned up
//! ([`crate::cleanup`]).

use std::collections::HashMap;

use podnet_kernel::conntrack::ConntrackHandle;
use podnet_kernel::nftables::build::ChainDef;
use podnet_kernel::nftables::{Family, NftHandle, Transaction};
use podnet_kernel::Netns;
use podnet_services::{Endpoints, Service, ServiceName};

use crate::cleanup::Cleanup;
use crate::error::ProxyError;
use crate::inspect::observe_table;
use crate::layout::{Layout, TABLE};
use crate::packed::PackedSet;
use crate::plan::HealthCheck;
use crate::table::{diff_table, DesiredTable, TableDiff};
use crate::update::{applied_key, encode_applied, Programmed, UpdatePlan};

/// A change to one service.
#[derive(Debug, Clone)]
pub enum Change {
    /// The service was created or changed, or its endpoints changed (boxed:
    /// a service is large next to a name, and batches hold many changes).
    Upsert(Box<Service>, Option<Endpoints>),
    /// The service is gone.
    Delete(ServiceName),
}

impl Change {
    /// The service it changes.
    pub fn name(&self) -> ServiceName {
        match self {
            Change::Upsert(s, _) => s.key(),
            Change::Delete(n) => n.clone(),
        }
    }
}

/// What one update or sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Services looked at.
    pub services: usize,
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
    /// Conntrack entries of removed UDP endpoints deleted.
    pub flows_deleted: usize,
    /// Affinity entries to removed endpoints deleted.
    pub affinity_deleted: usize,
    /// Cleanups that failed (stale flows or affinities left behind), each
    /// saying what and why; the services themselves are programmed.
    pub cleanup_failures: Vec<String>,
}

impl std::fmt::Display for ApplyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.unchanged() {
            return f.write_str("kernel unchanged");
        }
        write!(f, "elements +{} -{}", self.added, self.deleted)?;
        if self.sets_created + self.sets_deleted > 0 {
            write!(f, ", sets +{} -{}", self.sets_created, self.sets_deleted)?;
        }
        if self.chains_written {
            f.write_str(", chains rewritten")?;
        }
        if self.flows_deleted > 0 {
            write!(f, ", {} stale UDP flows deleted", self.flows_deleted)?;
        }
        if self.affinity_deleted > 0 {
            write!(f, ", {} stale affinities deleted", self.affinity_deleted)?;
        }
        if !self.cleanup_failures.is_empty() {
            write!(f, ", cleanup failed: {}", self.cleanup_failures.join("; "))?;
        }
        Ok(())
    }
}

impl ApplyReport {
    /// True when the kernel was not changed.
    pub fn unchanged(&self) -> bool {
        self.added == 0
            && self.deleted == 0
            && self.sets_created == 0
            && self.sets_deleted == 0
            && !self.chains_written
    }
}

/// The most elements one transaction of a full sync carries (about a
/// megabyte of netlink messages).
const SYNC_BATCH: usize = 10_000;

/// The service proxy of one node.
pub struct ServiceProxy {
    nft: NftHandle,
    conntrack: ConntrackHandle,
    /// What is programmed.
    state: Programmed,
    /// The kernel's table is known to match `state` (a sync happened and the
    /// table was not removed since).
    synced: bool,
}

impl ServiceProxy {
    /// A proxy for node `node`, programming the namespace `netns` (the caller's when `None`).
    pub fn new(node: &str, netns: Option<&Netns>) -> Result<Self, ProxyError> {
        let (nft, conntrack) = match netns {
            Some(ns) => (NftHandle::in_netns(ns)?, ConntrackHandle::in_netns(ns)?),
            None => (NftHandle::current()?, ConntrackHandle::current()?),
        };
        Ok(ServiceProxy {
            nft,
            conntrack,
            state: Programmed::new(node),
            synced: false,
        })
    }

    /// How many services are programmed, and how many map elements (one per
    /// frontend and endpoint, plus rejects and hairpins) they hold.
    pub fn programmed_counts(&self) -> (usize, usize) {
        (self.state.services(), self.state.counts.values().sum())
    }

    /// The service and endpoints programmed for `name`, if any.
    pub fn programmed(&self, name: &ServiceName) -> Option<(Service, Option<Endpoints>)> {
        self.state
            .applied
            .get(&applied_key(name))
            .and_then(|bytes| serde_json::from_slice(bytes).ok())
    }

    /// The health-check node ports of the programmed services, and what each reports.
    pub fn health_checks(&self) -> &HashMap<ServiceName, HealthCheck> {
        &self.state.health
    }

    /// Applies `changes` in one batch touching only their elements.
    ///
    /// Without a table of ours (before the first [`ServiceProxy::sync`], or
    /// after the last service went), nothing is programmed, so this syncs the
    /// changed services instead. When the last service goes, the table goes
    /// with it, in the same batch.
    pub fn update(&mut self, changes: Vec<Change>) -> Result<ApplyReport, ProxyError> {
        let mut last: HashMap<ServiceName, Change> = HashMap::new();
        for c in changes {
            last.insert(c.name(), c);
        }
        if !self.synced {
            let upserts: Vec<(Service, Option<Endpoints>)> = last
                .into_values()
                .filter_map(|c| match c {
                    Change::Upsert(s, e) => Some((*s, e)),
                    Change::Delete(_) => None,
                })
                .collect();
            return self.sync(upserts);
        }
        let mut plan = self.state.plan_update(&last);
        let mut report = ApplyReport {
            services: last.len(),
            ..report_of(&plan, &self.state)
        };
        let tx = plan.transaction();
        if !tx.is_empty() {
            self.nft.commit(tx, "nft: apply service changes")?;
        }
        let (gone_flows, gone_affinity) = (
            std::mem::take(&mut plan.gone_flows),
            std::mem::take(&mut plan.gone_affinity),
        );
        self.synced = plan.services_remain();
        self.state.commit(plan, last);
        let mut cleanup = Cleanup {
            nft: &mut self.nft,
            conntrack: &mut self.conntrack,
        };
        report.flows_deleted =
            cleanup.delete_stale_udp_flows(&gone_flows, &mut report.cleanup_failures);
        report.affinity_deleted = cleanup.delete_stale_affinity(
            &gone_flows,
            &gone_affinity,
            &mut report.cleanup_failures,
        );
        Ok(report)
    }

    /// Makes the kernel hold exactly `services`, changing only what differs.
    /// Services are taken one at a time (an iterator that parses as it goes
    /// never has them all parsed at once).
    pub fn sync(
        &mut self,
        services: impl IntoIterator<Item = (Service, Option<Endpoints>)>,
    ) -> Result<ApplyReport, ProxyError> {
        let mut desired = DesiredTable::default();
        let mut applied = HashMap::new();
        for (s, e) in services {
            desired.add(&s, e.as_ref(), &self.state.node);
            applied.insert(applied_key(&s.key()), encode_applied(&s, e.as_ref()));
        }
        let mut report = ApplyReport {
            services: applied.len(),
            ..ApplyReport::default()
        };
        if applied.is_empty() {
            // No services, no table: its hooks would cost every packet of the node.
            report.sets_deleted = self.remove_all()?;
            return Ok(report);
        }
        let mut desired = desired.finish();
        let (layout, counts) = (desired.layout(), desired.counts());
        let hairpin = std::mem::take(&mut desired.hairpin);
        let health = std::mem::take(&mut desired.health);
        let observed = observe_table(&mut self.nft, &layout)?;
        let diff = diff_table(desired, &observed);
        (report.added, report.deleted) = diff.counts();
        report.sets_created = diff.create.len();
        report.sets_deleted = diff.drop_sets.len();
        let chains = (!self.chains_current(&layout)?).then(|| layout.chains());
        report.chains_written = chains.is_some();
        self.commit_sync(diff, chains)?;
        self.state.applied = applied;
        self.state.counts = counts;
        self.state.hairpin = hairpin;
        self.state.health = health;
        self.synced = true;
        Ok(report)
    }

    /// Applies a full sync's difference. Up to [`SYNC_BATCH`] elements it is
    /// one transaction (a drift repair lands all at once); a larger one (the
    /// first sync of a big cluster) sends the sets, deletions and chains with
    /// the first elements and the rest in batches, each built from elements
    /// taken out of the difference as it goes, so the whole table never sits
    /// in memory twice. Sets nothing needs go in the last batch.
    fn commit_sync(
        &mut self,
        diff: TableDiff,
        chains: Option<Vec<ChainDef>>,
    ) -> Result<(), ProxyError> {
        let mut tx = Transaction::new(Family::Inet, TABLE);
        let mut adds: Vec<(String, PackedSet)> = Vec::new();
        for (set, elements) in diff.create {
            tx.add_set(&set.spec());
            adds.push((set.name(), elements));
        }
        for (set, stale, missing) in diff.change {
            tx.delete_elements(&set.name(), &stale);
            adds.push((set.name(), missing));
        }
        if let Some(chains) = &chains {
            tx.replace_chains(chains, &[]);
        }
        let mut in_batch = 0;
        for (name, packed) in adds {
            let mut at = 0;
            while at < packed.len() {
                if in_batch >= SYNC_BATCH {
                    let full = std::mem::replace(&mut tx, Transaction::new(Family::Inet, TABLE));
                    self.nft.commit(full, "nft: sync services")?;
                    in_batch = 0;
                }
                let chunk = packed.elements(at..at + (SYNC_BATCH - in_batch));
                tx.add_elements(&name, &chunk);
                at += chunk.len();
                in_batch += chunk.len();
            }
        }
        for name in &diff.drop_sets {
            tx.delete_set(name);
        }
        if !tx.is_empty() {
            self.nft.commit(tx, "nft: sync services")?;
        }
        Ok(())
    }

    /// Removes the proxy's table (nothing of it stays in the kernel); returns
    /// how many sets it held.
    pub fn remove_all(&mut self) -> Result<usize, ProxyError> {
        self.state.clear();
        self.synced = false;
        let sets = self.nft.set_names(Family::Inet, TABLE)?.len();
        if sets == 0 && self.nft.chain_names(Family::Inet, TABLE)?.is_empty() {
            return Ok(0);
        }
        let mut tx = Transaction::new(Family::Inet, TABLE);
        tx.delete_table();
        self.nft
            .commit(tx, "nft delete table inet podnet-services")?;
        Ok(sets)
    }

    fn chains_current(&mut self, layout: &Layout) -> Result<bool, ProxyError> {
        let fp = layout.fingerprint();
        let names = self.nft.chain_names(Family::Inet, TABLE)?;
        for chain in layout.chains() {
            let present = names.contains(&chain.name);
            let have = if present {
                self.nft.rule_comments(Family::Inet, TABLE, &chain.name)?
            } else {
                Vec::new()
            };
            if !present || have.len() != chain.rules.len() || have.iter().any(|c| *c != fp) {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// What a plan will change, for the report.
fn report_of(plan: &UpdatePlan, before: &Programmed) -> ApplyReport {
    let sets_before = Layout::from_sets(before.counts.keys()).sets().len();
    if plan.delete_table {
        return ApplyReport {
            deleted: plan.deleted,
            sets_deleted: sets_before,
            ..ApplyReport::default()
        };
    }
    ApplyReport {
        added: plan.add_elements.values().map(Vec::len).sum(),
        deleted: plan.deleted,
        sets_created: plan.create_sets.len(),
        sets_deleted: plan.delete_sets.len(),
        chains_written: plan.new_layout.is_some(),
        ..ApplyReport::default()
    }
}
