//! CNI specification behaviour: VERSION, errors and their codes, chaining, delegation, GC, STATUS.

mod common;

use common::{result_ip, Node, Pod};
use std::net::IpAddr;

use serde_json::json;

#[test]
fn version_lists_the_supported_versions() {
    let node = Node::new("routed", "10.244.10.0/24", None);
    let v = node
        .cni_env(
            &[("CNI_COMMAND", "VERSION")],
            &json!({"cniVersion": "1.0.0"}),
        )
        .ok();
    let versions: Vec<&str> = v["supportedVersions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert!(
        versions.contains(&"1.0.0") && versions.contains(&"1.1.0"),
        "{v}"
    );
    assert_eq!(v["cniVersion"], "1.0.0");
    node.cni_env(
        &[("CNI_COMMAND", "VERSION")],
        &json!({"cniVersion": "7.0.0"}),
    )
    .err(1);
}

#[test]
fn bad_input_gets_its_code_and_leaves_nothing() {
    let node = Node::new("routed", "10.244.11.0/24", None);
    let pod = Pod::new("p");
    let path = pod.path();
    let vars = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "c1"),
        ("CNI_NETNS", path.as_str()),
        ("CNI_IFNAME", "eth0"),
    ];
    // Malformed JSON, and JSON that is not an object: decode failure.
    let truncated = node.config.to_string()[..20].to_string();
    node.cni_raw(&vars, truncated.as_bytes()).err(6);
    node.cni_raw(&vars, b"[1, 2]").err(6);
    // No cniVersion at all: invalid config.
    node.cni_raw(&vars, br#"{"name":"testnet","type":"podnet"}"#)
        .err(7);
    // Unknown version.
    let mut conf = node.config.clone();
    conf["cniVersion"] = "0.1.0".into();
    node.cni("ADD", "c1", &path, "eth0", &conf).err(1);
    // Missing environment.
    node.cni_env(
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_IFNAME", "eth0"),
        ],
        &node.config,
    )
    .err(4);
    node.cni_env(&[("CNI_COMMAND", "BOGUS")], &node.config)
        .err(4);
    // Missing namespace: the container is unknown; nothing is allocated.
    node.cni(
        "ADD",
        "c1",
        "/run/netns/podnet-test-no-such-ns",
        "eth0",
        &node.config,
    )
    .err(3);
    // A path that exists but is not a namespace: the same.
    let not_ns = node
        .cni("ADD", "c1", "/proc/self/status", "eth0", &node.config)
        .err(3);
    assert!(
        not_ns["msg"]
            .as_str()
            .unwrap()
            .contains("is not a network namespace"),
        "{not_ns}"
    );
    // Invalid config values.
    let mut conf = node.config.clone();
    conf["mtu"] = 20.into();
    node.cni("ADD", "c1", &path, "eth0", &conf).err(7);
    node.assert_clean();
}

#[test]
fn exhausted_range_fails_cleanly() {
    let mut node = Node::new("routed", "10.244.12.0/30", None);
    node.config["ipam"]["ranges"] = json!([[{"subnet": "10.244.12.0/30"}]]);
    let (a, b) = (Pod::new("a"), Pod::new("b"));
    a.add(&node);
    let e = node
        .cni("ADD", &b.id, &b.path(), "eth0", &node.config)
        .err(100);
    assert!(
        e["msg"]
            .as_str()
            .unwrap()
            .contains("no IP addresses available"),
        "{e}"
    );
    assert_eq!(
        node.podnet_links().len(),
        1,
        "the failed ADD left no interface"
    );
    assert_eq!(b.ns.exec_ok(&["ip", "-o", "link"]).lines().count(), 1);
    a.del(&node);
    node.assert_clean();
}

#[test]
fn del_succeeds_for_unknown_containers_and_gone_namespaces() {
    let node = Node::new("routed", "10.244.13.0/24", None);
    node.cni("DEL", "never-added", "", "eth0", &node.config)
        .ok();
    let pod = Pod::new("p");
    pod.add(&node);
    let (id, path) = (pod.id.clone(), pod.path());
    drop(pod); // the runtime removed the namespace before DEL
    node.cni("DEL", &id, &path, "eth0", &node.config).ok();
    node.cni("DEL", &id, &path, "eth0", &node.config).ok();
    node.assert_clean();
}

#[test]
fn failed_setup_rolls_back_interface_and_addresses() {
    let node = Node::new("routed", "10.244.14.0/24", None);
    let pod = Pod::new("p");
    // Someone else's eth0 is already in the pod: ADD must fail without touching it.
    pod.ns.exec_ok(&[
        "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "foreign",
    ]);
    node.cni("ADD", &pod.id, &pod.path(), "eth0", &node.config)
        .err(4);
    assert!(
        pod.ns
            .exec_ok(&["ip", "link", "show", "eth0"])
            .contains("eth0"),
        "foreign eth0 untouched"
    );
    node.assert_clean();
}

#[test]
fn chaining_accepts_prev_result_and_feeds_a_reference_plugin() {
    let mut node = Node::new("routed", "10.244.15.0/24", None);
    node.config["cniVersion"] = "1.0.0".into();
    let pod = Pod::new("p");
    let mut conf = node.config.clone();
    conf["prevResult"] = json!({"cniVersion": "1.0.0", "interfaces": [{"name": "lo", "sandbox": pod.path()}], "dns": {"nameservers": ["10.96.0.10"]}});
    let r = node.cni("ADD", &pod.id, &pod.path(), "eth0", &conf).ok();
    assert_eq!(r["interfaces"][0]["name"], "lo");
    assert_eq!(
        r["ips"][0]["interface"], 2,
        "indices shifted past the previous interfaces"
    );
    assert_eq!(r["dns"]["nameservers"][0], "10.96.0.10");
    // Our result is a valid prevResult for the reference `tuning` plugin, next in a conflist.
    let tuning = json!({"cniVersion": "1.0.0", "name": "testnet", "type": "tuning",
        "sysctl": {"net.ipv4.conf.eth0.accept_local": "1"}, "prevResult": r});
    let mut tuning_cmd = std::process::Command::new("/usr/lib/cni/tuning");
    podnet_kernel::netns::enter_before_exec(&mut tuning_cmd, node.ns.netns());
    let out = tuning_cmd
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", &pod.id)
        .env("CNI_NETNS", pod.path())
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/usr/lib/cni")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin
                .take()
                .unwrap()
                .write_all(tuning.to_string().as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(
        out.status.success(),
        "tuning rejected our result: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        pod.ns
            .exec_ok(&["sysctl", "-n", "net.ipv4.conf.eth0.accept_local"])
            .trim(),
        "1"
    );
    pod.del(&node);
    node.assert_clean();
}

#[test]
fn old_result_versions_carry_ip_versions() {
    let mut node = Node::new("routed", "10.244.16.0/24", None);
    node.config["cniVersion"] = "0.4.0".into();
    let pod = Pod::new("p");
    let r = pod.add(&node);
    assert_eq!(r["cniVersion"], "0.4.0");
    assert_eq!(r["ips"][0]["version"], "4");
    pod.del(&node);
}

#[test]
fn delegated_host_local_ipam_is_used_and_released() {
    let mut node = Node::new("bridge", "10.244.17.0/24", None);
    // Debian's reference plugins (1.1.1) speak up to 1.0.0.
    node.config["cniVersion"] = "1.0.0".into();
    let dir = node.data_dir.join("host-local");
    node.config["ipam"] = json!({"type": "host-local", "ranges": [[{"subnet": "10.244.17.0/24"}]], "dataDir": dir.to_string_lossy()});
    let pod = Pod::new("p");
    let r = pod.add(&node);
    let ip = result_ip(&r, false);
    assert!(
        dir.join("testnet").join(ip.to_string()).exists(),
        "host-local recorded {ip}"
    );
    let mut conf = node.config.clone();
    conf["prevResult"] = r.clone();
    node.cni("CHECK", &pod.id, &pod.path(), "eth0", &conf).ok();
    pod.del(&node);
    assert!(
        !dir.join("testnet").join(ip.to_string()).exists(),
        "DEL released it through host-local"
    );

    // A failed ADD gives the delegated address back (IPAM DEL after failure).
    let other = Pod::new("q");
    other.ns.exec_ok(&[
        "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "foreign",
    ]);
    node.cni("ADD", &other.id, &other.path(), "eth0", &node.config)
        .err(4);
    let left: Vec<_> = std::fs::read_dir(dir.join("testnet"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("10."))
        .collect();
    assert!(left.is_empty(), "no address left behind: {left:?}");
    assert!(node.podnet_links().is_empty());
}

#[test]
fn gc_releases_everything_not_valid() {
    let node = Node::new("routed", "10.244.18.0/24", None);
    let pods: Vec<Pod> = (0..3).map(|i| Pod::new(&format!("g{i}"))).collect();
    for p in &pods {
        p.add(&node);
    }
    let mut conf = node.config.clone();
    conf["cni.dev/valid-attachments"] = json!([{"containerID": pods[1].id, "ifname": "eth0"}]);
    node.cni_env(&[("CNI_COMMAND", "GC")], &conf).ok();
    let left: Vec<String> = node
        .allocations()
        .iter()
        .map(|a| a["containerId"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(left, vec![pods[1].id.clone()]);
    assert_eq!(
        node.podnet_links().len(),
        1,
        "interfaces of invalid attachments removed"
    );
    assert!(pods[0].ns.exec_ok(&["ip", "-o", "link"]).lines().count() == 1);
    pods[1].del(&node);
    node.assert_clean();
}

#[test]
fn status_reports_availability() {
    let mut node = Node::new("routed", "10.244.19.0/30", None);
    node.config["ipam"]["ranges"] = json!([[{"subnet": "10.244.19.0/30"}]]);
    node.cni_env(&[("CNI_COMMAND", "STATUS")], &node.config)
        .ok();
    let pod = Pod::new("p");
    pod.add(&node);
    node.cni_env(&[("CNI_COMMAND", "STATUS")], &node.config)
        .err(50);
    pod.del(&node);
    node.cni_env(&[("CNI_COMMAND", "STATUS")], &node.config)
        .ok();
}

/// A delegate older than the config: Debian's host-local speaks CNI up to
/// 1.0.0, the config says 1.1.0. podnet asks it its versions and speaks
/// 1.0.0 to it; ADD, CHECK, DEL, GC (DEL of the stale attachments podnet
/// finds) and STATUS all succeed.
#[test]
fn an_older_delegated_ipam_is_spoken_to_in_its_own_version() {
    let mut node = Node::new("bridge", "10.244.21.0/24", None);
    node.config["cniVersion"] = "1.1.0".into();
    let dir = node.data_dir.join("host-local");
    node.config["ipam"] = json!({"type": "host-local", "ranges": [[{"subnet": "10.244.21.0/24"}]], "dataDir": dir.to_string_lossy()});
    let held = |ip: IpAddr| dir.join("testnet").join(ip.to_string()).exists();
    let (kept, stale) = (Pod::new("k"), Pod::new("s"));
    let r = kept.add(&node);
    assert_eq!(
        r["cniVersion"], "1.1.0",
        "podnet answers in the config's version"
    );
    let kept_ip = result_ip(&r, false);
    let stale_ip = result_ip(&stale.add(&node), false);
    assert!(held(kept_ip) && held(stale_ip), "host-local recorded both");
    let mut conf = node.config.clone();
    conf["prevResult"] = r.clone();
    node.cni("CHECK", &kept.id, &kept.path(), "eth0", &conf)
        .ok();
    node.cni_env(&[("CNI_COMMAND", "STATUS")], &node.config)
        .ok();
    let mut gc = node.config.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": kept.id, "ifname": "eth0"}]);
    node.cni_env(&[("CNI_COMMAND", "GC")], &gc).ok();
    assert!(
        !held(stale_ip),
        "GC released the stale attachment through host-local"
    );
    assert!(held(kept_ip), "the valid one keeps its address");
    kept.del(&node);
    assert!(!held(kept_ip), "DEL released it");
}
