//! BGP in Calico's model: every node runs BIRD, which the agent configures
//! from the cluster store and talks to over BIRD's control socket.
//!
//! - [`control`]: a client of BIRD's control socket (the line protocol
//!   `birdc` speaks; no `birdc` subprocess): `configure check`,
//!   `configure`, `show protocols`;
//! - [`config`]: one node's `bird.conf`, rendered from the cluster (pure);
//! - [`topology`]: who peers with whom, from the cluster (pure);
//! - [`services`]: which service addresses a node advertises (pure).

pub mod config;
pub mod control;
pub mod services;
pub mod topology;

/// The control socket's file name in a node's BIRD directory.
pub const SOCKET_FILE: &str = "bird.ctl";

pub use config::{render, NodeBgp, Peer, PeerKind};
pub use control::{BgpError, BirdControl, Protocol, Reply};
pub use services::{service_routes, ServiceAddresses, ServiceBook, ServiceRoutes};
pub use topology::{node_bgp, TopologyError};
