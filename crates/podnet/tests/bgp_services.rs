//! Service addresses over BGP to the lab's FRR top-of-rack router.

mod bgpkit;
mod labkit;

use std::net::IpAddr;
use std::time::Duration;

use bgpkit::*;
use ipnet::IpNet;
use labkit::{text, LabGuard};
use podnet_kernel::rtnl::RTPROT_BIRD;
use podnet_kernel::Route;
use podnet_testkit::wait_until;

/// The next hops of the router's route to `dst` (several: ECMP), as zebra
/// installed it (read with `ip -j route`, which expands multipath routes).
fn router_next_hops(lab: &LabGuard, dst: IpNet) -> Vec<IpAddr> {
    let out = lab.exec(
        &lab.lab().router_ns(),
        &["ip", "-j", "route", "show", &dst.to_string()],
    );
    assert!(out.status.success(), "{}", text(&out));
    let routes: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let mut hops: Vec<IpAddr> = Vec::new();
    for r in routes.as_array().into_iter().flatten() {
        let nexthops = r["nexthops"]
            .as_array()
            .cloned()
            .unwrap_or_else(|| vec![r.clone()]);
        hops.extend(
            nexthops
                .iter()
                .filter_map(|h| h["gateway"].as_str()?.parse::<IpAddr>().ok()),
        );
    }
    hops.sort();
    hops
}

const ADVERTISING: &str = "
backend: bgp
bgp:
  topology: tor
  advertise: {clusterIPs: true, externalIPs: true, loadBalancerIPs: true}
podsPerNode: 1
fabric: {segments: [{nodes: 2}, {nodes: 1}]}
serviceCIDRs: [10.96.0.0/12]
externalHosts: [{name: client}]
services:
  - name: lb
    type: LoadBalancer
    selector: {app: echo}
    externalTrafficPolicy: Local
    loadBalancerIPs: [203.0.113.10]
    ports: [{name: http, port: 80, targetPort: echo}]
  - name: spread
    selector: {app: echo}
    externalIPs: [198.51.100.7]
    ports: [{name: http, port: 80, targetPort: echo}]
";

/// Service addresses over BGP to an FRR top-of-rack router: a Local
/// load-balancer IP comes only from the nodes with a ready endpoint, and
/// the router spreads it over exactly those (ECMP); Cluster addresses and
/// the service CIDR come from every node. An external host reaches the
/// service through the router with its own address kept. No node installs
/// a service route, its own or a peer's.
#[test]
fn a_tor_spreads_service_addresses_over_the_nodes_that_serve_them() {
    let lab = LabGuard::new();
    lab.up_yaml(ADVERTISING);
    let nodes: Vec<IpAddr> = ["node1", "node2", "node3"]
        .iter()
        .map(|n| address(&lab, n))
        .collect();
    let lb: IpNet = "203.0.113.10/32".parse().unwrap();
    let external: IpNet = "198.51.100.7/32".parse().unwrap();
    let cidr: IpNet = "10.96.0.0/12".parse().unwrap();
    for dst in [lb, external, cidr] {
        assert!(
            wait_until(Duration::from_secs(20), || router_next_hops(&lab, dst)
                == nodes),
            "the router does not spread {dst} over every node: {:?}\n{}",
            router_next_hops(&lab, dst),
            lab_bgp(&lab, None)
        );
    }
    // node3's only endpoint is no longer ready: it stops advertising the
    // Local address, and only that one.
    let pod3 = lab
        .state()
        .pods
        .iter()
        .find(|p| p.node == "node3")
        .unwrap()
        .name
        .clone();
    lab.lab().set_ready(&pod3, false).unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || router_next_hops(&lab, lb)
            == nodes[..2]),
        "{lb} still via {:?}, want node1 and node2 only",
        router_next_hops(&lab, lb)
    );
    assert_eq!(
        router_next_hops(&lab, external),
        nodes,
        "Cluster: every node"
    );

    // From outside, through the router, to a node that serves it: the pod
    // sees the client's own address (Local keeps it).
    let client = lab.state().hosts[0].address;
    let to = std::net::SocketAddr::new(lb.addr(), 80);
    for answer in lab.lab().probe_service("client", to, false, 5).unwrap() {
        let answer = answer.unwrap_or_else(|e| panic!("client to {to}: {e}\n{}", lab.logs()));
        assert_eq!(answer.seen, client);
        assert_ne!(answer.by, pod3);
    }

    for node in ["node1", "node2", "node3"] {
        let installed: Vec<Route> = routes(&lab, node)
            .into_iter()
            .filter(|r| {
                r.protocol == RTPROT_BIRD && [lb, external, cidr].iter().any(|s| s.contains(&r.dst))
            })
            .collect();
        assert!(
            installed.is_empty(),
            "{node} installed service routes: {installed:?}"
        );
    }
    let report = lab_bgp(&lab, Some("node1"));
    assert!(report.contains("podnet_services4"), "{report}");

    // The service goes: so do its addresses.
    let out = lab.run(&["service", "delete", "lb"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        wait_until(Duration::from_secs(20), || router_next_hops(&lab, lb)
            .is_empty()),
        "{lb} outlived its service"
    );
}
