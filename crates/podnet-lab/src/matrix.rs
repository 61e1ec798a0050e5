//! The connectivity matrix: every pod to every pod, the node to every pod, every pod to the node.

use std::net::IpAddr;
use std::time::Duration;

use podnet_kernel::Netns;

use crate::echo::{probe, ECHO_PORT};
use crate::error::LabError;
use crate::{Lab, LabState, NODE_IP};

/// One endpoint of the matrix: a namespace and the IPv4 address it is reached at.
struct Endpoint {
    label: String,
    netns: Netns,
    ip: IpAddr,
}

/// The outcome of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cell {
    /// Reached; the receiver saw this source address, which is the sender's own.
    Reached(IpAddr),
    /// Reached, but the receiver saw a source address that is not the sender's (NAT).
    Translated(IpAddr),
    /// Not reached.
    Failed(String),
}

fn endpoints(lab: &Lab, state: &LabState) -> Result<Vec<Endpoint>, LabError> {
    let mut out = vec![Endpoint {
        label: "node".into(),
        netns: Netns::open_named(&lab.node_ns())?,
        ip: NODE_IP.parse().expect("static"),
    }];
    for p in &state.pods {
        let ip = p
            .ips
            .iter()
            .copied()
            .find(IpAddr::is_ipv4)
            .ok_or(LabError::NotRunning)?;
        let label = p.name.trim_start_matches(&lab.prefix()).to_string();
        out.push(Endpoint {
            label,
            netns: Netns::open_named(&p.name)?,
            ip,
        });
    }
    Ok(out)
}

/// Probes every pair and prints the matrix; returns the number of failed cells.
pub fn print(lab: &Lab, state: &LabState) -> Result<usize, LabError> {
    let eps = endpoints(lab, state)?;
    let width = 18;
    print!("{:<8}", "from\\to");
    for to in &eps {
        print!("{:<width$}", format!("{} {}", to.label, to.ip));
    }
    println!();
    let mut failures = 0;
    for from in &eps {
        print!("{:<8}", from.label);
        for to in &eps {
            if from.label == to.label {
                print!("{:<width$}", "-");
                continue;
            }
            let cell = match probe(&from.netns, to.ip, ECHO_PORT, Duration::from_secs(3)) {
                // The node may use any of its own addresses (its loopback one, or the bridge gateway).
                Ok(seen)
                    if seen == from.ip || (from.label == "node" && !is_pod_ip(state, seen)) =>
                {
                    Cell::Reached(seen)
                }
                Ok(seen) => Cell::Translated(seen),
                Err(e) => Cell::Failed(e),
            };
            let text = match &cell {
                Cell::Reached(seen) => format!("ok src={seen}"),
                Cell::Translated(seen) => format!("NAT src={seen}"),
                Cell::Failed(_) => "FAIL".to_string(),
            };
            if !matches!(cell, Cell::Reached(_)) {
                failures += 1;
            }
            print!("{text:<width$}");
        }
        println!();
    }
    println!("\n(each cell: a TCP connection from the row's namespace to the column's echo server; src = the source address the receiver saw)");
    Ok(failures)
}

fn is_pod_ip(state: &LabState, ip: IpAddr) -> bool {
    state.pods.iter().any(|p| p.ips.contains(&ip))
}
