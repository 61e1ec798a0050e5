//! The agent's Prometheus metrics.
//!
//! Sync metrics are recorded by the agent's loops as they run (`datapath`,
//! `services`, `policies`); the service proxy's also under kube-proxy's names
//! (`podnet_proxy_sync_proxy_rules_duration_seconds`, ...), so dashboards
//! built for kube-proxy read them with a prefix change. What the kernel and
//! the IPAM count (denials per policy, anti-spoofing drops, addresses in
//! use) is read at scrape time by [`KernelCollector`]: the kernel's counters
//! stay the one source of truth.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ipnet::IpNet;
use podnet_kernel::nftables::NftHandle;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::drops::DropStats;

/// Labels naming one of the agent's loops.
type LoopLabels = Vec<(&'static str, &'static str)>;
/// A float gauge.
type FloatGauge = Gauge<f64, AtomicU64>;

/// What the kernel collector needs to know about the node, set by the loops.
#[derive(Debug, Default)]
pub struct NodeFacts {
    /// Denial counter name (`denied-in-ADDR`) to the policies isolating that pod.
    pub isolating: BTreeMap<String, Vec<String>>,
    /// IPAM state directory and the node's blocks.
    pub ipam: Option<(PathBuf, Vec<IpNet>)>,
}

/// Every metric the agent exports, and when each loop last succeeded.
#[derive(Debug)]
pub struct AgentMetrics {
    registry: Registry,
    sync_duration: Family<LoopLabels, Histogram>,
    sync_last: Family<LoopLabels, FloatGauge>,
    sync_failures: Family<LoopLabels, Counter>,
    programming: Family<LoopLabels, Histogram>,
    proxy_sync_duration: Histogram,
    proxy_sync_last: FloatGauge,
    proxy_programming: Histogram,
    service_changes_total: Counter,
    service_changes_pending: Gauge,
    objects: Family<Vec<(&'static str, &'static str)>, Gauge>,
    store_up: Gauge,
    /// Facts the kernel collector reads at scrape time.
    pub facts: Arc<Mutex<NodeFacts>>,
    /// Drops read from NFLOG.
    pub drops: Arc<DropStats>,
    /// Whether anyone can scrape these (an endpoint is served): facts only
    /// the scrape reads are not worked out otherwise.
    pub served: bool,
    last_success: Mutex<BTreeMap<&'static str, Instant>>,
}

fn buckets() -> Histogram {
    // 100 µs to about 13 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl AgentMetrics {
    /// Metrics for a fresh agent; `served` when an endpoint will serve them.
    pub fn new(served: bool) -> Arc<Self> {
        let facts = Arc::new(Mutex::new(NodeFacts::default()));
        let drops = Arc::new(DropStats::default());
        let mut registry = Registry::default();
        let m = AgentMetrics {
            sync_duration: Family::new_with_constructor(buckets),
            sync_last: Family::default(),
            sync_failures: Family::default(),
            programming: Family::new_with_constructor(buckets),
            proxy_sync_duration: buckets(),
            proxy_sync_last: FloatGauge::default(),
            proxy_programming: buckets(),
            service_changes_total: Counter::default(),
            service_changes_pending: Gauge::default(),
            objects: Family::default(),
            store_up: Gauge::default(),
            facts: facts.clone(),
            drops: drops.clone(),
            served,
            last_success: Mutex::default(),
            registry: Registry::default(),
        };
        m.register(&mut registry);
        registry.register_collector(Box::new(KernelCollector { facts, drops }));
        Arc::new(AgentMetrics { registry, ..m })
    }

    fn register(&self, r: &mut Registry) {
        r.register(
            "podnet_sync_duration_seconds",
            "How long one pass of a loop (datapath, services, policies) took, from reading the store to the kernel holding the result",
            self.sync_duration.clone(),
        );
        r.register(
            "podnet_sync_last_timestamp_seconds",
            "When a loop last completed a pass successfully",
            self.sync_last.clone(),
        );
        r.register(
            "podnet_sync_failures",
            "Passes that failed (the kernel kept its state; retried)",
            self.sync_failures.clone(),
        );
        r.register(
            "podnet_network_programming_duration_seconds",
            "From the agent seeing a store change to the kernel holding it, per loop",
            self.programming.clone(),
        );
        r.register(
            "podnet_proxy_sync_proxy_rules_duration_seconds",
            "kube-proxy's name: how long one service proxy pass took",
            self.proxy_sync_duration.clone(),
        );
        r.register(
            "podnet_proxy_sync_proxy_rules_last_timestamp_seconds",
            "kube-proxy's name: when the service proxy last synced successfully",
            self.proxy_sync_last.clone(),
        );
        r.register(
            "podnet_proxy_network_programming_duration_seconds",
            "kube-proxy's name: from the agent seeing a service or endpoints change to the kernel holding it",
            self.proxy_programming.clone(),
        );
        r.register(
            "podnet_proxy_sync_proxy_rules_service_changes",
            "Service and endpoints changes applied",
            self.service_changes_total.clone(),
        );
        r.register(
            "podnet_proxy_sync_proxy_rules_service_changes_pending",
            "Service changes seen and not yet in the kernel",
            self.service_changes_pending.clone(),
        );
        r.register(
            "podnet_programmed_objects",
            "Objects the agent keeps in the kernel, by kind",
            self.objects.clone(),
        );
        r.register(
            "podnet_store_up",
            "1 when the last store read succeeded, 0 when it failed",
            self.store_up.clone(),
        );
    }

    /// A pass of `what` succeeded after `took`; `changed_at` is when the
    /// change it applied was seen (none for a resync).
    pub fn pass_ok(&self, what: &'static str, took: Duration, changed_at: Option<Instant>) {
        let labels = vec![("loop", what)];
        self.sync_duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        self.sync_last.get_or_create(&labels).set(unix_now());
        let programming = changed_at.map(|t| t.elapsed().as_secs_f64());
        if let Some(p) = programming {
            self.programming.get_or_create(&labels).observe(p);
        }
        if what == "services" {
            self.proxy_sync_duration.observe(took.as_secs_f64());
            self.proxy_sync_last.set(unix_now());
            if let Some(p) = programming {
                self.proxy_programming.observe(p);
            }
        }
        self.alive(what);
    }

    /// When the last pass of any loop succeeded, in seconds since the epoch
    /// (0 before the first).
    pub fn last_sync_unix(&self) -> f64 {
        let Ok(last) = self.last_success.lock() else {
            return 0.0;
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        last.values()
            .map(|t| now - t.elapsed().as_secs_f64())
            .fold(0.0, f64::max)
    }

    /// A pass of `what` found nothing to do: the loop is alive.
    pub fn alive(&self, what: &'static str) {
        if let Ok(mut last) = self.last_success.lock() {
            last.insert(what, Instant::now());
        }
    }

    /// A pass of `what` failed.
    pub fn pass_failed(&self, what: &'static str) {
        self.sync_failures
            .get_or_create(&vec![("loop", what)])
            .inc();
    }

    /// Whether the store answered the agent's last read or heartbeat.
    pub fn store_reachable(&self, up: bool) {
        self.store_up.set(i64::from(up));
    }

    /// Service changes about to be applied (`pending`), or applied (`done`).
    pub fn service_changes(&self, pending: usize, done: usize) {
        self.service_changes_pending.set(pending as i64);
        self.service_changes_total.inc_by(done as u64);
    }

    /// How many objects of `kind` the agent keeps in the kernel.
    pub fn programmed(&self, kind: &'static str, n: usize) {
        self.objects
            .get_or_create(&vec![("kind", kind)])
            .set(n as i64);
    }

    /// Loops (of `expected`, with their longest allowed quiet time) whose
    /// last success is missing or older than that: why the agent is unhealthy.
    pub fn stale_loops(&self, expected: &[(&'static str, Duration)]) -> Vec<String> {
        self.stale_loops_at(expected, Instant::now())
    }

    fn stale_loops_at(&self, expected: &[(&'static str, Duration)], now: Instant) -> Vec<String> {
        let Ok(last) = self.last_success.lock() else {
            return vec!["metrics lock poisoned".into()];
        };
        expected
            .iter()
            .filter_map(|(what, limit)| {
                let Some(t) = last.get(what) else {
                    return Some(format!("{what}: no successful pass yet"));
                };
                let quiet = now.saturating_duration_since(*t);
                (quiet > *limit).then(|| {
                    format!(
                        "{what}: last successful pass {:.0} s ago",
                        quiet.as_secs_f64()
                    )
                })
            })
            .collect()
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> Result<String, fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Reads the kernel's drop counters and the IPAM's allocations at scrape time.
#[derive(Debug)]
struct KernelCollector {
    facts: Arc<Mutex<NodeFacts>>,
    drops: Arc<DropStats>,
}

impl KernelCollector {
    /// Denied packets per `(policy, direction)` from the per-pod counters.
    fn denials(&self, nft: &mut NftHandle) -> BTreeMap<(String, &'static str), u64> {
        let mut out = BTreeMap::new();
        let table = podnet_firewall::TABLE;
        let counters = nft
            .counters(podnet_kernel::nftables::Family::Inet, table)
            .unwrap_or_default();
        let Ok(facts) = self.facts.lock() else {
            return out;
        };
        for c in counters {
            let dir = if c.name.starts_with("denied-in-") {
                "ingress"
            } else {
                "egress"
            };
            for policy in facts.isolating.get(&c.name).into_iter().flatten() {
                *out.entry((policy.clone(), dir)).or_default() += c.packets;
            }
        }
        out
    }

    fn spoofed(&self, nft: &mut NftHandle) -> u64 {
        use podnet_dataplane::antispoof::{COUNTER, TABLE};
        use podnet_kernel::nftables::Family;
        [Family::Inet, Family::Bridge]
            .into_iter()
            .flat_map(|f| nft.counters(f, TABLE).unwrap_or_default())
            .filter(|c| c.name == COUNTER)
            .map(|c| c.packets)
            .sum()
    }

    /// Allocated addresses and capacity of the node's blocks.
    fn ipam(&self) -> Option<(usize, u128)> {
        let (dir, blocks) = self.facts.lock().ok()?.ipam.clone()?;
        let ipam = podnet_ipam::Ipam::of_blocks(&dir, crate::NETWORK_NAME, &blocks).ok()?;
        let used = ipam.allocations().ok()?.len();
        let free: u128 = ipam.free_counts().ok()?.iter().sum();
        Some((used, used as u128 + free))
    }
}

impl Collector for KernelCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        // One nfnetlink socket per scrape; without one the kernel figures are absent.
        let mut nft = NftHandle::current().ok();
        let denials = nft.as_mut().map(|n| self.denials(n)).unwrap_or_default();
        let c = ConstCounter::new(0u64);
        let mut family = encoder.encode_descriptor(
            "podnet_policy_denied_packets",
            "Packets NetworkPolicy denied, per policy isolating the pod (kernel counters)",
            None,
            c.metric_type(),
        )?;
        for ((policy, dir), n) in &denials {
            let labels = [("policy", policy.as_str()), ("direction", *dir)];
            ConstCounter::new(*n).encode(family.encode_family(&labels)?)?;
        }
        let spoofed = ConstCounter::new(nft.as_mut().map_or(0, |n| self.spoofed(n)));
        spoofed.encode(encoder.encode_descriptor(
            "podnet_antispoof_dropped_packets",
            "Packets dropped because a pod sent from an address it does not hold (kernel counter)",
            None,
            spoofed.metric_type(),
        )?)?;
        let mut logged = encoder.encode_descriptor(
            "podnet_drops_logged",
            "Drops read from NFLOG into the drop log, by reason",
            None,
            c.metric_type(),
        )?;
        for (reason, n) in [
            ("policy", &self.drops.denied),
            ("antispoof", &self.drops.spoofed),
        ] {
            let v = ConstCounter::new(n.load(Ordering::Relaxed));
            v.encode(logged.encode_family(&[("reason", reason)])?)?;
        }
        if let Some((used, capacity)) = self.ipam() {
            for (name, help, v) in [
                (
                    "podnet_ipam_allocated_addresses",
                    "Pod addresses allocated on this node",
                    used as i64,
                ),
                (
                    "podnet_ipam_capacity_addresses",
                    "Pod addresses this node's blocks hold",
                    capacity.min(i64::MAX as u128) as i64,
                ),
            ] {
                let g = ConstGauge::new(v);
                g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_names_loops_that_never_synced_or_went_quiet() {
        let m = AgentMetrics::new(true);
        let limits = [
            ("datapath", Duration::from_secs(60)),
            ("services", Duration::from_secs(30)),
        ];
        assert_eq!(m.stale_loops(&limits).len(), 2);
        m.pass_ok("datapath", Duration::from_millis(1), None);
        m.pass_ok("services", Duration::from_millis(1), Some(Instant::now()));
        assert!(m.stale_loops(&limits).is_empty());
        let later = Instant::now() + Duration::from_secs(45);
        let stale = m.stale_loops_at(&limits, later);
        assert_eq!(stale.len(), 1, "{stale:?}");
        assert!(
            stale[0].starts_with("services: last successful pass"),
            "{stale:?}"
        );
        let text = m.encode().unwrap();
        assert!(
            text.contains("podnet_proxy_network_programming_duration_seconds_count 1"),
            "{text}"
        );
    }
}
