//! Cross-node benchmark: pod-to-pod TCP throughput (iperf3) and ping RTT
//! between pods on two lab nodes, host-gw and VXLAN, against the limit: the
//! same two kinds of namespace joined by one plain veth; then the time from
//! a node joining the cluster store to every other node holding its route,
//! in a 10-node lab, on the embedded store and on etcd.

use std::fmt::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use podnet_kernel::rtnl::RTPROT_PODNET_NODES;
use podnet_kernel::{Netns, Route, RouteHandle};
use podnet_lab::{Backend, Lab, LabSpec, Model, StoreKind};

use crate::plugins::podnet_binary;
use crate::report::{machine, quantile, today};

/// Throughput rounds; the paths take turns within each round.
const ROUNDS: usize = 5;
/// Seconds per iperf3 run.
const IPERF_SECS: &str = "3";
/// Pings per path (at 5 ms intervals).
const PINGS: &str = "200";
/// Node joins per store.
const JOINS: usize = 20;
/// Nodes in the convergence lab.
const NODES: usize = 10;
/// Upper bound on one convergence wait.
const CONVERGE_LIMIT: Duration = Duration::from_secs(10);

/// A lab that is taken down on drop.
pub(crate) struct BenchLab(pub(crate) Lab);

impl BenchLab {
    pub(crate) fn up(tag: &str, spec: &LabSpec) -> BenchLab {
        let lab = Lab::new(&format!("{tag}{}", std::process::id())).expect("lab name");
        let _ = lab.down();
        lab.up(spec, &podnet_binary()).expect("lab up");
        BenchLab(lab)
    }
}

impl Drop for BenchLab {
    fn drop(&mut self) {
        let _ = self.0.down();
    }
}

/// Two namespaces joined by a plain veth: the limit a pod network can approach.
pub(crate) struct VethPair {
    names: [String; 2],
}

impl VethPair {
    pub(crate) fn new() -> VethPair {
        let names = [0, 1].map(|i| format!("pnb{}-veth{i}", std::process::id()));
        for n in &names {
            let _ = Netns::remove_named(n);
            Netns::create_named(n).expect("create namespace");
        }
        let pair = VethPair { names };
        let [a, b] = &pair.names;
        for cmd in [
            format!("ip -n {a} link add eth0 type veth peer name eth0 netns {b}"),
            format!("ip -n {a} addr add 10.99.0.1/24 dev eth0"),
            format!("ip -n {b} addr add 10.99.0.2/24 dev eth0"),
            format!("ip -n {a} link set eth0 up"),
            format!("ip -n {b} link set eth0 up"),
        ] {
            crate::sh(&cmd);
        }
        pair
    }
}

impl VethPair {
    /// The pair as a path to measure: the limit.
    pub(crate) fn path(&self) -> PathUnderTest {
        PathUnderTest {
            label: "plain veth (the limit)",
            client: self.names[0].clone(),
            server: self.names[1].clone(),
            server_ip: "10.99.0.2".parse().expect("static"),
            gbps: Vec::new(),
            rtt_us: Vec::new(),
        }
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = Netns::remove_named(n);
        }
    }
}

/// A client namespace, a server namespace and the server's address.
pub(crate) struct PathUnderTest {
    pub(crate) label: &'static str,
    client: String,
    server: String,
    server_ip: IpAddr,
    pub(crate) gbps: Vec<f64>,
    rtt_us: Vec<f64>,
}

/// One warm-up `iperf` per path (neighbour resolution, first connections;
/// not recorded), then `rounds` rounds with the paths taking turns.
pub(crate) fn measure_rounds(paths: &mut [PathUnderTest], rounds: usize) {
    for p in paths.iter() {
        iperf(p);
    }
    for round in 0..rounds {
        for p in paths.iter_mut() {
            let g = iperf(p);
            eprintln!("round {round}: {}: {g:.2} Gb/s", p.label);
            p.gbps.push(g);
        }
    }
}

/// Node to node over the lab's fabric: what the underlay itself gives.
pub(crate) fn underlay_path(label: &'static str, lab: &Lab) -> PathUnderTest {
    let state = lab.state().expect("lab state");
    PathUnderTest {
        label,
        client: state.nodes[0].ns.clone(),
        server: state.nodes[1].ns.clone(),
        server_ip: state.nodes[1].address,
        gbps: Vec::new(),
        rtt_us: Vec::new(),
    }
}

pub(crate) fn lab_path(label: &'static str, lab: &Lab) -> PathUnderTest {
    let state = lab.state().expect("lab state");
    let on = |node: &str| {
        state
            .pods
            .iter()
            .find(|p| p.node == node)
            .expect("a pod")
            .clone()
    };
    let (c, s) = (on("node1"), on("node2"));
    PathUnderTest {
        label,
        client: c.name,
        server: s.name,
        server_ip: s.ips[0],
        gbps: Vec::new(),
        rtt_us: Vec::new(),
    }
}

/// A command to run inside namespace `ns`, with the namespace it needs open until it is spawned.
fn in_ns(ns: &str, args: &[&str]) -> (Command, Netns) {
    let netns = Netns::open_named(ns).expect("namespace");
    let mut cmd = Command::new(args[0]);
    cmd.args(&args[1..]);
    podnet_kernel::netns::enter_before_exec(&mut cmd, &netns);
    (cmd, netns)
}

/// One iperf3 TCP stream, client to server, in Gb/s.
pub(crate) fn iperf(p: &PathUnderTest) -> f64 {
    iperf_between(&p.client, &p.server, p.server_ip)
}

/// One iperf3 TCP stream from namespace `client` to `server_ip` in namespace `server`, in Gb/s.
pub(crate) fn iperf_between(client: &str, server: &str, server_ip: IpAddr) -> f64 {
    let p = (client, server);
    let ip = server_ip.to_string();
    let (mut cmd, _ns) = in_ns(p.1, &["iperf3", "-s", "-1", "-B", &ip]);
    let mut server = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("iperf3 server (is iperf3 installed?)");
    let deadline = Instant::now() + Duration::from_secs(15);
    let gbps = |out: &std::process::Output| {
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .unwrap_or(0.0)
            / 1e9
    };
    let out = loop {
        let (mut cmd, _ns) = in_ns(p.0, &["iperf3", "-c", &ip, "-t", IPERF_SECS, "-J"]);
        let out = cmd.output().expect("iperf3 client");
        // Retried until the server listens (a refused connection, or a run with no result).
        if (out.status.success() && gbps(&out) > 0.0) || Instant::now() > deadline {
            break out;
        }
        std::thread::park_timeout(Duration::from_millis(50));
    };
    let _ = server.kill();
    let _ = server.wait();
    gbps(&out)
}

/// Round-trip times in microseconds, one per reply.
fn ping(p: &PathUnderTest) -> Vec<f64> {
    let ip = p.server_ip.to_string();
    let (mut cmd, _ns) = in_ns(
        &p.client,
        &["ping", "-n", "-c", PINGS, "-i", "0.005", "-W", "2", &ip],
    );
    let out = cmd.output().expect("ping");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            l.split("time=")
                .nth(1)?
                .split(' ')
                .next()?
                .parse::<f64>()
                .ok()
        })
        .map(|ms| ms * 1000.0)
        .collect()
}

pub(crate) fn median(v: &[f64]) -> f64 {
    pct(v, 0.5)
}

pub(crate) fn pct(v: &[f64], q: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return 0.0;
    }
    s[((s.len() as f64 * q).ceil() as usize).clamp(1, s.len()) - 1]
}

fn datapath(t: &mut String) {
    let veth = VethPair::new();
    let gw = BenchLab::up(
        "bgw",
        &LabSpec::from_flags(2, 1, 1, Backend::HostGw, Model::Routed),
    );
    let vx = BenchLab::up(
        "bvx",
        &LabSpec::from_flags(2, 1, 1, Backend::Vxlan, Model::Routed),
    );
    let plain = |backend| LabSpec {
        masquerade: false,
        ..LabSpec::from_flags(2, 1, 1, backend, Model::Routed)
    };
    let gw_plain = BenchLab::up("bgwp", &plain(Backend::HostGw));
    let vx_plain = BenchLab::up("bvxp", &plain(Backend::Vxlan));
    let mut paths = vec![
        veth.path(),
        lab_path("host-gw, routed pods, 2 nodes", &gw.0),
        lab_path("vxlan, routed pods, 2 nodes", &vx.0),
        lab_path("host-gw, no masquerade", &gw_plain.0),
        lab_path("vxlan, no masquerade", &vx_plain.0),
        underlay_path("node to node over the lab fabric (the underlay)", &gw.0),
    ];
    measure_rounds(&mut paths, ROUNDS);
    for p in paths.iter_mut() {
        p.rtt_us = ping(p);
    }
    let limit = median(&paths[0].gbps);
    let limit_rtt = median(&paths[0].rtt_us);
    let _ = writeln!(t, "### Pod to pod across nodes vs a plain veth\n");
    let _ = writeln!(t, "One TCP stream (`iperf3 -t {IPERF_SECS}`), {ROUNDS} rounds with the paths taking turns; {PINGS} pings at 5 ms.");
    let _ = writeln!(
        t,
        "Fabric MTU 1500: host-gw pods use 1500, VXLAN pods 1450 (detected: 1500 - 50).\n"
    );
    let _ = writeln!(t, "| path | Gb/s median | Gb/s min-max | ratio to veth | RTT median µs | RTT p95 µs | RTT ratio |");
    let _ = writeln!(t, "|---|---|---|---|---|---|---|");
    for p in &paths {
        let (lo, hi) = (pct(&p.gbps, 0.0), pct(&p.gbps, 1.0));
        let _ = writeln!(
            t,
            "| {} | {:.2} | {lo:.2}-{hi:.2} | {:.2} | {:.0} | {:.0} | {:.2} |",
            p.label,
            median(&p.gbps),
            median(&p.gbps) / limit,
            median(&p.rtt_us),
            pct(&p.rtt_us, 0.95),
            median(&p.rtt_us) / limit_rtt
        );
    }
    let _ = writeln!(
        t,
        "\nGoals: host-gw at least 0.95 of the veth limit, VXLAN at least 0.75.\n\
         Pod to pod across nodes crosses two pod veths, the fabric (macvlan siblings) and two\n\
         forwarding nodes where the limit crosses one veth. With masquerade (the default), the nat\n\
         chain turns on connection tracking on both forwarding nodes; \"no masquerade\" rows show\n\
         podnet's path with no netfilter hook at all. The last row is the fabric alone.\n"
    );
}

/// Whether each of some namespaces holds a route to one block (or, when
/// `!present`, none does), polled over rtnetlink until all do.
pub(crate) struct RouteWatch {
    handles: Vec<RouteHandle>,
    done: Vec<bool>,
    block: IpNet,
    present: bool,
}

impl RouteWatch {
    /// Watches `namespaces` for `block`.
    pub(crate) fn new(namespaces: &[Netns], block: IpNet, present: bool) -> Self {
        RouteWatch {
            handles: namespaces
                .iter()
                .map(|n| RouteHandle::in_netns(n).expect("rtnetlink"))
                .collect(),
            done: vec![false; namespaces.len()],
            block,
            present,
        }
    }

    /// Looks once more at the namespaces not done yet; true when all are,
    /// counting only routes that `counts` accepts.
    pub(crate) fn settled(&mut self, counts: impl Fn(&Route) -> bool) -> bool {
        for (h, d) in self.handles.iter_mut().zip(self.done.iter_mut()) {
            if !*d {
                let routes = h.routes().unwrap_or_default();
                *d = routes.iter().any(|r| r.dst == self.block && counts(r)) == self.present;
            }
        }
        self.done.iter().all(|d| *d)
    }
}

/// Polls until every namespace holds a route to `block` that `counts`
/// accepts (or, when `!present`, none does); the time since `start`, or
/// `None` past `limit`.
pub(crate) fn wait_routes(
    namespaces: &[Netns],
    block: IpNet,
    present: bool,
    counts: impl Fn(&Route) -> bool,
    start: Instant,
    limit: Duration,
) -> Option<Duration> {
    let mut watch = RouteWatch::new(namespaces, block, present);
    while start.elapsed() < limit {
        if watch.settled(&counts) {
            return Some(start.elapsed());
        }
        std::thread::yield_now();
    }
    None
}

/// The agent's route to a remote block (not the BGP blackhole of one's own).
fn agent_route(r: &Route) -> bool {
    r.protocol == RTPROT_PODNET_NODES
}

fn convergence(t: &mut String) {
    let _ = writeln!(
        t,
        "### Route convergence after a node joins ({NODES}-node lab)\n"
    );
    let _ = writeln!(t, "A node registers in the store (time 0); measured until every one of the {NODES} nodes holds its");
    let _ = writeln!(t, "route (polled over rtnetlink); the node then leaves and the same is measured until every route");
    let _ = writeln!(t, "is gone. {JOINS} joins per store; nodes on 2 segments, so both host-gw and VXLAN paths are made.\n");
    let _ = writeln!(t, "| store | join p50 ms | join p95 ms | join max ms | leave p50 ms | leave p95 ms | goal (p95) |");
    let _ = writeln!(t, "|---|---|---|---|---|---|---|");
    for (kind, label, goal) in [
        (StoreKind::Embedded, "embedded", "< 500 ms"),
        (StoreKind::Etcd, "etcd", "< 1000 ms"),
    ] {
        let mut spec = LabSpec::from_flags(NODES, 2, 0, Backend::Auto, Model::Routed);
        spec.store = kind;
        let lab = BenchLab::up("bcv", &spec);
        let state = lab.0.state().expect("lab state");
        let nodes: Vec<Netns> = state
            .nodes
            .iter()
            .map(|n| Netns::open_named(&n.ns).expect("node"))
            .collect();
        let (mut joins, mut leaves) = (Vec::new(), Vec::new());
        for i in 0..JOINS {
            let name = format!("joiner{i}");
            let addr: IpAddr = format!("198.18.{}.{}", 1 + i % 2, 200 + i)
                .parse()
                .expect("address");
            let start = Instant::now();
            let reg_name = name.clone();
            let node = lab
                .0
                .with_store(kind, move |s| {
                    Ok(s.register_node(&reg_name, addr, None, &[])?)
                })
                .expect("register");
            let block = node.pod_cidrs[0];
            let joined = wait_routes(&nodes, block, true, agent_route, start, CONVERGE_LIMIT);
            let start = Instant::now();
            lab.0
                .with_store(kind, move |s| Ok(s.remove_node(&name)?))
                .expect("remove");
            let left = wait_routes(&nodes, block, false, agent_route, start, CONVERGE_LIMIT);
            joins.push(joined.unwrap_or(CONVERGE_LIMIT));
            leaves.push(left.unwrap_or(CONVERGE_LIMIT));
        }
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let _ = writeln!(
            t,
            "| {label} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {goal} |",
            ms(quantile(&joins, 0.5)),
            ms(quantile(&joins, 0.95)),
            ms(quantile(&joins, 1.0)),
            ms(quantile(&leaves, 0.5)),
            ms(quantile(&leaves, 0.95)),
        );
    }
    let _ = writeln!(t);
}

/// Runs the cross-node benchmark and returns its report.
pub fn run() -> String {
    let mut t = String::new();
    let _ = writeln!(t, "## Across nodes: datapath and convergence\n");
    let _ = writeln!(
        t,
        "Measured {} on {} (`bench/run.sh cluster`), in lab namespaces on this one machine.\n",
        today(),
        machine()
    );
    datapath(&mut t);
    convergence(&mut t);
    t
}
