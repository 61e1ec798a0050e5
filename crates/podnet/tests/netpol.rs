//! NetworkPolicy truth tables on a lab: namespaces x, y, z with pods a, b, c
//! (TCP and UDP on 80 and 81, named ports), two hosts outside the cluster;
//! every case in `tests/netpol/` applies policies and changes labels step by
//! step, and after each step every source, destination, port and protocol
//! is probed and compared with the case's expectation.

mod labkit;
mod netpolkit;

use std::path::PathBuf;

use labkit::LabGuard;

fn case(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/netpol")
        .join(name)
}

fn cases(names: &[&str]) -> Vec<PathBuf> {
    names.iter().map(|c| case(c)).collect()
}

/// Every case file but the base and the dual-stack one (which needs IPv6 pods).
fn all_cases() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(case(""))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n != "base.yaml" && n != "dual-stack.yaml")
        })
        .collect();
    v.sort();
    v
}

/// Applies the base cluster, runs `cases` probing `families`, back to the base after each.
fn run(g: LabGuard, cases: &[PathBuf], families: &[u8]) {
    let lab = g.lab();
    let (base, pods) = netpolkit::base();
    lab.apply(&base).unwrap();
    let mut failures = String::new();
    for c in cases {
        failures.push_str(&netpolkit::run_case(&lab, c, &pods, families));
        netpolkit::reset(&lab, &base);
    }
    assert!(
        failures.is_empty(),
        "truth tables failed:\n{failures}\nagent logs:\n{}",
        g.logs()
    );
}

fn lab(up: &[&str]) -> LabGuard {
    let g = LabGuard::new();
    g.up(up);
    g
}

#[test]
fn truth_tables_routed_host_gw() {
    let g = lab(&[
        "--nodes",
        "2",
        "--pods-per-node",
        "0",
        "--external-hosts",
        "2",
        "--backend",
        "host-gw",
    ]);
    run(g, &all_cases(), &[4]);
}

#[test]
fn truth_tables_bridge_vxlan() {
    let g = lab(&[
        "--nodes",
        "2",
        "--pods-per-node",
        "0",
        "--external-hosts",
        "2",
        "--backend",
        "vxlan",
        "--model",
        "bridge",
    ]);
    let names = [
        "deny-all-ingress.yaml",
        "ipblock-except.yaml",
        "service-traffic.yaml",
        "and-versus-or.yaml",
    ];
    run(g, &cases(&names), &[4]);
}

#[test]
fn truth_tables_dual_stack() {
    // Selectors match both addresses of a pod; an ipBlock only its own family.
    let g = LabGuard::new();
    g.up_yaml(
        "backend: vxlan\nclusterCIDRs: [10.244.0.0/16, fd00:10:244::/56]\npodsPerNode: 0\n\
         externalHosts: [{name: ext1}, {name: ext2}]\nfabric: {segments: [{nodes: 2}]}\n",
    );
    let names = [
        "dual-stack.yaml",
        "deny-all-egress.yaml",
        "and-versus-or.yaml",
    ];
    run(g, &cases(&names), &[4, 6]);
}
