//! The lab's record of what it built, in its state directory.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::spec::LabSpec;
use crate::{Lab, LabError};

/// A node of the lab.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabNode {
    /// Node name in the cluster (`node1`, ...).
    pub name: String,
    /// Its namespace.
    pub ns: String,
    /// The segment it is plugged into (1-based).
    pub segment: usize,
    /// Its fabric address.
    pub address: IpAddr,
}

/// A pod of the lab.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabPod {
    /// Namespace name (also the container ID).
    pub name: String,
    /// The node it runs on.
    pub node: String,
    /// Addresses the plugin gave it.
    pub ips: Vec<IpAddr>,
    /// Its labels (service selectors match them).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Whether it is ready (an endpoint of its services); `lab set-ready` changes it.
    #[serde(default = "ready_default")]
    pub ready: bool,
}

fn ready_default() -> bool {
    true
}

/// Everything a lab is made of.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabState {
    /// What was asked for.
    pub spec: LabSpec,
    /// The podnet binary (plugin, agent, echo server).
    pub plugin: PathBuf,
    /// Nodes, in order of creation.
    pub nodes: Vec<LabNode>,
    /// Pods, in order of creation.
    pub pods: Vec<LabPod>,
}

impl LabState {
    /// The node called `name`.
    pub fn node(&self, name: &str) -> Result<&LabNode, LabError> {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .ok_or_else(|| LabError::Spec(format!("the lab has no node {name}")))
    }
}

fn path(lab: &Lab) -> PathBuf {
    lab.state_dir().join("lab.json")
}

/// Whether the lab has a state file.
pub fn exists(lab: &Lab) -> bool {
    path(lab).exists()
}

/// Reads the lab's state.
pub fn read(lab: &Lab) -> Result<LabState, LabError> {
    let bytes = std::fs::read(path(lab)).map_err(|_| LabError::NotRunning)?;
    serde_json::from_slice(&bytes)
        .map_err(|e| LabError::io("read lab state", std::io::Error::other(e)))
}

/// Writes the lab's state.
pub fn write(lab: &Lab, state: &LabState) -> Result<(), LabError> {
    let dir = lab.state_dir();
    std::fs::create_dir_all(&dir)
        .map_err(|e| LabError::io(format!("create {}", dir.display()), e))?;
    let json = serde_json::to_vec_pretty(state)
        .map_err(|e| LabError::io("encode lab state", std::io::Error::other(e)))?;
    std::fs::write(path(lab), json).map_err(|e| LabError::io("write lab state", e))
}

/// Removes the state directory.
pub fn remove(lab: &Lab) -> Result<(), LabError> {
    match std::fs::remove_dir_all(lab.state_dir()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(LabError::io(
            format!("remove {}", lab.state_dir().display()),
            e,
        )),
    }
}
