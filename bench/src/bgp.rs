//! BGP benchmark (`bench/run.sh bgp`): pod-to-pod throughput across
//! segments over BGP-learned routes against VXLAN and a plain veth in one
//! run; and the time from a node joining to every other node and the
//! router holding its block (and from its removal to the block gone
//! everywhere), 10 nodes, mesh, BIRD reflectors and FRR top-of-rack,
//! beside the store-driven host-gw figure of the same lab.

use std::fmt::Write;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use podnet_kernel::{Netns, Route, RouteHandle};
use podnet_lab::spec::{BgpTopology, LabBgpSpec};
use podnet_lab::{Backend, LabSpec, Model};

use crate::cluster::{
    lab_path, measure_rounds, median, pct, underlay_path, wait_routes, BenchLab, RouteWatch,
    VethPair,
};
use crate::report::{machine, quantile, today};

/// Throughput rounds; the paths take turns within each round.
const ROUNDS: usize = 5;
/// Nodes in the convergence lab (after a join).
const NODES: usize = 10;
/// Joins (and removals) per topology.
const JOINS: usize = 20;
/// Upper bound on one convergence wait.
const LIMIT: Duration = Duration::from_secs(15);

fn bgp_spec(nodes: usize, segments: usize, pods: usize, topology: BgpTopology) -> LabSpec {
    let mut spec = LabSpec::from_flags(nodes, segments, pods, Backend::Bgp, Model::Routed);
    spec.bgp = Some(LabBgpSpec {
        topology,
        ..LabBgpSpec::default()
    });
    spec
}

fn throughput(t: &mut String) {
    let veth = VethPair::new();
    // Two nodes on two segments: node1 on one, node2 on the other.
    let bgp = BenchLab::up("bbgp", &bgp_spec(2, 2, 1, BgpTopology::Tor));
    let vx = BenchLab::up(
        "bbvx",
        &LabSpec::from_flags(2, 2, 1, Backend::Vxlan, Model::Routed),
    );
    let bgp_plain = BenchLab::up(
        "bbgpp",
        &LabSpec {
            masquerade: false,
            ..bgp_spec(2, 2, 1, BgpTopology::Tor)
        },
    );
    let same_segment = BenchLab::up("bbgps", &bgp_spec(2, 1, 1, BgpTopology::Tor));
    let mut paths = [
        veth.path(),
        lab_path("bgp (FRR ToR), across segments", &bgp.0),
        lab_path("vxlan, across segments", &vx.0),
        lab_path("bgp, across segments, no masquerade", &bgp_plain.0),
        lab_path(
            "bgp, one segment (next hop: the other node)",
            &same_segment.0,
        ),
        underlay_path("node to node across the router (the underlay)", &bgp.0),
    ];
    measure_rounds(&mut paths, ROUNDS);
    let limit = median(&paths[0].gbps);
    let _ = writeln!(
        t,
        "### Pod to pod across segments: BGP routes vs VXLAN vs a plain veth\n"
    );
    let _ = writeln!(t, "Two nodes on two segments joined only by the lab router; one TCP stream (`iperf3 -t 3`), {ROUNDS} rounds with the paths taking turns.\n");
    let _ = writeln!(t, "| path | Gb/s median | Gb/s min-max | ratio to veth |");
    let _ = writeln!(t, "|---|---|---|---|");
    for p in &paths {
        let _ = writeln!(
            t,
            "| {} | {:.2} | {:.2}-{:.2} | {:.2} |",
            p.label,
            median(&p.gbps),
            pct(&p.gbps, 0.0),
            pct(&p.gbps, 1.0),
            median(&p.gbps) / limit
        );
    }
    let _ = writeln!(t, "\nGoal: BGP at least 0.9 of the veth. Pod to pod across segments crosses two pod veths and three");
    let _ = writeln!(t, "forwarding namespaces (node, router, node) where the limit crosses one veth; with masquerade (the");
    let _ = writeln!(t, "default) the nat chain turns on connection tracking on both nodes. The last rows separate the");
    let _ = writeln!(t, "parts: no netfilter hook on the nodes; no router (the ToR reflects the other node's next hop);");
    let _ = writeln!(t, "the fabric and the router alone.\n");
}

/// Any route to the block but a blackhole (the agent's, BIRD's, FRR's).
fn routed(r: &Route) -> bool {
    !r.blackhole
}

/// One join: when every other node and the router held the new node's
/// block, and when the new node held every other node's block.
struct Join {
    announced: Duration,
    learned: Duration,
}

/// Polls `others` for `block` and `joined` for every one of `blocks` at
/// once (one loop, so the two waits do not compete for the CPU).
fn wait_join(
    others: &[Netns],
    block: IpNet,
    joined: &Netns,
    blocks: &[IpNet],
    start: Instant,
) -> Join {
    let mut announcing = RouteWatch::new(others, block, true);
    // One dump of the new node's routes per look, for every block.
    let mut own = RouteHandle::in_netns(joined).expect("rtnetlink");
    let holds_all = |routes: Vec<Route>| {
        blocks
            .iter()
            .all(|b| routes.iter().any(|r| r.dst == *b && routed(r)))
    };
    let (mut announced, mut learned) = (None, None);
    while start.elapsed() < LIMIT && (announced.is_none() || learned.is_none()) {
        if announced.is_none() && announcing.settled(routed) {
            announced = Some(start.elapsed());
        }
        if learned.is_none() && holds_all(own.routes().unwrap_or_default()) {
            learned = Some(start.elapsed());
        }
        std::thread::yield_now();
    }
    Join {
        announced: announced.unwrap_or(LIMIT),
        learned: learned.unwrap_or(LIMIT),
    }
}

/// Joins and removals in one lab: (joins, removal times).
fn joins(spec: &LabSpec, tag: &str, segment: usize) -> (Vec<Join>, Vec<Duration>) {
    let lab = BenchLab::up(tag, spec);
    let (mut joined, mut left) = (Vec::new(), Vec::new());
    for _ in 0..JOINS {
        let start = Instant::now();
        let name = lab.0.add_node(segment).expect("add node");
        let nodes = lab
            .0
            .with_store(spec.store, |s| Ok(s.snapshot()?))
            .expect("store")
            .nodes;
        let block = nodes
            .iter()
            .find(|n| n.name == name)
            .expect("registered")
            .pod_cidrs[0];
        let blocks: Vec<IpNet> = nodes
            .iter()
            .filter(|n| n.name != name)
            .map(|n| n.pod_cidrs[0])
            .collect();
        let state = lab.0.state().expect("state");
        let ns = |name: &str| Netns::open_named(name).expect("namespace");
        let mut others: Vec<Netns> = state
            .nodes
            .iter()
            .filter(|n| n.name != name)
            .map(|n| ns(&n.ns))
            .collect();
        if spec.router_bgp().is_some() {
            others.push(ns(&lab.0.router_ns()));
        }
        let new = ns(&state.node(&name).expect("new node").ns);
        joined.push(wait_join(&others, block, &new, &blocks, start));
        let start = Instant::now();
        std::thread::scope(|s| {
            let remover = s.spawn(|| lab.0.remove_node(&name).expect("remove node"));
            left.push(wait_routes(&others, block, false, routed, start, LIMIT).unwrap_or(LIMIT));
            remover.join().expect("remover");
        });
    }
    (joined, left)
}

fn convergence(t: &mut String) {
    let _ = writeln!(
        t,
        "### Route convergence: a node joins, a node leaves ({NODES}-node lab)\n"
    );
    let _ = writeln!(t, "Join: from `lab add-node` (namespace, agent start, registration, BIRD) until every other node");
    let _ = writeln!(t, "and the router hold a route to its block; \"learned\": until the new node holds a route to every");
    let _ = writeln!(t, "other block. Leave: from `lab remove-node` until no node and not the router holds one. {JOINS} of");
    let _ = writeln!(t, "each per topology; BGP labs on 2 segments (the new node on segment 2), host-gw (the store-driven");
    let _ = writeln!(t, "reference) on one.\n");
    let _ = writeln!(t, "| topology | join p50 ms | join p95 ms | join max ms | learned p50 ms | learned p95 ms | leave p50 ms | leave p95 ms | leave max ms |");
    let _ = writeln!(t, "|---|---|---|---|---|---|---|---|---|");
    let cases = [
        (
            "host-gw (store-driven)",
            LabSpec::from_flags(NODES - 1, 1, 0, Backend::HostGw, Model::Routed),
            1,
        ),
        (
            "bgp mesh (+ FRR router)",
            bgp_spec(NODES - 1, 2, 0, BgpTopology::Mesh),
            2,
        ),
        (
            "bgp BIRD reflectors",
            bgp_spec(NODES - 1, 2, 0, BgpTopology::Reflector),
            2,
        ),
        (
            "bgp FRR top-of-rack",
            bgp_spec(NODES - 1, 2, 0, BgpTopology::Tor),
            2,
        ),
    ];
    for (i, (label, spec, segment)) in cases.into_iter().enumerate() {
        let (j, l) = joins(&spec, &format!("bcg{i}"), segment);
        let announced: Vec<Duration> = j.iter().map(|j| j.announced).collect();
        let learned: Vec<Duration> = j.iter().map(|j| j.learned).collect();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let _ = writeln!(
            t,
            "| {label} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
            ms(quantile(&announced, 0.5)),
            ms(quantile(&announced, 0.95)),
            ms(quantile(&announced, 1.0)),
            ms(quantile(&learned, 0.5)),
            ms(quantile(&learned, 0.95)),
            ms(quantile(&l, 0.5)),
            ms(quantile(&l, 0.95)),
            ms(quantile(&l, 1.0)),
        );
    }
    let _ = writeln!(t, "\nGoals: join p95 under 1 s through BIRD and FRR; a removed node's routes gone everywhere within 1 s.");
    let _ = writeln!(t, "BIRD opens a new session no sooner than 1 s less up to 25% jitter (its connect delay has a floor");
    let _ = writeln!(t, "of 1 s in every version), so a BGP join takes 0.75-1.0 s plus the node's start; a mesh waits for the");
    let _ = writeln!(t, "latest of its new sessions.\n");
}

/// Runs the BGP benchmark and returns its report.
pub fn run() -> String {
    let mut t = String::new();
    let _ = writeln!(t, "## BGP: BIRD on every node, FRR on the router\n");
    let _ = writeln!(
        t,
        "Measured {} on {} (`bench/run.sh bgp`), in lab namespaces on this one machine.\n",
        today(),
        machine()
    );
    throughput(&mut t);
    convergence(&mut t);
    t
}
