//! Both models through the real plugin: ADD, CHECK, DEL and traffic from inside the pods.

mod common;

use common::{result_ip, tcp_seen_source, Node, Pod};
use podnet_testkit::NetnsGuard;
use serde_json::Value;

fn check(node: &Node, pod: &Pod, result: &Value) -> common::Outcome {
    let mut conf = node.config.clone();
    conf["prevResult"] = result.clone();
    node.cni("CHECK", &pod.id, &pod.path(), "eth0", &conf)
}

fn two_pods_talk(model: &str) {
    let node = Node::new(model, "10.244.1.0/24", Some("fd00:10:244:1::/64"));
    let (a, b) = (Pod::new("a"), Pod::new("b"));
    let ra = a.add(&node);
    let rb = b.add(&node);
    let (a4, b4) = (result_ip(&ra, false), result_ip(&rb, false));
    let (a6, b6) = (result_ip(&ra, true), result_ip(&rb, true));
    assert_ne!(a4, b4);

    check(&node, &a, &ra).ok();
    check(&node, &b, &rb).ok();

    // ICMP both families, TCP with the real source address (no NAT between pods).
    assert!(a.ns.ping(&b4.to_string()), "{model}: a pings b over IPv4");
    assert!(b.ns.ping(&a6.to_string()), "{model}: b pings a over IPv6");
    assert_eq!(
        tcp_seen_source(&a.ns, &b.ns, b4),
        Ok(a4),
        "{model}: a's own address reaches b"
    );
    assert_eq!(
        tcp_seen_source(&b.ns, &a.ns, a6),
        Ok(b6),
        "{model}: IPv6 too"
    );
    // Node to pod and pod to node.
    assert!(node.ns.ping(&a4.to_string()), "{model}: node reaches a");
    assert!(a.ns.ping("198.18.0.1"), "{model}: a reaches the node");

    a.del(&node);
    a.del(&node); // DEL is idempotent
    assert!(
        a.ns.exec_ok(&["ip", "-o", "link"]).lines().count() == 1,
        "only lo left in the pod"
    );
    check(&node, &a, &ra).err(102);
    assert!(!b.ns.ping(&a4.to_string()), "{model}: a is gone");
    b.del(&node);
    node.assert_clean();
}

#[test]
fn routed_pods_talk_without_nat_and_clean_up() {
    two_pods_talk("routed");
}

#[test]
fn bridge_pods_talk_without_nat_and_clean_up() {
    two_pods_talk("bridge");
}

#[test]
fn routed_layout_matches_the_model() {
    let node = Node::new("routed", "10.244.2.0/24", Some("fd00:10:244:2::/64"));
    let pod = Pod::new("p");
    let r = pod.add(&node);
    let ip4 = result_ip(&r, false);
    let addrs = pod.ns.exec_ok(&["ip", "addr", "show", "eth0"]);
    assert!(addrs.contains(&format!("inet {ip4}/32")), "{addrs}");
    assert!(addrs.contains("/128"), "{addrs}");
    assert!(addrs.contains("mtu 1400"), "{addrs}");
    let routes = pod.ns.exec_ok(&["ip", "route"]);
    assert!(
        routes.contains("default via 169.254.1.1 dev eth0") && routes.contains("onlink"),
        "{routes}"
    );
    assert!(pod
        .ns
        .exec_ok(&["ip", "-6", "route"])
        .contains("default via fe80::1 dev eth0"));
    let host_if = r["interfaces"][0]["name"].as_str().unwrap().to_string();
    let node_routes = node.ns.exec_ok(&["ip", "route"]);
    assert!(
        node_routes.contains(&format!("{ip4} dev {host_if}")),
        "{node_routes}"
    );
    let proxy = node.ns.exec_ok(&[
        "sysctl",
        "-n",
        &format!("net.ipv4.conf.{host_if}.proxy_arp"),
    ]);
    assert_eq!(proxy.trim(), "1");
    assert_eq!(
        node.ns
            .exec_ok(&["sysctl", "-n", "net.ipv4.ip_forward"])
            .trim(),
        "1"
    );
    assert!(
        node.ns
            .exec_ok(&["ip", "-o", "addr", "show", &host_if])
            .lines()
            .all(|l| !l.contains("inet ")),
        "no IPv4 on the host veth"
    );
    assert_eq!(r["interfaces"][1]["sandbox"], pod.path());
    assert_eq!(r["ips"][0]["interface"], 1);
    pod.del(&node);
    node.assert_clean();
}

#[test]
fn bridge_layout_matches_the_model() {
    let node = Node::new("bridge", "10.244.3.0/24", None);
    let pod = Pod::new("p");
    let r = pod.add(&node);
    assert_eq!(r["interfaces"][0]["name"], "podnet0");
    let host_if = r["interfaces"][1]["name"].as_str().unwrap();
    let link = node.ns.exec_ok(&["ip", "-d", "link", "show", host_if]);
    assert!(link.contains("master podnet0"), "{link}");
    assert!(node
        .ns
        .exec_ok(&["ip", "addr", "show", "podnet0"])
        .contains("inet 10.244.3.1/24"));
    assert!(pod
        .ns
        .exec_ok(&["ip", "route"])
        .contains("default via 10.244.3.1 dev eth0"));
    assert_eq!(r["ips"][0]["gateway"], "10.244.3.1");
    pod.del(&node);
    node.assert_clean();
}

#[test]
fn forward_drop_policy_still_forwards_pod_traffic() {
    let node = Node::new("routed", "10.244.4.0/24", None);
    node.ns.exec_ok(&["iptables", "-P", "FORWARD", "DROP"]);
    let (a, b) = (Pod::new("a"), Pod::new("b"));
    a.add(&node);
    let b4 = result_ip(&b.add(&node), false);
    assert!(
        a.ns.ping(&b4.to_string()),
        "podnet's accept rules let pod traffic through a DROP policy"
    );
    // Control: without podnet's rules the same DROP policy stops it, so the check above can fail.
    node.ns.exec_ok(&["iptables", "-F", "FORWARD"]);
    assert!(!a.ns.ping(&b4.to_string()), "the DROP policy is real");
    a.del(&node);
    b.del(&node);
    node.assert_clean();
}

/// An outside host: a namespace joined to the node by a veth, 198.18.1.0/30.
fn outside(node: &Node) -> NetnsGuard {
    let ext = NetnsGuard::new("ext");
    node.ns.exec_ok(&[
        "ip",
        "link",
        "add",
        "up0",
        "type",
        "veth",
        "peer",
        "name",
        "up1",
        "netns",
        ext.name(),
    ]);
    node.ns
        .exec_ok(&["ip", "addr", "add", "198.18.1.2/30", "dev", "up0"]);
    node.ns.exec_ok(&["ip", "link", "set", "up0", "up"]);
    ext.exec_ok(&["ip", "addr", "add", "198.18.1.1/30", "dev", "up1"]);
    ext.exec_ok(&["ip", "link", "set", "up1", "up"]);
    // Only so that unmasqueraded replies could find their way back.
    ext.exec_ok(&["ip", "route", "add", "10.244.0.0/16", "via", "198.18.1.2"]);
    ext
}

#[test]
fn traffic_leaving_the_cluster_is_masqueraded_and_pod_traffic_is_not() {
    for masq in [true, false] {
        let mut node = Node::new("routed", "10.244.5.0/24", None);
        node.config["ipMasq"] = masq.into();
        let ext = outside(&node);
        let pod = Pod::new("p");
        let ip = result_ip(&pod.add(&node), false);
        let seen = tcp_seen_source(&pod.ns, &ext, "198.18.1.1".parse().unwrap()).unwrap();
        if masq {
            assert_eq!(
                seen.to_string(),
                "198.18.1.2",
                "masqueraded to the node's address"
            );
        } else {
            assert_eq!(seen, ip, "ipMasq false keeps the pod address");
        }
        pod.del(&node);
    }
}

#[test]
fn ipv6_only_pods_talk() {
    for model in ["routed", "bridge"] {
        let mut node = Node::new(model, "10.244.6.0/24", None);
        node.config["ipam"]["ranges"] = serde_json::json!([[{"subnet": "fd00:10:244:6::/64"}]]);
        let (a, b) = (Pod::new("a6"), Pod::new("b6"));
        let ra = a.add(&node);
        let rb = b.add(&node);
        assert_eq!(
            ra["ips"].as_array().unwrap().len(),
            1,
            "one IPv6 address only: {ra}"
        );
        let (a6, b6) = (result_ip(&ra, true), result_ip(&rb, true));
        assert_eq!(
            tcp_seen_source(&a.ns, &b.ns, b6),
            Ok(a6),
            "{model}: IPv6-only pods talk without NAT"
        );
        assert!(
            !a.ns.exec_ok(&["ip", "-4", "route"]).contains("default"),
            "{model}: no IPv4 default route"
        );
        a.del(&node);
        b.del(&node);
        node.assert_clean();
    }
}
