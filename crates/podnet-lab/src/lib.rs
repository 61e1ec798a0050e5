//! The lab: a node and its pods, built from network namespaces on this machine.
//!
//! `up` creates a node namespace and N pod namespaces, runs the real CNI
//! plugin for each pod exactly as a runtime would (inside the node's
//! namespace, config on stdin), starts an echo server in every pod and on the
//! node, and prints the connectivity matrix. Lab namespaces have no route out
//! of the machine: the node only has its loopback and its pods' veths.

pub mod echo;
pub mod error;
pub mod matrix;
pub mod runtime;

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
pub use podnet_dataplane::Model;
use podnet_kernel::{Netns, RouteHandle};
use serde::{Deserialize, Serialize};

pub use error::LabError;
use runtime::{run_cni, spawn_daemon, CniCall};

/// Prefix of every namespace the lab creates.
pub const LAB_PREFIX: &str = "podnet-lab-";
/// Name of the node's namespace.
pub const NODE_NS: &str = "podnet-lab-node";
/// Where the lab keeps its state (IPAM data included).
pub const STATE_DIR: &str = "/run/podnet-lab";
/// The node's own address (RFC 2544 benchmarking range, on the node's loopback).
pub const NODE_IP: &str = "198.18.0.1";
/// How long an echo server may take to start listening.
const READY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);
/// The lab's CNI network name.
pub const NETWORK: &str = "podnet-lab";

/// What `lab up` builds.
#[derive(Debug, Clone)]
pub struct LabOptions {
    /// Same-node model.
    pub model: Model,
    /// Number of pods.
    pub pods: usize,
    /// The podnet binary, used as the CNI plugin and the echo server.
    pub plugin: PathBuf,
}

/// One pod of the lab.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabPod {
    /// Namespace and container ID.
    pub name: String,
    /// Addresses the plugin assigned.
    pub ips: Vec<IpAddr>,
}

/// The lab's state file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabState {
    /// Model in use.
    pub model: Model,
    /// The plugin binary.
    pub plugin: PathBuf,
    /// The pods.
    pub pods: Vec<LabPod>,
}

/// The CNI network config the lab hands the plugin.
pub fn network_config(model: Model) -> String {
    let model = match model {
        Model::Bridge => "bridge",
        Model::Routed => "routed",
    };
    serde_json::json!({
        "cniVersion": "1.1.0",
        "name": NETWORK,
        "type": "podnet",
        "model": model,
        "mtu": 1500,
        "ipMasq": true,
        "clusterCIDRs": ["10.244.0.0/16", "fd00:10:244::/56"],
        "ipam": {
            "ranges": [[{"subnet": "10.244.1.0/24"}], [{"subnet": "fd00:10:244:1::/64"}]],
            "dataDir": format!("{STATE_DIR}/ipam"),
        }
    })
    .to_string()
}

fn state_path() -> PathBuf {
    Path::new(STATE_DIR).join("lab.json")
}

fn read_state() -> Result<LabState, LabError> {
    let bytes = std::fs::read(state_path()).map_err(|_| LabError::NotRunning)?;
    serde_json::from_slice(&bytes)
        .map_err(|e| LabError::io("read lab state", std::io::Error::other(e)))
}

fn write_state(state: &LabState) -> Result<(), LabError> {
    std::fs::create_dir_all(STATE_DIR)
        .map_err(|e| LabError::io(format!("create {STATE_DIR}"), e))?;
    let json = serde_json::to_vec_pretty(state)
        .map_err(|e| LabError::io("encode lab state", std::io::Error::other(e)))?;
    std::fs::write(state_path(), json).map_err(|e| LabError::io("write lab state", e))
}

/// Builds the lab and prints its connectivity matrix; cleans up if anything fails.
pub fn up(opts: &LabOptions) -> Result<(), LabError> {
    let existing: Vec<String> = Netns::list_named()
        .into_iter()
        .filter(|n| n.starts_with(LAB_PREFIX))
        .collect();
    if !existing.is_empty() || state_path().exists() {
        return Err(LabError::AlreadyUp(existing.join(", ")));
    }
    match build(opts) {
        Ok(state) => {
            print_pods(&state);
            let failures = matrix::print(&state)?;
            if failures > 0 {
                return Err(LabError::Unreachable(failures));
            }
            println!(
                "\nlab is up: `podnet lab status` to re-check, `podnet lab down` to remove it"
            );
            Ok(())
        }
        Err(e) => {
            let _ = down_quiet();
            Err(e)
        }
    }
}

fn build(opts: &LabOptions) -> Result<LabState, LabError> {
    let mut state = LabState {
        model: opts.model,
        plugin: opts.plugin.clone(),
        pods: Vec::new(),
    };
    write_state(&state)?;
    let node = Netns::create_named(NODE_NS)?;
    let mut h = RouteHandle::in_netns(&node)?;
    let lo = h.link_by_name("lo")?.ok_or(LabError::NotRunning)?;
    h.replace_address(
        lo.index,
        IpNet::new(NODE_IP.parse().expect("static"), 32).expect("static"),
    )?;
    start_echo(&node, &opts.plugin)?;
    let config = network_config(opts.model);
    for i in 1..=opts.pods {
        let name = format!("{LAB_PREFIX}pod{i}");
        let pod_ns = Netns::create_named(&name)?;
        let netns_path = format!("/run/netns/{name}");
        let out = run_cni(
            &node,
            &CniCall {
                plugin: &opts.plugin,
                command: "ADD",
                container_id: &name,
                netns_path: &netns_path,
                ifname: "eth0",
                config: &config,
            },
        )?;
        let ips = result_ips(&out);
        start_echo(&pod_ns, &opts.plugin)?;
        state.pods.push(LabPod { name, ips });
        write_state(&state)?;
    }
    Ok(state)
}

/// Starts the echo server inside `netns` and waits until it listens.
fn start_echo(netns: &Netns, podnet: &Path) -> Result<(), LabError> {
    let port = echo::ECHO_PORT.to_string();
    spawn_daemon(netns, podnet, &["lab", "echo-server", "--port", &port])?;
    echo::wait_listening(netns, echo::ECHO_PORT, READY_DEADLINE)
}

fn result_ips(result_json: &str) -> Vec<IpAddr> {
    let v: serde_json::Value = serde_json::from_str(result_json).unwrap_or_default();
    v["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|ip| {
            ip["address"]
                .as_str()?
                .parse::<IpNet>()
                .ok()
                .map(|n| n.addr())
        })
        .collect()
}

fn print_pods(state: &LabState) {
    println!("node {NODE_NS}: {NODE_IP} (model {:?})", state.model);
    for p in &state.pods {
        let ips: Vec<String> = p.ips.iter().map(|i| i.to_string()).collect();
        println!("  pod {}: {}", p.name, ips.join(", "));
    }
    println!();
}

/// Prints the lab's pods and re-runs the connectivity matrix.
pub fn status() -> Result<(), LabError> {
    let state = read_state()?;
    print_pods(&state);
    match matrix::print(&state)? {
        0 => Ok(()),
        n => Err(LabError::Unreachable(n)),
    }
}

/// Removes everything the lab made: pods (through CNI DEL), processes, namespaces, state.
pub fn down() -> Result<(), LabError> {
    let removed = down_quiet()?;
    println!("removed {removed} lab namespaces");
    Ok(())
}

fn down_quiet() -> Result<usize, LabError> {
    let state = read_state().ok();
    let names: Vec<String> = Netns::list_named()
        .into_iter()
        .filter(|n| n.starts_with(LAB_PREFIX))
        .collect();
    if let (Some(state), Ok(node)) = (&state, Netns::open_named(NODE_NS)) {
        let config = network_config(state.model);
        for name in names.iter().filter(|n| n.as_str() != NODE_NS) {
            let netns_path = format!("/run/netns/{name}");
            let call = CniCall {
                plugin: &state.plugin,
                command: "DEL",
                container_id: name,
                netns_path: &netns_path,
                ifname: "eth0",
                config: &config,
            };
            if let Err(e) = run_cni(&node, &call) {
                eprintln!("warning: {e}");
            }
        }
    }
    for name in &names {
        if let Ok(ns) = Netns::open_named(name) {
            runtime::kill_processes_in(&ns);
        }
        Netns::remove_named(name)?;
    }
    match std::fs::remove_dir_all(STATE_DIR) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(LabError::io(format!("remove {STATE_DIR}"), e)),
    }
    Ok(names.len())
}
