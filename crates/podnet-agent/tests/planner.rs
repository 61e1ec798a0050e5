//! The agent's datapath planner, from recorded states (no root needed).
//!
//! Each file in `tests/plans/` holds what a reconcile pass reads (the
//! cluster spec, the store's nodes, the node's underlay and what the kernel
//! held) and the operations the planner must produce, in `ip` syntax, in
//! order. `podnet doctor --record FILE` writes such a state from a live node.

use std::path::Path;

use podnet_agent::plan::{
    desired, plan, DatapathOp, DesiredDatapath, Dev, ObservedDatapath, ObservedFdb,
    ObservedNeighbour, ObservedVxlan,
};
use podnet_agent::Underlay;
use podnet_cluster::{plan_remote_nodes, ClusterSpec, Node};
use serde::Deserialize;

/// One recorded state and the plan it must give.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Case {
    /// What the case shows.
    #[allow(dead_code)]
    description: String,
    cluster: ClusterSpec,
    node: String,
    nodes: Vec<Node>,
    underlay: Underlay,
    services: bool,
    observed: ObservedDatapath,
    ops: Vec<String>,
}

fn run_case(path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let case: Case = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let local = case
        .nodes
        .iter()
        .find(|n| n.name == case.node)
        .ok_or_else(|| format!("{}: node {} not in nodes", path.display(), case.node))?;
    let remotes = plan_remote_nodes(
        case.cluster.backend,
        &case.node,
        &case.underlay.segments,
        &case.nodes,
    );
    let want = desired(
        &case.cluster,
        local,
        &case.underlay,
        &remotes,
        case.services,
    );
    let ops: Vec<String> = plan(&want, &case.observed)
        .iter()
        .map(ToString::to_string)
        .collect();
    if ops != case.ops {
        return Err(format!(
            "{}: planned\n  {}\nexpected\n  {}",
            path.display(),
            ops.join("\n  "),
            case.ops.join("\n  ")
        ));
    }
    // Applying the plan must lead to a state that plans nothing: the
    // planner's output is complete, not just the first step.
    let first = plan(&want, &case.observed);
    let after = simulate(case.observed, &first, &want);
    let again = plan(&want, &after);
    if !again.is_empty() {
        return Err(format!(
            "{}: after applying, still {again:?}",
            path.display()
        ));
    }
    Ok(())
}

/// What the kernel holds after `ops`, with its replace semantics: a route
/// replaces the one to the same prefix, a neighbour the one of the same
/// address, an FDB entry the one of the same MAC.
fn simulate(mut o: ObservedDatapath, ops: &[DatapathOp], d: &DesiredDatapath) -> ObservedDatapath {
    for op in ops {
        match op {
            DatapathOp::DeleteVxlan => forget_device(&mut o, None),
            DatapathOp::CreateVxlan { .. } => {
                let w = d.vxlan.as_ref().expect("created device is desired");
                let dev = ObservedVxlan {
                    index: 99,
                    vni: Some(w.vni),
                    port: w.port,
                    local: Some(w.local),
                    mac: w.mac.to_vec(),
                    mtu: w.mtu,
                    up: true,
                    addresses: Default::default(),
                };
                forget_device(&mut o, Some(dev));
            }
            DatapathOp::AddVxlanAddress { address } => {
                o.vxlan.as_mut().expect("device").addresses.insert(*address);
            }
            DatapathOp::AddRoute { route } => {
                o.routes.retain(|r| r.dst != route.dst);
                o.routes.push(*route);
            }
            DatapathOp::DeleteRoute { route } => o.routes.retain(|r| r != route),
            DatapathOp::AddFdb { mac, dst } => {
                o.fdb.retain(|e| e.mac != mac);
                o.fdb.push(ObservedFdb {
                    mac: mac.to_vec(),
                    dst: Some(*dst),
                    permanent: true,
                });
            }
            DatapathOp::DeleteFdb { mac, dst } => {
                o.fdb.retain(|e| !(e.mac == *mac && e.dst == Some(*dst)));
            }
            DatapathOp::AddNeighbour { ip, mac } => {
                o.neighbours.retain(|n| n.ip != *ip);
                o.neighbours.push(ObservedNeighbour {
                    ip: *ip,
                    mac: Some(mac.to_vec()),
                    permanent: true,
                });
            }
            DatapathOp::DeleteNeighbour { ip } => o.neighbours.retain(|n| n.ip != *ip),
        }
    }
    o
}

/// The device replaced by `dev` (or gone): its entries and routes go with it.
fn forget_device(o: &mut ObservedDatapath, dev: Option<ObservedVxlan>) {
    o.vxlan = dev;
    o.neighbours.clear();
    o.fdb.clear();
    o.routes.retain(|r| r.dev != Dev::Vxlan);
}

#[test]
fn recorded_states_plan_as_expected() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/plans");
    podnet_testkit::check_recorded_cases(&dir, 6, run_case);
}
