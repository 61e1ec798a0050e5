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
//! After a batch lands, flows that can outlive their endpoint are cleaned up:
//! UDP conntrack entries to removed endpoints (a UDP client would otherwise
//! keep sending to a dead endpoint for as long as it keeps sending) and
//! ClientIP affinity entries that point at removed endpoints.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

use podnet_kernel::conntrack::ConntrackHandle;
use podnet_kernel::nftables::{Family, NftHandle, SetElement, Transaction};
use podnet_kernel::Netns;
use podnet_services::{Endpoints, Protocol, Service, ServiceName};

use crate::error::ProxyError;
use crate::inspect::observe_table;
use crate::layout::{encode, Layout, SetId, TABLE};
use crate::plan::{fragment, hairpin_element, Flow, Fragment, Frontend};
use crate::table::{desired_table, diff_table};

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
    fn name(&self) -> ServiceName {
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

/// The service proxy of one node.
pub struct ServiceProxy {
    nft: NftHandle,
    conntrack: ConntrackHandle,
    node: String,
    /// What is programmed per service (`namespace/name`), kept compact: the
    /// service and endpoints as JSON, parsed again only when the service
    /// changes (at 100,000 services the parsed form costs about 1.3 KB each).
    applied: HashMap<Box<str>, Box<[u8]>>,
    /// Elements per set, as programmed: the layout (which sets and rules
    /// exist) follows from which sets are in use.
    counts: HashMap<SetId, usize>,
    hairpin: HashMap<IpAddr, usize>,
    /// The kernel's table is known to match `applied` (a sync happened and the
    /// table was not removed since).
    synced: bool,
}

type ElementDiff = BTreeMap<SetId, Vec<SetElement>>;

/// A frontend whose affinity entries go, optionally only those pointing at one endpoint.
type AffinityTarget = (Frontend, Option<(IpAddr, u16)>);

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
            node: node.to_string(),
            applied: HashMap::new(),
            counts: HashMap::new(),
            hairpin: HashMap::new(),
            synced: false,
        })
    }

    /// How many services are programmed, and how many map elements (one per
    /// frontend and endpoint, plus rejects and hairpins) they hold.
    pub fn programmed_counts(&self) -> (usize, usize) {
        (self.applied.len(), self.counts.values().sum())
    }

    /// The service and endpoints programmed for `name`, if any.
    pub fn programmed(&self, name: &ServiceName) -> Option<(Service, Option<Endpoints>)> {
        self.applied
            .get(&applied_key(name))
            .and_then(|bytes| serde_json::from_slice(bytes).ok())
    }

    /// The fragment of what is programmed for `name` (empty when nothing is).
    fn applied_fragment(&self, name: &ServiceName) -> Fragment {
        self.applied
            .get(&applied_key(name))
            .and_then(|bytes| serde_json::from_slice::<(Service, Option<Endpoints>)>(bytes).ok())
            .map(|(s, e)| fragment(&s, e.as_ref(), &self.node))
            .unwrap_or_default()
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
            let upserts = last
                .into_values()
                .filter_map(|c| match c {
                    Change::Upsert(s, e) => Some((*s, e)),
                    Change::Delete(_) => None,
                })
                .collect();
            return self.sync(upserts);
        }
        let layout = Layout::from_sets(self.counts.keys());
        let mut report = ApplyReport {
            services: last.len(),
            ..ApplyReport::default()
        };
        let mut counts = self.counts.clone();
        let mut hairpin_delta: HashMap<IpAddr, isize> = HashMap::new();
        let (mut del, mut add) = (ElementDiff::new(), ElementDiff::new());
        let mut gone_flows = Vec::new();
        let mut gone_affinity = Vec::new();
        for change in last.values() {
            let old = self.applied_fragment(&change.name());
            let new = match change {
                Change::Upsert(s, e) => fragment(s, e.as_ref(), &self.node),
                Change::Delete(_) => Fragment::default(),
            };
            let old_set: HashSet<&(SetId, SetElement)> = old.elements.iter().collect();
            let new_set: HashSet<&(SetId, SetElement)> = new.elements.iter().collect();
            for (set, e) in old.elements.iter().filter(|x| !new_set.contains(x)) {
                del.entry(*set).or_default().push(e.clone());
                *counts.entry(*set).or_default() -= 1;
            }
            for (set, e) in new.elements.iter().filter(|x| !old_set.contains(x)) {
                add.entry(*set).or_default().push(e.clone());
                *counts.entry(*set).or_default() += 1;
            }
            for ip in old.hairpin.difference(&new.hairpin) {
                *hairpin_delta.entry(*ip).or_default() -= 1;
            }
            for ip in new.hairpin.difference(&old.hairpin) {
                *hairpin_delta.entry(*ip).or_default() += 1;
            }
            let kept: HashSet<(Frontend, IpAddr, u16)> = new
                .flows
                .iter()
                .map(|f| (f.frontend, f.backend, f.backend_port))
                .collect();
            gone_flows.extend(
                old.flows
                    .iter()
                    .filter(|f| !kept.contains(&(f.frontend, f.backend, f.backend_port)))
                    .copied(),
            );
            gone_affinity.extend(
                old.affinity_frontends
                    .difference(&new.affinity_frontends)
                    .copied(),
            );
        }
        let mut hairpin = self.hairpin.clone();
        for (ip, d) in hairpin_delta {
            let before = hairpin.get(&ip).copied().unwrap_or(0);
            let after = (before as isize + d).max(0) as usize;
            let (set, e) = hairpin_element(ip);
            if before == 0 && after > 0 {
                add.entry(set).or_default().push(e);
            } else if before > 0 && after == 0 {
                del.entry(set).or_default().push(e);
            }
            if after == 0 {
                hairpin.remove(&ip);
            } else {
                hairpin.insert(ip, after);
            }
        }
        counts.retain(|_, n| *n > 0);
        let new_layout = Layout::from_sets(counts.keys());
        let old_sets: BTreeSet<SetId> = layout.sets().into_iter().collect();
        let new_sets: BTreeSet<SetId> = new_layout.sets().into_iter().collect();
        let replaced = last
            .keys()
            .filter(|n| self.applied.contains_key(&applied_key(n)))
            .count();
        let upserts = last
            .values()
            .filter(|c| matches!(c, Change::Upsert(..)))
            .count();
        let remaining = self.applied.len() - replaced + upserts;
        let mut tx = Transaction::new(Family::Inet, TABLE);
        report.deleted = del.values().map(Vec::len).sum();
        if remaining == 0 {
            // The last service goes: no services, no table (its hooks would
            // cost every packet of the node).
            tx.delete_table();
            report.sets_deleted = old_sets.len();
        } else {
            for s in new_sets.difference(&old_sets) {
                tx.add_set(&s.spec());
                report.sets_created += 1;
            }
            for (set, elems) in del.iter().filter(|(s, _)| new_sets.contains(s)) {
                tx.delete_elements(&set.name(), elems);
            }
            for (set, elems) in &add {
                tx.add_elements(&set.name(), elems);
                report.added += elems.len();
            }
            if new_layout != layout {
                tx.replace_chains(&new_layout.chains(), &[]);
                report.chains_written = true;
            }
            for s in old_sets.difference(&new_sets) {
                tx.delete_set(&s.name());
                report.sets_deleted += 1;
            }
        }
        if !tx.is_empty() {
            self.nft.commit(tx, "nft: apply service changes")?;
        }
        for (name, change) in last {
            match change {
                Change::Upsert(s, e) => {
                    self.applied
                        .insert(applied_key(&name), encode_applied(&s, e.as_ref()));
                }
                Change::Delete(_) => {
                    self.applied.remove(&applied_key(&name));
                }
            }
        }
        self.counts = counts;
        self.hairpin = hairpin;
        self.synced = remaining > 0;
        report.flows_deleted =
            self.delete_stale_udp_flows(&gone_flows, &mut report.cleanup_failures);
        report.affinity_deleted =
            self.delete_stale_affinity(&gone_flows, &gone_affinity, &mut report.cleanup_failures);
        Ok(report)
    }

    /// Makes the kernel hold exactly `services`, changing only what differs.
    pub fn sync(
        &mut self,
        services: Vec<(Service, Option<Endpoints>)>,
    ) -> Result<ApplyReport, ProxyError> {
        let mut report = ApplyReport {
            services: services.len(),
            ..ApplyReport::default()
        };
        if services.is_empty() {
            // No services, no table: its hooks would cost every packet of the node.
            report.sets_deleted = self.remove_all()?;
            return Ok(report);
        }
        let mut desired = desired_table(&services, &self.node);
        let (layout, counts) = (desired.layout(), desired.counts());
        let hairpin = std::mem::take(&mut desired.hairpin);
        let observed = observe_table(&mut self.nft, &layout)?;
        let diff = diff_table(desired, &observed);
        let mut tx = Transaction::new(Family::Inet, TABLE);
        for (set, elements) in &diff.create {
            tx.add_set(&set.spec());
            tx.add_elements(&set.name(), elements);
        }
        for (set, stale, missing) in &diff.change {
            tx.delete_elements(&set.name(), stale);
            tx.add_elements(&set.name(), missing);
        }
        if !self.chains_current(&layout)? {
            tx.replace_chains(&layout.chains(), &[]);
            report.chains_written = true;
        }
        for name in &diff.drop_sets {
            tx.delete_set(name);
        }
        (report.added, report.deleted) = diff.counts();
        report.sets_created = diff.create.len();
        report.sets_deleted = diff.drop_sets.len();
        if !tx.is_empty() {
            self.nft.commit(tx, "nft: sync services")?;
        }
        self.applied = services
            .into_iter()
            .map(|(s, e)| (applied_key(&s.key()), encode_applied(&s, e.as_ref())))
            .collect();
        self.counts = counts;
        self.hairpin = hairpin;
        self.synced = true;
        Ok(report)
    }

    /// Removes the proxy's table (nothing of it stays in the kernel); returns
    /// how many sets it held.
    pub fn remove_all(&mut self) -> Result<usize, ProxyError> {
        self.applied.clear();
        self.counts.clear();
        self.hairpin.clear();
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

    /// Deletes conntrack entries of UDP flows whose endpoint no longer serves the frontend.
    fn delete_stale_udp_flows(&mut self, gone: &[Flow], failures: &mut Vec<String>) -> usize {
        let udp: Vec<&Flow> = gone
            .iter()
            .filter(|f| f.frontend.protocol == Protocol::Udp)
            .collect();
        if udp.is_empty() {
            return 0;
        }
        let mut deleted = 0;
        for v6 in [false, true] {
            if !udp.iter().any(|f| f.backend.is_ipv6() == v6) {
                continue;
            }
            let flows = match self.conntrack.flows(v6) {
                Ok(f) => f,
                Err(e) => {
                    failures.push(format!("list UDP flows to removed endpoints: {e}"));
                    continue;
                }
            };
            for ct in flows {
                let stale = ct.original.proto == 17
                    && udp.iter().any(|f| {
                        ct.reply.src == f.backend
                            && ct.reply.src_port == f.backend_port
                            && ct.original.dst_port == f.frontend.port
                            && f.frontend.addr.is_none_or(|a| a == ct.original.dst)
                    });
                if !stale {
                    continue;
                }
                match self.conntrack.delete(&ct) {
                    Ok(()) => deleted += 1,
                    // Expired meanwhile: nothing left to delete.
                    Err(e) if e.is_not_found() => {}
                    Err(e) => failures.push(format!(
                        "delete UDP flow to {}:{}: {e}",
                        ct.reply.src, ct.reply.src_port
                    )),
                }
            }
        }
        deleted
    }

    /// Deletes affinity entries that point at removed endpoints, or belong to
    /// frontends that no longer have affinity (or changed its timeout).
    fn delete_stale_affinity(
        &mut self,
        gone: &[Flow],
        frontends: &[(u32, Frontend)],
        failures: &mut Vec<String>,
    ) -> usize {
        let mut by_map: BTreeMap<SetId, Vec<AffinityTarget>> = BTreeMap::new();
        let map_of = |fe: &Frontend, v6: bool, timeout: u32| match fe.addr {
            Some(_) => SetId::Affinity { v6, timeout },
            None => SetId::AffinityNodePortMap { v6, timeout },
        };
        for f in gone {
            if let Some(timeout) = f.affinity {
                by_map
                    .entry(map_of(&f.frontend, f.backend.is_ipv6(), timeout))
                    .or_default()
                    .push((f.frontend, Some((f.backend, f.backend_port))));
            }
        }
        for (timeout, fe) in frontends {
            let v6 = fe.addr.map(|a| a.is_ipv6());
            for v6 in [false, true]
                .into_iter()
                .filter(|v| v6.is_none_or(|x| x == *v))
            {
                by_map
                    .entry(map_of(fe, v6, *timeout))
                    .or_default()
                    .push((*fe, None));
            }
        }
        let mut deleted = 0;
        let mut tx = Transaction::new(Family::Inet, TABLE);
        for (set, targets) in by_map {
            let name = set.name();
            let entries = match self.nft.set_elements(Family::Inet, TABLE, &name) {
                Ok(e) => e,
                Err(e) if e.is_not_found() => continue, // gone with its last service
                Err(e) => {
                    failures.push(format!("read affinity map {name}: {e}"));
                    continue;
                }
            };
            let a = if set.v6() { 16 } else { 4 };
            let stale: Vec<SetElement> = entries
                .into_iter()
                .filter(|e| {
                    targets.iter().any(|(fe, backend)| {
                        affinity_matches(&e.key, e.data.as_deref(), a, fe, *backend)
                    })
                })
                .collect();
            deleted += stale.len();
            tx.delete_elements(&name, &stale);
        }
        if deleted == 0 {
            return 0;
        }
        match self.nft.commit(tx, "nft: delete stale affinity") {
            Ok(()) => deleted,
            Err(e) => {
                failures.push(format!("delete {deleted} stale affinity entries: {e}"));
                0
            }
        }
    }
}

fn applied_key(name: &ServiceName) -> Box<str> {
    name.to_string().into_boxed_str()
}

fn encode_applied(svc: &Service, eps: Option<&Endpoints>) -> Box<[u8]> {
    serde_json::to_vec(&(svc, eps))
        .unwrap_or_default()
        .into_boxed_slice()
}

/// Whether an affinity entry (`client . service addr . proto . port : endpoint`) belongs
/// to `frontend` (and, when given, points at `backend`).
fn affinity_matches(
    key: &[u8],
    data: Option<&[u8]>,
    a: usize,
    frontend: &Frontend,
    backend: Option<(IpAddr, u16)>,
) -> bool {
    let Some(tail) = key.get(a..) else {
        return false;
    };
    let fe_ok = match frontend.addr {
        Some(ip) => {
            tail == encode::service(ip, frontend.protocol.number(), frontend.port).as_slice()
        }
        None => tail == encode::node_port(frontend.protocol.number(), frontend.port).as_slice(),
    };
    fe_ok && backend.is_none_or(|(ip, port)| data == Some(&encode::endpoint(ip, port)[..]))
}
