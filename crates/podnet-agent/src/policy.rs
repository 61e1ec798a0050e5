//! The agent's policy loop: namespaces, pods and NetworkPolicies from the
//! store to the node's firewall table.
//!
//! It runs in its own thread with its own store handle. Each pass reads the
//! policy root at one revision, plans the node's sets (pure) and applies the
//! difference from the last pass in one batch; one pass every `resync` is a
//! full [`Firewall::sync`] instead, which adopts what an earlier agent left
//! and repairs whatever was changed behind the agent's back.

use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use std::collections::BTreeMap;

use podnet_firewall::layout::{counter_name, Dir};
use podnet_firewall::{plan, Firewall};
use podnet_policy::{PolicyType, World};
use podnet_store::ClusterStore;

use crate::metrics::AgentMetrics;

/// Keeps the node's policy table equal to the store until `halt` is set.
pub(crate) fn run_policy_firewall(
    url: &podnet_store::StoreConfig,
    node: &str,
    resync: Duration,
    halt: &AtomicBool,
    metrics: &AgentMetrics,
) {
    let store = match podnet_store::open(url) {
        Ok(s) => s,
        Err(e) => return tracing::warn!(target: "podnet-agent", "policies: {e}"),
    };
    let mut firewall = match Firewall::new(None) {
        Ok(f) => f,
        Err(e) => return tracing::warn!(target: "podnet-agent", "policies: {e}"),
    };
    crate::resync::run(
        "policies",
        resync,
        halt,
        metrics,
        |full, last| pass(&store, &mut firewall, node, full, last, metrics),
        |after, timeout| store.wait_for_policy_change(after, timeout),
    );
}

/// One pass: read, plan, apply (or sync when `full`); returns the revision read.
fn pass(
    store: &ClusterStore,
    firewall: &mut Firewall,
    node: &str,
    full: bool,
    last: Option<u64>,
    metrics: &AgentMetrics,
) -> Result<u64, String> {
    let started = Instant::now();
    let snap = store.policy_snapshot().map_err(|e| e.to_string())?;
    if !full && last == Some(snap.revision) {
        return Ok(snap.revision);
    }
    let desired = plan(&snap.world, node);
    let elements = desired.len();
    metrics.programmed("policy_elements", elements);
    metrics.programmed("policies", snap.world.policies.len());
    let local_pods = snap.world.pods.iter().filter(|p| p.node == node).count();
    metrics.programmed("pods", local_pods);
    // Which policies isolate each local pod: read only by a metrics scrape.
    if metrics.served {
        if let Ok(mut facts) = metrics.facts.lock() {
            facts.isolating = isolating(&snap.world, node);
        }
    }
    let report = if full {
        firewall.sync(desired)
    } else {
        firewall.update(desired)
    }
    .map_err(|e| e.to_string())?;
    if !report.unchanged() || last.is_none() {
        tracing::info!(target: "podnet-agent",
            "policies: revision {} ({} policies, {} pods, {elements} elements on this node) {} in {:.2} ms: {report}",
            snap.revision,
            snap.world.policies.len(),
            snap.world.pods.len(),
            if full { "synced" } else { "applied" },
            started.elapsed().as_secs_f64() * 1e3
        );
    }
    Ok(snap.revision)
}

/// For each local pod address some policy isolates: its denial counter's
/// name to the policies isolating it (what `podnet_policy_denied_packets` sums).
fn isolating(world: &World, node: &str) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for pod in world.pods.iter().filter(|p| p.node == node) {
        for (dir, layout_dir) in [
            (PolicyType::Ingress, Dir::In),
            (PolicyType::Egress, Dir::Out),
        ] {
            let policies = crate::drops::policy_names(world, pod, dir);
            if policies.is_empty() {
                continue;
            }
            for ip in &pod.ips {
                out.insert(counter_name(layout_dir, *ip), policies.clone());
            }
        }
    }
    out
}
