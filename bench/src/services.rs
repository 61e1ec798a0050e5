//! Services at scale: podnet's service proxy against kube-proxy's rulesets
//! (iptables mode loaded by iptables-restore, nftables mode loaded by `nft -f`),
//! for 1k, 10k, 50k and 100k ClusterIP services with 3 endpoints each.
//!
//! For each size, on a fresh three-namespace path (client, node, server):
//! - full sync: podnet's `ServiceProxy::sync` (one netlink transaction)
//!   against the restore of kube-proxy's first sync;
//! - one change (one endpoint of one service moves): podnet's
//!   `ServiceProxy::update` against kube-proxy's partial restore / nft
//!   transaction;
//! - TCP connect latency from the client through the node to the first and
//!   the last service (the DNAT lookup happens on the node).
//!
//! Anchor loads that would run for hours here (FIELD-NOTES: `nft -f` of the
//! nftables-mode shape is 458 s at 20k and grows faster than linearly) are
//! skipped above a size limit and reported as not run. Every anchor load is
//! bounded by a time limit and killed past it.
//! Finally the real agent is started on a store holding the largest size and
//! its resident memory is read once it has synced.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use podnet_kernel::Netns;
use podnet_proxy::{Change, ServiceProxy};
use podnet_services::{Endpoint, Endpoints, Service};

use crate::kubeproxy::{self, GenService};
use crate::report::{machine, quantile, today};
use crate::sh;

/// Connects per service and implementation for the latency figures.
const CONNECTS: usize = 400;
/// Repetitions of one change.
const CHANGES: usize = 21;
/// Upper bound on one anchor load; past it the load is killed and reported as such.
const ANCHOR_LIMIT: Duration = Duration::from_secs(300);
/// Largest size at which kube-proxy's nftables-mode shape is loaded (110 s at 10k here).
const NFT_MODE_MAX: usize = 10_000;
/// Largest size at which iptables-nft-restore is tried (528 s at 10k here).
const IPTABLES_NFT_MAX: usize = 1_000;

fn sizes() -> Vec<usize> {
    std::env::var("PODNET_BENCH_SERVICES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1_000, 10_000, 50_000, 100_000])
}

/// Client, node and server namespaces in a line; the server accepts any
/// 10.244.0.0/16 address on port 8080 (every endpoint is "there").
struct Path3 {
    client: String,
    node: String,
    server: String,
    stop: Arc<AtomicBool>,
}

impl Path3 {
    fn new(tag: &str) -> Path3 {
        let id = std::process::id();
        let [client, node, server] = ["c", "n", "s"].map(|r| format!("pnb{id}-{tag}-{r}"));
        for n in [&client, &node, &server] {
            let _ = Netns::remove_named(n);
            Netns::create_named(n).expect("create namespace");
        }
        for cmd in [
            format!("ip -n {client} link add eth0 type veth peer name c0 netns {node}"),
            format!("ip -n {node} link add s0 type veth peer name eth0 netns {server}"),
            format!("ip -n {client} addr add 10.1.0.1/24 dev eth0"),
            format!("ip -n {node} addr add 10.1.0.2/24 dev c0"),
            format!("ip -n {node} addr add 10.2.0.1/24 dev s0"),
            format!("ip -n {server} addr add 10.2.0.2/24 dev eth0"),
            format!("ip -n {client} link set eth0 up"),
            format!("ip -n {node} link set c0 up"),
            format!("ip -n {node} link set s0 up"),
            format!("ip -n {server} link set eth0 up"),
            format!("ip -n {client} route add 10.96.0.0/12 via 10.1.0.2"),
            format!("ip -n {client} route add 10.244.0.0/16 via 10.1.0.2"),
            format!("ip -n {node} route add 10.244.0.0/16 via 10.2.0.2"),
            format!("ip -n {server} route add 10.1.0.0/24 via 10.2.0.1"),
            format!("ip -n {server} route add local 10.244.0.0/16 dev lo"),
            format!("ip netns exec {node} sysctl -qw net.ipv4.ip_forward=1"),
        ] {
            sh(&cmd);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let ns = Netns::open_named(&server).expect("server namespace");
        let listener = ns
            .run(|| TcpListener::bind("0.0.0.0:8080"))
            .expect("enter server namespace")
            .expect("listen");
        let flag = stop.clone();
        std::thread::spawn(move || {
            // On the measuring thread's CPU (see `latency`).
            let _pin = PinnedToCpu::new(0);
            for c in listener.incoming() {
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                drop(c);
            }
        });
        Path3 {
            client,
            node,
            server,
            stop,
        }
    }

    fn node_ns(&self) -> Netns {
        Netns::open_named(&self.node).expect("node namespace")
    }

    /// Median TCP connect time to the first and the last of `vips`, interleaved.
    ///
    /// The measuring thread and the server's accept thread are pinned to one
    /// CPU: on 2 cores, where the scheduler puts them (same CPU or not)
    /// otherwise shifts every figure of a path by about 10 µs, which would
    /// hide the differences between the rulesets.
    fn latency(&self, first: Ipv4Addr, last: Ipv4Addr) -> (Duration, Duration) {
        let _pin = PinnedToCpu::new(0);
        let ns = Netns::open_named(&self.client).expect("client namespace");
        let one = |vip: Ipv4Addr| -> Duration {
            let addr = SocketAddr::new(IpAddr::V4(vip), 80);
            ns.run(move || {
                let t = Instant::now();
                let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5));
                let d = t.elapsed();
                assert!(s.is_ok(), "connect {addr}: {s:?}");
                d
            })
            .expect("enter client namespace")
        };
        // Warm up (neighbour entries, caches) before measuring.
        for _ in 0..20 {
            one(first);
            one(last);
        }
        // Alternate which goes first, so that neither always follows the other.
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for k in 0..CONNECTS {
            if k % 2 == 0 {
                a.push(one(first));
                b.push(one(last));
            } else {
                b.push(one(last));
                a.push(one(first));
            }
        }
        (quantile(&a, 0.5), quantile(&b, 0.5))
    }
}

/// Pins the calling thread to one CPU until dropped.
pub(crate) use podnet_kernel::process::CpuPin as PinnedToCpu;

impl Drop for Path3 {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Ok(ns) = Netns::open_named(&self.server) {
            let _ = ns.run(|| TcpStream::connect("10.2.0.2:8080"));
        }
        for n in [&self.client, &self.node, &self.server] {
            let _ = Netns::remove_named(n);
        }
    }
}

/// Runs `program args < input` inside `ns`; its duration, or `None` past the limit or on failure.
fn timed_in(ns: &Netns, program: &str, args: &[&str], input: &Path) -> Result<Duration, String> {
    let stdin = std::fs::File::open(input).map_err(|e| e.to_string())?;
    let err_path = input.with_extension("err");
    let stderr = std::fs::File::create(&err_path).map_err(|e| e.to_string())?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::from(stdin))
        .stdout(Stdio::null())
        .stderr(Stdio::from(stderr));
    podnet_kernel::netns::enter_before_exec(&mut cmd, ns);
    let t = Instant::now();
    let mut child = cmd.spawn().map_err(|e| format!("{program}: {e}"))?;
    // Blocking wait (exact timing); a watchdog kills the load past the limit.
    let pid = child.id();
    let done = Arc::new(AtomicBool::new(false));
    let killed = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let (done, killed) = (done.clone(), killed.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) && t.elapsed() < ANCHOR_LIMIT {
                std::thread::park_timeout(Duration::from_millis(200));
            }
            if !done.load(Ordering::SeqCst) {
                killed.store(true, Ordering::SeqCst);
                // The child we started, not reaped yet.
                podnet_kernel::process::kill_hard(pid);
            }
        })
    };
    let status = child.wait().map_err(|e| e.to_string());
    let d = t.elapsed();
    done.store(true, Ordering::SeqCst);
    watchdog.thread().unpark();
    let _ = watchdog.join();
    if killed.load(Ordering::SeqCst) {
        return Err(format!("killed after {} s", ANCHOR_LIMIT.as_secs()));
    }
    if status?.success() {
        return Ok(d);
    }
    let err = std::fs::read_to_string(&err_path).unwrap_or_default();
    Err(format!(
        "{program} failed: {}",
        err.lines().next().unwrap_or("")
    ))
}

fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    let mut f = std::fs::File::create(&p).expect("create rules file");
    f.write_all(text.as_bytes()).expect("write rules file");
    p
}

/// A generated service as podnet's model, its third endpoint at `third`.
pub(crate) fn to_service(g: &GenService, third: Ipv4Addr) -> (Service, Endpoints) {
    let svc: Service = serde_json::from_value(serde_json::json!({
        "name": format!("svc{}", g.index), "namespace": "bench",
        "clusterIP": g.vip.to_string(),
        "ports": [{"name": "http", "port": 80, "targetPort": 8080}]
    }))
    .expect("service");
    let mut eps = g.endpoints;
    eps[2] = third;
    let endpoints = Endpoints {
        name: svc.name.clone(),
        namespace: svc.namespace.clone(),
        endpoints: eps
            .iter()
            .map(|a| Endpoint {
                address: IpAddr::V4(*a),
                node: "other".into(),
                ready: true,
                serving: true,
                terminating: false,
                ports: Vec::new(),
            })
            .collect(),
        by_port_name: false,
    };
    (svc, endpoints)
}

/// The moved endpoint of the one-change measurement.
/// Where a change moves a service's third endpoint.
pub(crate) fn moved(_: &GenService) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, 255, 7)
}

struct Row {
    size: usize,
    podnet_sync: Duration,
    podnet_change: Duration,
    podnet_change_p95: Duration,
    podnet_lat: (Duration, Duration),
    legacy_sync: Result<Duration, String>,
    legacy_change: Result<Duration, String>,
    legacy_lat: Option<(Duration, Duration)>,
    iptnft_sync: Option<Result<Duration, String>>,
    nft_sync: Option<Result<Duration, String>>,
    nft_change: Option<Result<Duration, String>>,
    nft_lat: Option<(Duration, Duration)>,
}

fn podnet(row: &mut Row, gens: &[GenService]) {
    let path = Path3::new("pn");
    let ns = path.node_ns();
    let input: Vec<(Service, Option<Endpoints>)> = gens
        .iter()
        .map(|g| {
            let (s, e) = to_service(g, g.endpoints[2]);
            (s, Some(e))
        })
        .collect();
    let mut syncs = Vec::new();
    for _ in 0..3 {
        let mut proxy = ServiceProxy::new("bench-node", Some(&ns)).expect("proxy");
        proxy.remove_all().expect("clean table");
        let all = input.clone();
        let t = Instant::now();
        let r = proxy.sync(all).expect("sync");
        syncs.push(t.elapsed());
        assert_eq!(r.added, gens.len() * 3, "{r:?}");
    }
    row.podnet_sync = quantile(&syncs, 0.5);
    let mut proxy = ServiceProxy::new("bench-node", Some(&ns)).expect("proxy");
    proxy.sync(input.clone()).expect("adopt");
    let g = &gens[gens.len() / 2];
    let mut changes = Vec::new();
    for k in 0..CHANGES {
        let third = if k % 2 == 0 { moved(g) } else { g.endpoints[2] };
        let (s, e) = to_service(g, third);
        let t = Instant::now();
        let r = proxy
            .update(vec![Change::Upsert(Box::new(s), Some(e))])
            .expect("update");
        changes.push(t.elapsed());
        assert_eq!((r.added, r.deleted), (1, 1), "{r:?}");
    }
    row.podnet_change = quantile(&changes, 0.5);
    row.podnet_change_p95 = quantile(&changes, 0.95);
    row.podnet_lat = path.latency(gens[0].vip, gens[gens.len() - 1].vip);
    drop(input);
}

fn legacy(row: &mut Row, gens: &[GenService], dir: &Path) {
    let path = Path3::new("ipt");
    let ns = path.node_ns();
    let full = write_file(dir, "iptables-full.txt", &kubeproxy::iptables_full(gens));
    row.legacy_sync = timed_in(&ns, "iptables-legacy-restore", &["--noflush"], &full);
    if row.legacy_sync.is_err() {
        row.legacy_change = Err("not run".into());
        return;
    }
    let g = &gens[gens.len() / 2];
    let forward = write_file(
        dir,
        "ipt-change-a.txt",
        &kubeproxy::iptables_one_change(gens, g, g.endpoints[2], moved(g)),
    );
    let back = write_file(
        dir,
        "ipt-change-b.txt",
        &kubeproxy::iptables_one_change(gens, g, moved(g), g.endpoints[2]),
    );
    let reps = if gens.len() >= 50_000 { 3 } else { 7 };
    let mut times = Vec::new();
    for k in 0..reps {
        let f = if k % 2 == 0 { &forward } else { &back };
        match timed_in(&ns, "iptables-legacy-restore", &["--noflush"], f) {
            Ok(d) => times.push(d),
            Err(e) => {
                row.legacy_change = Err(e);
                return;
            }
        }
    }
    row.legacy_change = Ok(quantile(&times, 0.5));
    row.legacy_lat = Some(path.latency(gens[0].vip, gens[gens.len() - 1].vip));
}

fn iptables_nft(row: &mut Row, gens: &[GenService], dir: &Path) {
    if gens.len() > IPTABLES_NFT_MAX {
        return;
    }
    let path = Path3::new("iptn");
    let full = write_file(dir, "iptables-full.txt", &kubeproxy::iptables_full(gens));
    row.iptnft_sync = Some(timed_in(
        &path.node_ns(),
        "iptables-nft-restore",
        &["--noflush"],
        &full,
    ));
}

fn nft_mode(row: &mut Row, gens: &[GenService], dir: &Path) {
    if gens.len() > NFT_MODE_MAX {
        return;
    }
    let path = Path3::new("nft");
    let ns = path.node_ns();
    let full = write_file(dir, "nft-full.nft", &kubeproxy::nft_full(gens));
    let sync = timed_in(&ns, "nft", &["-f", "-"], &full);
    let ok = sync.is_ok();
    row.nft_sync = Some(sync);
    if !ok {
        return;
    }
    let g = &gens[gens.len() / 2];
    let forward = write_file(
        dir,
        "nft-change-a.nft",
        &kubeproxy::nft_one_change(g, g.endpoints[2], moved(g)),
    );
    let back = write_file(
        dir,
        "nft-change-b.nft",
        &kubeproxy::nft_one_change(g, moved(g), g.endpoints[2]),
    );
    let mut times = Vec::new();
    for k in 0..7 {
        let f = if k % 2 == 0 { &forward } else { &back };
        match timed_in(&ns, "nft", &["-f", "-"], f) {
            Ok(d) => times.push(d),
            Err(e) => {
                row.nft_change = Some(Err(e));
                return;
            }
        }
    }
    row.nft_change = Some(Ok(quantile(&times, 0.5)));
    row.nft_lat = Some(path.latency(gens[0].vip, gens[gens.len() - 1].vip));
}

fn ms(d: Duration) -> String {
    let v = d.as_secs_f64() * 1000.0;
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

fn res(r: &Result<Duration, String>) -> String {
    match r {
        Ok(d) => ms(*d),
        Err(e) => format!("({e})"),
    }
}

fn ratio(anchor: &Result<Duration, String>, ours: Duration) -> String {
    match anchor {
        Ok(d) => format!("{:.0}×", d.as_secs_f64() / ours.as_secs_f64().max(1e-9)),
        Err(_) => "-".into(),
    }
}

fn us(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1e6)
}

fn lat(l: Option<(Duration, Duration)>) -> String {
    match l {
        Some((a, b)) => format!(
            "{} → {} ({:+.0}%)",
            us(a),
            us(b),
            (b.as_secs_f64() / a.as_secs_f64().max(1e-9) - 1.0) * 100.0
        ),
        None => "not run".into(),
    }
}

/// Runs the services benchmark and returns its report.
pub fn run() -> String {
    let dir = std::env::temp_dir().join(format!("podnet-bench-svc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("bench directory");
    let mut rows = Vec::new();
    for size in sizes() {
        eprintln!("services: {size}");
        let gens: Vec<GenService> = (0..size).map(kubeproxy::service).collect();
        let mut row = Row {
            size,
            podnet_sync: Duration::ZERO,
            podnet_change: Duration::ZERO,
            podnet_change_p95: Duration::ZERO,
            podnet_lat: (Duration::ZERO, Duration::ZERO),
            legacy_sync: Err("not run".into()),
            legacy_change: Err("not run".into()),
            legacy_lat: None,
            iptnft_sync: None,
            nft_sync: None,
            nft_change: None,
            nft_lat: None,
        };
        podnet(&mut row, &gens);
        if std::env::var("PODNET_BENCH_ANCHORS").as_deref() != Ok("0") {
            legacy(&mut row, &gens, &dir);
            iptables_nft(&mut row, &gens, &dir);
            nft_mode(&mut row, &gens, &dir);
        }
        rows.push(row);
    }
    let _ = std::fs::remove_dir_all(&dir);

    let mut t = String::new();
    let _ = writeln!(t, "## Services: podnet vs kube-proxy's rulesets\n");
    let _ = writeln!(
        t,
        "Measured {} on {} (`bench/run.sh services`). ClusterIP services with 3 endpoints each.",
        today(),
        machine()
    );
    let _ = writeln!(t, "podnet: the service proxy programming the kernel in-process (one netlink transaction per sync or change).");
    let _ = writeln!(t, "Anchors: kube-proxy's iptables-mode rules loaded with `iptables-legacy-restore --noflush` (and `iptables-nft-restore`,");
    let _ = writeln!(t, "Debian's default, up to {IPTABLES_NFT_MAX}), and its nftables-mode rules with `nft -f` (up to {NFT_MODE_MAX}; beyond, its load time here");
    let _ = writeln!(t, "grows to hours). Times in ms, medians (podnet sync: 3 runs; one change: {CHANGES} runs, p95 in brackets; anchors' one change: 3-7 runs).");
    let _ = writeln!(t, "Latency: median TCP connect time in µs from a client namespace through the node to the first → the last service, {CONNECTS} each, interleaved");
    let _ = writeln!(t, "(client and server threads pinned to one CPU, so that scheduling does not shift a path's figures).\n");
    let _ = writeln!(t, "| services | podnet full sync | iptables-legacy-restore | × | iptables-nft-restore | nft -f (nft mode) | × |");
    let _ = writeln!(t, "|---|---|---|---|---|---|---|");
    for r in &rows {
        let iptn = r
            .iptnft_sync
            .as_ref()
            .map(res)
            .unwrap_or_else(|| "not run".into());
        let nft = r
            .nft_sync
            .as_ref()
            .map(res)
            .unwrap_or_else(|| "not run".into());
        let nft_ratio = r
            .nft_sync
            .as_ref()
            .map(|a| ratio(a, r.podnet_sync))
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {iptn} | {nft} | {nft_ratio} |",
            r.size,
            ms(r.podnet_sync),
            res(&r.legacy_sync),
            ratio(&r.legacy_sync, r.podnet_sync)
        );
    }
    let _ = writeln!(t, "\n| services | podnet one change | iptables-legacy partial restore | × | nft transaction (nft mode) | × |");
    let _ = writeln!(t, "|---|---|---|---|---|---|");
    for r in &rows {
        let nft = r
            .nft_change
            .as_ref()
            .map(res)
            .unwrap_or_else(|| "not run".into());
        let nft_ratio = r
            .nft_change
            .as_ref()
            .map(|a| ratio(a, r.podnet_change))
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            t,
            "| {} | {} ({}) | {} | {} | {nft} | {nft_ratio} |",
            r.size,
            ms(r.podnet_change),
            ms(r.podnet_change_p95),
            res(&r.legacy_change),
            ratio(&r.legacy_change, r.podnet_change)
        );
    }
    let _ = writeln!(
        t,
        "\n| services | podnet first → last µs | iptables-legacy | nft mode |"
    );
    let _ = writeln!(t, "|---|---|---|---|");
    for r in &rows {
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} |",
            r.size,
            lat(Some(r.podnet_lat)),
            lat(r.legacy_lat),
            lat(r.nft_lat)
        );
    }
    let _ = writeln!(t);
    let _ = writeln!(t, "The real agent at this scale (store read, parse, memory, one change end to end), on both stores:");
    let _ = writeln!(t, "\"The agent at scale\" below (`bench/run.sh agent`).");
    t
}
