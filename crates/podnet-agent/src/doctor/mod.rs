//! `podnet doctor`: every invariant of a node checked against the cluster
//! state, each violation reported as the exact missing, extra or wrong
//! object.
//!
//! The cross-node datapath is checked with the agent's own planner
//! ([`crate::plan`]): doctor lists exactly what the agent's next reconcile
//! would change. The rest (sysctls, pods and their IPAM allocations, host
//! routes, masquerade, services, policies) compares what the kernel and the
//! IPAM hold with what the node's CNI config and the store say.

mod node;
mod tables;

use std::fmt;
use std::path::PathBuf;

use podnet_cluster::{ClusterSpec, Node};
use podnet_kernel::nftables::NftHandle;
use podnet_kernel::Netns;
use serde::Serialize;

use crate::cniconf::{read_conflist, WrittenConf};
use crate::error::{kernel, AgentError};
use crate::plan::ObservedDatapath;
use crate::underlay::Underlay;

/// Where doctor finds the node's cluster and CNI config.
#[derive(Debug, Clone)]
pub struct DoctorConfig {
    /// The node's name in the cluster.
    pub node: String,
    /// Store URL, as the agent's `--store`.
    pub store: podnet_store::StoreConfig,
    /// Directory of the CNI config the agent writes, as its `--cni-conf-dir`.
    pub cni_conf_dir: PathBuf,
    /// The agent runs the service proxy: check the services table.
    pub services: bool,
    /// The agent enforces NetworkPolicy: check the policy table.
    pub policies: bool,
}

/// How an object differs from what it should be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProblemKind {
    /// Should exist and does not.
    Missing,
    /// Exists and should not.
    Extra,
    /// Exists with the wrong value.
    Wrong,
}

/// One violation: the object and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Missing, extra or wrong.
    pub kind: ProblemKind,
    /// The object, in the syntax of the tool that shows it (`ip`, `nft`, `sysctl`).
    pub object: String,
    /// Why, when the object alone does not say.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// One invariant and what violates it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Short name (`datapath`, `sysctls`, ...).
    pub name: &'static str,
    /// What was checked, in a few words (counts).
    pub summary: String,
    /// Violations; none when the invariant holds.
    pub problems: Vec<Problem>,
}

impl Check {
    fn new(name: &'static str, summary: impl Into<String>, problems: Vec<Problem>) -> Self {
        Check {
            name,
            summary: summary.into(),
            problems,
        }
    }
}

/// Every check of one node.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DoctorReport {
    /// Node name.
    pub node: String,
    /// Node address, underlay interface, backend and model, in a few words.
    pub description: String,
    /// The checks, in the order they ran.
    pub checks: Vec<Check>,
    /// What the agent's next reconcile would do to the datapath, in order.
    pub datapath_plan: Vec<String>,
    /// The datapath as observed, for recording planner test cases.
    #[serde(skip)]
    pub observed: ObservedDatapath,
    /// The inputs of the datapath plan, for recording planner test cases.
    #[serde(skip)]
    pub inputs: Option<PlanInputs>,
}

/// What the datapath planner was given (a recorded state's inputs).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanInputs {
    /// The cluster spec.
    pub cluster: ClusterSpec,
    /// This node's name.
    pub node: String,
    /// Every node of the store.
    pub nodes: Vec<Node>,
    /// The node's underlay.
    pub underlay: Underlay,
    /// Service CIDRs routed.
    pub services: bool,
}

impl DoctorReport {
    /// Number of violations over every check.
    pub fn problems(&self) -> usize {
        self.checks.iter().map(|c| c.problems.len()).sum()
    }

    /// The recorded state of the datapath planner (`tests/plans/*.json`
    /// format), with the operations doctor found as the expected ones.
    pub fn recorded_state(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(&self.inputs).unwrap_or_default();
        v["description"] = format!("recorded by podnet doctor on {}", self.node).into();
        v["observed"] = serde_json::to_value(&self.observed).unwrap_or_default();
        v["ops"] = self.datapath_plan.clone().into();
        v
    }
}

impl fmt::Display for DoctorReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "node {}: {}", self.node, self.description)?;
        for c in &self.checks {
            let status = if c.problems.is_empty() { "ok" } else { "FAIL" };
            writeln!(f, "  {status:<5} {:<11} {}", c.name, c.summary)?;
            for p in &c.problems {
                let kind = match p.kind {
                    ProblemKind::Missing => "missing",
                    ProblemKind::Extra => "extra",
                    ProblemKind::Wrong => "wrong",
                };
                write!(f, "          {kind:<8} {}", p.object)?;
                if !p.detail.is_empty() {
                    write!(f, "  ({})", p.detail)?;
                }
                writeln!(f)?;
            }
        }
        match self.problems() {
            0 => writeln!(f, "no problems on {}", self.node),
            1 => writeln!(f, "1 problem on {}", self.node),
            n => writeln!(f, "{n} problems on {}", self.node),
        }
    }
}

/// What the store says about the node, read before the kernel is.
struct ClusterView {
    cluster: ClusterSpec,
    node: Node,
    nodes: Vec<Node>,
    conf: WrittenConf,
}

/// Checks the node whose network namespace is `netns` (this one when
/// `None`); the store is read from that namespace too, as its agent does.
pub fn doctor(netns: Option<&Netns>, cfg: &DoctorConfig) -> Result<DoctorReport, AgentError> {
    match netns {
        None => doctor_here(cfg),
        Some(ns) => ns
            .run(|| doctor_here(cfg))
            .map_err(|e| AgentError::inspect("enter the node's network namespace", e))?,
    }
}

fn doctor_here(cfg: &DoctorConfig) -> Result<DoctorReport, AgentError> {
    let store = podnet_store::open(&cfg.store)?;
    let cluster = store
        .cluster()?
        .ok_or(podnet_store::StoreError::NoCluster)?;
    let nodes = store.snapshot()?.nodes;
    let node = nodes
        .iter()
        .find(|n| n.name == cfg.node)
        .cloned()
        .ok_or_else(|| {
            AgentError::inspect(
                format!("node {}", cfg.node),
                format!("not registered in the store {}", cfg.store),
            )
        })?;
    let view = ClusterView {
        conf: read_conflist(&cfg.cni_conf_dir)?,
        cluster,
        node,
        nodes,
    };
    let tables = tables::Wanted::read(&store, cfg)?;
    let mut nft = NftHandle::current().map_err(kernel("open nfnetlink"))?;
    let mut report = node::check(&view, cfg, &mut nft)?;
    report
        .checks
        .extend(tables::check(&view, &tables, cfg, &mut nft)?);
    Ok(report)
}
