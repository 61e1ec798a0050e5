//! What wakes the agent: a change in the cluster store, or someone removing
//! part of the node's datapath. Each source runs on its own thread and sends
//! a [`Wake`]; the agent then reconciles from a fresh snapshot (level
//! triggered, so a coalesced or lost wake costs nothing but latency).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::time::Duration;

use podnet_kernel::rtnl::{Removal, RemovalWatch};

/// How long one wait of a watcher lasts, so that it notices `halt`.
const SLICE: Duration = Duration::from_secs(2);

/// Why the agent should look again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Wake {
    /// The store changed (new revision).
    Store,
    /// Something was removed from the kernel.
    Kernel(Removal),
    /// The service addresses the node's BGP speaker advertises may have changed.
    Services,
}

/// Sends [`Wake::Store`] for every store change after `revision`.
pub(crate) fn watch_store(
    url: &podnet_store::StoreConfig,
    mut revision: u64,
    tx: &Sender<Wake>,
    halt: &AtomicBool,
) {
    let store = match podnet_store::open(url) {
        Ok(s) => s,
        Err(e) => return tracing::warn!(target: "podnet-agent", "store watch: {e}"),
    };
    let mut backoff = Duration::from_millis(100);
    while !halt.load(Ordering::Relaxed) {
        match store.wait_for_change(revision, SLICE) {
            Ok(Some(r)) => {
                revision = r;
                backoff = Duration::from_millis(100);
                if tx.send(Wake::Store).is_err() {
                    return;
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(target: "podnet-agent", "watch: {e}");
                std::thread::park_timeout(backoff);
                backoff = (backoff * 2).min(SLICE);
            }
        }
    }
}

/// Sends [`Wake::Kernel`] for every link, route or static-entry removal in this namespace.
pub(crate) fn watch_kernel(tx: &Sender<Wake>, halt: &AtomicBool) {
    let mut watch = match RemovalWatch::open() {
        Ok(w) => w,
        Err(e) => {
            return tracing::warn!(target: "podnet-agent",
                "kernel watch unavailable ({e}); relying on resync"
            )
        }
    };
    while !halt.load(Ordering::Relaxed) {
        match watch.wait(SLICE) {
            Ok(removals) => {
                for r in removals {
                    if tx.send(Wake::Kernel(r)).is_err() {
                        return;
                    }
                }
            }
            Err(e) => {
                tracing::warn!(target: "podnet-agent", "kernel watch: {e}");
                std::thread::park_timeout(SLICE);
            }
        }
    }
}
