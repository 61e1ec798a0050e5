//! The loop the agent's service proxy and policy firewall share: a pass at
//! start, after every store change and at least every `resync` (a full one
//! then, which repairs drift); a failed pass keeps the kernel as it is and is
//! retried with a growing pause.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use podnet_store::StoreError;

use crate::metrics::AgentMetrics;

/// Longest wait between checks of the stop flag.
const SLICE: Duration = Duration::from_millis(500);

/// Runs passes until `halt` is set. `pass(full, last)` gets whether this pass
/// must be full and the store revision the last successful pass read (none
/// yet, or after a failure), and returns the revision it read; `wait(after,
/// timeout)` returns early when the store changes after `after`. Each
/// pass is recorded in `metrics` under `what`, with the time since the
/// change it applied was seen.
pub(crate) fn run(
    what: &'static str,
    resync: Duration,
    halt: &AtomicBool,
    metrics: &AgentMetrics,
    mut pass: impl FnMut(bool, Option<u64>) -> Result<u64, String>,
    wait: impl Fn(u64, Duration) -> Result<Option<u64>, StoreError>,
) {
    let mut revision = None;
    let mut last_full: Option<Instant> = None;
    let mut backoff = Duration::from_millis(100);
    let mut changed_at: Option<Instant> = None;
    // A pass runs at start, after a change, after a failure, and when a
    // full resync is due; a quiet store costs one open watch, nothing more.
    let mut pending = true;
    while !halt.load(Ordering::Relaxed) {
        let full = last_full.is_none_or(|t| t.elapsed() >= resync);
        if pending || full {
            let started = Instant::now();
            match pass(full, revision) {
                Ok(r) => {
                    metrics.pass_ok(what, started.elapsed(), changed_at.take());
                    revision = Some(r);
                    backoff = Duration::from_millis(100);
                    pending = false;
                    if full {
                        last_full = Some(Instant::now());
                    }
                }
                Err(e) => {
                    metrics.pass_failed(what);
                    tracing::warn!(target: "podnet-agent", "{what}: {e}; keeping the current rules, retrying");
                    revision = None;
                    last_full = None;
                    std::thread::park_timeout(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            }
        }
        let until_resync = last_full
            .map(|t| resync.saturating_sub(t.elapsed()))
            .unwrap_or_default();
        match wait(revision.unwrap_or(0), until_resync.min(SLICE)) {
            Ok(Some(_)) => {
                changed_at.get_or_insert_with(Instant::now);
                pending = true;
            }
            // The store answered and nothing changed: the loop is alive.
            Ok(None) => metrics.alive(what),
            Err(e) => {
                tracing::warn!(target: "podnet-agent", "{what}: watch: {e}");
                pending = true;
                std::thread::park_timeout(backoff);
            }
        }
    }
}
