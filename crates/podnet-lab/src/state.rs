//! The lab's state file: which model, which plugin, which pods.

use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{Lab, LabError, Model};

/// One pod of the lab.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabPod {
    /// Namespace and container ID.
    pub name: String,
    /// Addresses the plugin assigned.
    pub ips: Vec<IpAddr>,
}

/// What a lab is made of.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabState {
    /// Model in use.
    pub model: Model,
    /// The plugin binary.
    pub plugin: PathBuf,
    /// The pods.
    pub pods: Vec<LabPod>,
}

fn path(lab: &Lab) -> PathBuf {
    lab.state_dir().join("lab.json")
}

/// True when the lab has a state file.
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

/// Removes the lab's state directory; absent is fine.
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
