//! BGP in the lab (backend `bgp`): the router's sessions as `BGPPeer`
//! objects, and what nodes and router say about their sessions and routes.

use std::fmt::Write as _;

use podnet_bgp::BirdControl;
use podnet_cluster::BgpPeer;
use podnet_kernel::rtnl::RTPROT_BIRD;
use podnet_kernel::{Netns, RouteHandle};

use crate::error::LabError;
use crate::fabric::router_address;
use crate::frr::{router_as, vtysh};
use crate::spec::RouterBgp;
use crate::state::LabState;
use crate::Lab;

impl Lab {
    /// Node `node`'s BIRD directory (bird.conf, bird.ctl, bird.log).
    pub fn bird_dir(&self, node: &str) -> std::path::PathBuf {
        self.node_dir(node).join("bird")
    }

    /// Makes the router's `BGPPeer` objects match the nodes: one per
    /// segment, for the nodes on it, at the router's address there. Nodes
    /// whose peer did not change keep their sessions.
    pub(crate) fn sync_router_peers(&self, state: &LabState) -> Result<(), LabError> {
        let Some(role) = state.spec.router_bgp() else {
            return Ok(());
        };
        let peers = router_peers(state, role);
        self.with_store(state.spec.store, move |s| {
            for p in &peers {
                if p.nodes.is_empty() {
                    s.delete_bgp_peer(&p.name)?;
                } else if s.bgp_peer(&p.name)?.as_ref() != Some(p) {
                    s.put_bgp_peer(p)?;
                }
            }
            Ok(())
        })
    }

    /// Node `node`'s BIRD control socket.
    fn bird_socket(&self, node: &str) -> std::path::PathBuf {
        self.bird_dir(node).join(podnet_bgp::SOCKET_FILE)
    }

    /// Sessions and routes of `node` (every node when `None`) from BIRD's
    /// socket, and the router's from FRR's `vtysh`.
    pub fn bgp_report(&self, node: Option<&str>) -> Result<String, LabError> {
        let state = self.state()?;
        let nodes = match node {
            Some(name) => vec![state.node(name)?.clone()],
            None => state.nodes.clone(),
        };
        let mut out = String::new();
        for n in &nodes {
            let _ = writeln!(out, "== {} ({}, BIRD)", n.name, n.address);
            match self.bird_text(&n.name, &["show protocols", "show route"]) {
                Ok(text) => out += &text,
                Err(e) => {
                    let _ = writeln!(out, "  {e}");
                }
            }
        }
        if node.is_none() && state.spec.router_bgp().is_some() {
            let _ = writeln!(out, "== router (FRR)");
            for command in ["show bgp summary", "show ip route bgp"] {
                out += &vtysh(self, command)?;
            }
        }
        Ok(out)
    }

    fn bird_text(&self, node: &str, commands: &[&str]) -> Result<String, LabError> {
        let bird_error = |source| LabError::Bird {
            node: node.to_string(),
            source,
        };
        let mut bird = BirdControl::connect(&self.bird_socket(node)).map_err(bird_error)?;
        let mut out = String::new();
        for command in commands {
            for line in bird.text(command).map_err(bird_error)?.lines() {
                let _ = writeln!(out, "  {line}");
            }
        }
        Ok(out)
    }

    /// Two lines per node: its BGP sessions and their states, and the routes
    /// BIRD installed in its kernel (for `lab check`).
    pub(crate) fn bgp_summary(&self, state: &LabState) -> String {
        let mut out = String::new();
        for n in &state.nodes {
            let sessions = BirdControl::connect(&self.bird_socket(&n.name))
                .and_then(|mut b| b.show_protocols());
            let line = match sessions {
                Ok(list) => list
                    .iter()
                    .filter(|p| p.proto == "BGP")
                    .map(|p| format!("{} {}", p.name, p.info))
                    .collect::<Vec<_>>()
                    .join(", "),
                Err(e) => format!("BIRD unreachable: {e}"),
            };
            let _ = writeln!(out, "  {} BGP: {line}", n.name);
            let _ = writeln!(out, "  {} learned: {}", n.name, learned_routes(&n.ns));
        }
        out
    }
}

/// The routes BIRD installed (kernel protocol 12) in namespace `ns`, as
/// `PREFIX via HOP`, or why they could not be read.
fn learned_routes(ns: &str) -> String {
    let routes = Netns::open_named(ns).and_then(|ns| RouteHandle::in_netns(&ns)?.routes());
    match routes {
        Ok(all) => {
            let shown: Vec<String> = all
                .iter()
                .filter(|r| r.protocol == RTPROT_BIRD)
                .map(|r| match r.gateway {
                    Some(hop) => format!("{} via {hop}", r.dst),
                    None => r.dst.to_string(),
                })
                .collect();
            if shown.is_empty() {
                "none".into()
            } else {
                shown.join(", ")
            }
        }
        Err(e) => format!("routes unreadable: {e}"),
    }
}

/// The router's peers: one per segment, naming the nodes on it.
fn router_peers(state: &LabState, role: RouterBgp) -> Vec<BgpPeer> {
    let prefix = if role == RouterBgp::Tor {
        "tor"
    } else {
        "router"
    };
    (1..=state.spec.fabric.segments.len())
        .map(|s| BgpPeer {
            name: format!("{prefix}-s{s}"),
            peer_ip: router_address(s),
            as_number: router_as(role),
            nodes: state
                .nodes
                .iter()
                .filter(|n| n.segment == s)
                .map(|n| n.name.clone())
                .collect(),
        })
        .collect()
}
