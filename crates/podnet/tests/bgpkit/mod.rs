//! BGP lab fixtures: a node's routes and blocks, BIRD's and the router's
//! reports, and the check that every node routes every other block.

#![allow(dead_code)]

use std::net::IpAddr;

use ipnet::IpNet;
use podnet_kernel::rtnl::{RTPROT_BIRD, RTPROT_PODNET_NODES};
use podnet_kernel::{Route, RouteHandle};

use crate::labkit::{text, LabGuard};

/// Routes in `node`'s namespace, every kind.
pub fn routes(lab: &LabGuard, node: &str) -> Vec<Route> {
    RouteHandle::in_netns(&lab.node_ns(node))
        .unwrap()
        .routes()
        .unwrap()
}

/// `node`'s blocks (its pod CIDRs).
pub fn blocks(lab: &LabGuard, node: &str) -> Vec<IpNet> {
    let view = lab
        .lab()
        .with_store(lab.state().spec.store, |s| Ok(s.snapshot()?))
        .unwrap();
    view.nodes
        .iter()
        .find(|n| n.name == node)
        .unwrap()
        .pod_cidrs
        .clone()
}

/// `node`'s block (its first pod CIDR).
pub fn block(lab: &LabGuard, node: &str) -> IpNet {
    blocks(lab, node)[0]
}

/// `node`'s IPv6 block.
pub fn block_v6(lab: &LabGuard, node: &str) -> IpNet {
    *blocks(lab, node)
        .iter()
        .find(|b| b.addr().is_ipv6())
        .unwrap()
}

/// The node's address in the lab.
pub fn address(lab: &LabGuard, node: &str) -> IpAddr {
    lab.state().node(node).unwrap().address
}

/// BIRD's route on `node` to `dst`, if it has one.
pub fn bird_route(lab: &LabGuard, node: &str, dst: IpNet) -> Option<Route> {
    routes(lab, node)
        .into_iter()
        .find(|r| r.dst == dst && r.protocol == RTPROT_BIRD)
}

/// Every node holds a BIRD route to every other node's block and none to
/// its own, which it keeps as the agent's blackhole.
pub fn assert_routed(lab: &LabGuard) {
    let nodes: Vec<String> = lab.state().nodes.iter().map(|n| n.name.clone()).collect();
    for node in &nodes {
        let own = block(lab, node);
        let all = routes(lab, node);
        assert!(
            all.iter()
                .any(|r| r.dst == own && r.blackhole && r.protocol == RTPROT_PODNET_NODES),
            "{node} keeps a blackhole for its block {own}: {all:?}"
        );
        assert!(
            !all.iter()
                .any(|r| r.dst == own && r.protocol == RTPROT_BIRD),
            "{node} installed its own block {own} from a peer: {all:?}"
        );
        for other in nodes.iter().filter(|o| *o != node) {
            let dst = block(lab, other);
            assert!(
                bird_route(lab, node, dst).is_some(),
                "{node} has no BIRD route to {other}'s {dst}: {all:?}\n{}",
                lab.logs()
            );
        }
    }
}

/// `podnet lab up --backend bgp ARGS`, which must succeed.
pub fn up_bgp(lab: &LabGuard, args: &str) {
    let mut all = vec!["--backend", "bgp"];
    all.extend(args.split_whitespace());
    lab.up(&all);
}

/// The BGP sessions (BIRD protocol names) a `lab bgp NODE` report lists.
pub fn sessions(report: &str) -> Vec<&str> {
    report
        .lines()
        .filter(|l| l.contains(" BGP "))
        .filter_map(|l| l.split_whitespace().next())
        .collect()
}

pub fn lab_bgp(lab: &LabGuard, node: Option<&str>) -> String {
    let mut args = vec!["bgp"];
    args.extend(node);
    let out = lab.run(&args);
    assert!(out.status.success(), "{}", text(&out));
    text(&out)
}
