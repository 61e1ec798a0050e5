//! Backend `bgp` in the lab, against real daemons: BIRD on every node,
//! FRR on the router. Segments are joined only by the router, so pods on
//! different segments reach each other only through routes learned over BGP.
//! Here: the topologies, both families, and bad input.

mod bgpkit;
mod labkit;

use std::net::IpAddr;
use std::time::Duration;

use bgpkit::*;
use labkit::{text, LabGuard};
use podnet_kernel::rtnl::{RTPROT_BIRD, RTPROT_PODNET_NODES};
use podnet_kernel::RouteHandle;
use podnet_testkit::wait_until;

/// A router that advertises a node's own block back to it (here: FRR
/// originating it with `network`) never makes the node route its block
/// away: the node keeps its blackhole and refuses the route on import.
#[test]
fn a_node_never_installs_its_own_block_from_a_peer() {
    let lab = LabGuard::new();
    up_bgp(&lab, "--bgp-topology tor --nodes 2 --pods-per-node 1");
    let own = block(&lab, "node1");
    let network = format!("network {own}");
    let commands = [
        "configure terminal",
        "router bgp 65000",
        "no bgp network import-check",
        "address-family ipv4 unicast",
        &network,
    ];
    let mut vtysh = std::process::Command::new("vtysh");
    vtysh.arg("--vty_socket").arg(lab.lab().frr_dir());
    for c in commands {
        vtysh.args(["-c", c]);
    }
    let frr = vtysh.output().unwrap();
    assert!(frr.status.success(), "{}", text(&frr));
    // The router now sends node1 its own block (with the router's AS in front).
    let advertised = || {
        let out = std::process::Command::new("vtysh")
            .arg("--vty_socket")
            .arg(lab.lab().frr_dir())
            .args([
                "-c",
                "show bgp ipv4 unicast neighbors 198.18.1.1 advertised-routes",
            ])
            .output()
            .unwrap();
        text(&out)
    };
    assert!(
        wait_until(Duration::from_secs(15), || advertised()
            .contains(&own.to_string())),
        "the router never sent node1 its block: {}",
        advertised()
    );
    // node1's BIRD received it and its import filter refused it.
    let socket = lab.lab().bird_dir("node1").join(podnet_bgp::SOCKET_FILE);
    let import_filtered = || {
        let stats = podnet_bgp::BirdControl::connect(&socket)
            .and_then(|mut b| b.text("show protocols all peer_tor_s1"))
            .unwrap_or_default();
        // `Import updates:  received rejected filtered ignored accepted`
        stats
            .lines()
            .find(|l| l.trim_start().starts_with("Import updates:"))
            .and_then(|l| l.split_whitespace().nth(4)?.parse::<u32>().ok())
            .unwrap_or(0)
    };
    assert!(
        wait_until(Duration::from_secs(15), || import_filtered() >= 1),
        "node1's session never filtered its own block"
    );
    let all = routes(&lab, "node1");
    assert!(
        !all.iter()
            .any(|r| r.dst == own && r.protocol == RTPROT_BIRD),
        "node1 installed its own block {own} from the router: {all:?}"
    );
    assert!(
        all.iter()
            .any(|r| r.dst == own && r.blackhole && r.protocol == RTPROT_PODNET_NODES),
        "{all:?}"
    );
}

#[test]
fn a_tor_router_learns_every_block_and_pods_cross_segments_unencapsulated() {
    let lab = LabGuard::new();
    up_bgp(
        &lab,
        "--bgp-topology tor --nodes 4 --segments 2 --pods-per-node 1",
    );
    // The matrix: every pod reaches every pod, and sees the client's own address.
    lab.check_ok();
    assert_routed(&lab);
    // Same segment: straight to the node (FRR passes the node's next hop
    // on); across: via the router.
    let to_node2 = bird_route(&lab, "node1", block(&lab, "node2")).unwrap();
    assert_eq!(to_node2.gateway, Some(address(&lab, "node2")));
    let to_node3 = bird_route(&lab, "node1", block(&lab, "node3")).unwrap();
    assert_eq!(to_node3.gateway, Some("198.18.1.254".parse().unwrap()));
    assert!(
        !routes(&lab, "node1").iter().any(|r| r.dst.addr().is_ipv4()
            && r.dst.prefix_len() == 24
            && r.oif.is_some_and(|i| i != 0)
            && r.gateway.is_none()
            && r.protocol == RTPROT_BIRD),
        "nothing encapsulated, no device route"
    );
    let report = lab_bgp(&lab, None);
    assert_eq!(report.matches("Established").count(), 4, "{report}");
    assert!(report.contains("== router (FRR)"), "{report}");
    for n in ["198.18.1.1", "198.18.1.2", "198.18.2.3", "198.18.2.4"] {
        assert!(
            report.contains(&format!("*{n}")),
            "FRR's dynamic neighbour {n}: {report}"
        );
    }
    let check = text(&lab.run(&["check"]));
    assert!(
        check.contains("node1 BGP: peer_tor_s1 Established"),
        "{check}"
    );
    let learned = format!("{} via {}", block(&lab, "node2"), address(&lab, "node2"));
    assert!(
        check
            .lines()
            .any(|l| l.contains("node1 learned:") && l.contains(&learned)),
        "{check}"
    );
}

#[test]
fn a_mesh_on_one_segment_routes_straight_to_each_node() {
    let lab = LabGuard::new();
    up_bgp(&lab, "--bgp-topology mesh --nodes 3 --pods-per-node 1");
    lab.check_ok();
    assert_routed(&lab);
    for (from, to) in [("node1", "node2"), ("node2", "node3"), ("node3", "node1")] {
        let r = bird_route(&lab, from, block(&lab, to)).unwrap();
        assert_eq!(r.gateway, Some(address(&lab, to)), "{from} -> {to}");
    }
    let report = lab_bgp(&lab, Some("node2"));
    assert_eq!(
        report.matches("Established").count(),
        2,
        "two sessions: {report}"
    );
    assert!(
        !lab.namespaces().iter().any(|n| n.ends_with("router")),
        "no router needed"
    );
}

#[test]
fn bird_route_reflectors_carry_routes_between_clients() {
    let lab = LabGuard::new();
    up_bgp(
        &lab,
        "--bgp-topology reflector --nodes 4 --segments 2 --pods-per-node 1",
    );
    lab.check_ok();
    assert_routed(&lab);
    // node2 is a client: sessions to the reflectors (node1, node3) and the router only.
    let client = lab_bgp(&lab, Some("node2"));
    assert_eq!(
        sessions(&client),
        ["node_node1", "node_node3", "peer_router_s1"],
        "{client}"
    );
    // node4's block reached node2 through a reflector: its next hop is node4's address.
    let r = bird_route(&lab, "node2", block(&lab, "node4")).unwrap();
    assert_eq!(
        r.gateway,
        Some("198.18.1.254".parse().unwrap()),
        "resolved via the router"
    );
    let conf = std::fs::read_to_string(lab.lab().bird_dir("node1").join("bird.conf")).unwrap();
    assert!(
        conf.contains("rr client;") && conf.contains("rr cluster id 244.0.0.1;"),
        "{conf}"
    );
}

#[test]
fn an_frr_route_reflector_carries_routes_between_nodes() {
    let lab = LabGuard::new();
    up_bgp(
        &lab,
        "--bgp-topology reflector --bgp-reflector frr --nodes 3 --pods-per-node 1",
    );
    lab.check_ok();
    assert_routed(&lab);
    let report = lab_bgp(&lab, Some("node1"));
    assert_eq!(
        sessions(&report),
        ["peer_router_s1"],
        "only the reflector: {report}"
    );
    // Reflected, not rewritten: the next hop is the node that owns the block.
    let r = bird_route(&lab, "node1", block(&lab, "node3")).unwrap();
    assert_eq!(r.gateway, Some(address(&lab, "node3")));
}

/// Bad input is refused with the field named, and changes nothing.
#[test]
fn bad_bgp_input_is_refused_with_the_field_named() {
    let lab = LabGuard::new();
    up_bgp(&lab, "--bgp-topology tor --nodes 1 --pods-per-node 0");
    let dir = podnet_testkit::TempDir::new("bgppeer");
    let file = dir.path().join("peer.yaml");
    let cases = [
        (
            "spec.nodes[0]",
            "no node named node9",
            "spec: {peerIP: 192.0.2.1, asNumber: 65001, node: node9}",
        ),
        (
            "spec.peerIP",
            "not an IP address",
            "spec: {peerIP: tor.example, asNumber: 65001}",
        ),
        (
            "spec.asNumber",
            "AS 0 is reserved",
            "spec: {peerIP: 192.0.2.1, asNumber: 0}",
        ),
    ];
    for (field, why, spec) in cases {
        let yaml =
            format!("apiVersion: podnet.io/v1\nkind: BGPPeer\nmetadata: {{name: extra}}\n{spec}\n");
        std::fs::write(&file, yaml).unwrap();
        let out = lab.run(&["apply", "-f", file.to_str().unwrap()]);
        let t = text(&out);
        assert!(!out.status.success(), "{spec} was accepted: {t}");
        assert!(t.contains(field) && t.contains(why), "{field}: {t}");
    }
    let conf = std::fs::read_to_string(lab.lab().bird_dir("node1").join("bird.conf")).unwrap();
    assert!(
        !conf.contains("extra"),
        "a refused peer reached BIRD: {conf}"
    );

    // A cluster with AS 0, or overlapping reflector clusters, never starts.
    let store = podnet_testkit::TempDir::new("bgpspec");
    for (field, bgp) in [
        ("bgp.asNumber", "asNumber: 0"),
        (
            "bgp.routeReflectors[1].nodes[0]",
            "routeReflectors: [{clusterID: 244.0.0.1, nodes: [a]}, {clusterID: 244.0.0.2, nodes: [a]}]",
        ),
    ] {
        let spec = dir.path().join("cluster.yaml");
        std::fs::write(
            &spec,
            format!("clusterCIDRs: [10.244.0.0/16]\nbackend: bgp\nbgp: {{{bgp}}}\n"),
        )
        .unwrap();
        let url = format!("file:{}", store.path().display());
        let out = std::process::Command::new(labkit::podnet())
            .args(["cluster", "--store", &url, "init", "-f", spec.to_str().unwrap()])
            .output()
            .unwrap();
        let t = text(&out);
        assert!(!out.status.success() && t.contains(field), "{field}: {t}");
    }
}

/// A node whose BIRD cannot be found refuses to start, saying so.
#[test]
fn an_agent_without_bird_says_so() {
    let ns = podnet_testkit::NetnsGuard::new("nobird");
    let dir = podnet_testkit::TempDir::new("nobird");
    let h = RouteHandle::in_netns(ns.netns());
    let mut h = h.unwrap();
    let lo = h.link_by_name("lo").unwrap().unwrap();
    h.replace_address(lo.index, "198.18.9.1/32".parse().unwrap())
        .unwrap();
    h.set_up(lo.index).unwrap();
    let spec = dir.path().join("cluster.json");
    std::fs::write(
        &spec,
        r#"{"clusterCIDRs":["10.244.0.0/16"],"backend":"bgp"}"#,
    )
    .unwrap();
    let store = format!("file:{}", dir.path().join("store").display());
    let mut cmd = std::process::Command::new(labkit::podnet());
    cmd.args([
        "agent",
        "--node",
        "n1",
        "--address",
        "198.18.9.1",
        "--store",
        &store,
        "--cluster",
    ])
    .arg(&spec)
    .args(["--cni-conf-dir"])
    .arg(dir.path().join("cni"))
    .args([
        "--no-drop-log",
        "--no-healthz",
        "--bird",
        "/nonexistent/bird",
    ]);
    podnet_kernel::netns::enter_before_exec(&mut cmd, ns.netns());
    let out = cmd.output().unwrap();
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(
        t.contains("BIRD not found") && t.contains("/nonexistent/bird"),
        "{t}"
    );
}

/// A dual-stack cluster over BGP, on one segment and across two: the
/// fabric carries IPv6 too, and each node's BIRD installs every other
/// node's IPv6 block via that node's global IPv6 address (the next hop the
/// IPv4 session carries for it), or via the router's across segments;
/// never its own, which stays a blackhole. Pods reach each other over both
/// families (`lab check`).
#[test]
fn dual_stack_blocks_route_over_ipv6_next_hops() {
    for (topology, segments) in [
        ("mesh", "[{nodes: 3}]"),
        ("tor", "[{nodes: 2}, {nodes: 1}]"),
    ] {
        let lab = LabGuard::new();
        lab.up_yaml(&format!(
            "backend: bgp\nbgp: {{topology: {topology}}}\n\
             clusterCIDRs: [10.244.0.0/16, fd00:10:244::/56]\npodsPerNode: 1\n\
             fabric: {{segments: {segments}}}\n"
        ));
        let state = lab.state();
        for from in &state.nodes {
            let own = block_v6(&lab, &from.name);
            let all = routes(&lab, &from.name);
            assert!(
                all.iter().any(|r| r.dst == own && r.blackhole),
                "{topology}: {} keeps a blackhole for {own}: {all:?}",
                from.name
            );
            for to in state.nodes.iter().filter(|n| n.name != from.name) {
                let dst = block_v6(&lab, &to.name);
                let hop = if topology == "mesh" {
                    podnet_lab::fabric::segment_address_v6(to.segment, host(to.address))
                } else {
                    podnet_lab::fabric::segment_address_v6(from.segment, 254)
                };
                let r = bird_route(&lab, &from.name, dst);
                assert_eq!(
                    r.as_ref().and_then(|r| r.gateway),
                    Some(hop),
                    "{topology}: {} to {}'s {dst}: {r:?}\n{}",
                    from.name,
                    to.name,
                    lab_bgp(&lab, Some(&from.name))
                );
            }
        }
        lab.check_ok();
    }
}

/// The host part of an IPv4 lab address.
fn host(address: IpAddr) -> u8 {
    match address {
        IpAddr::V4(v4) => v4.octets()[3],
        IpAddr::V6(_) => panic!("{address} is not IPv4"),
    }
}
