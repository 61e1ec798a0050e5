//! `podnet doctor` in a lab broken on purpose: every broken invariant is
//! named as the exact missing, extra or wrong object, the exit code says
//! so, and what doctor lists under `datapath` is exactly what the agent's
//! next reconcile repairs.

mod labkit;

use std::process::{Command, Output};
use std::time::Duration;

use labkit::{podnet, text, LabGuard};
use serde_json::Value;

fn doctor(g: &LabGuard, node: &str) -> (Output, Value) {
    let out = Command::new(podnet())
        .args(["doctor", "--json", "--lab", &g.name, node])
        .output()
        .unwrap();
    let v: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    (out, v[0].clone())
}

/// `(check, kind, object)` of every problem.
fn problems(report: &Value) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for c in report["checks"].as_array().unwrap() {
        for p in c["problems"].as_array().unwrap() {
            out.push((
                c["name"].as_str().unwrap().to_string(),
                p["kind"].as_str().unwrap().to_string(),
                p["object"].as_str().unwrap().to_string(),
            ));
        }
    }
    out
}

fn has(found: &[(String, String, String)], check: &str, kind: &str, object: &str) -> bool {
    found
        .iter()
        .any(|(c, k, o)| c == check && k == kind && o.starts_with(object))
}

fn sh(g: &LabGuard, node: &str, args: &[&str]) -> String {
    let out = g.exec(&format!("podnet-{}-{node}", g.name), args);
    assert!(out.status.success(), "{args:?}: {}", text(&out));
    text(&out)
}

/// The host route and interface of one of `node`'s pods: `(10.244.0.2/32, pnXXXX)`.
fn pod_route(g: &LabGuard, node: &str, nth: usize) -> (String, String) {
    let routes = sh(g, node, &["ip", "route", "show", "proto", "112"]);
    let line = routes.lines().nth(nth).expect("a pod host route");
    let words: Vec<&str> = line.split_whitespace().collect();
    (format!("{}/32", words[0]), words[2].to_string())
}

#[test]
fn doctor_names_each_broken_invariant_and_the_agent_repairs_its_datapath() {
    let g = LabGuard::new();
    g.up_two_segments_vxlan(3);
    let svc = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\n\
               spec: {selector: {node: node2}, ports: [{port: 80, targetPort: 7777}]}\n";
    let deny = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny-in}\n\
                spec: {podSelector: {matchLabels: {node: node2}}, policyTypes: [Ingress]}\n";
    g.apply(&format!("{svc}---\n{deny}"));
    // The agents program the service and the policy on their own time.
    let clean = |node: &str| doctor(&g, node).0.status.success();
    assert!(
        podnet_testkit::wait_until(Duration::from_secs(20), || clean("node1") && clean("node2")),
        "{}",
        text(&doctor(&g, "node1").0) + &text(&doctor(&g, "node2").0)
    );

    // Break node1 with its agent stopped, as a newcomer's broken node would be.
    let l = g.lab();
    l.stop_agent("node1").unwrap();
    l.stop_agent("node2").unwrap();
    let fdb = sh(
        &g,
        "node1",
        &["bridge", "fdb", "show", "dev", "podnet.vxlan"],
    );
    let entry: Vec<&str> = fdb
        .lines()
        .find(|l| l.contains(" dst "))
        .expect("an FDB entry")
        .split_whitespace()
        .collect();
    let (mac, dst) = (entry[0], entry[2]);
    sh(
        &g,
        "node1",
        &[
            "bridge",
            "fdb",
            "del",
            mac,
            "dev",
            "podnet.vxlan",
            "dst",
            dst,
        ],
    );
    sh(
        &g,
        "node1",
        &[
            "ip",
            "route",
            "add",
            "10.244.99.0/24",
            "via",
            "10.244.99.0",
            "dev",
            "podnet.vxlan",
            "onlink",
            "proto",
            "113",
        ],
    );
    sh(&g, "node1", &["sysctl", "-qw", "net.ipv4.ip_forward=0"]);
    let (route, dev) = pod_route(&g, "node1", 0);
    sh(&g, "node1", &["ip", "route", "del", &route, "dev", &dev]);
    let (_, mtu_dev) = pod_route(&g, "node1", 0);
    sh(&g, "node1", &["ip", "link", "set", &mtu_dev, "mtu", "1400"]);
    let (gone_ip, gone_dev) = pod_route(&g, "node1", 1);
    sh(&g, "node1", &["ip", "link", "del", &gone_dev]);
    sh(
        &g,
        "node1",
        &["nft", "delete", "table", "inet", "podnet-services"],
    );
    let sets = sh(
        &g,
        "node2",
        &["nft", "list", "table", "inet", "podnet-policy"],
    );
    let block_route = sh(&g, "node1", &["ip", "route", "show", "proto", "113"]);
    let remote_block = block_route
        .lines()
        .find(|l| l.starts_with("10.244."))
        .expect("a route to node2's block")
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    sh(&g, "node1", &["ip", "route", "del", &remote_block]);
    sh(&g, "node1", &["nft", "add table inet lockdown; add chain inet lockdown gate { type filter hook forward priority 0; policy drop; }"]);
    let conf = g.lab().node_dir("node1").join("cni/10-podnet.conflist");
    let text = std::fs::read_to_string(&conf).unwrap();
    std::fs::write(&conf, text.replace("\"mtu\": 1450", "\"mtu\": 1400")).unwrap();
    // The map of isolated pods (to their denial counters).
    let set = sets
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("map isolated-")
                .map(|s| format!("isolated-{}", s.trim_end_matches(" {")))
        })
        .expect("a map of isolated pods");
    sh(
        &g,
        "node2",
        &["nft", "flush", "map", "inet", "podnet-policy", &set],
    );

    let (out, report) = doctor(&g, "node1");
    assert!(!out.status.success(), "doctor must fail on a broken node");
    let found = problems(&report);
    let fdb_object = format!("fdb {mac} dst {dst} dev podnet.vxlan");
    let gone_alloc = format!("IPAM allocation {}", gone_ip.trim_end_matches("/32"));
    let gone_iface = format!("element pod-ifaces {{ \"{gone_dev}\" }}");
    let gone_source = format!(
        "element pod-sources4 {{ \"{gone_dev}\" . {} }}",
        gone_ip.trim_end_matches("/32")
    );
    for (check, kind, object) in [
        ("datapath", "missing", fdb_object.as_str()),
        (
            "datapath",
            "extra",
            "route 10.244.99.0/24 via 10.244.99.0 dev podnet.vxlan onlink",
        ),
        ("sysctls", "wrong", "sysctl net.ipv4.ip_forward = 0"),
        (
            "host-routes",
            "missing",
            &format!("route {route} dev {dev}"),
        ),
        ("pods", "wrong", &format!("link {mtu_dev} mtu 1400")),
        ("pods", "extra", &gone_alloc),
        ("services", "wrong", "service default/web"),
        ("pods", "wrong", "CNI config mtu 1400"),
        ("antispoof", "extra", &gone_iface),
        ("datapath", "missing", &format!("route {remote_block} via")),
        (
            "firewalls",
            "missing",
            "accept rules for 10.244.0.0/24 in chain inet lockdown gate",
        ),
        ("antispoof", "extra", &gone_source),
    ] {
        assert!(
            has(&found, check, kind, object),
            "{check} {kind} {object}: {found:#?}"
        );
    }
    assert_eq!(found.len(), 12, "{found:#?}");
    let (out, report) = doctor(&g, "node2");
    assert!(!out.status.success());
    let found = problems(&report);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(
        has(
            &found,
            "policies",
            "wrong",
            &format!("set inet podnet-policy {set}")
        ),
        "{found:#?}"
    );

    // The agent repairs what it owns, exactly what doctor listed for it;
    // what the CNI plugin owns (pods, host routes) stays reported.
    l.start_agent("node1").unwrap();
    l.start_agent("node2").unwrap();
    let only_plugin_faults = || {
        let found = problems(&doctor(&g, "node1").1);
        found
            .iter()
            .all(|(c, _, _)| c == "pods" || c == "host-routes")
            && found.len() == 3
    };
    assert!(
        podnet_testkit::wait_until(Duration::from_secs(20), only_plugin_faults),
        "{:#?}",
        problems(&doctor(&g, "node1").1)
    );
    assert!(podnet_testkit::wait_until(Duration::from_secs(20), || {
        clean("node2")
    }));
}

#[test]
fn doctor_refuses_an_unknown_node_by_name() {
    let g = LabGuard::new();
    g.up(&["--nodes", "1", "--pods-per-node", "0"]);
    let out = Command::new(podnet())
        .args(["doctor", "--lab", &g.name, "node9"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("no node node9"), "{}", text(&out));
}
