//! NetworkPolicy at scale: 1,000 pods and 500 policies (see `policyworld`).
//!
//! - Propagation: a two-node lab with real agents on the embedded store; a
//!   policy change or a pod label change is written to the store, and the
//!   time until every node's kernel committed it is taken from the kernel's
//!   own commit notifications (`nft monitor`), p50 and p95.
//! - Datapath: two identical paths (client, node, server), one whose node
//!   enforces the 500 policies (server isolated, client allowed by a
//!   frontend-to-backend rule), one without a policy table, measured taking
//!   turns: TCP connect latency (threads pinned to one CPU), and one iperf3
//!   stream over an established connection.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use podnet_firewall::{inspect, plan, Firewall};
use podnet_kernel::nftables::{CommitWatch, NetworkRuleset, NftHandle};
use podnet_kernel::Netns;
use podnet_lab::{Lab, LabSpec};
use podnet_policy::{Pod, PortRef, World};

use crate::cluster::iperf_between;
use crate::plugins::podnet_binary;
use crate::policyworld::{self, world};
use crate::report::{machine, quantile, today};
use crate::services::PinnedToCpu;
use crate::sh;

/// Changes of each kind.
const CHANGES: usize = 21;
/// Connects per path.
const CONNECTS: usize = 400;
/// iperf3 rounds per path.
const ROUNDS: usize = 3;
/// Longest wait for one change to reach the kernels.
const CHANGE_LIMIT: Duration = Duration::from_secs(10);

/// A lab taken down on drop.
struct BenchLab(Lab);

impl Drop for BenchLab {
    fn drop(&mut self) {
        if let Err(e) = self.0.down() {
            eprintln!("lab down: {e}");
        }
    }
}

/// Store write to the last commit of the nodes whose plan the change moves
/// (`affected`, by index into `watches`), for one change.
fn time_change(
    lab: &Lab,
    watches: &mut [CommitWatch],
    affected: &[bool],
    what: &str,
    write: impl FnOnce(&podnet_store::ClusterStore) + Send,
) -> Duration {
    for w in watches.iter_mut() {
        while !w.wait(Duration::ZERO).expect("nft monitor").is_empty() {}
    }
    let t0 = Instant::now();
    lab.with_store(podnet_lab::StoreKind::Embedded, |s| {
        write(s);
        Ok(())
    })
    .expect("store write");
    let mut last = t0;
    for (n, w) in watches.iter_mut().enumerate().filter(|(n, _)| affected[*n]) {
        let seen = loop {
            let commits = w.wait(Duration::from_millis(100)).expect("nft monitor");
            if let Some(c) = commits
                .iter()
                .find(|c| c.tables.is_empty() || c.tables.contains(podnet_firewall::TABLE))
            {
                break c.at;
            }
            if t0.elapsed() > CHANGE_LIMIT {
                let log = std::fs::read_to_string(lab.node_dir("node1").join("agent.log"))
                    .unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(8).collect();
                panic!(
                    "{what} did not reach node{} in {CHANGE_LIMIT:?}; node1's agent says:\n{}",
                    n + 1,
                    tail.join("\n")
                );
            }
        };
        last = last.max(seen);
    }
    last - t0
}

/// Waits until every node's firewall holds `world`'s plan.
fn wait_held(lab: &Lab, w: &World) {
    let state = lab.state().expect("lab state");
    for n in &state.nodes {
        let want = plan(w, &n.name);
        let mut nft = NftHandle::in_netns(&Netns::open_named(&n.ns).expect("node")).expect("nft");
        let t = Instant::now();
        while !inspect::holds(&mut nft, &want).unwrap_or(false) {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "{} never held the plan",
                n.name
            );
            std::thread::park_timeout(Duration::from_millis(50));
        }
    }
}

/// Propagation of policy changes and label changes: (policy, label) samples.
fn propagation() -> (Vec<Duration>, Vec<Duration>, usize) {
    let lab = Lab::new(&format!("pol{}", std::process::id())).expect("lab name");
    let _ = lab.down();
    let spec = LabSpec::from_flags(
        2,
        1,
        0,
        podnet_lab::Backend::HostGw,
        podnet_lab::Model::Routed,
    );
    lab.up(&spec, &podnet_binary()).expect("lab up");
    let lab = BenchLab(lab);
    let mut w = world();
    let loaded = lab
        .0
        .with_store(podnet_lab::StoreKind::Embedded, |s| {
            Ok(s.put_world_bulk(&w, 10_000)?)
        })
        .expect("bulk load");
    wait_held(&lab.0, &w);
    let elements = plan(&w, "node1").len();
    let state = lab.0.state().expect("lab state");
    let mut watches: Vec<CommitWatch> = state
        .nodes
        .iter()
        .map(|n| CommitWatch::open_in(&Netns::open_named(&n.ns).expect("node")).expect("watch"))
        .collect();
    let (mut policy_times, mut label_times) = (Vec::new(), Vec::new());
    let nodes: Vec<String> = state.nodes.iter().map(|n| n.name.clone()).collect();
    // Which nodes a change moves (a node that runs no pod it concerns keeps its plan).
    let affected = |before: &World, after: &World| -> Vec<bool> {
        nodes
            .iter()
            .map(|n| plan(before, n) != plan(after, n))
            .collect()
    };
    for k in 0..CHANGES {
        // A policy's port moves (8080 <-> 8081) in namespace k.
        let idx = (k % policyworld::NAMESPACES) * 5 + 1;
        let mut p = w.policies[idx].clone();
        let now = p.spec.ingress[0].ports[0].port.clone();
        let port = if now == Some(PortRef::Number(8080)) {
            8081
        } else {
            8080
        };
        p.spec.ingress[0].ports[0].port = Some(PortRef::Number(port));
        let before = w.clone();
        w.policies[idx] = p.clone();
        let moved = affected(&before, &w);
        let what = format!("policy {} port {port}", p.key());
        policy_times.push(time_change(&lab.0, &mut watches, &moved, &what, |s| {
            s.put_policy(&p).expect("policy");
        }));
        // A pod's app label flips between frontend and worker.
        let pod_idx = (k * 37) % w.pods.len();
        let mut pod: Pod = w.pods[pod_idx].clone();
        let app = if pod.labels["app"] == "frontend" {
            "worker"
        } else {
            "frontend"
        };
        pod.labels.insert("app".into(), app.into());
        let before = w.clone();
        w.pods[pod_idx] = pod.clone();
        let moved = affected(&before, &w);
        let what = format!("pod {} app={app}", pod.key());
        label_times.push(time_change(&lab.0, &mut watches, &moved, &what, |s| {
            s.put_pod(&pod).expect("pod");
        }));
    }
    wait_held(&lab.0, &w);
    eprintln!("policy: {loaded} objects, {elements} elements on node1");
    (policy_times, label_times, elements)
}

/// Client, node and server namespaces with pod addresses; the node forwards
/// and, when given a plan, enforces it.
struct PodPath {
    names: [String; 3],
    server_ip: IpAddr,
}

impl PodPath {
    fn new(tag: &str, client: &Pod, server: &Pod) -> PodPath {
        let id = std::process::id();
        let names = ["c", "n", "s"].map(|r| format!("pnp{id}-{tag}-{r}"));
        let [c, n, s] = &names;
        for x in &names {
            let _ = Netns::remove_named(x);
            Netns::create_named(x).expect("create namespace");
        }
        let (ci, si) = (client.ips[0], server.ips[0]);
        for cmd in [
            format!("ip -n {c} link add eth0 type veth peer name c0 netns {n}"),
            format!("ip -n {n} link add s0 type veth peer name eth0 netns {s}"),
            format!("ip -n {c} addr add {ci}/32 dev eth0"),
            format!("ip -n {s} addr add {si}/32 dev eth0"),
            format!("ip -n {c} link set eth0 up"),
            format!("ip -n {s} link set eth0 up"),
            format!("ip -n {n} link set c0 up"),
            format!("ip -n {n} link set s0 up"),
            // Each end reaches the other on-link; the node answers ARP by proxy.
            format!("ip -n {c} route add {si}/32 dev eth0"),
            format!("ip -n {s} route add {ci}/32 dev eth0"),
            format!("ip -n {n} route add {ci}/32 dev c0"),
            format!("ip -n {n} route add {si}/32 dev s0"),
            format!("ip netns exec {n} sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.c0.proxy_arp=1 net.ipv4.conf.s0.proxy_arp=1"),
        ] {
            sh(&cmd);
        }
        PodPath {
            names,
            server_ip: si,
        }
    }

    fn ns(&self, i: usize) -> Netns {
        Netns::open_named(&self.names[i]).expect("namespace")
    }
}

impl Drop for PodPath {
    fn drop(&mut self) {
        for n in &self.names {
            if let Err(e) = Netns::remove_named(n) {
                eprintln!("remove {n}: {e}");
            }
        }
    }
}

/// Accepts and closes connections on `addr` in `ns`, on CPU 0, for the benchmark's life.
fn accept_forever(ns: &Netns, addr: SocketAddr) {
    let l = ns
        .run(move || TcpListener::bind(addr))
        .expect("enter")
        .expect("listen");
    std::thread::spawn(move || {
        let _pin = PinnedToCpu::new(0);
        for c in l.incoming() {
            drop(c);
        }
    });
}

/// Median and p95 connect times over each path, the paths taking turns.
fn latency(paths: &[&PodPath]) -> Vec<(Duration, Duration)> {
    let _pin = PinnedToCpu::new(0);
    let clients: Vec<Netns> = paths.iter().map(|p| p.ns(0)).collect();
    let one = |i: usize| -> Duration {
        let addr = SocketAddr::new(paths[i].server_ip, 8080);
        clients[i]
            .run(move || {
                let t = Instant::now();
                let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5));
                let d = t.elapsed();
                assert!(s.is_ok(), "connect {addr}: {s:?}");
                d
            })
            .expect("enter client")
    };
    for _ in 0..20 {
        (0..paths.len()).for_each(|i| {
            one(i);
        });
    }
    let mut samples = vec![Vec::new(); paths.len()];
    for k in 0..CONNECTS {
        for j in 0..paths.len() {
            let i = (j + k) % paths.len();
            samples[i].push(one(i));
        }
    }
    samples
        .iter()
        .map(|s| (quantile(s, 0.5), quantile(s, 0.95)))
        .collect()
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// A path whose node carries what every podnet node has (the plugin's
/// masquerade chain, so connection tracking runs on every path and only the
/// policies differ) and, given a cluster, enforces its policies for the
/// server's node; returns it with the number of elements programmed. The
/// server accepts on 8080.
fn node_path(tag: &str, client: &Pod, server: &Pod, w: Option<&World>) -> (PodPath, usize) {
    let p = PodPath::new(tag, client, server);
    let cluster: ipnet::IpNet = "10.244.0.0/16".parse().expect("cidr");
    let masq = NetworkRuleset::for_pods("podnet", &[cluster], &[cluster], true);
    NftHandle::in_netns(&p.ns(1))
        .and_then(|mut h| h.apply_network(&masq))
        .expect("masquerade chain");
    let mut elements = 0;
    if let Some(w) = w {
        let desired = plan(w, &server.node);
        elements = desired.len();
        let mut fw = Firewall::new(Some(&p.ns(1))).expect("firewall");
        fw.sync(desired).expect("program the policies");
    }
    accept_forever(&p.ns(2), SocketAddr::new(p.server_ip, 8080));
    (p, elements)
}

/// The frontend `ns1/pod0` and the backend `ns1/pod1` of `w`: the backend
/// admits frontends of its namespace on 8080.
fn client_and_server(w: &World) -> (Pod, Pod) {
    let find = |name: &str| {
        w.pods
            .iter()
            .find(|p| p.namespace == "ns1" && p.name == name)
            .expect("pod")
            .clone()
    };
    (find("pod0"), find("pod1"))
}

/// Connect latency through nodes enforcing 50, 500 and 2,000 policies (and
/// none), taking turns: the per-packet cost must not grow with them.
fn scaling() -> Vec<(usize, usize, (Duration, Duration))> {
    let sizes = [0usize, 10, 100, 400];
    let worlds: Vec<World> = sizes
        .iter()
        .map(|n| policyworld::world_of((*n).max(2)))
        .collect();
    let (client, server) = client_and_server(&worlds[0]);
    let paths: Vec<(PodPath, usize)> = sizes
        .iter()
        .zip(&worlds)
        .map(|(n, w)| node_path(&format!("s{n}"), &client, &server, (*n > 0).then_some(w)))
        .collect();
    let lat = latency(&paths.iter().map(|(p, _)| p).collect::<Vec<_>>());
    sizes
        .iter()
        .zip(&paths)
        .zip(lat)
        .map(|((n, (_, e)), l)| (n * 5, *e, l))
        .collect()
}

/// Datapath figures: (connect latency, throughput) without and with the policies.
fn datapath(w: &World) -> (Vec<(Duration, Duration)>, Vec<Vec<f64>>, usize) {
    // ns1/pod0 is a frontend on node1; ns1/pod1 a backend on node2 whose
    // ingress admits frontends of ns1 on 8080. Their node is node2.
    let (client, server) = client_and_server(w);
    let plain = node_path("none", &client, &server, None);
    let twin = node_path("twin", &client, &server, None);
    let (enforced, elements) = node_path("pol", &client, &server, Some(w));
    // The policies hold: another port is dropped on the enforced path only.
    let blocked = SocketAddr::new(enforced.server_ip, 8081);
    let refused = enforced
        .ns(0)
        .run(move || TcpStream::connect_timeout(&blocked, Duration::from_millis(500)))
        .expect("enter");
    assert!(
        refused.is_err(),
        "port 8081 should be dropped by the policies"
    );
    let (plain, twin) = (plain.0, twin.0);
    let lat = latency(&[&plain, &twin, &enforced]);
    let mut gbps = vec![Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..ROUNDS {
        for (i, p) in [&plain, &twin, &enforced].iter().enumerate() {
            // iperf3 listens on 5201: open it on the enforced path for this figure
            // (the connection is then established; the policy cost is per packet of it).
            gbps[i].push(iperf_between(&p.names[0], &p.names[2], p.server_ip));
        }
    }
    (lat, gbps, elements)
}

/// Runs the benchmark and renders its section of RESULTS.md.
pub fn run() -> String {
    let (policy, label, elements) = propagation();
    let mut w = world();
    // iperf3's port joins 8080 in the rule that lets ns1's frontends reach its backends.
    let idx = w
        .policies
        .iter()
        .position(|p| p.namespace == "ns1" && p.name == "frontend-to-backend")
        .expect("policy");
    let mut extra = w.policies[idx].spec.ingress[0].ports[0].clone();
    extra.port = Some(PortRef::Number(5201));
    w.policies[idx].spec.ingress[0].ports.push(extra);
    let (lat, gbps, dp_elements) = datapath(&w);
    let mut t = render(&policy, &label, elements, &lat, &gbps, dp_elements);
    let _ = writeln!(t, "Connect latency by the number of policies (same shape, 10 pods and 5 policies per namespace; the paths take turns, {CONNECTS} connects each):\n");
    let _ = writeln!(
        t,
        "| policies | elements on the node | connect median | connect p95 |\n|---|---|---|---|"
    );
    for (policies, elements, (median, p95)) in scaling() {
        let _ = writeln!(
            t,
            "| {policies} | {elements} | {:.1} µs | {:.1} µs |",
            median.as_secs_f64() * 1e6,
            p95.as_secs_f64() * 1e6
        );
    }
    t.push('\n');
    t
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.get(s.len() / 2).copied().unwrap_or(0.0)
}

fn render(
    policy: &[Duration],
    label: &[Duration],
    elements: usize,
    lat: &[(Duration, Duration)],
    gbps: &[Vec<f64>],
    dp_elements: usize,
) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "## NetworkPolicy ({}, {})
",
        today(),
        machine()
    );
    let _ = writeln!(t, "1,000 pods in 100 namespaces on two nodes, 500 policies (five per namespace: default deny, frontend to backend, a team's namespaces to metrics, monitoring by namespace AND pod on a named port, egress to DNS and an ipBlock with except); {elements} set elements on a node.
");
    let _ = writeln!(t, "Propagation: from the store write to the last node's kernel committing the change (its own `nft monitor` notification), real agents on the embedded store, {CHANGES} changes of each kind.
");
    let _ = writeln!(
        t,
        "| change | p50 | p95 | goal (p95) |
|---|---|---|---|"
    );
    for (what, v) in [("a policy's port", policy), ("a pod's label", label)] {
        let _ = writeln!(
            t,
            "| {what} | {} | {} | 50 ms |",
            ms(quantile(v, 0.5)),
            ms(quantile(v, 0.95))
        );
    }
    let ratio = |a: f64, b: f64| {
        if a > 0.0 {
            format!("{:+.1}%", (b / a - 1.0) * 100.0)
        } else {
            "-".into()
        }
    };
    let g: Vec<f64> = gbps.iter().map(|v| median(v)).collect();
    let _ = writeln!(t, "\nDatapath: client, node and server namespaces; every node carries the plugin's masquerade chain (so connection tracking runs, as on every podnet node); one node also enforces the 500 policies ({dp_elements} elements; the server isolated, the client allowed by its frontend-to-backend rule), two identical ones have no policy table (their difference is the noise). The three paths take turns; {CONNECTS} connects each, threads on one CPU; iperf3 `-t 3`, {ROUNDS} rounds.\n");
    let _ = writeln!(t, "| | no policy | no policy (twin) | 500 policies | noise (twin) | with policies |\n|---|---|---|---|---|---|");
    let row = |name: &str, a: f64, b: f64, c: f64, unit: &dyn Fn(f64) -> String| {
        format!(
            "| {name} | {} | {} | {} | {} | {} |",
            unit(a),
            unit(b),
            unit(c),
            ratio(a, b),
            ratio(a, c)
        )
    };
    let micro = |x: f64| format!("{:.1} µs", x * 1e6);
    let giga = |x: f64| format!("{x:.2} Gb/s");
    let secs = |i: usize, p95: bool| {
        if p95 {
            lat[i].1.as_secs_f64()
        } else {
            lat[i].0.as_secs_f64()
        }
    };
    let _ = writeln!(
        t,
        "{}",
        row(
            "TCP connect, median",
            secs(0, false),
            secs(1, false),
            secs(2, false),
            &micro
        )
    );
    let _ = writeln!(
        t,
        "{}",
        row(
            "TCP connect, p95",
            secs(0, true),
            secs(1, true),
            secs(2, true),
            &micro
        )
    );
    let _ = writeln!(
        t,
        "{}\n",
        row("one TCP stream, median", g[0], g[1], g[2], &giga)
    );
    t
}
