//! `BGPPeer` objects: BGP peers outside the cluster, added and removed at
//! run time; every agent renders its sessions from them.

use podnet_cluster::{Backend, BgpPeer, ClusterError};

use crate::cluster::{from_json, to_json, ClusterStore};
use crate::error::StoreError;

/// Where peers live: under the cluster's root, so a node's snapshot has them.
pub(crate) const BGP_PEERS: &str = "/podnet/bgp-peers/";

impl ClusterStore {
    /// Checks a peer against the cluster: a BGP cluster, valid fields, and
    /// only registered nodes named (`spec.nodes[i]` otherwise).
    pub fn check_bgp_peer(&self, peer: &BgpPeer) -> Result<(), StoreError> {
        let view = self.snapshot()?;
        let cluster = view.cluster.ok_or(StoreError::NoCluster)?;
        let bad = |field: String, message: String| {
            StoreError::Cluster(ClusterError::BadBgp {
                field: format!("BGPPeer {}: {field}", peer.name),
                message,
            })
        };
        if cluster.backend != Backend::Bgp {
            return Err(bad(
                "kind".into(),
                format!(
                    "the cluster's backend is {}, not bgp: nothing would peer",
                    cluster.backend.name()
                ),
            ));
        }
        peer.validate("metadata.name", "spec")
            .map_err(|e| match e {
                ClusterError::BadBgp { field, message } => bad(field, message),
                other => StoreError::Cluster(other),
            })?;
        for (i, node) in peer.nodes.iter().enumerate() {
            if !view.nodes.iter().any(|n| &n.name == node) {
                return Err(bad(
                    format!("spec.nodes[{i}]"),
                    format!("no node named {node} is registered"),
                ));
            }
        }
        Ok(())
    }

    /// Stores a peer (checked first); returns the one it replaced.
    pub fn put_bgp_peer(&self, peer: &BgpPeer) -> Result<Option<BgpPeer>, StoreError> {
        self.check_bgp_peer(peer)?;
        let old = self.bgp_peer(&peer.name)?;
        self.put(peer_key(&peer.name), to_json(peer))?;
        Ok(old)
    }

    /// The peer called `name`, if stored.
    pub fn bgp_peer(&self, name: &str) -> Result<Option<BgpPeer>, StoreError> {
        let key = peer_key(name);
        self.stored(&key)?
            .map(|raw| from_json(&key, &raw))
            .transpose()
    }

    /// Deletes a peer; false when there was none.
    pub fn delete_bgp_peer(&self, name: &str) -> Result<bool, StoreError> {
        self.delete(peer_key(name))
    }
}

fn peer_key(name: &str) -> String {
    format!("{BGP_PEERS}{name}")
}
