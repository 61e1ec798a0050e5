//! The whole service table as data, for the full sync: what every set must
//! hold for a list of services on one node ([`desired_table`]), what the
//! kernel holds ([`ObservedTable`]), and the difference ([`diff_table`]).
//!
//! All pure: [`crate::ServiceProxy::sync`] reads the kernel, calls these and
//! applies the difference in one batch; the planner's tests feed recorded
//! states (`tests/plans.rs`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;

use podnet_kernel::nftables::SetElement;
use podnet_services::{Endpoints, Service, ServiceName};

use crate::layout::{Layout, SetId};
use crate::packed::PackedSet;
use crate::plan::{fragment, hairpin_element, HealthCheck};

/// What the table must hold for some services on one node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DesiredTable {
    /// Elements per set, packed; no empty entries once finished.
    pub sets: HashMap<SetId, PackedSet>,
    /// Local endpoint addresses and how many services share each.
    pub hairpin: HashMap<IpAddr, usize>,
    /// Health-check node ports and what each reports.
    pub health: HashMap<ServiceName, HealthCheck>,
}

impl DesiredTable {
    /// Elements per set.
    pub fn counts(&self) -> HashMap<SetId, usize> {
        self.sets.iter().map(|(s, m)| (*s, m.len())).collect()
    }

    /// The layout (sets and chains) the elements need.
    pub fn layout(&self) -> Layout {
        Layout::from_sets(self.sets.keys())
    }

    /// The elements of one set, in key order.
    pub fn elements(&self, set: &SetId) -> Vec<SetElement> {
        self.sets.get(set).map(PackedSet::all).unwrap_or_default()
    }

    fn push(&mut self, set: SetId, e: &SetElement) {
        self.sets
            .entry(set)
            .or_insert_with(|| PackedSet::for_set(&set))
            .push(e);
    }
}

/// The table for `services` (with their endpoints) on `node`.
pub fn desired_table(services: &[(Service, Option<Endpoints>)], node: &str) -> DesiredTable {
    let mut t = DesiredTable::default();
    for (s, e) in services {
        t.add(s, e.as_ref(), node);
    }
    t.finish()
}

impl DesiredTable {
    /// Adds one service's elements (services may come one at a time, so
    /// that a caller with 100,000 never holds them all parsed).
    pub fn add(&mut self, svc: &Service, eps: Option<&Endpoints>, node: &str) {
        let f = fragment(svc, eps, node);
        if let Some(h) = f.health_check {
            self.health.insert(svc.key(), h);
        }
        for (set, el) in &f.elements {
            self.push(*set, el);
        }
        for ip in f.hairpin {
            *self.hairpin.entry(ip).or_default() += 1;
        }
    }

    /// The table once every service is added: hairpin elements, no empty sets.
    pub fn finish(mut self) -> Self {
        let hairpin: Vec<IpAddr> = self.hairpin.keys().copied().collect();
        for ip in hairpin {
            let (set, el) = hairpin_element(ip);
            self.push(set, &el);
        }
        self.sets.retain(|_, m| !m.is_empty());
        self.sets.values_mut().for_each(PackedSet::finish);
        self
    }
}

/// What the kernel's table holds: every set's name, and the elements of
/// the sets a sync compares (those it wants that the packet path does not
/// fill).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedTable {
    /// Names of the sets present.
    pub names: BTreeSet<String>,
    /// Elements of the sets read.
    pub elements: BTreeMap<String, Vec<SetElement>>,
}

/// The changes that make the kernel's sets hold a [`DesiredTable`] (the
/// chains are checked apart, by their fingerprint).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableDiff {
    /// Sets to create, with all their elements.
    pub create: Vec<(SetId, PackedSet)>,
    /// Per existing set: elements to delete (wrong or foreign) and to add.
    pub change: Vec<(SetId, Vec<SetElement>, PackedSet)>,
    /// Sets nothing needs any more.
    pub drop_sets: Vec<String>,
}

impl TableDiff {
    /// Elements added and deleted over every set.
    pub fn counts(&self) -> (usize, usize) {
        let created: usize = self.create.iter().map(|(_, e)| e.len()).sum();
        let added: usize = self.change.iter().map(|(_, _, a)| a.len()).sum();
        let deleted: usize = self.change.iter().map(|(_, d, _)| d.len()).sum();
        (created + added, deleted)
    }
}

impl fmt::Display for TableDiff {
    /// One line per set: `create set lb4-1 (2 elements)`, `set lb4-1 +1 -1`, `delete set reject6`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (set, els) in &self.create {
            writeln!(f, "create set {} ({} elements)", set.name(), els.len())?;
        }
        for (set, del, add) in &self.change {
            writeln!(f, "set {} +{} -{}", set.name(), add.len(), del.len())?;
        }
        for name in &self.drop_sets {
            writeln!(f, "delete set {name}")?;
        }
        Ok(())
    }
}

/// What turns `observed` into `desired`, consuming `desired` (at 100,000
/// services its elements are moved into the diff, not copied). Sets the
/// packet path fills (affinity) are created when missing and otherwise left
/// alone; an element whose data differs is deleted and added again.
pub fn diff_table(desired: DesiredTable, observed: &ObservedTable) -> TableDiff {
    let mut diff = TableDiff::default();
    let wanted = desired.layout().sets();
    let mut sets = desired.sets;
    for set in &wanted {
        let name = set.name();
        let want = sets.remove(set).unwrap_or_else(|| PackedSet::for_set(set));
        if !observed.names.contains(&name) {
            diff.create.push((*set, want));
            continue;
        }
        if set.spec().dynamic {
            continue;
        }
        let have = observed.elements.get(&name).map_or(&[][..], Vec::as_slice);
        let (stale, missing) = want.compare(have);
        if !stale.is_empty() || !missing.is_empty() {
            diff.change.push((*set, stale, missing));
        }
    }
    let wanted_names: BTreeSet<String> = wanted.iter().map(SetId::name).collect();
    diff.drop_sets = observed.names.difference(&wanted_names).cloned().collect();
    diff
}
