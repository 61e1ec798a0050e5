//! The node agent: one per node.
//!
//! It registers its node in the cluster store (which hands out the node's pod
//! CIDR blocks), writes the node's CNI network config with the MTU derived
//! from the underlay interface, and then keeps the node's cross-node datapath
//! equal to the cluster: read a snapshot, compute the desired routes, VXLAN
//! neighbours and FDB entries, plan the difference from what the kernel holds
//! ([`plan`], pure), apply it, wait for the next change. Restarting it changes nothing that is
//! already right, so pod traffic is not disturbed; what belongs to nodes that
//! left is removed.

mod agent;
pub mod bgp;
mod bgp_sessions;
mod cniconf;
mod datapath;
pub mod doctor;
pub mod drops;
mod error;
mod healthcheck;
mod http;
pub mod metrics;
pub mod plan;
mod policy;
mod resync;
mod services;
mod underlay;
mod watch;

pub use agent::{Agent, AgentConfig};
pub use cniconf::{read_conflist, render_conflist, WrittenConf, CNI_CONF_FILE, NETWORK_NAME};
pub use datapath::{DatapathChanges, NodeDatapath};
pub use error::AgentError;
pub use plan::VXLAN_DEVICE;
pub use underlay::Underlay;
