//! Lab fixtures: a lab with a unique name, taken down on drop, and probes between its namespaces.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use podnet_kernel::{Netns, Route, RouteHandle};
use podnet_lab::{Lab, LabState};
use podnet_testkit::require_root;

/// The podnet binary under test.
pub fn podnet() -> &'static str {
    env!("CARGO_BIN_EXE_podnet")
}

/// A lab with a unique name, taken down on drop.
pub struct LabGuard {
    pub name: String,
}

impl LabGuard {
    /// A fresh lab name (nothing is built yet).
    pub fn new() -> LabGuard {
        require_root();
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "t{}x{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        LabGuard { name }
    }

    /// Runs `podnet lab ARGS --name NAME`.
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(podnet())
            .arg("lab")
            .args(args)
            .args(["--name", &self.name])
            .output()
            .unwrap()
    }

    /// `podnet lab apply -f` of `yaml` (Kubernetes manifests), which must succeed.
    pub fn apply(&self, yaml: &str) {
        self.manifests("apply", yaml);
    }

    /// `podnet lab delete -f` of `yaml`, which must succeed.
    pub fn delete(&self, yaml: &str) {
        self.manifests("delete", yaml);
    }

    fn manifests(&self, verb: &str, yaml: &str) {
        let dir = podnet_testkit::TempDir::new(verb);
        let file = dir.path().join("objects.yaml");
        std::fs::write(&file, yaml).unwrap();
        let out = self.run(&[verb, "-f", file.to_str().unwrap()]);
        assert!(out.status.success(), "{verb}: {}", text(&out));
    }

    /// Two nodes on two segments (joined only by the router), VXLAN between
    /// them, `pods` pods each: the lab the explain tests break.
    pub fn up_two_segments_vxlan(&self, pods: u32) -> String {
        let pods = pods.to_string();
        self.up(&[
            "--nodes",
            "2",
            "--segments",
            "2",
            "--backend",
            "vxlan",
            "--pods-per-node",
            &pods,
        ])
    }

    /// `podnet lab up ARGS`, which must succeed; returns its output.
    pub fn up(&self, args: &[&str]) -> String {
        let mut all = vec!["up"];
        all.extend_from_slice(args);
        let out = self.run(&all);
        let t = text(&out);
        assert!(
            out.status.success(),
            "lab up {args:?} failed:\n{t}\n{}",
            self.logs()
        );
        t
    }

    /// `podnet lab up -f FILE` with `yaml` as the cluster file, which must succeed.
    pub fn up_yaml(&self, yaml: &str) -> String {
        let dir = podnet_testkit::TempDir::new("yaml");
        let file = dir.path().join("cluster.yaml");
        std::fs::write(&file, yaml).unwrap();
        self.up(&["-f", file.to_str().unwrap()])
    }

    /// `podnet lab check`, which must succeed.
    pub fn check_ok(&self) {
        let check = self.run(&["check"]);
        assert!(check.status.success(), "{}\n{}", text(&check), self.logs());
    }

    /// The library handle of this lab.
    pub fn lab(&self) -> Lab {
        Lab::new(&self.name).unwrap()
    }

    /// The lab's recorded state.
    pub fn state(&self) -> LabState {
        self.lab().state().unwrap()
    }

    /// The lab's namespaces.
    pub fn namespaces(&self) -> Vec<String> {
        self.lab().namespaces()
    }

    /// Every agent's log, for failure messages.
    pub fn logs(&self) -> String {
        let dir = format!("/run/podnet-lab/{}/nodes", self.name);
        let mut out = String::new();
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let log = std::fs::read_to_string(entry.path().join("agent.log")).unwrap_or_default();
            out.push_str(&format!("--- {:?}\n{log}", entry.file_name()));
        }
        out
    }

    /// The namespace of node `node`.
    pub fn node_ns(&self, node: &str) -> Netns {
        Netns::open_named(&self.lab().node_ns(node)).unwrap()
    }

    /// Routes the node agent of `node` installed to other nodes' pods (proto
    /// 113, via a gateway: not the service CIDR route).
    pub fn agent_routes(&self, node: &str) -> Vec<Route> {
        RouteHandle::in_netns(&self.node_ns(node))
            .unwrap()
            .routes()
            .unwrap()
            .into_iter()
            .filter(|r| r.protocol == podnet_kernel::rtnl::RTPROT_PODNET_NODES)
            .filter(|r| r.gateway.is_some())
            .collect()
    }

    /// The pods of `node` as (namespace, first IPv4).
    pub fn pods_of(&self, node: &str) -> Vec<(Netns, IpAddr)> {
        self.state()
            .pods
            .iter()
            .filter(|p| p.node == node)
            .map(|p| (Netns::open_named(&p.name).unwrap(), p.ips[0]))
            .collect()
    }

    /// Runs a command inside namespace `ns` of this lab.
    pub fn exec(&self, ns: &str, args: &[&str]) -> Output {
        podnet_testkit::exec_in(&Netns::open_named(ns).unwrap(), args)
    }
}

impl Drop for LabGuard {
    fn drop(&mut self) {
        let _ = self.run(&["down"]);
    }
}

/// stdout and stderr of a command.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A TCP connection from `from` to a listener in `to`, made in those namespaces.
pub fn connect(from: &Netns, to: &Netns, to_ip: IpAddr, port: u16) -> (TcpStream, TcpStream) {
    let listener = to
        .run(|| TcpListener::bind(SocketAddr::new(to_ip, port)).unwrap())
        .unwrap();
    let addr = SocketAddr::new(to_ip, port);
    let client = from
        .run(move || TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap())
        .unwrap();
    let (server, _) = listener.accept().unwrap();
    for s in [&client, &server] {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    }
    (client, server)
}

/// Sends `bytes` from one end to the other and checks they all arrive intact.
pub fn transfer(client: &mut TcpStream, server: &mut TcpStream, bytes: usize) {
    let data: Vec<u8> = (0..bytes).map(|i| (i % 251) as u8).collect();
    std::thread::scope(|s| {
        let sender = s.spawn(|| client.write_all(&data));
        let mut got = vec![0u8; bytes];
        server
            .read_exact(&mut got)
            .expect("the transfer stalled or broke");
        sender.join().unwrap().unwrap();
        assert!(got == data, "data corrupted in transit");
    });
}

/// Every process of a namespace stopped (SIGSTOP) until dropped (SIGCONT).
pub struct Frozen {
    pids: Vec<i32>,
}

impl Frozen {
    /// Stops every process whose network namespace is the named one.
    pub fn processes_in(netns: &str) -> Frozen {
        use std::os::unix::fs::MetadataExt;
        let want = std::fs::metadata(format!("/run/netns/{netns}"))
            .unwrap()
            .ino();
        let mut pids = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let ns = std::fs::metadata(format!("/proc/{pid}/ns/net"));
            if ns.is_ok_and(|m| m.ino() == want) {
                pids.push(pid);
            }
        }
        assert!(!pids.is_empty(), "no process in {netns}");
        for pid in &pids {
            assert!(Command::new("kill")
                .args(["-STOP", &pid.to_string()])
                .status()
                .unwrap()
                .success());
        }
        Frozen { pids }
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        for pid in &self.pids {
            let resumed = Command::new("kill")
                .args(["-CONT", &pid.to_string()])
                .status();
            if !resumed.as_ref().is_ok_and(|s| s.success()) {
                eprintln!("could not resume process {pid} (SIGCONT): {resumed:?}");
            }
        }
    }
}

/// Destroys every TCP connection from the named namespace to `addr:port`
/// (`ss -K`): the processes holding them see them fail.
pub fn cut_connections(netns: &str, addr: &str, port: u16) {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            netns,
            "ss",
            "-K",
            "-t",
            "dst",
            addr,
            "dport",
            "=",
            &port.to_string(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "ss -K: {}", text(&out));
}

/// The lab's TLS etcd as its administrator (`root`) reaches it, with curl
/// from the control namespace: what tests do that podnet never does.
pub struct LabEtcd {
    ns: String,
    pki: std::path::PathBuf,
    url: String,
    token: String,
}

impl LabEtcd {
    /// Authenticates as root.
    pub fn new(lab: &Lab) -> LabEtcd {
        let pki = lab.pki_dir();
        let password = std::fs::read_to_string(pki.join("root.password")).unwrap();
        let config = lab.store_config(podnet_lab::StoreKind::Etcd).unwrap();
        let mut etcd = LabEtcd {
            ns: lab.control_ns(),
            pki,
            url: config.url.trim_start_matches("etcd:").to_string(),
            token: String::new(),
        };
        let reply = etcd.post(
            "/v3/auth/authenticate",
            &serde_json::json!({"name": "root", "password": password.trim()}),
        );
        etcd.token = reply["token"].as_str().expect("a token").to_string();
        etcd
    }

    /// The member's address.
    pub fn address(&self) -> String {
        let host = self.url.trim_start_matches("https://");
        host.rsplit_once(':').unwrap().0.to_string()
    }

    /// One API call; its JSON reply.
    pub fn post(&self, path: &str, body: &serde_json::Value) -> serde_json::Value {
        let pki = |f: &str| self.pki.join(f).display().to_string();
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns, "curl", "-sf", "-m", "10"])
            .args(["--cacert", &pki("ca.pem"), "--cert", &pki("client.pem")])
            .args(["--key", &pki("client-key.pem"), "-H"])
            .arg(format!("Authorization: {}", self.token))
            .arg(format!("{}{path}", self.url))
            .args(["-d", &body.to_string()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{path}: {}", text(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The store's revision.
    pub fn revision(&self) -> u64 {
        let reply = self.post(
            "/v3/kv/range",
            &serde_json::json!({"key": "AA==", "count_only": true}),
        );
        reply["header"]["revision"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    }

    /// Compacts the history up to the current revision; returns it.
    pub fn compact(&self) -> u64 {
        let revision = self.revision();
        self.post(
            "/v3/kv/compaction",
            &serde_json::json!({"revision": revision.to_string(), "physical": true}),
        );
        revision
    }
}

/// The value of the metric sample `series` (`name{labels}` as written) that
/// the agent of the named node namespace serves (0 when absent).
pub fn agent_metric(netns: &str, series: &str) -> f64 {
    let out = Command::new("ip")
        .args(["netns", "exec", netns, "curl", "-sf", "-m", "5"])
        .arg(format!(
            "http://127.0.0.1:{}/metrics",
            podnet_lab::METRICS_ADDR.rsplit(':').next().unwrap()
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "scrape {netns}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}
