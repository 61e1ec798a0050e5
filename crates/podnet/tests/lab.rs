//! The lab as a user runs it: `podnet lab up`, `check`, `down`, `down` after a
//! crash, a cluster file, the etcd store with an outage, and bad input.

mod labkit;

use std::net::IpAddr;
use std::process::Command;
use std::time::Duration;

use labkit::{podnet, text, LabGuard};
use podnet_kernel::{Netns, RouteHandle};
use podnet_lab::echo::{probe, ECHO_PORT};
use podnet_testkit::wait_until;

#[test]
fn up_check_down_from_a_cluster_file() {
    let lab = LabGuard::new();
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/cluster.yaml");
    let out = lab.up(&["-f", file]);
    // 3 nodes, 2 pods each: 9 clients (6 pods, 3 nodes), no failure, no NAT.
    assert!(!out.contains("FAIL") && !out.contains("NAT"), "{out}");
    let state = lab.state();
    assert_eq!(state.nodes.len(), 3);
    assert_eq!(state.pods.len(), 6);
    // Fabric, router, control plane, nodes and pods: all in the lab's namespaces.
    let names = lab.namespaces();
    for n in [
        "seg1",
        "seg2",
        "router",
        "ctl",
        "node1",
        "node3",
        "node3-pod2",
    ] {
        assert!(
            names.contains(&format!("podnet-{}-{n}", lab.name)),
            "{n} missing: {names:?}"
        );
    }
    // No route out: every route of the router stays inside the fabric.
    let router = Netns::open_named(&format!("podnet-{}-router", lab.name)).unwrap();
    let routes = RouteHandle::in_netns(&router).unwrap().routes().unwrap();
    assert!(routes.iter().all(|r| r.dst.prefix_len() != 0), "{routes:?}");

    lab.check_ok();
    let again = lab.run(&["up"]);
    assert!(!again.status.success() && text(&again).contains("already exists"));

    let down = lab.run(&["down"]);
    assert!(down.status.success(), "{}", text(&down));
    assert!(lab.namespaces().is_empty());
    assert!(!std::path::Path::new(&format!("/run/podnet-lab/{}", lab.name)).exists());
    assert!(!lab.run(&["check"]).status.success(), "no lab after down");
}

#[test]
fn down_cleans_up_after_a_crashed_up() {
    let lab = LabGuard::new();
    let mut up = Command::new(podnet())
        .args([
            "lab",
            "up",
            "--nodes",
            "2",
            "--pods-per-node",
            "4",
            "--name",
            &lab.name,
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Crash it once it has built a few pods.
    let third = format!("podnet-{}-node1-pod3", lab.name);
    wait_until(Duration::from_secs(60), || {
        lab.namespaces().contains(&third) || matches!(up.try_wait(), Ok(Some(_)))
    });
    up.kill().unwrap();
    up.wait().unwrap();
    assert!(!lab.namespaces().is_empty(), "the crash left a partial lab");
    let down = lab.run(&["down"]);
    assert!(down.status.success(), "{}", text(&down));
    assert!(lab.namespaces().is_empty(), "{:?}", lab.namespaces());
    // And a fresh lab comes up where the crashed one was.
    lab.up(&["--nodes", "2", "--pods-per-node", "1"]);
}

/// Every pod reaches every other pod, probed directly (no store needed).
fn all_pods_reach_each_other(lab: &LabGuard) -> bool {
    let pods: Vec<(Netns, IpAddr)> = lab
        .state()
        .pods
        .iter()
        .map(|p| (Netns::open_named(&p.name).unwrap(), p.ips[0]))
        .collect();
    pods.iter().all(|(from, me)| {
        pods.iter()
            .filter(|(_, ip)| ip != me)
            .all(|(_, ip)| probe(from, *ip, ECHO_PORT, Duration::from_secs(3)) == Ok(*me))
    })
}

#[test]
fn etcd_lab_rides_out_a_store_outage_and_catches_up() {
    let lab = LabGuard::new();
    let out = lab.up(&[
        "--store",
        "etcd",
        "--nodes",
        "2",
        "--backend",
        "vxlan",
        "--pods-per-node",
        "1",
    ]);
    assert!(out.contains("store Etcd"), "{out}");
    lab.lab().stop_etcd().unwrap();
    // The agents notice the outage...
    assert!(
        wait_until(Duration::from_secs(20), || lab
            .logs()
            .contains("unreachable")),
        "{}",
        lab.logs()
    );
    // ...and the datapath keeps working on what the kernel holds.
    assert!(all_pods_reach_each_other(&lab));
    lab.lab().start_etcd().unwrap();
    // A node that joins after the outage reaches the agents that lived through it.
    let joined = lab.lab().add_node(1).unwrap();
    lab.lab().add_pods(&joined, 1).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || all_pods_reach_each_other(&lab)),
        "{}",
        lab.logs()
    );
    lab.check_ok();
}

#[test]
fn bad_lab_specs_are_refused_before_anything_is_built() {
    let lab = LabGuard::new();
    let dir = podnet_testkit::TempDir::new("spec");
    let file = dir.path().join("cluster.yaml");
    let cases = [
        (
            "clusterCIDRs: [10.244.0.0/16, 10.244.1.0/24]\nfabric: {segments: [{nodes: 2}]}",
            "overlap",
        ),
        (
            "clusterCIDRs: [10.244.0.0/30]\nfabric: {segments: [{nodes: 2}]}",
            "does not fit",
        ),
        ("fabric: {segments: [{nodes: 2}]}\nbackend: ospf", "backend"),
        ("fabric: {segments: []}", "1 to 200 nodes"),
    ];
    for (yaml, expected) in cases {
        std::fs::write(&file, yaml).unwrap();
        let out = lab.run(&["up", "-f", file.to_str().unwrap()]);
        let t = text(&out);
        assert!(!out.status.success(), "{yaml}: {t}");
        assert!(t.contains(expected), "{yaml}: expected {expected:?} in {t}");
        assert!(lab.namespaces().is_empty(), "{yaml} left namespaces behind");
        assert!(!std::path::Path::new(&format!("/run/podnet-lab/{}", lab.name)).exists());
    }
}
