//! The connectivity matrix: every pod to every pod, every node to every pod,
//! over TCP, with the source address each receiver saw. It covers the pods
//! that serve the lab's echo port (those `up` and `add-pods` make; pods
//! applied from manifests are probed by their own tests).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use podnet_kernel::{Netns, RouteHandle};

use crate::echo::{probe, ECHO_PORT};
use crate::error::LabError;
use crate::state::LabState;

/// How long one probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

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
        });
    }
    Ok(out)
}

/// Probes every client to every pod, prints the matrix, returns the number of failures.
pub fn print(state: &LabState) -> Result<usize, LabError> {
    let clients = clients(state)?;
    let servers: Vec<(String, IpAddr)> = state
        .pods
        .iter()
        .filter(|p| p.serves_echo())
        .filter_map(|p| {
            Some((
                short(&p.node, &p.name),
                p.ips.iter().copied().find(IpAddr::is_ipv4)?,
            ))
        })
        .collect();
    println!("connectivity (row: client, column: server pod; ok = the server saw the client's own address)");
    print!("{:<8}", "");
    for (label, _) in &servers {
        print!("{label:>6}");
    }
    println!();
    let mut failures = 0;
    let mut node_sources = Vec::new();
    for c in &clients {
        print!("{:<8}", c.label);
        let mut seen_here = BTreeSet::new();
        for (label, ip) in &servers {
            if *label == c.label {
                print!("{:>6}", "-");
                continue;
            }
            let cell = match probe(&c.netns, *ip, ECHO_PORT, PROBE_TIMEOUT) {
                Ok(seen) if c.expected.contains(&seen) => Cell::Reached(seen),
                Ok(seen) => Cell::Translated(seen),
                Err(e) => Cell::Failed(e),
            };
            let text = match &cell {
                Cell::Reached(seen) => {
                    seen_here.insert(*seen);
                    "ok"
                }
                Cell::Translated(_) => "NAT",
                Cell::Failed(_) => "FAIL",
            };
            if !matches!(cell, Cell::Reached(_)) {
                failures += 1;
                eprintln!("  {} -> {label} ({ip}): {cell:?}", c.label);
            }
            print!("{text:>6}");
        }
        println!();
        if c.label.starts_with("node") {
            node_sources.push((c.label.clone(), seen_here));
        }
    }
    failures += ipv6_pairs(state)?;
    println!("\nsource addresses pods saw from nodes (pod to pod: always the client pod's own):");
    for (node, seen) in node_sources {
        let list: Vec<String> = seen.iter().map(IpAddr::to_string).collect();
        println!("  from {node}: {}", list.join(", "));
    }
    Ok(failures)
}

/// Probes every pod pair over IPv6 when pods have IPv6 addresses; prints a
/// summary line and returns the number of failures.
fn ipv6_pairs(state: &LabState) -> Result<usize, LabError> {
    let mut pods = Vec::new();
    for p in state.pods.iter().filter(|p| p.serves_echo()) {
        if let Some(v6) = p.ips.iter().copied().find(IpAddr::is_ipv6) {
            pods.push((p.name.clone(), Netns::open_named(&p.name)?, v6));
        }
    }
    if pods.is_empty() {
        return Ok(0);
    }
    let (mut pairs, mut failures) = (0, 0);
    for (from_name, from, me) in &pods {
        for (to_name, _, ip) in pods.iter().filter(|(n, _, _)| n != from_name) {
            pairs += 1;
            match probe(from, *ip, ECHO_PORT, PROBE_TIMEOUT) {
                Ok(seen) if seen == *me => {}
                other => {
                    failures += 1;
                    eprintln!("  {from_name} -> {to_name} ({ip}): {other:?}");
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
