//! NetworkPolicy, and the pods and namespaces it selects, as stored.
//!
//! Field names follow Kubernetes (`podSelector`, `namespaceSelector`,
//! `ipBlock`, `endPort`, `policyTypes`), so a stored policy reads like the
//! manifest it came from. Port numbers are `u32` so that `70000` reaches
//! [`crate::validate`] and is reported as out of range, not as a parse error.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
pub use podnet_services::Protocol;
use serde::{Deserialize, Serialize};

use crate::selector::{LabelSelector, Labels};

/// The label every namespace carries with its own name, as the API server sets it.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// `namespace/name` of a namespaced object (pods, policies): the same key services use.
pub use podnet_services::ServiceName as ObjectName;

/// A namespace: a name and labels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Namespace {
    /// Name.
    pub name: String,
    /// Labels as given (without the automatic name label).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: Labels,
}

impl Namespace {
    /// The labels selectors see: the given ones plus
    /// `kubernetes.io/metadata.name: NAME`, which the API server adds to every namespace.
    pub fn effective_labels(&self) -> Labels {
        let mut l = self.labels.clone();
        l.insert(NAMESPACE_NAME_LABEL.into(), self.name.clone());
        l
    }
}

/// A named container port: what a policy's named port resolves to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort {
    /// The port's name (may be empty: then only its number counts).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The port number.
    pub container_port: u32,
    /// Protocol (default TCP).
    #[serde(default)]
    pub protocol: Protocol,
}

/// A pod as policies see it: where it runs, its addresses, labels and named ports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pod {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The node it runs on.
    pub node: String,
    /// Its addresses (one per family).
    #[serde(default)]
    pub ips: Vec<IpAddr>,
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: Labels,
    /// Container ports (named ports resolve against these).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ContainerPort>,
    /// Ready (an endpoint of its services).
    #[serde(default = "default_true")]
    pub ready: bool,
}

fn default_true() -> bool {
    true
}

impl Pod {
    /// `namespace/name`.
    pub fn key(&self) -> ObjectName {
        ObjectName::new(&self.namespace, &self.name)
    }

    /// The number a named port means on this pod, for `protocol`.
    pub fn named_port(&self, name: &str, protocol: Protocol) -> Option<u16> {
        self.ports
            .iter()
            .find(|p| p.name == name && p.protocol == protocol)
            .and_then(|p| u16::try_from(p.container_port).ok())
    }
}

/// Which direction a policy isolates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PolicyType {
    /// Traffic to the selected pods.
    Ingress,
    /// Traffic from the selected pods.
    Egress,
}

/// A policy port: a number, or a container port's name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PortRef {
    /// A port number.
    Number(u32),
    /// A named container port of the destination pod.
    Name(String),
}

impl fmt::Display for PortRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortRef::Number(n) => write!(f, "{n}"),
            PortRef::Name(s) => f.write_str(s),
        }
    }
}

/// One entry of a rule's `ports`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyPort {
    /// Protocol (default TCP).
    #[serde(default)]
    pub protocol: Protocol,
    /// The port; absent means every port of the protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortRef>,
    /// Last port of a range starting at the numeric `port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_port: Option<u32>,
}

/// An address range, less some sub-ranges.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct IpBlock {
    /// The range.
    pub cidr: IpNet,
    /// Sub-ranges left out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub except: Vec<IpNet>,
}

impl IpBlock {
    /// Whether `ip` is inside the block and outside every except.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.cidr.contains(&ip) && !self.except.iter().any(|e| e.contains(&ip))
    }
}

/// One peer of a rule (`from` or `to` entry).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Peer {
    /// Pods (in the policy's namespace, unless `namespaceSelector` is set too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,
    /// Namespaces whose pods (all, or those `podSelector` picks) are peers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// Addresses (alone: neither selector may be set with it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_block: Option<IpBlock>,
}

/// An ingress rule (`from`, `ports`) or an egress rule (`to`, `ports`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRule {
    /// Peers; empty means every source (ingress) or destination (egress).
    #[serde(
        default,
        alias = "from",
        alias = "to",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub peers: Vec<Peer>,
    /// Ports; empty means every port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PolicyPort>,
}

/// A NetworkPolicy's spec.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicySpec {
    /// The pods (of the policy's namespace) it applies to; `{}` selects all.
    pub pod_selector: LabelSelector,
    /// Directions it isolates, defaulted as the API server does (see [`PolicySpec::defaulted`]).
    #[serde(default)]
    pub policy_types: Vec<PolicyType>,
    /// Ingress rules (the union is allowed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<PolicyRule>,
    /// Egress rules (the union is allowed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<PolicyRule>,
}

impl PolicySpec {
    /// `policyTypes` filled in when absent, as the API server does: Ingress
    /// always, Egress when the policy has egress rules.
    pub fn defaulted(mut self) -> Self {
        if self.policy_types.is_empty() {
            self.policy_types.push(PolicyType::Ingress);
            if !self.egress.is_empty() {
                self.policy_types.push(PolicyType::Egress);
            }
        }
        self
    }

    /// Whether the policy isolates `direction`.
    pub fn isolates(&self, direction: PolicyType) -> bool {
        self.policy_types.contains(&direction)
    }

    /// The rules of one direction.
    pub fn rules(&self, direction: PolicyType) -> &[PolicyRule] {
        match direction {
            PolicyType::Ingress => &self.ingress,
            PolicyType::Egress => &self.egress,
        }
    }
}

/// A NetworkPolicy (`networking.k8s.io/v1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicy {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The spec, with `policyTypes` defaulted.
    pub spec: PolicySpec,
}

impl NetworkPolicy {
    /// `namespace/name`.
    pub fn key(&self) -> ObjectName {
        ObjectName::new(&self.namespace, &self.name)
    }

    /// Whether the policy applies to `pod`: same namespace, and its `podSelector` matches.
    pub fn selects(&self, pod: &Pod) -> bool {
        pod.namespace == self.namespace && self.spec.pod_selector.matches(&pod.labels)
    }
}
