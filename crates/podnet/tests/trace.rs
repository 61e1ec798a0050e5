//! `podnet trace` in a lab broken on purpose, one classic way at a time:
//! the JSON verdict must name the exact hop and cause (and the policy's
//! name), a working path must list every hop in order with a service's
//! DNAT, and a trace must leave no table behind. Agents whose repairs would
//! race the breakage are stopped first, as a newcomer's broken node would be.

mod labkit;

use std::process::Command;

use labkit::{podnet, text, LabGuard};
use serde_json::Value;

/// The tests of this file run one at a time: each checks that no trace
/// left tracefs state behind, which a concurrent trace would still hold.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Two nodes on two segments (joined by the router), VXLAN between them.
fn lab() -> LabGuard {
    let g = LabGuard::new();
    g.up_two_segments_vxlan(1);
    g
}

fn trace_once(g: &LabGuard, args: &[&str], drop_reasons: bool) -> Value {
    let mut cmd = Command::new(podnet());
    cmd.args(["trace", "--json", "--lab", &g.name]);
    if !drop_reasons {
        cmd.arg("--no-drop-reasons");
    }
    let out = cmd.args(args).output().unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)))
}

/// Traces twice, with the kernel's drop reasons (tracefs) and without:
/// the verdict must not depend on them.
fn trace(g: &LabGuard, args: &[&str]) -> Value {
    let plain = trace_once(g, args, false);
    assert_eq!(plain["drop_reasons_read"], false);
    let t = trace_once(g, args, true);
    assert_eq!(
        (&t["verdict"]["cause"], &t["verdict"]["place"]),
        (&plain["verdict"]["cause"], &plain["verdict"]["place"]),
        "with tracefs: {t:#}\nwithout: {plain:#}"
    );
    t
}

fn verdict(t: &Value) -> (&str, &str) {
    (
        t["verdict"]["cause"].as_str().unwrap_or_default(),
        t["verdict"]["place"].as_str().unwrap_or_default(),
    )
}

fn places(t: &Value) -> Vec<String> {
    t["hops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["place"].as_str().unwrap().to_string())
        .collect()
}

fn nft(g: &LabGuard, node: &str, script: &str) {
    let out = g.exec(&format!("podnet-{}-{node}", g.name), &["nft", script]);
    assert!(out.status.success(), "{}", text(&out));
}

/// No trace table in any lab namespace, no tracefs instance or mount of ours.
fn no_trace_tables(g: &LabGuard) {
    let leftovers = |dir: &str, prefix: &str| {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
            .count()
    };
    assert_eq!(
        leftovers("/sys/kernel/tracing/instances", "podnet-trace-"),
        0
    );
    assert_eq!(leftovers("/run", "podnet-tracefs-"), 0);
    for ns in g.namespaces() {
        let out = g.exec(&ns, &["nft", "list", "tables"]);
        assert!(!text(&out).contains("podnet-trace"), "{ns}: {}", text(&out));
    }
}

#[test]
fn a_working_path_lists_every_hop_and_a_service_hop_its_dnat() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let g = lab();
    let t = trace(&g, &["node1-pod1", "node2-pod1"]);
    assert_eq!(verdict(&t).0, "delivered", "{t:#}");
    assert_eq!(
        places(&t),
        [
            "pod default/node1-pod1",
            "node node1",
            "node node2",
            "pod default/node2-pod1"
        ]
    );
    assert!(
        t["hops"][1]["encap"].as_str().unwrap().starts_with("vxlan"),
        "{t:#}"
    );

    let svc = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\n\
               spec: {selector: {pod: podnet-lab-node2-pod1}, ports: [{port: 80, targetPort: 7777}]}\n"
        .replace("podnet-lab", &format!("podnet-{}", g.name));
    g.apply(&svc);
    let t = trace(&g, &["node1-pod1", "svc/web"]);
    assert_eq!(verdict(&t).0, "delivered", "{t:#}");
    let nat = t["hops"][1]["nat"][0].as_str().unwrap_or_default();
    assert!(nat.starts_with("dnat") && nat.ends_with(":7777"), "{t:#}");
    assert_eq!(places(&t).last().unwrap(), "pod default/node2-pod1");

    // Every endpoint not ready: the service rejects, and the trace says so.
    let out = g.run(&["set-ready", "node2-pod1", "--ready", "false"]);
    assert!(out.status.success(), "{}", text(&out));
    let t = trace(&g, &["node1-pod1", "svc/web"]);
    assert_eq!(verdict(&t), ("service-no-endpoints", "node node1"), "{t:#}");
    assert!(t["verdict"]["summary"]
        .as_str()
        .unwrap()
        .contains("default/web"));
    no_trace_tables(&g);
}

#[test]
fn faults_are_named_by_hop_and_cause() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let g = lab();
    let l = g.lab();
    let (pod1, pod2) = ("node1-pod1", "node2-pod1");

    // A deny policy: its name is in the verdict.
    let deny = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny-in}\n\
                spec: {podSelector: {matchLabels: {node: node2}}, policyTypes: [Ingress]}\n";
    g.apply(deny);
    let t = trace(&g, &[pod1, pod2]);
    assert_eq!(verdict(&t), ("network-policy", "node node2"), "{t:#}");
    assert!(t["verdict"]["summary"]
        .as_str()
        .unwrap()
        .contains("default/deny-in"));
    g.delete(deny);

    // node2 without its agent, and a foreign base chain dropping forwarded traffic.
    l.stop_agent("node2").unwrap();
    nft(&g, "node2", "add table inet lockdown; add chain inet lockdown gate { type filter hook forward priority 0; policy drop; }");
    let t = trace(&g, &[pod1, pod2]);
    assert_eq!(verdict(&t), ("chain-policy-drop", "node node2"), "{t:#}");
    assert!(t["verdict"]["summary"]
        .as_str()
        .unwrap()
        .contains("inet lockdown gate"));
    nft(&g, "node2", "delete table inet lockdown");

    // node1 without its agent and without the FDB entry of node2's VTEP.
    l.stop_agent("node1").unwrap();
    let ns = format!("podnet-{}-node1", g.name);
    let fdb = text(&g.exec(&ns, &["bridge", "fdb", "show", "dev", "podnet.vxlan"]));
    let mac = fdb.split_whitespace().next().unwrap().to_string();
    let out = g.exec(
        &ns,
        &["bridge", "fdb", "del", &mac, "dev", "podnet.vxlan", "self"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let t = trace(&g, &[pod1, pod2]);
    assert_eq!(verdict(&t), ("missing-fdb", "node node1"), "{t:#}");

    // Its route to node2's block deleted: the packet takes the default route
    // to the router, which has none; the cause is node1's missing route.
    let route = text(&g.exec(&ns, &["ip", "route", "show", "proto", "113"]));
    let block = route.lines().find(|l| l.contains("podnet.vxlan")).unwrap();
    let dst = block.split_whitespace().next().unwrap();
    assert!(g.exec(&ns, &["ip", "route", "del", dst]).status.success());
    let t = trace(&g, &[pod1, pod2]);
    assert_eq!(verdict(&t), ("missing-block-route", "node node1"), "{t:#}");
    no_trace_tables(&g);
}

#[test]
fn a_spoofed_source_and_an_arp_failure_are_named_and_drawn() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let g = lab();
    let ns = format!("podnet-{}-node1-pod1", g.name);
    // The pod takes an address podnet did not give it, and sends from it.
    assert!(g
        .exec(&ns, &["ip", "addr", "add", "10.244.0.99/32", "dev", "eth0"])
        .status
        .success());
    let t = trace(&g, &["10.244.0.99", "node2-pod1"]);
    assert_eq!(verdict(&t), ("anti-spoofing", "node node1"), "{t:#}");

    // An address on node1's segment that nobody holds: ARP gets no answer.
    let arp = trace(&g, &["node1-pod1", "198.18.1.77:80"]);
    assert_eq!(verdict(&arp), ("neighbour-failed", "node node1"), "{arp:#}");
    assert!(
        arp["hops"][1]["nat"][0]
            .as_str()
            .unwrap()
            .starts_with("masquerade"),
        "{arp:#}"
    );
    no_trace_tables(&g);

    // The picture: every pod and node, the path in red, the drop marked where it happened.
    let dir = podnet_testkit::TempDir::new("graph");
    let file = dir.path().join("trace.json");
    std::fs::write(&file, t.to_string()).unwrap();
    let out = g.run(&["graph", "--trace", file.to_str().unwrap()]);
    let dot = text(&out);
    assert!(out.status.success(), "{dot}");
    for needle in [
        "segment 1",
        "node node1",
        "node node2",
        "default/node1-pod1",
        "podnet.vxlan",
        "color=red",
    ] {
        assert!(dot.contains(needle), "{needle}: {dot}");
    }
    assert!(dot.contains("DROPPED: anti-spoofing"), "{dot}");
    assert!(dot.contains("\"node1\" [color=red, style=filled"), "{dot}");
}

#[test]
fn an_mtu_black_hole_and_a_reverse_path_drop_are_named() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let g = lab();
    let (ns1, ns2) = (
        format!("podnet-{}-node1", g.name),
        format!("podnet-{}-node2", g.name),
    );
    g.lab().stop_agent("node2").unwrap();
    // The pod's end of its veth shrinks: full-size datagrams vanish into it.
    let pod2 = format!("podnet-{}-node2-pod1", g.name);
    assert!(g
        .exec(&pod2, &["ip", "link", "set", "eth0", "mtu", "1200"])
        .status
        .success());
    let t = trace(&g, &["--udp", "--size", "1400", "node1-pod1", "node2-pod1"]);
    assert_eq!(verdict(&t), ("mtu", "node node2"), "{t:#}");
    let summary = t["verdict"]["summary"].as_str().unwrap();
    assert!(
        summary.contains("mtu 1450") && summary.contains("mtu 1200"),
        "{summary}"
    );
    assert!(g
        .exec(&pod2, &["ip", "link", "set", "eth0", "mtu", "1450"])
        .status
        .success());

    // node2 answers node1's pods by the router instead of the tunnel, under strict rp_filter.
    let blocks = text(&g.exec(&ns1, &["ip", "-4", "addr", "show", "dev", "podnet.vxlan"]));
    let block0 = blocks
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let block = format!("{block0}/24");
    for args in [
        vec!["sysctl", "-qw", "net.ipv4.conf.all.rp_filter=1"],
        vec!["sysctl", "-qw", "net.ipv4.conf.podnet/vxlan.rp_filter=1"],
        vec![
            "ip",
            "route",
            "replace",
            &block,
            "via",
            "198.18.2.254",
            "dev",
            "eth0",
        ],
    ] {
        let out = g.exec(&ns2, &args);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
    }
    let t = trace(&g, &["node1-pod1", "node2-pod1"]);
    assert_eq!(verdict(&t), ("rp-filter", "node node2"), "{t:#}");
    no_trace_tables(&g);
}
