//! The lab: a node and its pods, built from network namespaces on this machine.
//!
//! `up` creates a node namespace and N pod namespaces, runs the real CNI
//! plugin for each pod exactly as a runtime would (inside the node's
//! namespace, config on stdin), starts an echo server in every pod and on the
//! node, and prints the connectivity matrix. Lab namespaces have no route out
//! of the machine: the node only has its loopback and its pods' veths.
//!
//! Several labs can coexist: each has a name (default `lab`) that prefixes
//! everything it makes (`podnet-NAME-node`, `podnet-NAME-pod1`, ...).

pub mod echo;
pub mod error;
pub mod matrix;
pub mod runtime;
mod state;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
pub use podnet_dataplane::Model;
use podnet_kernel::{Netns, RouteHandle};

pub use error::LabError;
use runtime::{run_cni, spawn_daemon, CniCall};
pub use state::{LabPod, LabState};

/// The node's own address (RFC 2544 benchmarking range, on the node's loopback).
pub const NODE_IP: &str = "198.18.0.1";
/// Root of the labs' state directories (IPAM data included).
pub const STATE_ROOT: &str = "/run/podnet-lab";
/// The default lab name.
pub const DEFAULT_NAME: &str = "lab";
/// How long an echo server may take to start listening.
const READY_DEADLINE: Duration = Duration::from_secs(10);

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

/// One lab, known by its name.
#[derive(Debug, Clone)]
pub struct Lab {
    name: String,
}

impl Lab {
    /// The lab called `name` (alphanumeric, at most 16 characters).
    pub fn new(name: &str) -> Result<Self, LabError> {
        if name.is_empty() || name.len() > 16 || !name.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(LabError::io(
                format!("lab name {name:?} must be 1-16 letters or digits"),
                std::io::Error::from(std::io::ErrorKind::InvalidInput),
            ));
        }
        Ok(Lab {
            name: name.to_string(),
        })
    }

    /// Prefix of every namespace of this lab.
    pub fn prefix(&self) -> String {
        format!("podnet-{}-", self.name)
    }

    /// The node's namespace name.
    pub fn node_ns(&self) -> String {
        format!("{}node", self.prefix())
    }

    /// The CNI network name of this lab.
    pub fn network(&self) -> String {
        format!("podnet-{}", self.name)
    }

    /// Where this lab keeps its state.
    pub fn state_dir(&self) -> PathBuf {
        Path::new(STATE_ROOT).join(&self.name)
    }

    /// Namespaces in `/run/netns` that belong to this lab.
    pub fn namespaces(&self) -> Vec<String> {
        let prefix = self.prefix();
        Netns::list_named()
            .into_iter()
            .filter(|n| n.starts_with(&prefix))
            .collect()
    }

    /// The CNI network config the lab hands the plugin.
    pub fn network_config(&self, model: Model) -> String {
        let model = match model {
            Model::Bridge => "bridge",
            Model::Routed => "routed",
        };
        serde_json::json!({
            "cniVersion": "1.1.0",
            "name": self.network(),
            "type": "podnet",
            "model": model,
            "mtu": 1500,
            "ipMasq": true,
            "clusterCIDRs": ["10.244.0.0/16", "fd00:10:244::/56"],
            "ipam": {
                "ranges": [[{"subnet": "10.244.1.0/24"}], [{"subnet": "fd00:10:244:1::/64"}]],
                "dataDir": self.state_dir().join("ipam"),
            }
        })
        .to_string()
    }

    /// Builds the lab and prints its connectivity matrix; cleans up if anything fails.
    pub fn up(&self, opts: &LabOptions) -> Result<(), LabError> {
        let existing = self.namespaces();
        if !existing.is_empty() || state::exists(self) {
            return Err(LabError::AlreadyUp(existing.join(", ")));
        }
        let state = match self.build(opts) {
            Ok(state) => state,
            Err(e) => {
                let _ = self.remove_all();
                return Err(e);
            }
        };
        self.print_pods(&state);
        match matrix::print(self, &state)? {
            0 => {
                println!(
                    "\nlab is up: `podnet lab status` to re-check, `podnet lab down` to remove it"
                );
                Ok(())
            }
            n => Err(LabError::Unreachable(n)),
        }
    }

    fn build(&self, opts: &LabOptions) -> Result<LabState, LabError> {
        let mut state = LabState {
            model: opts.model,
            plugin: opts.plugin.clone(),
            pods: Vec::new(),
        };
        state::write(self, &state)?;
        let node = Netns::create_named(&self.node_ns())?;
        let mut h = RouteHandle::in_netns(&node)?;
        let lo = h.link_by_name("lo")?.ok_or(LabError::NotRunning)?;
        h.replace_address(
            lo.index,
            IpNet::new(NODE_IP.parse().expect("static"), 32).expect("static"),
        )?;
        start_echo(&node, &opts.plugin)?;
        let config = self.network_config(opts.model);
        for i in 1..=opts.pods {
            let name = format!("{}pod{i}", self.prefix());
            let pod_ns = Netns::create_named(&name)?;
            let netns_path = format!("/run/netns/{name}");
            let call = CniCall {
                plugin: &opts.plugin,
                command: "ADD",
                container_id: &name,
                netns_path: &netns_path,
                ifname: "eth0",
                config: &config,
            };
            let ips = result_ips(&run_cni(&node, &call)?);
            start_echo(&pod_ns, &opts.plugin)?;
            state.pods.push(LabPod { name, ips });
            state::write(self, &state)?;
        }
        Ok(state)
    }

    fn print_pods(&self, state: &LabState) {
        println!(
            "node {}: {NODE_IP} (model {:?})",
            self.node_ns(),
            state.model
        );
        for p in &state.pods {
            let ips: Vec<String> = p.ips.iter().map(|i| i.to_string()).collect();
            println!("  pod {}: {}", p.name, ips.join(", "));
        }
        println!();
    }

    /// Prints the lab's pods and re-runs the connectivity matrix.
    pub fn status(&self) -> Result<(), LabError> {
        let state = state::read(self)?;
        self.print_pods(&state);
        match matrix::print(self, &state)? {
            0 => Ok(()),
            n => Err(LabError::Unreachable(n)),
        }
    }

    /// Removes everything the lab made: pods (through CNI DEL), processes, namespaces, state.
    pub fn down(&self) -> Result<(), LabError> {
        let removed = self.remove_all()?;
        println!("removed {removed} lab namespaces");
        Ok(())
    }

    /// Works from whatever is left, so it also cleans up after a crashed `up`.
    fn remove_all(&self) -> Result<usize, LabError> {
        let names = self.namespaces();
        let node_ns = self.node_ns();
        if let (Ok(state), Ok(node)) = (state::read(self), Netns::open_named(&node_ns)) {
            let config = self.network_config(state.model);
            for name in names.iter().filter(|n| **n != node_ns) {
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
                podnet_kernel::netns::kill_processes_in(&ns);
            }
            Netns::remove_named(name)?;
        }
        state::remove(self)?;
        Ok(names.len())
    }
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
