//! The service proxy's full-sync planner, from recorded states (no root).
//!
//! Each file in `tests/plans/` gives the services (with endpoints) a node
//! must serve, what its kernel table holds (the table as programmed for
//! some services, then drifted: sets deleted, elements deleted, foreign
//! elements added), and the plan, one line per set. Every case is also
//! checked to converge: the plan applied to the kernel's state plans nothing.

use std::collections::BTreeMap;
use std::path::Path;

use podnet_kernel::nftables::SetElement;
use podnet_proxy::table::{desired_table, diff_table, ObservedTable, TableDiff};
use podnet_services::{Endpoints, Service};
use serde::Deserialize;

#[derive(Deserialize)]
struct Served {
    service: Service,
    #[serde(default)]
    endpoints: Option<Endpoints>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Kernel {
    /// The table as a sync for these services left it (none: no table).
    #[serde(default)]
    programmed_for: Vec<Served>,
    /// Sets deleted since.
    #[serde(default)]
    missing_sets: Vec<String>,
    /// Per set, how many of its first elements were deleted since.
    #[serde(default)]
    missing_elements: BTreeMap<String, usize>,
    /// Per set, elements someone else added: `[key hex, data hex or ""]`.
    #[serde(default)]
    foreign_elements: BTreeMap<String, Vec<(String, String)>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Case {
    #[allow(dead_code)]
    description: String,
    node: String,
    services: Vec<Served>,
    kernel: Kernel,
    plan: Vec<String>,
}

fn pairs(v: Vec<Served>) -> Vec<(Service, Option<Endpoints>)> {
    v.into_iter().map(|s| (s.service, s.endpoints)).collect()
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// The kernel's table: as programmed for some services, then drifted.
fn observed(k: Kernel, node: &str) -> ObservedTable {
    let mut t = ObservedTable::default();
    if k.programmed_for.is_empty() {
        return t;
    }
    let programmed = desired_table(&pairs(k.programmed_for), node);
    for set in programmed.layout().sets() {
        let mut els: Vec<SetElement> = programmed.elements(&set);
        els.sort();
        t.names.insert(set.name());
        t.elements.insert(set.name(), els);
    }
    for name in k.missing_sets {
        t.names.remove(&name);
        t.elements.remove(&name);
    }
    for (name, n) in k.missing_elements {
        if let Some(els) = t.elements.get_mut(&name) {
            els.drain(..n.min(els.len()));
        }
    }
    for (name, els) in k.foreign_elements {
        let list = t.elements.entry(name).or_default();
        for (key, data) in els {
            list.push(SetElement::new(
                hex(&key),
                (!data.is_empty()).then(|| hex(&data)),
            ));
        }
    }
    t
}

/// The kernel after `diff` (sets the packet path fills keep what they had).
fn apply(mut t: ObservedTable, diff: &TableDiff) -> ObservedTable {
    for (set, els) in &diff.create {
        t.names.insert(set.name());
        t.elements.insert(set.name(), els.all());
    }
    for (set, stale, missing) in &diff.change {
        let list = t.elements.entry(set.name()).or_default();
        list.retain(|e| !stale.contains(e));
        list.extend(missing.all());
    }
    for name in &diff.drop_sets {
        t.names.remove(name);
        t.elements.remove(name);
    }
    t
}

fn run_case(path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let case: Case = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let services = pairs(case.services);
    let kernel = observed(case.kernel, &case.node);
    let diff = diff_table(desired_table(&services, &case.node), &kernel);
    let plan: Vec<String> = diff.to_string().lines().map(str::to_string).collect();
    if plan != case.plan {
        return Err(format!(
            "{}: planned\n  {}\nexpected\n  {}",
            path.display(),
            plan.join("\n  "),
            case.plan.join("\n  ")
        ));
    }
    let after = apply(kernel, &diff);
    let again = diff_table(desired_table(&services, &case.node), &after);
    if again != TableDiff::default() {
        return Err(format!(
            "{}: after applying, still\n{again}",
            path.display()
        ));
    }
    Ok(())
}

#[test]
fn recorded_states_plan_as_expected() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/plans");
    podnet_testkit::check_recorded_cases(&dir, 6, run_case);
}
