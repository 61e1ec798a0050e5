//! The real agent at scale, on both stores: how long loading N services
//! takes, the agent's first full sync and its memory, and one service
//! change from the start of the store write to the agent's kernel
//! transaction done (as the agent logs it), `CHANGES` times, medians.
//!
//! The agent runs in a namespace of its own (loopback and a veth pair as its
//! underlay); etcd, for the etcd run, listens on that namespace's loopback.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use podnet_kernel::Netns;
use podnet_services::{Endpoints, Service};
use podnet_store::ClusterStore;

use crate::kubeproxy;
use crate::plugins::podnet_binary;
use crate::report::{machine, quantile, today};
use crate::services::{moved, to_service};
use crate::sh;

/// Endpoint changes measured per store.
const CHANGES: usize = 7;
/// Longest wait for the agent's first full sync or one change.
const LIMIT: Duration = Duration::from_secs(300);

/// Which store the agent reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// The embedded file store.
    File,
    /// A real etcd server.
    Etcd,
}

impl Store {
    fn name(self) -> &'static str {
        match self {
            Store::File => "embedded",
            Store::Etcd => "etcd",
        }
    }
}

/// What the real agent showed.
pub struct Figures {
    /// Loading the services and endpoints into the store.
    pub load: Duration,
    /// The first full sync as the agent logged it.
    pub sync: String,
    /// VmRSS after the first full sync, MiB.
    pub rss: f64,
    /// VmHWM (peak), MiB.
    pub hwm: f64,
    /// Store writes of one endpoint change (median).
    pub write: Duration,
    /// From the start of the write to the agent's log line saying it applied it: median, p95.
    pub end_to_end: (Duration, Duration),
    /// The agent's pass for the last change, as it logged it.
    pub pass: String,
    /// `podnet cluster apply -f` of as many more services (with selectors,
    /// in a namespace of their own) into the loaded store.
    pub apply: Duration,
}

/// A namespace for the agent (and etcd), removed on drop.
struct Node {
    name: String,
    etcd: Option<Child>,
}

impl Node {
    fn new(tag: &str) -> Node {
        let name = format!("pnb{}-agent-{tag}", std::process::id());
        let _ = Netns::remove_named(&name);
        Netns::create_named(&name).expect("create namespace");
        // Owned from here: a failing command below removes it again.
        let node = Node { name, etcd: None };
        let name = &node.name;
        for cmd in [
            format!("ip -n {name} link set lo up"),
            format!("ip -n {name} link add eth0 type veth peer name eth0p"),
            format!("ip -n {name} link set eth0p up"),
            format!("ip -n {name} addr add 10.1.0.2/24 dev eth0"),
            format!("ip -n {name} link set eth0 up"),
        ] {
            sh(&cmd);
        }
        node
    }

    fn netns(&self) -> Netns {
        Netns::open_named(&self.name).expect("agent namespace")
    }

    /// Starts etcd on this namespace's loopback; returns its store URL.
    fn start_etcd(&mut self, data: &Path) -> Result<String, String> {
        let client = "http://127.0.0.1:2379";
        let mut cmd = Command::new("etcd");
        cmd.args(["--name", "bench", "--data-dir"])
            .arg(data)
            .args([
                "--listen-client-urls",
                client,
                "--advertise-client-urls",
                client,
            ])
            .args(["--listen-peer-urls", "http://127.0.0.1:2380"])
            .args(["--quota-backend-bytes", "8589934592"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // The namespace handle must live until the child has entered it.
        let netns = self.netns();
        podnet_kernel::netns::enter_before_exec(&mut cmd, &netns);
        self.etcd = Some(cmd.spawn().map_err(|e| format!("start etcd: {e}"))?);
        let url = format!("etcd:{client}");
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(20) {
            let up = self
                .netns()
                .run(|| {
                    podnet_store::open(&url.as_str().into())
                        .and_then(|s| s.snapshot())
                        .is_ok()
                })
                .unwrap_or(false);
            if up {
                return Ok(url);
            }
            std::thread::park_timeout(Duration::from_millis(100));
        }
        Err("etcd did not answer within 20 s".into())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.etcd.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Ok(ns) = Netns::open_named(&self.name) {
            podnet_kernel::netns::kill_processes_in(&ns);
        }
        let _ = Netns::remove_named(&self.name);
    }
}

/// Runs `f` with a client of `url` from inside the agent's namespace.
fn with_store<T: Send>(
    node: &Node,
    url: &str,
    f: impl FnOnce(&ClusterStore) -> Result<T, String> + Send,
) -> Result<T, String> {
    node.netns()
        .run(|| f(&podnet_store::open(&url.into()).map_err(|e| e.to_string())?))
        .map_err(|e| e.to_string())?
}

fn load(node: &Node, url: &str, size: usize) -> Result<Duration, String> {
    let (services, endpoints): (Vec<Service>, Vec<Endpoints>) = (0..size)
        .map(|i| {
            let g = kubeproxy::service(i);
            to_service(&g, g.endpoints[2])
        })
        .unzip();
    with_store(node, url, move |store| {
        let mut spec = podnet_cluster::ClusterSpec::new(
            vec!["10.244.0.0/16".parse().expect("static prefix")],
            podnet_cluster::Backend::HostGw,
        );
        spec.masquerade = false;
        store
            .init_cluster(&spec)
            .map_err(|e| format!("init cluster: {e}"))?;
        let t = Instant::now();
        store
            .put_services(services)
            .and_then(|_| store.put_many_endpoints(&endpoints))
            .map_err(|e| format!("load services: {e}"))?;
        Ok(t.elapsed())
    })
}

/// Times `podnet cluster --store URL apply -f` of `size` services (and their
/// namespace) from a manifest, as an operator loads a cluster.
fn cluster_apply(node: &Node, url: &str, size: usize, dir: &Path) -> Result<Duration, String> {
    let file = dir.join("apply.yaml");
    let mut text = String::from("apiVersion: v1\nkind: Namespace\nmetadata: {name: applied}\n");
    for i in 0..size {
        let _ = write!(
            text,
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: s{i}, namespace: applied}}\n\
             spec: {{selector: {{app: s{i}}}, ports: [{{port: 80, targetPort: 8080}}]}}\n"
        );
    }
    std::fs::write(&file, text).map_err(|e| e.to_string())?;
    let mut cmd = Command::new(podnet_binary());
    cmd.args(["cluster", "--store", url, "apply", "-f"])
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // The namespace stays open until the command has started in it.
    let netns = node.netns();
    podnet_kernel::netns::enter_before_exec(&mut cmd, &netns);
    let t = Instant::now();
    let out = cmd
        .output()
        .map_err(|e| format!("podnet cluster apply: {e}"))?;
    let took = t.elapsed();
    if !out.status.success() {
        return Err(format!(
            "podnet cluster apply: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(took)
}

/// Waits until the log has a line containing `needle`; returns it.
fn wait_for_line(log: &Path, needle: &str, limit: Duration) -> Result<String, String> {
    let t = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(l) = text.lines().find(|l| l.contains(needle)) {
            return Ok(l.to_string());
        }
        if t.elapsed() > limit {
            return Err(format!("no `{needle}` within {} s", limit.as_secs()));
        }
        std::thread::park_timeout(Duration::from_millis(1));
    }
}

fn start_agent(node: &Node, url: &str, dir: &Path) -> Result<(Child, PathBuf), String> {
    let log = dir.join("agent.log");
    let _ = std::fs::remove_file(&log);
    let logf = std::fs::File::create(&log).map_err(|e| e.to_string())?;
    let mut cmd = Command::new(podnet_binary());
    cmd.args([
        "agent",
        "--node",
        "bench-node",
        "--address",
        "10.1.0.2",
        "--store",
        url,
    ])
    .arg("--cni-conf-dir")
    .arg(dir.join("cni"))
    .arg("--ipam-dir")
    .arg(dir.join("ipam"))
    .args(["--no-drop-log", "--no-policies"])
    .stdout(Stdio::null())
    .stderr(Stdio::from(logf));
    let netns = node.netns();
    podnet_kernel::netns::enter_before_exec(&mut cmd, &netns);
    let child = cmd.spawn().map_err(|e| format!("start the agent: {e}"))?;
    Ok((child, log))
}

fn memory(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (kib("VmRSS:"), kib("VmHWM:"))
}

/// The text after " in " up to the next colon: the duration the agent logged.
fn logged(line: &str) -> String {
    line.split(" in ")
        .nth(1)
        .and_then(|r| r.split(':').next())
        .unwrap_or("?")
        .to_string()
}

/// `CHANGES` endpoint changes of one service, each timed from the start of
/// its store write to the agent's log line; (writes, end to end, last pass).
fn changes(
    node: &Node,
    url: &str,
    log: &Path,
    size: usize,
) -> Result<(Vec<Duration>, Vec<Duration>, String), String> {
    let g = kubeproxy::service(size / 2);
    let wanted = format!("1 changed (bench/svc{})", g.index);
    let (mut writes, mut ends, mut pass) = (Vec::new(), Vec::new(), String::new());
    for k in 0..CHANGES {
        let seen = std::fs::read_to_string(log)
            .unwrap_or_default()
            .matches(&wanted)
            .count();
        let third = if k % 2 == 0 {
            moved(&g)
        } else {
            g.endpoints[2]
        };
        let (_, eps) = to_service(&g, third);
        let t = Instant::now();
        let write = with_store(node, url, |s| {
            s.put_endpoints(&eps).map_err(|e| e.to_string())
        })
        .map(|()| t.elapsed())?;
        loop {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if text.matches(&wanted).count() > seen {
                pass = text
                    .lines()
                    .rfind(|l| l.contains(&wanted))
                    .map(logged)
                    .unwrap_or_default();
                break;
            }
            if t.elapsed() > LIMIT {
                return Err("the agent did not apply a change in time".into());
            }
            std::thread::park_timeout(Duration::from_micros(500));
        }
        ends.push(t.elapsed());
        writes.push(write);
    }
    Ok((writes, ends, pass))
}

/// The real agent with `size` services (3 endpoints each) in `store`.
pub fn figures(size: usize, dir: &Path, store: Store) -> Result<Figures, String> {
    let dir = dir.join(store.name());
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let mut node = Node::new(store.name());
    let url = match store {
        Store::File => format!("file:{}", dir.join("store").display()),
        Store::Etcd => node.start_etcd(&dir.join("etcd"))?,
    };
    let load = load(&node, &url, size)?;
    let (mut agent, log) = start_agent(&node, &url, &dir)?;
    let result: Result<Figures, String> = (|| {
        let line = wait_for_line(&log, &format!("full sync of {size} services"), LIMIT)?;
        let (rss, hwm) = memory(agent.id());
        let (writes, ends, pass) = changes(&node, &url, &log, size)?;
        Ok(Figures {
            load,
            sync: logged(&line),
            rss,
            hwm,
            write: quantile(&writes, 0.5),
            end_to_end: (quantile(&ends, 0.5), quantile(&ends, 0.95)),
            pass,
            apply: Duration::ZERO,
        })
    })();
    let _ = agent.kill();
    let _ = agent.wait();
    let mut result = result?;
    result.apply = cluster_apply(&node, &url, size, &dir)?;
    Ok(result)
}

fn sizes() -> Vec<usize> {
    std::env::var("PODNET_BENCH_AGENT")
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![100_000])
}

fn ms(d: Duration) -> String {
    let v = d.as_secs_f64() * 1000.0;
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// Runs the agent benchmark on both stores and returns its report.
pub fn run() -> String {
    let dir = std::env::temp_dir().join(format!("podnet-bench-agent-{}", std::process::id()));
    let mut t = String::new();
    let _ = writeln!(t, "## The agent at scale, on both stores\n");
    let _ = writeln!(t, "Measured {} on {} (`bench/run.sh agent`; `PODNET_BENCH_AGENT=10000,100000` picks the sizes).", today(), machine());
    let _ = writeln!(t, "ClusterIP services with 3 endpoints each, loaded as `podnet cluster apply` writes them (transactions of");
    let _ = writeln!(t, "at most 120 operations, 8 in flight, on etcd; one transaction on the embedded store); then the real agent (services only) syncs them all, and {CHANGES} endpoint changes of one service are timed from");
    let _ = writeln!(t, "the start of the store write to the agent's log line saying the change is in the kernel (median, p95 in brackets).");
    let _ = writeln!(t, "Last, as many more services (with selectors, in a namespace of their own) are loaded from a manifest with");
    let _ = writeln!(t, "`podnet cluster --store URL apply -f` into the loaded store, timed as the command's wall clock.\n");
    let _ = writeln!(t, "| services | store | load | first full sync (agent's log) | VmRSS MiB | VmHWM MiB | one change: write | end to end | agent's pass | `cluster apply -f` |");
    let _ = writeln!(t, "|---|---|---|---|---|---|---|---|---|---|");
    // PODNET_BENCH_AGENT_STORES=etcd (or embedded) runs one store only.
    let only = std::env::var("PODNET_BENCH_AGENT_STORES").unwrap_or_default();
    let stores: Vec<Store> = [Store::File, Store::Etcd]
        .into_iter()
        .filter(|s| only.is_empty() || only.split(',').any(|o| o.trim() == s.name()))
        .collect();
    for size in sizes() {
        for &store in &stores {
            eprintln!("agent: {size} services, {} store", store.name());
            match figures(size, &dir, store) {
                Ok(f) => {
                    let _ = writeln!(
                        t,
                        "| {size} | {} | {:.1} s | {} | {:.0} | {:.0} | {} | {} ({}) | {} | {:.1} s |",
                        store.name(),
                        f.load.as_secs_f64(),
                        f.sync,
                        f.rss,
                        f.hwm,
                        ms(f.write),
                        ms(f.end_to_end.0),
                        ms(f.end_to_end.1),
                        f.pass,
                        f.apply.as_secs_f64()
                    );
                }
                Err(e) => {
                    let _ = writeln!(
                        t,
                        "| {size} | {} | failed: {e} | | | | | | | |",
                        store.name()
                    );
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    t
}
