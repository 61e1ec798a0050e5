//! The lab: a whole multi-node cluster built from network namespaces on this machine.
//!
//! `up` builds a fabric (L2 segments, each a bridge in its own namespace,
//! joined by a router namespace), plugs node namespaces into it, starts the
//! cluster store (embedded, or a real etcd in a control-plane namespace) and
//! one `podnet agent` process per node, then creates pods on every node by
//! running the real CNI plugin inside the node with the config the node's
//! agent wrote, exactly as a container runtime would. `check` prints the
//! connectivity matrix. Lab namespaces have no route out of the machine.
//!
//! Several labs can coexist: each has a name (default `lab`) that prefixes
//! everything it makes (`podnet-NAME-node1`, `podnet-NAME-seg1`, ...).

mod bgp;
mod control;
pub mod echo;
pub mod error;
pub mod fabric;
pub mod frr;
pub mod get;
pub mod graph;
mod hosts;
pub mod matrix;
pub mod objects;
mod pods;
pub mod runtime;
pub mod services;
pub mod spec;
mod state;
pub mod trace;

use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
pub use podnet_cluster::Backend;
pub use podnet_dataplane::Model;
use podnet_kernel::rtnl::{RTPROT_BIRD, RTPROT_PODNET_NODES};
use podnet_kernel::{Netns, RouteHandle};

pub use control::{drop_log, ETCD_PORT, METRICS_ADDR};
pub use error::LabError;
pub use spec::{FabricSpec, LabSpec, SegmentSpec, StoreKind};
pub use state::{LabHost, LabNode, LabPod, LabState};

/// Root of the labs' state directories (store, CNI configs, IPAM data, logs).
pub const STATE_ROOT: &str = "/run/podnet-lab";
/// The default lab name.
pub const DEFAULT_NAME: &str = "lab";

/// One lab, known by its name.
#[derive(Debug, Clone)]
pub struct Lab {
    name: String,
}

impl Lab {
    /// The lab called `name` (alphanumeric, at most 16 characters).
    pub fn new(name: &str) -> Result<Self, LabError> {
        if name.is_empty() || name.len() > 16 || !name.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(LabError::Spec(format!(
                "lab name {name:?} must be 1-16 letters or digits"
            )));
        }
        Ok(Lab {
            name: name.to_string(),
        })
    }

    /// Prefix of every namespace of this lab.
    pub fn prefix(&self) -> String {
        format!("podnet-{}-", self.name)
    }

    /// Namespace of node `node`.
    pub fn node_ns(&self, node: &str) -> String {
        format!("{}{node}", self.prefix())
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

    /// The lab's recorded state.
    pub fn state(&self) -> Result<LabState, LabError> {
        state::read(self)
    }

    /// Builds the lab and prints its connectivity matrix; removes everything if building fails.
    pub fn up(&self, spec: &LabSpec, plugin: &Path) -> Result<(), LabError> {
        spec.validate()?;
        let existing = self.namespaces();
        if !existing.is_empty() || state::exists(self) {
            return Err(LabError::AlreadyUp(existing.join(", ")));
        }
        if let Err(e) = self.build(spec, plugin) {
            if let Err(cleanup) = self.remove_all() {
                tracing::warn!(target: "podnet-lab",
                    "removing the half-built lab failed too: {cleanup}; `podnet lab down` retries");
            }
            return Err(e);
        }
        if let Err(e) = self.wait_converged(CONVERGE_DEADLINE) {
            // Not fatal here: the matrix below shows what does not work.
            tracing::warn!(target: "podnet-lab", "{e}");
        }
        self.check()?;
        println!("\nlab is up: `podnet lab check` to re-check, `podnet lab down` to remove it");
        Ok(())
    }

    fn build(&self, spec: &LabSpec, plugin: &Path) -> Result<(), LabError> {
        let mut state = LabState {
            spec: spec.clone(),
            plugin: plugin.to_path_buf(),
            nodes: Vec::new(),
            pods: Vec::new(),
            hosts: Vec::new(),
        };
        state::write(self, &state)?;
        control::write_cluster_file(self, &state)?;
        fabric::build(
            self,
            spec.fabric.segments.len(),
            spec.has_router(),
            spec.fabric_v6(),
            spec.fabric.mtu,
        )?;
        hosts::build(self, &mut state)?;
        if let Some(role) = spec.router_bgp() {
            frr::start(self, role, spec.fabric.segments.len())?;
        }
        control::start_store(self, &state)?;
        for (s, seg) in spec.fabric.segments.iter().enumerate() {
            for _ in 0..seg.nodes {
                self.join_node(&mut state, s + 1)?;
            }
        }
        self.sync_router_peers(&state)?;
        hosts::sync_router_routes(self)?;
        for node in state.nodes.clone() {
            pods::create(self, &mut state, &node.name, spec.pods_per_node)?;
        }
        for svc in &spec.services {
            self.apply_service(svc.clone())?;
        }
        Ok(())
    }

    /// Adds a node on segment `segment` (1-based) with its agent, and no pods
    /// yet; returns its name. The node registers and gets its block.
    pub fn add_node(&self, segment: usize) -> Result<String, LabError> {
        let mut state = state::read(self)?;
        if segment == 0 || segment > state.spec.fabric.segments.len() {
            return Err(LabError::Spec(format!("the lab has no segment {segment}")));
        }
        let name = self.join_node(&mut state, segment)?;
        self.sync_router_peers(&state)?;
        hosts::sync_router_routes(self)?;
        Ok(name)
    }

    fn join_node(&self, state: &mut LabState, segment: usize) -> Result<String, LabError> {
        let index = state
            .nodes
            .iter()
            .filter_map(|n| n.name.trim_start_matches("node").parse::<usize>().ok())
            .max()
            .unwrap_or(0)
            + 1;
        let name = format!("node{index}");
        let node = LabNode {
            ns: self.node_ns(&name),
            name: name.clone(),
            segment,
            address: fabric::segment_address(segment, index as u8),
        };
        let netns = Netns::create_named(&node.ns)?;
        state.nodes.push(node.clone());
        state::write(self, state)?;
        let router = state.spec.has_router();
        let mut link = fabric::Plug::segment(self, segment, node.address, router);
        if state.spec.fabric_v6() {
            link = link.with_v6(segment, index as u8, router);
        }
        fabric::plug(&netns, &link, state.spec.fabric.mtu)?;
        control::start_agent(self, state, &node)?;
        Ok(name)
    }

    /// Creates `count` more pods on node `node`.
    pub fn add_pods(&self, node: &str, count: usize) -> Result<Vec<LabPod>, LabError> {
        let mut state = state::read(self)?;
        let made = pods::create(self, &mut state, node, count)?;
        self.sync_endpoints()?;
        Ok(made)
    }

    /// Removes node `node`: its pods (CNI DEL), its agent, its namespace, and
    /// its record in the cluster store, so that every other node forgets it.
    pub fn remove_node(&self, node: &str) -> Result<(), LabError> {
        let mut state = state::read(self)?;
        let n = state.node(node)?.clone();
        pods::delete_on(self, &mut state, node)?;
        state.nodes.retain(|x| x.name != node);
        state::write(self, &state)?;
        // Out of the router's peers first (a peer names registered nodes only).
        self.sync_router_peers(&state)?;
        let name = n.name.clone();
        self.with_store(state.spec.store, move |s| Ok(s.remove_node(&name)?))?;
        if let Ok(ns) = Netns::open_named(&n.ns) {
            if state.spec.backend == Backend::Bgp {
                // The agent sees its node removed and stops BIRD, which tells
                // its peers (a Cease) before anything is killed.
                control::wait_for_exit(&ns, STOP_DEADLINE);
            }
            podnet_kernel::netns::kill_processes_in(&ns);
        }
        Netns::remove_named(&n.ns)?;
        hosts::sync_router_routes(self)?;
        self.sync_endpoints()
    }

    /// Kills node `node`'s agent (SIGKILL) and starts a new one.
    pub fn restart_agent(&self, node: &str) -> Result<(), LabError> {
        self.stop_agent(node)?;
        self.start_agent(node)
    }

    /// Kills node `node`'s agent (SIGKILL); the node's datapath stays as it is.
    pub fn stop_agent(&self, node: &str) -> Result<(), LabError> {
        let state = state::read(self)?;
        // The agent and, with BGP, BIRD run in a node's namespace (echo
        // servers run in pods); BIRD outlives its agent, as on a real node.
        let ns = Netns::open_named(&state.node(node)?.ns)?;
        podnet_kernel::netns::kill_selected_in(&ns, |comm| comm != "bird");
        Ok(())
    }

    /// Starts node `node`'s agent and waits for it to write its CNI config.
    pub fn start_agent(&self, node: &str) -> Result<(), LabError> {
        let state = state::read(self)?;
        control::start_agent(self, &state, state.node(node)?)
    }

    /// Kills the lab's etcd server (a store outage); its data stays.
    pub fn stop_etcd(&self) -> Result<(), LabError> {
        podnet_kernel::netns::kill_processes_in(&Netns::open_named(&self.control_ns())?);
        Ok(())
    }

    /// Starts the lab's etcd server again on its data.
    pub fn start_etcd(&self) -> Result<(), LabError> {
        control::start_etcd(self, &Netns::open_named(&self.control_ns())?)
    }

    /// Waits until every node holds an agent route to every other node's
    /// blocks, as the store lists them.
    pub fn wait_converged(&self, deadline: Duration) -> Result<(), LabError> {
        let state = state::read(self)?;
        let view = self.with_store(state.spec.store, |s| Ok(s.snapshot()?))?;
        let mut missing = String::new();
        let converged = |missing: &mut String| -> bool {
            for n in &state.nodes {
                let Ok(ns) = Netns::open_named(&n.ns) else {
                    return false;
                };
                let Ok(routes) = RouteHandle::in_netns(&ns).and_then(|mut h| h.routes()) else {
                    return false;
                };
                // The agent's routes, or with BGP the ones BIRD learned.
                let have: Vec<IpNet> = routes
                    .iter()
                    .filter(|r| r.protocol == RTPROT_PODNET_NODES || r.protocol == RTPROT_BIRD)
                    .filter(|r| !r.blackhole)
                    .map(|r| r.dst)
                    .collect();
                let remote = view.nodes.iter().filter(|r| r.name != n.name);
                for block in remote.flat_map(|r| r.pod_cidrs.iter()) {
                    if !have.contains(block) {
                        *missing = format!("{} has no route to {block}", n.name);
                        return false;
                    }
                }
            }
            if state.spec.router_bgp().is_some() {
                // The router carries traffic between segments: it must
                // have learned every block too.
                let Ok(routes) = Netns::open_named(&self.router_ns())
                    .and_then(|ns| RouteHandle::in_netns(&ns)?.routes())
                else {
                    return false;
                };
                for block in view.nodes.iter().flat_map(|r| r.pod_cidrs.iter()) {
                    if !routes.iter().any(|r| r.dst == *block) {
                        *missing = format!("the router has no route to {block}");
                        return false;
                    }
                }
            }
            true
        };
        control::wait_for(deadline, "the agents to converge", || {
            converged(&mut missing)
        })
        .map_err(|e| LabError::Timeout(format!("{e} ({missing})")))
    }

    /// Prints nodes (block, liveness) and the connectivity matrix; an error if any probe failed.
    pub fn check(&self) -> Result<(), LabError> {
        let state = state::read(self)?;
        let view = self.with_store(state.spec.store, |s| Ok(s.snapshot()?))?;
        println!(
            "cluster: backend {:?}, model {:?}, store {:?}, fabric mtu {}",
            state.spec.backend, state.spec.model, state.spec.store, state.spec.fabric.mtu
        );
        for n in &state.nodes {
            let record = view.nodes.iter().find(|x| x.name == n.name);
            let blocks: Vec<String> = record
                .map(|r| r.pod_cidrs.iter().map(IpNet::to_string).collect())
                .unwrap_or_default();
            let alive = if view.alive.contains(&n.name) {
                "alive"
            } else {
                "NOT ALIVE"
            };
            let pods: Vec<String> = state
                .pods
                .iter()
                .filter(|p| p.node == n.name)
                .map(|p| p.ips.first().map(|i| i.to_string()).unwrap_or_default())
                .collect();
            println!(
                "  {} (segment {}, {}): block {}, {alive}, pods {}",
                n.name,
                n.segment,
                n.address,
                blocks.join(" "),
                pods.join(" ")
            );
        }
        if state.spec.backend == Backend::Bgp {
            print!("{}", self.bgp_summary(&state));
        }
        println!();
        let world = self.with_store(state.spec.store, |s| Ok(s.policy_snapshot()?.world))?;
        let failures = matrix::print(&state, &world)? + self.print_services()?;
        match failures {
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
        if let Ok(mut state) = state::read(self) {
            for node in state.nodes.clone() {
                if let Err(e) = pods::delete_on(self, &mut state, &node.name) {
                    tracing::warn!(target: "podnet-lab", "{e}");
                }
            }
        }
        let names = self.namespaces();
        for name in &names {
            if let Ok(ns) = Netns::open_named(name) {
                podnet_kernel::netns::kill_processes_in(&ns);
            }
        }
        for name in &names {
            Netns::remove_named(name)?;
        }
        state::remove(self)?;
        Ok(names.len())
    }
}

/// How long a removed node's agent may take to stop BIRD and exit.
const STOP_DEADLINE: Duration = Duration::from_secs(5);

/// How long `up` waits for every node to route to every other node.
const CONVERGE_DEADLINE: Duration = Duration::from_secs(10);

/// How long an echo server may take to start listening.
pub(crate) const READY_DEADLINE: Duration = Duration::from_secs(10);
