//! The incremental update as a pure plan: what the proxy has programmed
//! ([`Programmed`]) and a batch of changes in, the kernel delta out
//! ([`UpdatePlan`]): sets to create and delete, elements to delete and
//! add, the chains when the layout changes, or the whole table when the
//! last service goes. [`crate::ServiceProxy::update`] turns the plan into
//! one transaction; the tests render plans as nft text without root.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

use podnet_kernel::nftables::{Family, SetElement, Transaction};
use podnet_services::{Endpoints, Service, ServiceName};

use crate::layout::{Layout, SetId, TABLE};
use crate::plan::{fragment, hairpin_element, Flow, Fragment, Frontend, HealthCheck};
use crate::proxy::Change;

/// Elements per set.
pub type ElementDiff = BTreeMap<SetId, Vec<SetElement>>;

/// What one node's proxy has programmed: the state a plan starts from.
#[derive(Debug, Default, Clone)]
pub struct Programmed {
    /// The node.
    pub node: String,
    /// Per service (`namespace/name`), the service and endpoints as JSON,
    /// parsed again only when the service changes (at 100,000 services the
    /// parsed form costs about 1.3 KB each).
    pub applied: HashMap<Box<str>, Box<[u8]>>,
    /// Elements per set: the layout (which sets and rules exist) follows
    /// from which sets are in use.
    pub counts: HashMap<SetId, usize>,
    /// Local endpoint addresses and how many services share each.
    pub hairpin: HashMap<IpAddr, usize>,
    /// Health-check node ports and what each reports.
    pub health: HashMap<ServiceName, HealthCheck>,
}

/// The kernel delta of one batch of changes, and the state after it.
#[derive(Debug, Default)]
pub struct UpdatePlan {
    /// The last service goes: the table goes (its hooks would cost every
    /// packet of the node), and nothing else is done.
    pub delete_table: bool,
    /// Sets the new layout adds.
    pub create_sets: Vec<SetId>,
    /// Elements to delete, in sets that stay.
    pub delete_elements: ElementDiff,
    /// Elements to add.
    pub add_elements: ElementDiff,
    /// The new layout, when it differs (its chains are rewritten).
    pub new_layout: Option<Layout>,
    /// Sets the new layout drops.
    pub delete_sets: Vec<SetId>,
    /// Frontend-to-endpoint flows that went (stale UDP flows and affinities).
    pub gone_flows: Vec<Flow>,
    /// Frontends whose affinity went or changed.
    pub gone_affinity: Vec<(u32, Frontend)>,
    /// Elements deleted, counting those that go with their set.
    pub deleted: usize,
    /// Each changed service's health check after the change (none: gone).
    health: Vec<(ServiceName, Option<HealthCheck>)>,
    counts: HashMap<SetId, usize>,
    hairpin: HashMap<IpAddr, usize>,
    remaining: usize,
}

impl UpdatePlan {
    /// The plan as one transaction (empty when nothing changes).
    pub fn transaction(&self) -> Transaction {
        let mut tx = Transaction::new(Family::Inet, TABLE);
        if self.delete_table {
            tx.delete_table();
            return tx;
        }
        for s in &self.create_sets {
            tx.add_set(&s.spec());
        }
        for (set, elems) in &self.delete_elements {
            tx.delete_elements(&set.name(), elems);
        }
        for (set, elems) in &self.add_elements {
            tx.add_elements(&set.name(), elems);
        }
        if let Some(layout) = &self.new_layout {
            tx.replace_chains(&layout.chains(), &[]);
        }
        for s in &self.delete_sets {
            tx.delete_set(&s.name());
        }
        tx
    }

    /// The plan as nft commands, one per line, elements decoded (what the
    /// golden files of `tests/updates` hold).
    pub fn render(&self) -> String {
        let mut out = String::new();
        if self.delete_table {
            return format!("delete table inet {TABLE}\n");
        }
        for s in &self.create_sets {
            out += &format!("add set {}\n", s.name());
        }
        let elements = |verb: &str, diff: &ElementDiff, out: &mut String| {
            for (set, elems) in diff {
                let mut shown: Vec<String> = elems.iter().map(|e| set.render_element(e)).collect();
                shown.sort();
                for e in shown {
                    *out += &format!("{verb} element {} {{ {e} }}\n", set.name());
                }
            }
        };
        elements("delete", &self.delete_elements, &mut out);
        elements("add", &self.add_elements, &mut out);
        if let Some(layout) = &self.new_layout {
            out += &format!("replace chains ({})\n", layout.fingerprint());
        }
        for s in &self.delete_sets {
            out += &format!("delete set {}\n", s.name());
        }
        out
    }
}

impl Programmed {
    /// Nothing programmed yet, on `node`.
    pub fn new(node: &str) -> Self {
        Programmed {
            node: node.to_string(),
            ..Programmed::default()
        }
    }

    /// The fragment of what is programmed for `name` (empty when nothing is).
    fn applied_fragment(&self, name: &ServiceName) -> Fragment {
        self.applied
            .get(&applied_key(name))
            .and_then(|bytes| serde_json::from_slice::<(Service, Option<Endpoints>)>(bytes).ok())
            .map(|(s, e)| fragment(&s, e.as_ref(), &self.node))
            .unwrap_or_default()
    }

    /// The delta that takes the kernel from what is programmed to what
    /// `changes` (the last change per service) ask for.
    pub fn plan_update(&self, changes: &HashMap<ServiceName, Change>) -> UpdatePlan {
        let mut plan = UpdatePlan {
            counts: self.counts.clone(),
            ..UpdatePlan::default()
        };
        let mut hairpin_delta: HashMap<IpAddr, isize> = HashMap::new();
        for (name, change) in changes {
            let old = self.applied_fragment(name);
            let new = match change {
                Change::Upsert(s, e) => fragment(s, e.as_ref(), &self.node),
                Change::Delete(_) => Fragment::default(),
            };
            plan.note_elements(&old, &new);
            plan.health.push((name.clone(), new.health_check));
            for ip in old.hairpin.difference(&new.hairpin) {
                *hairpin_delta.entry(*ip).or_default() -= 1;
            }
            for ip in new.hairpin.difference(&old.hairpin) {
                *hairpin_delta.entry(*ip).or_default() += 1;
            }
            plan.note_gone_flows(&old, &new);
        }
        plan.hairpin = self.apply_hairpin(hairpin_delta, &mut plan);
        plan.counts.retain(|_, n| *n > 0);
        let replaced = changes
            .keys()
            .filter(|n| self.applied.contains_key(&applied_key(n)))
            .count();
        let upserts = changes
            .values()
            .filter(|c| matches!(c, Change::Upsert(..)))
            .count();
        plan.remaining = self.applied.len() - replaced + upserts;
        plan.deleted = plan.delete_elements.values().map(Vec::len).sum();
        self.plan_layout(&mut plan);
        plan
    }

    /// Sets and chains: what the new element counts imply.
    fn plan_layout(&self, plan: &mut UpdatePlan) {
        let layout = Layout::from_sets(self.counts.keys());
        let old_sets: BTreeSet<SetId> = layout.sets().into_iter().collect();
        if plan.remaining == 0 {
            plan.delete_table = true;
            return;
        }
        let new_layout = Layout::from_sets(plan.counts.keys());
        let new_sets: BTreeSet<SetId> = new_layout.sets().into_iter().collect();
        plan.create_sets = new_sets.difference(&old_sets).copied().collect();
        plan.delete_sets = old_sets.difference(&new_sets).copied().collect();
        plan.delete_elements.retain(|s, _| new_sets.contains(s));
        if new_layout != layout {
            plan.new_layout = Some(new_layout);
        }
    }

    /// Hairpin elements: added for a local endpoint's first service,
    /// deleted with its last; the new counts.
    fn apply_hairpin(
        &self,
        delta: HashMap<IpAddr, isize>,
        plan: &mut UpdatePlan,
    ) -> HashMap<IpAddr, usize> {
        let mut hairpin = self.hairpin.clone();
        for (ip, d) in delta {
            let before = hairpin.get(&ip).copied().unwrap_or(0);
            let after = (before as isize + d).max(0) as usize;
            let (set, e) = hairpin_element(ip);
            if before == 0 && after > 0 {
                plan.add_elements.entry(set).or_default().push(e);
            } else if before > 0 && after == 0 {
                plan.delete_elements.entry(set).or_default().push(e);
            }
            if after == 0 {
                hairpin.remove(&ip);
            } else {
                hairpin.insert(ip, after);
            }
        }
        hairpin
    }

    /// Records a plan as done: what is programmed now.
    pub fn commit(&mut self, plan: UpdatePlan, changes: HashMap<ServiceName, Change>) {
        for (name, change) in changes {
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
        for (name, health) in plan.health {
            match health {
                Some(h) => self.health.insert(name, h),
                None => self.health.remove(&name),
            };
        }
        self.counts = plan.counts;
        self.hairpin = plan.hairpin;
    }

    /// Forgets everything (the table is gone).
    pub fn clear(&mut self) {
        self.applied.clear();
        self.counts.clear();
        self.hairpin.clear();
        self.health.clear();
    }

    /// How many services are programmed.
    pub fn services(&self) -> usize {
        self.applied.len()
    }
}

impl UpdatePlan {
    /// The elements one service's change deletes and adds.
    fn note_elements(&mut self, old: &Fragment, new: &Fragment) {
        let old_set: HashSet<&(SetId, SetElement)> = old.elements.iter().collect();
        let new_set: HashSet<&(SetId, SetElement)> = new.elements.iter().collect();
        for (set, e) in old.elements.iter().filter(|x| !new_set.contains(x)) {
            self.delete_elements
                .entry(*set)
                .or_default()
                .push(e.clone());
            *self.counts.entry(*set).or_default() -= 1;
        }
        for (set, e) in new.elements.iter().filter(|x| !old_set.contains(x)) {
            self.add_elements.entry(*set).or_default().push(e.clone());
            *self.counts.entry(*set).or_default() += 1;
        }
    }

    /// Flows and affinities the change leaves without their endpoint.
    fn note_gone_flows(&mut self, old: &Fragment, new: &Fragment) {
        let kept: HashSet<(Frontend, IpAddr, u16)> = new
            .flows
            .iter()
            .map(|f| (f.frontend, f.backend, f.backend_port))
            .collect();
        let gone = old
            .flows
            .iter()
            .filter(|f| !kept.contains(&(f.frontend, f.backend, f.backend_port)));
        self.gone_flows.extend(gone.copied());
        let gone_affinity = old.affinity_frontends.difference(&new.affinity_frontends);
        self.gone_affinity.extend(gone_affinity.copied());
    }

    /// Whether services remain programmed after the plan.
    pub fn services_remain(&self) -> bool {
        self.remaining > 0
    }
}

/// The key of a service in [`Programmed::applied`].
pub fn applied_key(name: &ServiceName) -> Box<str> {
    name.to_string().into_boxed_str()
}

/// A service and its endpoints as [`Programmed::applied`] keeps them.
pub fn encode_applied(svc: &Service, eps: Option<&Endpoints>) -> Box<[u8]> {
    serde_json::to_vec(&(svc, eps))
        .unwrap_or_default()
        .into_boxed_slice()
}
