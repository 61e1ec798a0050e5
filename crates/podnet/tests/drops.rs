//! `podnet drops`: a NetworkPolicy denial and an anti-spoofing drop are
//! logged by the agent (NFLOG), shown with who dropped them, and counted in
//! the kernel's named counters per policy.

mod labkit;

use std::process::Command;
use std::time::Duration;

use labkit::{podnet, text, LabGuard};
use podnet_kernel::Netns;
use podnet_testkit::packets;
use serde_json::Value;

fn drops(g: &LabGuard, extra: &[&str]) -> Value {
    let out = Command::new(podnet())
        .args(["drops", "--json", "--lab", &g.name])
        .args(extra)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)))
}

fn counter(v: &Value, node: &str, by: &str) -> u64 {
    v["counters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["node"] == node && c["by"] == by)
        .and_then(|c| c["packets"].as_u64())
        .unwrap_or(0)
}

fn logged<'a>(v: &'a Value, reason: &str) -> Vec<&'a Value> {
    v["drops"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["reason"] == reason)
        .collect()
}

#[test]
fn denials_and_spoofed_packets_are_logged_with_who_dropped_them_and_counted() {
    let g = LabGuard::new();
    g.up(&["--nodes", "2", "--segments", "2", "--pods-per-node", "1"]);
    let state = g.state();
    let (pod1, pod2) = (&state.pods[0], &state.pods[1]);
    let dst = pod2.ips[0];

    // Nothing dropped yet: no records, counters at zero.
    let v = drops(&g, &[]);
    assert!(v["drops"].as_array().unwrap().is_empty(), "{v:#}");

    let deny = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny-in}\n\
                spec: {podSelector: {matchLabels: {node: node2}}, policyTypes: [Ingress]}\n";
    let dir = podnet_testkit::TempDir::new("drops");
    let file = dir.path().join("deny.yaml");
    std::fs::write(&file, deny).unwrap();
    assert!(g
        .run(&["apply", "-f", file.to_str().unwrap()])
        .status
        .success());

    // Datagrams from pod1 to pod2, until one is logged as denied (the
    // agent programs the policy on its own time).
    let tx = Netns::open_named(&pod1.name).unwrap();
    let src = pod1.ips[0];
    let (std::net::IpAddr::V4(s), std::net::IpAddr::V4(d)) = (src, dst) else {
        panic!("IPv4 lab")
    };
    let send = |from: std::net::Ipv4Addr| {
        let p = packets::ipv4_udp(from, d, 4242, 9999, b"x");
        tx.run(|| podnet_kernel::raw::send_ip_packet(&p, dst).unwrap())
            .unwrap();
    };
    let denied = podnet_testkit::wait_until(Duration::from_secs(20), || {
        send(s);
        !logged(&drops(&g, &[]), "policy").is_empty()
    });
    let v = drops(&g, &[]);
    assert!(denied, "{v:#}");
    let d0 = logged(&v, "policy")[0];
    assert_eq!(
        (&d0["node"], &d0["direction"], &d0["protocol"], &d0["dport"]),
        (
            &"node2".into(),
            &"ingress".into(),
            &"udp".into(),
            &9999.into()
        ),
        "{v:#}"
    );
    assert_eq!(d0["src"], src.to_string());
    assert!(
        d0["by"].as_str().unwrap().starts_with("default/deny-in"),
        "{v:#}"
    );
    assert!(counter(&v, "node2", "default/deny-in") >= 1, "{v:#}");

    // A spoofed source from pod1: dropped on node1 by anti-spoofing.
    let forged = std::net::Ipv4Addr::new(10, 244, 77, 7);
    let spoofed = podnet_testkit::wait_until(Duration::from_secs(20), || {
        send(forged);
        !logged(&drops(&g, &["--node", "node1"]), "antispoof").is_empty()
    });
    let v = drops(&g, &["--node", "node1"]);
    assert!(spoofed, "{v:#}");
    let a = logged(&v, "antispoof")[0];
    assert_eq!(a["src"], forged.to_string(), "{v:#}");
    assert!(a["by"].as_str().unwrap().contains("anti-spoofing"), "{v:#}");
    assert!(counter(&v, "node1", "anti-spoofing") >= 1, "{v:#}");
    // --node keeps to one node.
    assert!(v["drops"]
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d["node"] == "node1"));

    // The plain text names the policy too.
    let out = Command::new(podnet())
        .args(["drops", "--lab", &g.name])
        .output()
        .unwrap();
    let t = text(&out);
    assert!(
        t.contains("denied ingress") && t.contains("default/deny-in"),
        "{t}"
    );
}
