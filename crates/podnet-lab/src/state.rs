//! The lab's record of what it built, in its state directory.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use podnet_manifest::{Container, PodManifest};
use podnet_policy::{ContainerPort, ObjectName, Pod};
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
    /// Its network namespace's name, also its CNI container ID (unique in the lab).
    pub name: String,
    /// Kubernetes namespace.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Kubernetes name (unique in its namespace).
    #[serde(default)]
    pub pod: String,
    /// The node it runs on.
    pub node: String,
    /// Addresses the plugin gave it.
    pub ips: Vec<IpAddr>,
    /// Its labels (service selectors and policies match them).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Whether it is ready (an endpoint of its services); `lab set-ready` changes it.
    #[serde(default = "ready_default")]
    pub ready: bool,
    /// Its containers' ports (named ports of services and policies).
    #[serde(default)]
    pub ports: Vec<ContainerPort>,
    /// Its containers (commands run in its network namespace).
    #[serde(default)]
    pub containers: Vec<Container>,
}

fn default_namespace() -> String {
    "default".into()
}

impl LabPod {
    /// `namespace/name`.
    pub fn key(&self) -> ObjectName {
        ObjectName::new(&self.namespace, &self.pod)
    }

    /// The pod as the cluster store holds it.
    pub fn record(&self) -> Pod {
        Pod {
            namespace: self.namespace.clone(),
            name: self.pod.clone(),
            node: self.node.clone(),
            ips: self.ips.clone(),
            labels: self.labels.clone(),
            ports: self.ports.clone(),
            ready: self.ready,
        }
    }

    /// The pod as a manifest (`lab get -o yaml`).
    pub fn manifest(&self) -> PodManifest {
        PodManifest {
            pod: self.record(),
            containers: self.containers.clone(),
        }
    }

    /// Whether it runs the lab's echo server on the echo port (the matrix probes those).
    pub fn serves_echo(&self) -> bool {
        self.containers.iter().all(|c| c.command.is_empty())
            && self
                .ports
                .iter()
                .any(|p| p.container_port == u32::from(crate::echo::ECHO_PORT))
    }

    /// The path of its network namespace.
    pub fn netns_path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }
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
    /// Hosts outside the cluster, behind the router.
    #[serde(default)]
    pub hosts: Vec<LabHost>,
}

/// A host outside the cluster, behind the lab router.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabHost {
    /// Its name.
    pub name: String,
    /// Its network namespace.
    pub ns: String,
    /// Its address.
    pub address: IpAddr,
}

impl LabState {
    /// The node called `name`.
    pub fn node(&self, name: &str) -> Result<&LabNode, LabError> {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .ok_or_else(|| LabError::Spec(format!("the lab has no node {name}")))
    }

    /// The pod `name` of `namespace` (or the pod whose network namespace is `name`).
    pub fn pod(&self, namespace: &str, name: &str) -> Result<&LabPod, LabError> {
        self.pods
            .iter()
            .find(|p| (p.namespace == namespace && p.pod == name) || p.name == name)
            .ok_or_else(|| LabError::Spec(format!("the lab has no pod {namespace}/{name}")))
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
