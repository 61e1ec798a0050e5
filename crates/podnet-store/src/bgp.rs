//! `BGPPeer` objects: BGP peers outside the cluster, added and removed at
//! run time; every agent renders its sessions from them.

use podnet_cluster::{Backend, BgpPeer, ClusterError};

use crate::cluster::{from_json, to_json, ClusterStore};
use crate::error::StoreError;
use crate::kv::Txn;

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
        peer.validate("spec").map_err(|e| match e {
            ClusterError::BadBgp { field, message } => {
                bad(field.replace("spec.name", "metadata.name"), message)
            }
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
        let key = format!("{BGP_PEERS}{}", peer.name);
        let old = self.bgp_peer(&peer.name)?;
        let txn = Txn {
            puts: vec![(key, to_json(peer))],
            ..Txn::default()
        };
        self.kv().transact(&txn)?;
        Ok(old)
    }

    /// The peer called `name`, if stored.
    pub fn bgp_peer(&self, name: &str) -> Result<Option<BgpPeer>, StoreError> {
        let key = format!("{BGP_PEERS}{name}");
        let listing = self.kv().list(&key)?;
        listing
            .entries
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(k, v)| from_json(k, v))
            .transpose()
    }

    /// Every stored peer, by name.
    pub fn bgp_peers(&self) -> Result<Vec<BgpPeer>, StoreError> {
        Ok(self.snapshot()?.bgp_peers)
    }

    /// Deletes a peer; false when there was none.
    pub fn delete_bgp_peer(&self, name: &str) -> Result<bool, StoreError> {
        if self.bgp_peer(name)?.is_none() {
            return Ok(false);
        }
        let txn = Txn {
            deletes: vec![format!("{BGP_PEERS}{name}")],
            ..Txn::default()
        };
        self.kv().transact(&txn)?;
        Ok(true)
    }
}
