//! The connectivity matrix: every pod to every pod, every node to every pod,
//! over TCP, with the source address each receiver saw. It covers the pods
//! that serve the lab's echo port (those `up` and `add-pods` make). Where the
//! NetworkPolicies in the store deny a pair, the matrix expects it dropped
//! (`deny`) and fails if it gets through (`LEAK`).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use podnet_kernel::{Netns, RouteHandle};

use crate::echo::{probe, ECHO_PORT};
use crate::error::LabError;
use podnet_policy::model::Protocol;
use podnet_policy::{Flow, FlowEnd, Pod, World};

use crate::state::LabState;

/// How long one probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a probe the policies deny is given to (wrongly) get through.
const DENIED_TIMEOUT: Duration = Duration::from_secs(1);

/// One probe's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cell {
    /// Reached, and the receiver saw the address the sender should have.
    Reached(IpAddr),
    /// Reached, but the receiver saw another address (NAT where none belongs).
    Translated(IpAddr),
    /// Not reached.
    Failed(String),
}

struct Client {
    label: String,
    netns: Netns,
    /// Source addresses the receiver may legitimately see.
    expected: BTreeSet<IpAddr>,
    /// What policies see as the source: a pod's record, or a node's name and address.
    who: Who,
}

enum Who {
    Pod(Pod),
    Node(String, IpAddr),
}

/// Short label of a pod: `node2/pod1` becomes `n2p1`.
fn short(node: &str, pod: &str) -> String {
    let n = node.trim_start_matches("node");
    let p = pod.rsplit("-pod").next().unwrap_or(pod);
    format!("n{n}p{p}")
}

fn clients(state: &LabState) -> Result<Vec<Client>, LabError> {
    let mut out = Vec::new();
    for p in state.pods.iter().filter(|p| p.serves_echo()) {
        out.push(Client {
            label: short(&p.node, &p.name),
            netns: Netns::open_named(&p.name)?,
            expected: p.ips.iter().copied().collect(),
            who: Who::Pod(p.record()),
        });
    }
    for n in &state.nodes {
        // A node talks from one of its own addresses: the fabric address, the
        // bridge gateway (bridge model, to local pods) or the first address of
        // its block on the VXLAN device (VXLAN paths).
        let netns = Netns::open_named(&n.ns)?;
        let expected = RouteHandle::in_netns(&netns)?
            .addresses(None)?
            .into_iter()
            .map(|a| a.net.addr())
            .filter(|ip| !ip.is_loopback())
            .collect();
        out.push(Client {
            label: n.name.clone(),
            netns,
            expected,
            who: Who::Node(n.name.clone(), n.address),
        });
    }
    Ok(out)
}

/// Whether `world`'s policies allow `client` to reach `server` on the echo port.
fn allowed(world: &World, client: &Who, server: &Pod, ip: IpAddr) -> bool {
    let src = match client {
        Who::Pod(p) => FlowEnd::Pod(p, p.ips.iter().copied().find(IpAddr::is_ipv4).unwrap_or(ip)),
        Who::Node(name, addr) => FlowEnd::Node(name, *addr),
    };
    world.allows(&Flow {
        src,
        dst: FlowEnd::Pod(server, ip),
        protocol: Protocol::Tcp,
        port: ECHO_PORT,
    })
}

/// One cell: the text to print, and the probe judged against what the
/// policies expect: the address the server saw (allowed and reached), nothing
/// (denied and dropped), or the unexpected outcome.
fn cell(c: &Client, ip: IpAddr, allow: bool) -> (&'static str, Result<Option<IpAddr>, Cell>) {
    let timeout = if allow { PROBE_TIMEOUT } else { DENIED_TIMEOUT };
    let cell = match probe(&c.netns, ip, ECHO_PORT, timeout) {
        Ok(seen) if c.expected.contains(&seen) => Cell::Reached(seen),
        Ok(seen) => Cell::Translated(seen),
        Err(e) => Cell::Failed(e),
    };
    match (cell, allow) {
        (Cell::Reached(seen), true) => ("ok", Ok(Some(seen))),
        (Cell::Failed(_), false) => ("deny", Ok(None)),
        (c @ Cell::Translated(_), true) => ("NAT", Err(c)),
        (c, false) => ("LEAK", Err(c)),
        (c @ Cell::Failed(_), true) => ("FAIL", Err(c)),
    }
}

/// Probes every client to every pod, prints the matrix, returns the number of failures.
pub fn print(state: &LabState, world: &World) -> Result<usize, LabError> {
    let clients = clients(state)?;
    let servers: Vec<(String, IpAddr, Pod)> = state
        .pods
        .iter()
        .filter(|p| p.serves_echo())
        .filter_map(|p| {
            Some((
                short(&p.node, &p.name),
                p.ips.iter().copied().find(IpAddr::is_ipv4)?,
                p.record(),
            ))
        })
        .collect();
    println!("connectivity (row: client, column: server pod; ok = the server saw the client's own address; deny = dropped as the NetworkPolicies say)");
    print!("{:<8}", "");
    for (label, _, _) in &servers {
        print!("{label:>6}");
    }
    println!();
    let mut failures = 0;
    let mut node_sources = Vec::new();
    for c in &clients {
        print!("{:<8}", c.label);
        let mut seen_here = BTreeSet::new();
        for (label, ip, pod) in &servers {
            if *label == c.label {
                print!("{:>6}", "-");
                continue;
            }
            let (text, outcome) = cell(c, *ip, allowed(world, &c.who, pod, *ip));
            match outcome {
                Ok(seen) => seen_here.extend(seen),
                Err(wrong) => {
                    failures += 1;
                    eprintln!("  {} -> {label} ({ip}): {text}: {wrong:?}", c.label);
                }
            }
            print!("{text:>6}");
        }
        println!();
        if c.label.starts_with("node") {
            node_sources.push((c.label.clone(), seen_here));
        }
    }
    failures += ipv6_pairs(state, world)?;
    println!("\nsource addresses pods saw from nodes (pod to pod: always the client pod's own):");
    for (node, seen) in node_sources {
        let list: Vec<String> = seen.iter().map(IpAddr::to_string).collect();
        println!("  from {node}: {}", list.join(", "));
    }
    Ok(failures)
}

/// Probes every pod pair over IPv6 when pods have IPv6 addresses (pairs the
/// policies deny are skipped); prints a summary line and returns the number of failures.
fn ipv6_pairs(state: &LabState, world: &World) -> Result<usize, LabError> {
    let mut pods = Vec::new();
    for p in state.pods.iter().filter(|p| p.serves_echo()) {
        if let Some(v6) = p.ips.iter().copied().find(IpAddr::is_ipv6) {
            pods.push((p.record(), Netns::open_named(&p.name)?, v6));
        }
    }
    if pods.is_empty() {
        return Ok(0);
    }
    let (mut pairs, mut failures) = (0, 0);
    for (from, from_ns, me) in &pods {
        for (to, _, ip) in pods.iter().filter(|(p, _, _)| p.key() != from.key()) {
            let flow = Flow {
                src: FlowEnd::Pod(from, *me),
                dst: FlowEnd::Pod(to, *ip),
                protocol: Protocol::Tcp,
                port: ECHO_PORT,
            };
            if !world.allows(&flow) {
                continue;
            }
            pairs += 1;
            match probe(from_ns, *ip, ECHO_PORT, PROBE_TIMEOUT) {
                Ok(seen) if seen == *me => {}
                other => {
                    failures += 1;
                    eprintln!("  {} -> {} ({ip}): {other:?}", from.key(), to.key());
                }
            }
        }
    }
    println!(
        "\nIPv6: {} of {pairs} pod pairs reached, each receiver seeing the sender's own address",
        pairs - failures
    );
    Ok(failures)
}
