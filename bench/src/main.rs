//! podnet's benchmarks, each side by side with its anchor in one run:
//! - `cni`: CNI ADD/DEL latency and pods/s, podnet vs the reference plugins;
//! - `cluster`: pod-to-pod throughput and RTT across nodes (host-gw, VXLAN)
//!   vs a plain veth, and route convergence after a node joins (10 nodes,
//!   embedded store and etcd);
//! - `policy`: NetworkPolicy change propagation, connect latency and
//!   throughput at 1,000 pods and 500 policies;
//! - `services`: service proxy full sync, one change and connect latency at
//!   1k-100k services vs kube-proxy's iptables and nftables rulesets, and the
//!   agent's memory at 100k.
//!
//! - `bgp`: pod-to-pod throughput across segments over BGP routes vs VXLAN
//!   and a plain veth, and route convergence after a node joins or leaves
//!   (mesh, reflectors, FRR top-of-rack, beside host-gw).
//!
//! Each writes its own section of `bench/RESULTS.md` and prints it.
//! Run: `bench/run.sh [cni|cluster]` (builds release binaries, runs this as root).

mod agent;
mod bgp;
mod cluster;
mod cni;
mod kubeproxy;
mod plugins;
mod policy;
mod policyworld;
mod report;
mod services;

use std::path::PathBuf;

/// A benchmark: its name and the function that runs it and returns its report.
type Section = (&'static str, fn() -> String);

fn main() {
    assert!(
        podnet_kernel::process::is_root(),
        "the benchmark creates namespaces: run it as root"
    );
    let which = std::env::args().nth(1).unwrap_or_else(|| "all".into());
    let sections: [Section; 6] = [
        ("cni", cni::run),
        ("cluster", cluster::run),
        ("services", services::run),
        ("policy", policy::run),
        ("agent", agent::run),
        ("bgp", bgp::run),
    ];
    let mut ran = false;
    for (name, run) in sections {
        if which == "all" || which == name {
            let text = run();
            print!("{text}");
            write_section(name, &text);
            ran = true;
        }
    }
    assert!(
        ran,
        "unknown benchmark {which:?}: use cni, cluster, services, policy, agent, bgp or all"
    );
}

/// Runs one shell command line (the benchmarks set up their paths with
/// iproute2); panics when it fails.
fn sh(cmd: &str) {
    let ok = std::process::Command::new("sh")
        .args(["-c", cmd])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "{cmd}");
}

/// Replaces section `name` of bench/RESULTS.md (between its markers), or appends it.
fn write_section(name: &str, text: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("RESULTS.md");
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    let (begin, end) = (
        format!("<!-- begin {name} -->"),
        format!("<!-- end {name} -->"),
    );
    let block = format!("{begin}\n{text}{end}\n");
    let new = match (old.find(&begin), old.find(&end)) {
        (Some(b), Some(e)) if b < e => format!("{}{block}{}", &old[..b], &old[e + end.len()..].trim_start_matches('\n')),
        _ if old.starts_with("# podnet benchmarks") => format!("{}\n{block}", old.trim_end()),
        _ => format!("# podnet benchmarks\n\nReproduce with `bench/run.sh` (as root). Each section is one run, side by side with its anchor.\n\n{block}"),
    };
    std::fs::write(&path, new).expect("write bench/RESULTS.md");
    eprintln!("wrote section {name} of {}", path.display());
}
