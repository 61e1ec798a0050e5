//! The lab as a user runs it: `podnet lab up`, `status`, `down`, and `down` after a crash.

mod common;

use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use podnet_kernel::Netns;
use podnet_testkit::{require_root, wait_until};

/// A lab with a unique name, taken down on drop.
struct LabGuard {
    name: String,
}

impl LabGuard {
    fn new() -> LabGuard {
        require_root();
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "t{}x{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        LabGuard { name }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(common::plugin())
            .arg("lab")
            .args(args)
            .args(["--name", &self.name])
            .output()
            .unwrap()
    }

    fn namespaces(&self) -> Vec<String> {
        let prefix = format!("podnet-{}-", self.name);
        Netns::list_named()
            .into_iter()
            .filter(|n| n.starts_with(&prefix))
            .collect()
    }
}

impl Drop for LabGuard {
    fn drop(&mut self) {
        let _ = self.run(&["down"]);
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn full_matrix(model: &str) {
    let lab = LabGuard::new();
    let up = lab.run(&["up", "--model", model, "--pods", "3"]);
    let out = text(&up);
    assert!(up.status.success(), "{out}");
    // 4 endpoints (node + 3 pods), 12 directed pairs, every one reached without NAT.
    assert_eq!(out.matches("ok src=").count(), 12, "{out}");
    assert!(!out.contains("FAIL") && !out.contains("NAT"), "{out}");
    // Each pod's row: the three other receivers saw the pod's own 10.244.1.x address.
    let pod_rows: Vec<&str> = out.lines().filter(|l| l.starts_with("pod")).collect();
    assert_eq!(pod_rows.len(), 3, "{out}");
    for row in pod_rows {
        assert_eq!(row.matches("ok src=10.244.1.").count(), 3, "{row}");
    }
    assert_eq!(lab.namespaces().len(), 4);
    // No route out: the node knows only its pods.
    let node = format!("podnet-{}-node", lab.name);
    let node_ns = Netns::open_named(&node).unwrap();
    let routes = podnet_kernel::RouteHandle::in_netns(&node_ns)
        .unwrap()
        .routes()
        .unwrap();
    assert!(!routes.is_empty(), "the node routes to its pods");
    assert!(
        routes.iter().all(|r| r.dst.prefix_len() != 0),
        "lab node has no default route: {routes:?}"
    );

    let status = lab.run(&["status"]);
    assert!(status.status.success(), "{}", text(&status));
    let again = lab.run(&["up"]);
    assert!(!again.status.success() && text(&again).contains("already exists"));

    let down = lab.run(&["down"]);
    assert!(down.status.success(), "{}", text(&down));
    assert!(lab.namespaces().is_empty());
    assert!(!std::path::Path::new(&format!("/run/podnet-lab/{}", lab.name)).exists());
    assert!(!lab.run(&["status"]).status.success(), "no lab after down");
}

#[test]
fn routed_lab_reaches_every_pair() {
    full_matrix("routed");
}

#[test]
fn bridge_lab_reaches_every_pair() {
    full_matrix("bridge");
}

#[test]
fn down_cleans_up_after_a_crashed_up() {
    let lab = LabGuard::new();
    let mut up = Command::new(common::plugin())
        .args(["lab", "up", "--pods", "6", "--name", &lab.name])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Crash it once it has built a few pods.
    let third = format!("podnet-{}-pod3", lab.name);
    wait_until(Duration::from_secs(30), || {
        lab.namespaces().contains(&third) || matches!(up.try_wait(), Ok(Some(_)))
    });
    up.kill().unwrap();
    up.wait().unwrap();
    assert!(!lab.namespaces().is_empty(), "the crash left a partial lab");
    let down = lab.run(&["down"]);
    assert!(down.status.success(), "{}", text(&down));
    assert!(lab.namespaces().is_empty(), "{:?}", lab.namespaces());
    // And a fresh lab comes up where the crashed one was.
    let up = lab.run(&["up", "--pods", "2"]);
    assert!(up.status.success(), "{}", text(&up));
}
