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
use podnet_services::{Endpoints, Service};

use crate::layout::{Layout, SetId};
use crate::plan::{fragment, hairpin_element};

/// Key to data (`None` for sets), for one set.
pub type SetContents = HashMap<Vec<u8>, Option<Vec<u8>>>;

/// What the table must hold for some services on one node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DesiredTable {
    /// Elements per set; no empty entries.
    pub sets: HashMap<SetId, SetContents>,
    /// Local endpoint addresses and how many services share each.
    pub hairpin: HashMap<IpAddr, usize>,
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
}

/// The table for `services` (with their endpoints) on `node`.
pub fn desired_table(services: &[(Service, Option<Endpoints>)], node: &str) -> DesiredTable {
    let mut t = DesiredTable::default();
    for (s, e) in services {
        let f = fragment(s, e.as_ref(), node);
        for (set, el) in f.elements {
            t.sets.entry(set).or_default().insert(el.key, el.data);
        }
        for ip in f.hairpin {
            *t.hairpin.entry(ip).or_default() += 1;
        }
    }
    for ip in t.hairpin.keys() {
        let (set, el) = hairpin_element(*ip);
        t.sets.entry(set).or_default().insert(el.key, el.data);
    }
    t.sets.retain(|_, m| !m.is_empty());
    t
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
    pub create: Vec<(SetId, Vec<SetElement>)>,
    /// Per existing set: elements to delete (wrong or foreign) and to add.
    pub change: Vec<(SetId, Vec<SetElement>, Vec<SetElement>)>,
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
        let want = sets.remove(set).unwrap_or_default();
        if !observed.names.contains(&name) {
            diff.create.push((*set, into_elements(want)));
            continue;
        }
        if set.spec().dynamic {
            continue;
        }
        let have = observed.elements.get(&name).map_or(&[][..], Vec::as_slice);
        let stale: Vec<SetElement> = have
            .iter()
            .filter(|e| want.get(&e.key) != Some(&e.data))
            .cloned()
            .collect();
        let mut want = want;
        for e in have {
            if want.get(&e.key) == Some(&e.data) {
                want.remove(&e.key);
            }
        }
        let missing = into_elements(want);
        if !stale.is_empty() || !missing.is_empty() {
            diff.change.push((*set, stale, missing));
        }
    }
    let wanted_names: BTreeSet<String> = wanted.iter().map(SetId::name).collect();
    diff.drop_sets = observed.names.difference(&wanted_names).cloned().collect();
    diff
}

/// A set's contents as elements, in key order (so plans read the same every time).
fn into_elements(contents: SetContents) -> Vec<SetElement> {
    let mut v: Vec<SetElement> = contents
        .into_iter()
        .map(|(k, d)| SetElement::new(k, d))
        .collect();
    v.sort();
    v
}
