//! The agent's policy loop: namespaces, pods and NetworkPolicies from the
//! store to the node's firewall table.
//!
//! It runs in its own thread with its own store handle. Each pass reads the
//! policy root at one revision, plans the node's sets (pure) and applies the
//! difference from the last pass in one batch; one pass every `resync` is a
//! full [`Firewall::sync`] instead, which adopts what an earlier agent left
//! and repairs whatever was changed behind the agent's back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use podnet_firewall::{plan, Firewall};
use podnet_store::ClusterStore;

use crate::agent::log;

/// Longest wait between checks of the stop flag.
const SLICE: Duration = Duration::from_millis(500);

/// Keeps the node's policy table equal to the store until `halt` is set.
pub(crate) fn run_policy_firewall(url: &str, node: &str, resync: Duration, halt: &AtomicBool) {
    let store = match podnet_store::open(url) {
        Ok(s) => s,
        Err(e) => return log(&format!("policies: {e}")),
    };
    let mut firewall = match Firewall::new(None) {
        Ok(f) => f,
        Err(e) => return log(&format!("policies: {e}")),
    };
    let mut revision = None;
    let mut last_full: Option<Instant> = None;
    let mut backoff = Duration::from_millis(100);
    while !halt.load(Ordering::Relaxed) {
        let full = last_full.is_none_or(|t| t.elapsed() >= resync);
        match pass(&store, &mut firewall, node, full, revision) {
            Ok(r) => {
                revision = Some(r);
                backoff = Duration::from_millis(100);
                if full {
                    last_full = Some(Instant::now());
                }
            }
            Err(e) => {
                log(&format!(
                    "policies: {e}; keeping the current rules, retrying"
                ));
                last_full = None;
                std::thread::park_timeout(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        }
        let until_resync = last_full
            .map(|t| resync.saturating_sub(t.elapsed()))
            .unwrap_or_default();
        let after = revision.unwrap_or(0);
        if let Err(e) = store.wait_for_policy_change(after, until_resync.min(SLICE)) {
            log(&format!("policies: watch: {e}"));
            std::thread::park_timeout(backoff);
        }
    }
}

/// One pass: read, plan, apply (or sync when `full`); returns the revision read.
fn pass(
    store: &ClusterStore,
    firewall: &mut Firewall,
    node: &str,
    full: bool,
    last: Option<u64>,
) -> Result<u64, String> {
    let started = Instant::now();
    let snap = store.policy_snapshot().map_err(|e| e.to_string())?;
    if !full && last == Some(snap.revision) {
        return Ok(snap.revision);
    }
    let desired = plan(&snap.world, node);
    let elements = desired.len();
    let report = if full {
        firewall.sync(desired)
    } else {
        firewall.update(desired)
    }
    .map_err(|e| e.to_string())?;
    if !report.unchanged() || last.is_none() {
        log(&format!(
            "policies: revision {} ({} policies, {} pods, {elements} elements on this node) {} in {:.2} ms: {report}",
            snap.revision,
            snap.world.policies.len(),
            snap.world.pods.len(),
            if full { "synced" } else { "applied" },
            started.elapsed().as_secs_f64() * 1e3
        ));
    }
    Ok(snap.revision)
}
