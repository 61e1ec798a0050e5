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

/// Every case file but the base.
fn all_cases() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(case(""))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n != "base.yaml"))
        .collect();
    v.sort();
    v
}

fn run(up: &[&str], cases: &[PathBuf]) {
    let g = LabGuard::new();
    g.up(up);
    let lab = g.lab();
    let (base, pods) = netpolkit::base();
    lab.apply(&base).unwrap();
    let mut failures = String::new();
    for c in cases {
        failures.push_str(&netpolkit::run_case(&lab, c, &pods));
        netpolkit::reset(&lab, &base);
    }
    assert!(
        failures.is_empty(),
        "truth tables failed:\n{failures}\nagent logs:\n{}",
        g.logs()
    );
}

#[test]
fn truth_tables_routed_host_gw() {
    run(
        &[
            "--nodes",
            "2",
            "--pods-per-node",
            "0",
            "--external-hosts",
            "2",
            "--backend",
            "host-gw",
        ],
        &all_cases(),
    );
}

#[test]
fn truth_tables_bridge_vxlan() {
    let cases: Vec<PathBuf> = [
        "deny-all-ingress.yaml",
        "ipblock-except.yaml",
        "service-traffic.yaml",
        "and-versus-or.yaml",
    ]
    .iter()
    .map(|c| case(c))
    .collect();
    run(
        &[
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
        ],
        &cases,
    );
}
