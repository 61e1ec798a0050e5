//! `podnet.io/v1 BGPPeer`: a BGP peer outside the cluster (a top-of-rack
//! router), with the fields of Calico's `BGPPeer`: `spec.peerIP`,
//! `spec.asNumber`, and `spec.node` (one node) or `spec.nodes` (several);
//! neither: every node peers with it.

use podnet_cluster::BgpPeer;
use serde_json::{json, Value};

use crate::reader::{Findings, Obj};

/// Reads a peer's `spec`.
pub fn spec(path: &str, v: Option<&Value>, name: String, f: &mut Findings) -> BgpPeer {
    let mut o = Obj::new(path, v, f);
    let at_ip = o.at("peerIP");
    let peer_ip = match o.string("peerIP", f) {
        Some(text) => text.parse().unwrap_or_else(|_| {
            f.error(&at_ip, format!("{text:?} is not an IP address"));
            std::net::IpAddr::from([0, 0, 0, 0])
        }),
        None => {
            f.error(&at_ip, "required: the peer's address");
            std::net::IpAddr::from([0, 0, 0, 0])
        }
    };
    let at_as = o.at("asNumber");
    let as_number = o.number("asNumber", f).unwrap_or_else(|| {
        f.error(&at_as, "required: the peer's AS number");
        0
    });
    let mut nodes = o.strings("nodes", f);
    if let Some(node) = o.string("node", f) {
        nodes.insert(0, node);
    }
    o.finish(f);
    let peer = BgpPeer {
        name,
        peer_ip,
        as_number,
        nodes,
    };
    if !f.errors.iter().any(|e| e.path == at_ip || e.path == at_as) {
        if let Err(podnet_cluster::ClusterError::BadBgp { field, message }) =
            peer.validate("metadata.name", path)
        {
            f.error(field, message);
        }
    }
    peer
}

/// The peer as a manifest.
pub fn render(p: &BgpPeer) -> Value {
    let mut spec = json!({"peerIP": p.peer_ip.to_string(), "asNumber": p.as_number});
    if !p.nodes.is_empty() {
        spec["nodes"] = json!(p.nodes);
    }
    json!({
        "apiVersion": "podnet.io/v1",
        "kind": "BGPPeer",
        "metadata": {"name": p.name},
        "spec": spec,
    })
}
