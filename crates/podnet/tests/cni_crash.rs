//! IPAM safety under load and under SIGKILL: never one address for two live pods.

mod common;

use std::collections::HashSet;
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use common::{result_ip, Node, Pod};
use podnet_kernel::RouteHandle;
use serde_json::{json, Value};

fn allocated_ips(node: &Node) -> Vec<String> {
    node.allocations()
        .iter()
        .map(|a| a["ip"].as_str().unwrap().to_string())
        .collect()
}

fn assert_unique(ips: &[String]) {
    let set: HashSet<&String> = ips.iter().collect();
    assert_eq!(set.len(), ips.len(), "duplicate addresses: {ips:?}");
}

#[test]
fn sixty_four_concurrent_adds_and_dels() {
    let node = Node::new("bridge", "10.244.20.0/24", None);
    let pods: Vec<Pod> = (0..64).map(|i| Pod::new(&format!("c{i}"))).collect();
    let run_all = |command: &str| -> Vec<(i32, Value)> {
        let children: Vec<_> = pods
            .iter()
            .map(|p| {
                let path = p.path();
                let vars = [
                    ("CNI_COMMAND", command),
                    ("CNI_CONTAINERID", p.id.as_str()),
                    ("CNI_NETNS", path.as_str()),
                    ("CNI_IFNAME", "eth0"),
                ];
                node.spawn(&vars, &node.config)
            })
            .collect();
        children
            .into_iter()
            .map(|c| {
                let out = c.wait_with_output().unwrap();
                let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
                (
                    out.status.code().unwrap_or(-1),
                    serde_json::from_str(&stdout).unwrap_or(Value::String(stdout)),
                )
            })
            .collect()
    };
    let added = run_all("ADD");
    for (code, out) in &added {
        assert_eq!(*code, 0, "{out}");
    }
    let ips: Vec<String> = added
        .iter()
        .map(|(_, r)| result_ip(r, false).to_string())
        .collect();
    assert_unique(&ips);
    assert_eq!(node.podnet_links().len(), 64);
    assert_eq!(allocated_ips(&node).len(), 64);
    // Every pod really holds the address IPAM recorded.
    for (pod, ip) in pods.iter().zip(&ips) {
        assert!(pod
            .ns
            .exec_ok(&["ip", "-o", "addr", "show", "eth0"])
            .contains(&format!("inet {ip}/")));
    }
    for (code, out) in run_all("DEL") {
        assert_eq!(code, 0, "{out}");
    }
    node.assert_clean();
}

/// Points of an ADD at which the test kills the plugin, each recognised by what it has done so far.
#[derive(Debug, Clone, Copy)]
enum KillPoint {
    /// Right after the process started.
    AtStart,
    /// Once its allocation is recorded.
    AfterAllocation,
    /// Once the host-side veth exists.
    AfterVeth,
    /// Once the pod's interface has its address.
    AfterAddress,
}

const KILL_POINTS: [KillPoint; 4] = [
    KillPoint::AtStart,
    KillPoint::AfterAllocation,
    KillPoint::AfterVeth,
    KillPoint::AfterAddress,
];

/// A netlink handle on the pod, opened before the plugin starts so that polling is fast.
struct Observer {
    pod: RouteHandle,
}

impl Observer {
    fn reached(&mut self, node: &Node, pod: &Pod, point: KillPoint) -> bool {
        match point {
            KillPoint::AtStart => true,
            KillPoint::AfterAllocation => node
                .allocations()
                .iter()
                .any(|a| a["containerId"] == pod.id.as_str()),
            KillPoint::AfterVeth => self.pod.link_by_name("eth0").is_ok_and(|l| l.is_some()),
            KillPoint::AfterAddress => self.pod.addresses(None).is_ok_and(|a| {
                a.iter()
                    .any(|a| a.net.addr().to_string().starts_with("10.244."))
            }),
        }
    }
}

/// Starts an ADD and SIGKILLs it as soon as `point` is observed (or once it has finished).
///
/// Polls without pausing, so that the kill lands while the plugin is still at work; bounded by a deadline.
fn add_and_kill(node: &Node, pod: &Pod, point: KillPoint) {
    let path = pod.path();
    let vars = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", pod.id.as_str()),
        ("CNI_NETNS", path.as_str()),
        ("CNI_IFNAME", "eth0"),
    ];
    let mut observer = Observer {
        pod: RouteHandle::in_netns(pod.ns.netns()).unwrap(),
    };
    let mut child = node.spawn(&vars, &node.config);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if observer.reached(node, pod, point) || matches!(child.try_wait(), Ok(Some(_))) {
            break;
        }
    }
    let _ = child.kill();
    let interrupted = child.wait().unwrap().signal().is_some();
    // Informational only: whether the kill interrupted the plugin depends on timing.
    eprintln!(
        "kill at {point:?}: {}",
        if interrupted {
            "interrupted"
        } else {
            "already finished"
        }
    );
}

#[test]
fn retried_add_after_sigkill_converges() {
    let node = Node::new("routed", "10.244.21.0/24", None);
    let pods: Vec<Pod> = (0..12).map(|i| Pod::new(&format!("k{i}"))).collect();
    for (i, pod) in pods.iter().enumerate() {
        add_and_kill(&node, pod, KILL_POINTS[i % KILL_POINTS.len()]);
        assert_unique(&allocated_ips(&node));
    }
    // The runtime retries each ADD: every pod ends up with exactly one address, unique, and working.
    let ips: Vec<String> = pods
        .iter()
        .map(|p| result_ip(&p.add(&node), false).to_string())
        .collect();
    assert_unique(&ips);
    assert_eq!(
        allocated_ips(&node).len(),
        pods.len(),
        "one allocation per pod"
    );
    assert_eq!(
        node.podnet_links().len(),
        pods.len(),
        "one host interface per pod"
    );
    assert!(pods[0].ns.ping(&ips[pods.len() - 1]), "retried pods talk");
    for p in &pods {
        p.del(&node);
    }
    node.assert_clean();
}

#[test]
fn gc_after_sigkill_reclaims_everything() {
    let node = Node::new("routed", "10.244.22.0/24", None);
    let pods: Vec<Pod> = (0..8).map(|i| Pod::new(&format!("g{i}"))).collect();
    for (i, pod) in pods.iter().enumerate() {
        add_and_kill(&node, pod, KILL_POINTS[i % KILL_POINTS.len()]);
    }
    // The runtime never retried: GC with no valid attachment leaves nothing.
    let mut conf = node.config.clone();
    conf["cni.dev/valid-attachments"] = json!([]);
    node.cni_env(&[("CNI_COMMAND", "GC")], &conf).ok();
    node.assert_clean();
}

#[test]
fn exhaustion_reclaims_addresses_of_vanished_namespaces() {
    let mut node = Node::new("routed", "10.244.23.0/29", None);
    node.config["ipam"]["ranges"] = json!([[{"subnet": "10.244.23.0/29"}]]);
    // 5 usable addresses (.2-.6); fill them, then lose every namespace without a DEL (a node crash).
    let doomed: Vec<Pod> = (0..5).map(|i| Pod::new(&format!("d{i}"))).collect();
    for p in &doomed {
        p.add(&node);
    }
    let survivor = Pod::new("s");
    node.cni("ADD", &survivor.id, &survivor.path(), "eth0", &node.config)
        .err(100);
    drop(doomed);
    let r = survivor.add(&node);
    assert!(result_ip(&r, false).to_string().starts_with("10.244.23."));
    assert_eq!(
        allocated_ips(&node).len(),
        1,
        "only the dead namespaces' allocations were released"
    );
    survivor.del(&node);
    node.assert_clean();
}
