//! The agent on bad input: each case names the problem and changes nothing,
//! neither on the node nor in the store.

use std::path::Path;
use std::process::Command;

use podnet_testkit::{require_root, NetnsGuard, TempDir};

fn podnet() -> &'static str {
    env!("CARGO_BIN_EXE_podnet")
}

/// A node namespace holding `198.18.7.1/24` on a veth to a peer namespace.
fn node() -> (NetnsGuard, NetnsGuard) {
    require_root();
    let node = NetnsGuard::new("agent");
    let peer = NetnsGuard::new("agentpeer");
    node.exec_ok(&[
        "ip",
        "link",
        "add",
        "eth0",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        peer.name(),
    ]);
    node.exec_ok(&["ip", "addr", "add", "198.18.7.1/24", "dev", "eth0"]);
    node.exec_ok(&["ip", "link", "set", "eth0", "up"]);
    (node, peer)
}

/// Runs the agent in `node` and returns its exit status and stderr.
fn agent(
    node: &NetnsGuard,
    store: &str,
    cluster: &Path,
    cni: &Path,
    address: &str,
    extra: &[&str],
) -> (bool, String) {
    let mut cmd = Command::new(podnet());
    cmd.args([
        "agent",
        "--node",
        "n1",
        "--address",
        address,
        "--store",
        store,
    ])
    .arg("--cluster")
    .arg(cluster)
    .arg("--cni-conf-dir")
    .arg(cni)
    .args(extra);
    podnet_kernel::netns::enter_before_exec(&mut cmd, node.netns());
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What the node holds that an agent could have made.
fn node_state(node: &NetnsGuard) -> String {
    let links = node.exec_ok(&["ip", "-o", "link", "show"]);
    let routes = node.exec_ok(&["ip", "route", "show", "proto", "113"]);
    format!("{links}\n{routes}")
}

#[test]
fn bad_input_is_named_and_changes_nothing() {
    let (node, _peer) = node();
    let dir = TempDir::new("agentbad");
    let store_dir = dir.path().join("store");
    let store = format!("file:{}", store_dir.display());
    let cni = dir.path().join("cni");
    let good = dir.path().join("good.yaml");
    std::fs::write(&good, "clusterCIDRs: [10.244.0.0/16]\nbackend: vxlan\n").unwrap();
    let before = node_state(&node);

    // Overlapping cluster CIDRs.
    let overlap = dir.path().join("overlap.yaml");
    std::fs::write(&overlap, "clusterCIDRs: [10.244.0.0/16, 10.244.8.0/24]\n").unwrap();
    let (ok, err) = agent(&node, &store, &overlap, &cni, "198.18.7.1", &[]);
    assert!(!ok && err.contains("overlap"), "{err}");

    // A node CIDR outside the cluster CIDR.
    let (ok, err) = agent(
        &node,
        &store,
        &good,
        &cni,
        "198.18.7.1",
        &["--pod-cidr", "10.9.0.0/24"],
    );
    assert!(!ok && err.contains("outside the cluster"), "{err}");

    // An address no interface holds.
    let (ok, err) = agent(&node, &store, &good, &cni, "198.18.9.9", &[]);
    assert!(!ok && err.contains("no interface holds"), "{err}");

    // An unreachable store (nothing listens there).
    let (ok, err) = agent(
        &node,
        "etcd:http://127.0.0.1:1",
        &good,
        &cni,
        "198.18.7.1",
        &[],
    );
    assert!(
        !ok && err.contains("unreachable") && err.contains("127.0.0.1:1"),
        "{err}"
    );

    // Nothing changed: no CNI config, no interface, no route, and no node in the store.
    assert!(!cni.join("10-podnet.conflist").exists());
    assert_eq!(node_state(&node), before);
    let status = Command::new(podnet())
        .args(["cluster", "--store", &store, "status"])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&status.stdout);
    assert!(listing.starts_with("no cluster"), "{listing}");
}

#[test]
fn cluster_command_inits_lists_and_removes() {
    let dir = TempDir::new("clustercli");
    let store = format!("file:{}", dir.path().join("store").display());
    let spec = dir.path().join("cluster.yaml");
    std::fs::write(&spec, "clusterCIDRs: [10.244.0.0/16]\nbackend: host-gw\n").unwrap();
    let run = |args: &[&str]| {
        Command::new(podnet())
            .arg("cluster")
            .arg("--store")
            .arg(&store)
            .args(args)
            .output()
            .unwrap()
    };
    let init = run(&["init", "-f", spec.to_str().unwrap()]);
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    assert!(String::from_utf8_lossy(&init.stdout).contains("host-gw"));
    // A different spec is refused.
    std::fs::write(&spec, "clusterCIDRs: [10.9.0.0/16]\n").unwrap();
    let again = run(&["init", "-f", spec.to_str().unwrap()]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("different cluster spec"));
    let status = run(&["status"]);
    assert!(String::from_utf8_lossy(&status.stdout).contains("10.244.0.0/16"));
    let gone = run(&["remove-node", "nosuch"]);
    assert!(!gone.status.success());
    assert!(String::from_utf8_lossy(&gone.stderr).contains("no node nosuch"));
}

#[test]
fn cluster_apply_and_delete_take_kubernetes_manifests() {
    let dir = TempDir::new("clusterapply");
    let store = format!("file:{}", dir.path().join("store").display());
    let spec = dir.path().join("cluster.yaml");
    std::fs::write(&spec, "clusterCIDRs: [10.244.0.0/16]\n").unwrap();
    let manifest = dir.path().join("m.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: x, labels: {app: web}}\n\
         spec: {nodeName: n1, containers: [{name: c, image: nginx, ports: [{name: http, containerPort: 80}]}]}\n\
         status: {podIPs: [{ip: 10.244.1.5}]}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: x}\nspec: {selector: {app: web}, ports: [{port: 80, targetPort: http}]}\n---\n\
         apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny, namespace: x}\nspec: {podSelector: {}}\n",
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(podnet())
            .arg("cluster")
            .arg("--store")
            .arg(&store)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    assert!(run(&["init", "-f", spec.to_str().unwrap()]).0);
    let m = manifest.to_str().unwrap();
    let (ok, out) = run(&["apply", "-f", m]);
    assert!(ok, "{out}");
    for line in [
        "namespace/x created",
        "pod/x/a created (ignored: spec.containers[0].image)",
        "service/x/web created",
        "networkpolicy/x/deny created",
        "endpoints/x/web set (1 addresses)",
    ] {
        assert!(out.contains(line), "{line:?} in\n{out}");
    }
    let (_, again) = run(&["apply", "-f", m]);
    assert_eq!(again.matches("unchanged").count(), 4, "{again}");
    let (_, services) = run(&["services"]);
    assert!(
        services.contains("10.244.1.5"),
        "the endpoint comes from the pod: {services}"
    );
    let (ok, out) = run(&["delete", "-f", m]);
    assert!(
        ok && out.contains("namespace/x deleted") && out.contains("networkpolicy/x/deny deleted"),
        "{out}"
    );
    // A pod without a node is refused outside a lab, and nothing of the file is applied.
    std::fs::write(&manifest, "apiVersion: v1\nkind: Namespace\nmetadata: {name: y}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: b, namespace: y}\nspec: {containers: [{name: c}]}\n").unwrap();
    let (ok, out) = run(&["apply", "-f", m]);
    assert!(!ok && out.contains("spec.nodeName is required"), "{out}");
    let (_, again) = run(&["apply", "-f", m]);
    assert!(!again.contains("namespace/y created"), "{again}");
}
