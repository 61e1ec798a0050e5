//! Renders the measurements as the Markdown of `bench/RESULTS.md`.

use std::fmt::Write;
use std::time::Duration;

use crate::cni::{Sample, PODS, WORKERS};

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The `q` quantile (0..=1) of `v`, nearest rank.
pub fn quantile(v: &[Duration], q: f64) -> Duration {
    let mut s = v.to_vec();
    s.sort();
    if s.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((s.len() as f64 * q).ceil() as usize).clamp(1, s.len()) - 1;
    s[idx]
}

/// Cores, CPU model and kernel of this machine.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cores} cores, {cpu}, kernel {}", kernel.trim())
}

/// Today as YYYY-MM-DD.
pub fn today() -> String {
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    now.get(..10).unwrap_or(&now).to_string()
}

/// The report: one row per configuration, then podnet's ratios to the reference bridge.
pub fn render(labels: &[&str], samples: &[Sample]) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "## CNI: podnet vs the reference plugins\n");
    let _ = writeln!(t, "Measured {} on {} (`bench/run.sh`). Each call is a new plugin process started in the node's", today(), machine());
    let _ = writeln!(t, "namespace with the config on stdin, as a runtime does. {PODS} pods per configuration; sequential");
    let _ = writeln!(t, "calls run in rounds of 20 with the configurations taking turns, so noise spreads evenly.\n");
    let _ = writeln!(t, "| configuration | ADD median ms | ADD p95 ms | DEL median ms | DEL p95 ms | pods/s sequential | pods/s {WORKERS}-way | DEL pods/s {WORKERS}-way | duplicate IPs | leaked interfaces |");
    let _ = writeln!(t, "|---|---|---|---|---|---|---|---|---|---|");
    for (label, s) in labels.iter().zip(samples) {
        let seq_rate = s.add.len() as f64 / s.seq_add_total.as_secs_f64().max(1e-9);
        let _ = writeln!(
            t,
            "| {label} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} | {:.0} | {:.0} | {} | {} |",
            ms(quantile(&s.add, 0.5)),
            ms(quantile(&s.add, 0.95)),
            ms(quantile(&s.del, 0.5)),
            ms(quantile(&s.del, 0.95)),
            seq_rate,
            PODS as f64 / s.conc_add_wall.as_secs_f64().max(1e-9),
            PODS as f64 / s.conc_del_wall.as_secs_f64().max(1e-9),
            s.duplicates,
            s.leaked
        );
    }
    let _ = writeln!(t, "\nRatios of medians, podnet / reference bridge+host-local with the same ipMasq (goal: at most 0.33):\n");
    let median = |v: &[Duration]| ms(quantile(v, 0.5)).max(1e-9);
    for (label, s) in labels
        .iter()
        .zip(samples)
        .filter(|(l, _)| l.starts_with("podnet"))
    {
        let no_masq = label.ends_with("no ipMasq");
        let reference = labels.iter().position(|l| {
            *l == if no_masq {
                "ref bridge+host-local, no ipMasq"
            } else {
                "ref bridge+host-local"
            }
        });
        if let Some(r) = reference.map(|i| &samples[i]) {
            let _ = writeln!(
                t,
                "- {label}: ADD {:.2}, DEL {:.2}",
                median(&s.add) / median(&r.add),
                median(&s.del) / median(&r.del)
            );
        }
    }
    let _ = writeln!(t, "\nWhat the figures mean:\n");
    let _ = writeln!(t, "- All configurations use one /24. Those without \"no ipMasq\" masquerade: podnet writes its nftables");
    let _ = writeln!(t, "  chains when they are not current (once per node), the reference plugins run iptables on every ADD and DEL.");
    let _ = writeln!(t, "- podnet is a static binary (see .cargo/config.toml); the reference plugins are static Go binaries.");
    let _ = writeln!(t, "- podnet's DEL returns when the kernel has unregistered both veth ends (RTM_DELLINK: gone from both");
    let _ = writeln!(t, "  namespaces, routes flushed); the kernel's RCU barrier that follows (~20 ms) is waited out by a detached");
    let _ = writeln!(
        t,
        "  child. The leak column is counted after all DELs returned."
    );
    let _ = writeln!(t, "- Latencies include the process start (about 0.6 ms here); the machine is a shared 2-core VM, so");
    let _ = writeln!(
        t,
        "  compare ratios within one run rather than absolute numbers across runs."
    );
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_use_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(quantile(&v, 0.5), Duration::from_millis(50));
        assert_eq!(quantile(&v, 0.95), Duration::from_millis(95));
        assert_eq!(quantile(&[], 0.5), Duration::ZERO);
    }
}
