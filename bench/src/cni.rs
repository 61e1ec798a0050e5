//! CNI benchmark: ADD/DEL latency (median, p95) and pods/s, podnet vs the reference plugins.
//!
//! Every plugin is invoked as a runtime invokes it: a new process, started in
//! the node's namespace, config on stdin. The configurations run in
//! interleaved rounds so that machine noise spreads over all of them alike.
//! Returns its section of `bench/RESULTS.md`.

use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::plugins::{Setup, SETUPS};
use crate::report;
use podnet_kernel::{Netns, RouteHandle};
use podnet_lab::runtime::CniCall;

/// Pods per configuration and phase.
pub(crate) const PODS: usize = 100;
/// Sequential pods are done in rounds of this many, configurations taking turns.
const ROUND: usize = 20;
/// Concurrent callers in the concurrency phase.
pub(crate) const WORKERS: usize = 4;
/// Upper bound for one plugin call: the benchmark stops rather than hang.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Named namespaces that are removed on drop, also on panic.
struct Namespaces {
    names: Vec<String>,
}

impl Namespaces {
    fn create(&mut self, name: String) -> Netns {
        let ns = Netns::create_named(&name).unwrap_or_else(|e| panic!("create {name}: {e}"));
        self.names.push(name);
        ns
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = Netns::remove_named(n);
        }
    }
}

/// Measurements of one configuration.
#[derive(Default)]
pub struct Sample {
    /// Sequential ADD latencies.
    pub add: Vec<Duration>,
    /// Sequential DEL latencies.
    pub del: Vec<Duration>,
    /// Wall time of the sequential ADDs, summed.
    pub seq_add_total: Duration,
    /// Wall time of 100 ADDs with 4 concurrent callers.
    pub conc_add_wall: Duration,
    /// Wall time of 100 DELs with 4 concurrent callers.
    pub conc_del_wall: Duration,
    /// Duplicate addresses seen in the concurrent phase.
    pub duplicates: usize,
    /// Host or pod interfaces left after the concurrent DELs.
    pub leaked: usize,
}

/// One plugin invocation, timed; panics on failure (a benchmark of failures means nothing).
fn call(
    node: &Netns,
    setup: &Setup,
    cmd: &str,
    id: &str,
    netns: &str,
    config: &str,
) -> (Duration, String) {
    let call = CniCall {
        plugin: &setup.binary,
        command: cmd,
        container_id: id,
        netns_path: netns,
        ifname: "eth0",
        config,
    };
    let mut c = call.command(node);
    let start = Instant::now();
    let mut child = c.spawn().expect("start plugin");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(config.as_bytes())
        .expect("write config");
    let out = child.wait_with_output().expect("wait for plugin");
    let took = start.elapsed();
    assert!(took < CALL_TIMEOUT, "{} {cmd} took {took:?}", setup.label);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{} {cmd} {id} failed: {stdout}{}",
        setup.label,
        String::from_utf8_lossy(&out.stderr)
    );
    (took, stdout)
}

fn first_ipv4(result: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(result).ok()?;
    v["ips"]
        .as_array()?
        .iter()
        .filter_map(|i| i["address"].as_str())
        .find(|a| !a.contains(':'))
        .map(String::from)
}

struct Bed {
    node: Netns,
    pods: Vec<(String, String)>,
    config: String,
    setup: &'static Setup,
    data_dir: PathBuf,
}

fn build_bed(nss: &mut Namespaces, tag: &str, setup: &'static Setup) -> Bed {
    let prefix = format!("pnbench{}-{tag}", std::process::id());
    let node = nss.create(format!("{prefix}-node"));
    let pods = (0..PODS)
        .map(|i| {
            let name = format!("{prefix}-p{i}");
            nss.create(name.clone());
            (name.clone(), format!("/run/netns/{name}"))
        })
        .collect();
    let data_dir = std::env::temp_dir().join(format!("{prefix}-ipam"));
    let config = (setup.config)(&data_dir);
    Bed {
        node,
        pods,
        config,
        setup,
        data_dir,
    }
}

fn host_interfaces(node: &Netns) -> usize {
    let mut h = RouteHandle::in_netns(node).expect("netlink");
    h.links()
        .expect("links")
        .iter()
        .filter(|l| l.kind.as_deref() == Some("veth"))
        .count()
}

fn run_concurrent(bed: &Bed, cmd: &str) -> (Duration, Vec<String>) {
    let next = Mutex::new(0usize);
    let results = Mutex::new(Vec::new());
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..WORKERS {
            s.spawn(|| loop {
                let i = {
                    let mut n = next.lock().expect("lock");
                    let i = *n;
                    *n += 1;
                    i
                };
                let Some((id, path)) = bed.pods.get(i) else {
                    break;
                };
                let (_, out) = call(&bed.node, bed.setup, cmd, id, path, &bed.config);
                results.lock().expect("lock").push(out);
            });
        }
    });
    (start.elapsed(), results.into_inner().expect("lock"))
}

/// Runs the CNI benchmark and returns its report.
pub fn run() -> String {
    let mut nss = Namespaces { names: Vec::new() };
    let beds: Vec<Bed> = SETUPS
        .iter()
        .enumerate()
        .filter(|(_, s)| s.binary.exists())
        .map(|(i, s)| build_bed(&mut nss, &format!("c{i}"), s))
        .collect();
    let mut samples: Vec<Sample> = beds.iter().map(|_| Sample::default()).collect();

    // Warm-up: page cache and first-run costs, not measured.
    for bed in &beds {
        for (id, path) in bed.pods.iter().take(3) {
            call(&bed.node, bed.setup, "ADD", id, path, &bed.config);
            call(&bed.node, bed.setup, "DEL", id, path, &bed.config);
        }
    }
    // Sequential latency, configurations taking turns round by round.
    for round in 0..PODS / ROUND {
        for (bed, sample) in beds.iter().zip(samples.iter_mut()) {
            let pods = &bed.pods[round * ROUND..(round + 1) * ROUND];
            for (id, path) in pods {
                let (t, _) = call(&bed.node, bed.setup, "ADD", id, path, &bed.config);
                sample.add.push(t);
                sample.seq_add_total += t;
            }
            for (id, path) in pods {
                let (t, _) = call(&bed.node, bed.setup, "DEL", id, path, &bed.config);
                sample.del.push(t);
            }
        }
    }
    // Throughput with 4 concurrent callers, plus the safety checks.
    for (bed, sample) in beds.iter().zip(samples.iter_mut()) {
        let (wall, results) = run_concurrent(bed, "ADD");
        sample.conc_add_wall = wall;
        let ips: Vec<String> = results.iter().filter_map(|r| first_ipv4(r)).collect();
        let unique: HashSet<&String> = ips.iter().collect();
        sample.duplicates = ips.len() - unique.len() + (PODS - ips.len());
        let (wall, _) = run_concurrent(bed, "DEL");
        sample.conc_del_wall = wall;
        sample.leaked = host_interfaces(&bed.node)
            + bed
                .pods
                .iter()
                .map(|(name, _)| {
                    let ns = Netns::open_named(name).expect("pod namespace");
                    host_interfaces(&ns)
                })
                .sum::<usize>();
        let _ = std::fs::remove_dir_all(&bed.data_dir);
    }
    let labels: Vec<&str> = beds.iter().map(|b| b.setup.label).collect();
    report::render(&labels, &samples)
}
