//! Multi-node labs: host-gw, VXLAN and auto across nodes, joins and leaves,
//! agent restarts under traffic, MTU, and bad input.

mod labkit;

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use labkit::{connect, text, transfer, LabGuard};
use podnet_kernel::RouteHandle;
use podnet_testkit::wait_until;

/// How soon every other node must follow a join or a leave.
const CONVERGENCE: Duration = Duration::from_secs(2);

fn block_of(lab: &LabGuard, node: &str) -> IpNet {
    let dir = lab.lab().node_dir(node).join("cni/10-podnet.conflist");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir).unwrap()).unwrap();
    v["plugins"][0]["ipam"]["ranges"][0][0]["subnet"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

fn assert_clean_matrix(out: &str, clients: usize) {
    assert!(!out.contains("FAIL") && !out.contains("NAT"), "{out}");
    let rows = out
        .lines()
        .filter(|l| l.starts_with('n'))
        .filter(|l| l.contains(" ok"))
        .count();
    assert_eq!(rows, clients, "{out}");
}

#[test]
fn auto_takes_host_gw_on_a_segment_and_vxlan_across() {
    let lab = LabGuard::new();
    let out = lab.up(&["--nodes", "3", "--segments", "2", "--backend", "auto"]);
    // 6 pods + 3 nodes as clients, every one reached every pod with its own address.
    assert_clean_matrix(&out, 9);
    let (b2, b3) = (block_of(&lab, "node2"), block_of(&lab, "node3"));
    let routes = lab.agent_routes("node1");
    let to2 = routes.iter().find(|r| r.dst == b2).expect("route to node2");
    assert_eq!(
        to2.gateway,
        Some("198.18.1.2".parse().unwrap()),
        "host-gw on the segment"
    );
    assert!(!to2.onlink);
    let to3 = routes.iter().find(|r| r.dst == b3).expect("route to node3");
    assert_eq!(to3.gateway, Some(b3.network()), "VXLAN across segments");
    assert!(to3.onlink);
    let mut h = RouteHandle::in_netns(&lab.node_ns("node1")).unwrap();
    let vx = h.link_by_name("podnet.vxlan").unwrap().unwrap();
    let fdb = h.fdb(vx.index).unwrap();
    let remote: Vec<_> = fdb.iter().filter_map(|e| e.dst).collect();
    assert_eq!(
        remote,
        vec!["198.18.2.3".parse::<IpAddr>().unwrap()],
        "FDB only for node3"
    );
    lab.check_ok();
}

#[test]
fn host_gw_cannot_cross_segments() {
    // The control for `auto`: with host-gw alone, the nodes behind the router are unreachable.
    let lab = LabGuard::new();
    let out = lab.run(&[
        "up",
        "--nodes",
        "2",
        "--segments",
        "2",
        "--backend",
        "host-gw",
    ]);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("FAIL"), "{t}");
    assert!(
        lab.agent_routes("node1").is_empty(),
        "no route via an off-link gateway"
    );
}

#[test]
fn host_gw_and_vxlan_on_one_segment_both_models() {
    for (backend, model) in [
        ("host-gw", "bridge"),
        ("vxlan", "routed"),
        ("vxlan", "bridge"),
    ] {
        let lab = LabGuard::new();
        let out = lab.up(&["--nodes", "2", "--backend", backend, "--model", model]);
        assert_clean_matrix(&out, 6);
        let routes = lab.agent_routes("node2");
        assert_eq!(
            routes.len(),
            1,
            "{backend}: one route, to node1's block: {routes:?}"
        );
        assert_eq!(routes[0].onlink, backend == "vxlan");
        let has_vxlan = RouteHandle::in_netns(&lab.node_ns("node2"))
            .unwrap()
            .link_by_name("podnet.vxlan")
            .unwrap()
            .is_some();
        assert_eq!(has_vxlan, backend == "vxlan");
    }
}

/// Everything node `node` holds for remote block `block`: routes, VXLAN neighbours, FDB.
fn holds(lab: &LabGuard, node: &str, block: IpNet, underlay: IpAddr) -> (bool, bool) {
    let route = lab.agent_routes(node).iter().any(|r| r.dst == block);
    let mut h = RouteHandle::in_netns(&lab.node_ns(node)).unwrap();
    let vxlan = match h.link_by_name("podnet.vxlan").unwrap() {
        Some(vx) => {
            h.fdb(vx.index)
                .unwrap()
                .iter()
                .any(|e| e.dst == Some(underlay))
                || h.neighbours(vx.index)
                    .unwrap()
                    .iter()
                    .any(|n| n.ip == block.network())
        }
        None => false,
    };
    (route, vxlan)
}

#[test]
fn nodes_joining_and_leaving_update_every_node_within_2s() {
    let lab = LabGuard::new();
    lab.up(&["--nodes", "3", "--segments", "2", "--pods-per-node", "1"]);
    let joined = lab.lab().add_node(2).unwrap();
    let block = block_of(&lab, &joined);
    let underlay = lab.state().node(&joined).unwrap().address;
    for node in ["node1", "node2", "node3"] {
        assert!(
            wait_until(CONVERGENCE, || holds(&lab, node, block, underlay).0),
            "{node} has no route to {joined}'s {block}\n{}",
            lab.logs()
        );
    }
    // node1 and node2 reach the new node (segment 2) by VXLAN, node3 directly.
    assert!(holds(&lab, "node1", block, underlay).1);
    assert!(!holds(&lab, "node3", block, underlay).1);
    lab.lab().add_pods(&joined, 1).unwrap();
    lab.check_ok();

    lab.lab().remove_node(&joined).unwrap();
    for node in ["node1", "node2", "node3"] {
        assert!(
            wait_until(CONVERGENCE, || holds(&lab, node, block, underlay)
                == (false, false)),
            "{node} still holds state for the departed {joined}\n{}",
            lab.logs()
        );
    }
    lab.check_ok();
}

#[test]
fn agent_restarts_keep_a_long_lived_connection_and_adopt_the_datapath() {
    let lab = LabGuard::new();
    lab.up(&["--nodes", "3", "--backend", "vxlan", "--pods-per-node", "1"]);
    let (p1, _) = lab.pods_of("node1").remove(0);
    let (p2, ip2) = lab.pods_of("node2").remove(0);
    let (mut client, mut server) = connect(&p1, &p2, ip2, 9100);
    let vx_before = RouteHandle::in_netns(&lab.node_ns("node1"))
        .unwrap()
        .link_by_name("podnet.vxlan")
        .unwrap()
        .unwrap();
    let routes_before = lab.agent_routes("node1");
    for round in 0..3 {
        lab.lab().restart_agent("node1").unwrap();
        lab.lab().restart_agent("node2").unwrap();
        transfer(&mut client, &mut server, 256 * 1024);
        transfer(&mut server, &mut client, 256 * 1024);
        eprintln!("round {round}: the connection survived both restarts");
    }
    // Adopted, not rebuilt: same device, same routes, and the new agents changed nothing.
    let vx_after = RouteHandle::in_netns(&lab.node_ns("node1"))
        .unwrap()
        .link_by_name("podnet.vxlan")
        .unwrap()
        .unwrap();
    assert_eq!(
        vx_before.index, vx_after.index,
        "the VXLAN device was recreated"
    );
    assert_eq!(routes_before, lab.agent_routes("node1"));
    let log = std::fs::read_to_string(lab.lab().node_dir("node1").join("agent.log")).unwrap();
    let last_start = log.rfind("podnet-agent: node node1").unwrap();
    assert!(
        !log[last_start..].contains(" added"),
        "a restarted agent changed the kernel:\n{log}"
    );

    // A node that leaves while node1's agent is down is cleaned up when it returns.
    let block3 = block_of(&lab, "node3");
    lab.lab().stop_agent("node1").unwrap();
    lab.lab().remove_node("node3").unwrap();
    assert!(
        lab.agent_routes("node1").iter().any(|r| r.dst == block3),
        "nothing reconciles yet"
    );
    lab.lab().start_agent("node1").unwrap();
    assert!(
        wait_until(CONVERGENCE, || !lab
            .agent_routes("node1")
            .iter()
            .any(|r| r.dst == block3)),
        "{}",
        lab.logs()
    );
    transfer(&mut client, &mut server, 64 * 1024);
}

/// The pod-side MTU of the first pod of `node`.
fn pod_mtu(lab: &LabGuard, node: &str) -> u32 {
    let (ns, _) = lab.pods_of(node).remove(0);
    RouteHandle::in_netns(&ns)
        .unwrap()
        .link_by_name("eth0")
        .unwrap()
        .unwrap()
        .mtu
}

#[test]
fn mtu_follows_the_fabric_and_large_transfers_cross_nodes() {
    for (fabric, backend, expected) in [
        (9000, "vxlan", 8950),
        (9000, "host-gw", 9000),
        (1400, "vxlan", 1350),
        (1400, "host-gw", 1400),
    ] {
        let lab = LabGuard::new();
        let fabric_arg = fabric.to_string();
        lab.up(&[
            "--nodes",
            "2",
            "--pods-per-node",
            "1",
            "--backend",
            backend,
            "--fabric-mtu",
            &fabric_arg,
        ]);
        assert_eq!(
            pod_mtu(&lab, "node1"),
            expected,
            "{backend} over a {fabric} fabric"
        );
        let (p1, _) = lab.pods_of("node1").remove(0);
        let (p2, ip2) = lab.pods_of("node2").remove(0);
        // A full-size packet with DF set crosses nodes...
        let size = (expected - 28).to_string();
        let name = lab
            .state()
            .pods
            .iter()
            .find(|p| p.node == "node1")
            .unwrap()
            .name
            .clone();
        let ping = lab.exec(
            &name,
            &[
                "ping",
                "-c",
                "2",
                "-W",
                "2",
                "-M",
                "do",
                "-s",
                &size,
                &ip2.to_string(),
            ],
        );
        assert!(
            ping.status.success(),
            "{backend}/{fabric}: DF ping of {size}: {}",
            text(&ping)
        );
        // ...and so does a bulk TCP transfer (DF on every segment), without stalling.
        let (mut c, mut s) = connect(&p1, &p2, ip2, 9200);
        transfer(&mut c, &mut s, 8 * 1024 * 1024);
        transfer(&mut s, &mut c, 8 * 1024 * 1024);
    }
}

#[test]
fn dual_stack_crosses_nodes_by_link_local_host_gw_and_by_vxlan() {
    let lab = LabGuard::new();
    let out = lab.up_yaml(
        "backend: auto\nclusterCIDRs: [10.244.0.0/16, fd00:10:244::/56]\npodsPerNode: 1\n\
         fabric: {segments: [{nodes: 2}, {nodes: 1}]}\n",
    );
    assert_clean_matrix(&out, 6);
    assert!(out.contains("IPv6: 6 of 6 pod pairs reached"), "{out}");
    let routes = lab.agent_routes("node1");
    let v6: Vec<_> = routes.iter().filter(|r| r.dst.addr().is_ipv6()).collect();
    assert_eq!(v6.len(), 2, "{routes:?}");
    // node2 (same segment) via its link-local address, node3 (across) via VXLAN.
    assert!(v6.iter().any(|r| r
        .gateway
        .is_some_and(|g| g.to_string().starts_with("fe80:"))));
    assert!(v6.iter().any(|r| r.onlink));
}

#[test]
fn vxlan_vni_and_port_come_from_the_cluster_spec() {
    let lab = LabGuard::new();
    let out = lab.up_yaml(
        "backend: vxlan\nvxlan: {vni: 42, port: 8472}\npodsPerNode: 1\nfabric: {segments: [{nodes: 2}]}\n",
    );
    assert_clean_matrix(&out, 4);
    let ns = lab.lab().node_ns("node1");
    let details = text(&lab.exec(&ns, &["ip", "-d", "link", "show", "podnet.vxlan"]));
    assert!(
        details.contains("vxlan id 42 ") && details.contains("dstport 8472"),
        "{details}"
    );
}

#[test]
fn a_drop_firewall_loaded_after_the_pods_is_repaired_by_the_agent() {
    let lab = LabGuard::new();
    lab.up(&["--nodes", "2", "--pods-per-node", "1", "--backend", "vxlan"]);
    let (p1, _) = lab.pods_of("node1").remove(0);
    let (_, ip2) = lab.pods_of("node2").remove(0);
    let reach = || {
        podnet_lab::echo::probe(
            &p1,
            ip2,
            podnet_lab::echo::ECHO_PORT,
            Duration::from_secs(1),
        )
        .is_ok()
    };
    assert!(reach());
    lab.lab().stop_agent("node2").unwrap();
    let ns = lab.lab().node_ns("node2");
    let drop = lab.exec(&ns, &["iptables", "-P", "FORWARD", "DROP"]);
    assert!(drop.status.success(), "{}", text(&drop));
    assert!(
        !reach(),
        "the control: a FORWARD DROP policy cuts pod traffic"
    );
    lab.lab().start_agent("node2").unwrap();
    assert!(wait_until(Duration::from_secs(10), reach), "{}", lab.logs());
    let rules = text(&lab.exec(&ns, &["iptables", "-S", "FORWARD"]));
    assert!(rules.contains("podnet:podnet"), "{rules}");
}

#[test]
fn an_explicit_mtu_overrides_the_detected_one() {
    let lab = LabGuard::new();
    lab.up_yaml("backend: vxlan\nmtu: 1300\npodsPerNode: 1\nfabric: {segments: [{nodes: 2}]}\n");
    assert_eq!(pod_mtu(&lab, "node1"), 1300);
    assert_eq!(pod_mtu(&lab, "node2"), 1300);
    // The VXLAN device itself keeps the size the underlay allows.
    let ns = lab.lab().node_ns("node1");
    let vx = text(&lab.exec(&ns, &["ip", "link", "show", "podnet.vxlan"]));
    assert!(vx.contains("mtu 1450"), "{vx}");
}

#[test]
fn removed_routes_and_devices_are_restored_at_once() {
    let lab = LabGuard::new();
    lab.up(&["--nodes", "3", "--segments", "2", "--pods-per-node", "1"]);
    let ns = lab.lab().node_ns("node1");
    let before = lab.agent_routes("node1");
    assert_eq!(before.len(), 2, "{before:?}");
    // Someone deletes a route, then the VXLAN device (taking its routes,
    // neighbours and FDB entries with it). The resync is 10 s away; the agent
    // hears the removals and repairs within the convergence bound.
    let victim = before[0].dst.to_string();
    let del = lab.exec(&ns, &["ip", "route", "del", &victim]);
    assert!(del.status.success(), "{}", text(&del));
    assert!(
        wait_until(CONVERGENCE, || lab.agent_routes("node1") == before),
        "{}",
        lab.logs()
    );
    let del = lab.exec(&ns, &["ip", "link", "del", "podnet.vxlan"]);
    assert!(del.status.success(), "{}", text(&del));
    assert!(
        wait_until(CONVERGENCE, || {
            let now = lab.agent_routes("node1");
            now.len() == 2 && now.iter().all(|r| before.iter().any(|b| b.dst == r.dst))
        }),
        "{}",
        lab.logs()
    );
    // Repaired because the agent heard the removals, not by its periodic resync.
    let log = std::fs::read_to_string(lab.lab().node_dir("node1").join("agent.log")).unwrap();
    assert!(log.contains("(kernel: Route"), "{log}");
    assert!(log.matches("(kernel: ").count() >= 2, "{log}");
    lab.check_ok();
}
