//! Cluster logic over any [`KvBackend`]: spec, node registration with block
//! allocation in one transaction, removal, snapshots, liveness.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

use ipnet::IpNet;
use podnet_cluster::{
    allocate_blocks, format_mac, validate_node_name, vtep_mac, ClusterSpec, Node,
};

use crate::error::StoreError;
use crate::kv::{KvBackend, Txn};

const ROOT: &str = "/podnet/";
const CLUSTER_KEY: &str = "/podnet/cluster";
const NODES: &str = "/podnet/nodes/";
const BLOCKS: &str = "/podnet/blocks/";
const ALIVE: &str = "/podnet/alive/";
/// How often a registration retries when another node won the race for a block.
const MAX_ATTEMPTS: usize = 16;

/// The cluster as one snapshot of the store.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    /// Store revision of the snapshot.
    pub revision: u64,
    /// The cluster spec, if initialised.
    pub cluster: Option<ClusterSpec>,
    /// Registered nodes, sorted by name.
    pub nodes: Vec<Node>,
    /// Names of nodes whose liveness lease is current.
    pub alive: BTreeSet<String>,
    /// BGP peers outside the cluster (`BGPPeer` objects), by name.
    pub bgp_peers: Vec<podnet_cluster::BgpPeer>,
}

/// The cluster store: cluster spec, nodes, blocks and liveness over one backend.
pub struct ClusterStore {
    kv: Box<dyn KvBackend>,
}

impl ClusterStore {
    /// Cluster logic over `kv`.
    pub fn new(kv: Box<dyn KvBackend>) -> Self {
        ClusterStore { kv }
    }

    /// The key-value backend underneath.
    pub(crate) fn kv(&self) -> &dyn KvBackend {
        self.kv.as_ref()
    }

    /// Where the store lives.
    pub fn endpoint(&self) -> String {
        self.kv.endpoint()
    }

    /// Stores `spec` if the store has none; returns the stored spec. A
    /// different spec already stored is an error: changing cluster CIDRs under
    /// running nodes is not something to do by accident.
    pub fn init_cluster(&self, spec: &ClusterSpec) -> Result<ClusterSpec, StoreError> {
        spec.validate()?;
        let json = to_json(spec);
        let txn = Txn {
            absent: vec![CLUSTER_KEY.into()],
            puts: vec![(CLUSTER_KEY.into(), json)],
            ..Txn::default()
        };
        if self.kv.transact(&txn)? {
            return Ok(spec.clone());
        }
        let stored = self.cluster()?.ok_or(StoreError::NoCluster)?;
        if &stored != spec {
            return Err(StoreError::ClusterMismatch {
                stored: to_json(&stored),
            });
        }
        Ok(stored)
    }

    /// The stored cluster spec, if any.
    pub fn cluster(&self) -> Result<Option<ClusterSpec>, StoreError> {
        Ok(self.snapshot()?.cluster)
    }

    /// Everything under the podnet prefix, at one revision.
    pub fn snapshot(&self) -> Result<ClusterView, StoreError> {
        let listing = self.kv.list(ROOT)?;
        let mut view = ClusterView {
            revision: listing.revision,
            ..ClusterView::default()
        };
        for (key, value) in &listing.entries {
            if key == CLUSTER_KEY {
                view.cluster = Some(from_json(key, value)?);
            } else if key.starts_with(NODES) {
                view.nodes.push(from_json(key, value)?);
            } else if let Some(name) = key.strip_prefix(ALIVE) {
                view.alive.insert(name.to_string());
            } else if key.starts_with(crate::bgp::BGP_PEERS) {
                view.bgp_peers.push(from_json(key, value)?);
            }
        }
        view.nodes.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(view)
    }

    /// Registers node `name` at `address`, allocating its blocks (or checking
    /// `requested` ones) in one transaction with the block claims, so two
    /// nodes can never own one block. Re-registering returns the node's
    /// existing record (its blocks never change while it is registered),
    /// with its link-local address brought up to date.
    pub fn register_node(
        &self,
        name: &str,
        address: IpAddr,
        link_local: Option<Ipv6Addr>,
        requested: &[IpNet],
    ) -> Result<Node, StoreError> {
        validate_node_name(name)?;
        for _ in 0..MAX_ATTEMPTS {
            let view = self.snapshot()?;
            let cluster = view.cluster.ok_or(StoreError::NoCluster)?;
            if let Some(existing) = view.nodes.iter().find(|n| n.name == name) {
                return self.reregister(existing, address, link_local, requested);
            }
            let taken: Vec<(String, IpNet)> = view
                .nodes
                .iter()
                .flat_map(|n| n.pod_cidrs.iter().map(|c| (n.name.clone(), *c)))
                .collect();
            let pod_cidrs = allocate_blocks(&cluster, name, requested, &taken)?;
            let node = Node {
                name: name.to_string(),
                address,
                pod_cidrs,
                vtep_mac: format_mac(&vtep_mac(name)),
                link_local,
            };
            let mut txn = Txn {
                absent: vec![node_key(name)],
                puts: vec![(node_key(name), to_json(&node))],
                ..Txn::default()
            };
            for cidr in &node.pod_cidrs {
                txn.absent.push(block_key(cidr));
                txn.puts.push((block_key(cidr), name.to_string()));
            }
            if self.kv.transact(&txn)? {
                return Ok(node);
            }
        }
        Err(StoreError::Contention(format!("blocks for node {name}")))
    }

    fn reregister(
        &self,
        existing: &Node,
        address: IpAddr,
        link_local: Option<Ipv6Addr>,
        requested: &[IpNet],
    ) -> Result<Node, StoreError> {
        if let Some(cidr) = requested.iter().find(|c| !existing.pod_cidrs.contains(c)) {
            return Err(StoreError::BlockMismatch {
                node: existing.name.clone(),
                stored: format!("{:?}", existing.pod_cidrs),
                asked: cidr.to_string(),
            });
        }
        if existing.address == address && existing.link_local == link_local {
            return Ok(existing.clone());
        }
        if existing.address == address {
            // The underlay interface was re-created: only its link-local address changed.
            let updated = Node {
                link_local,
                ..existing.clone()
            };
            let txn = Txn {
                equal: vec![(node_key(&existing.name), to_json(existing))],
                puts: vec![(node_key(&existing.name), to_json(&updated))],
                ..Txn::default()
            };
            if self.kv.transact(&txn)? {
                return Ok(updated);
            }
            return Err(StoreError::Contention(format!("node {}", existing.name)));
        }
        Err(StoreError::AddressMismatch {
            node: existing.name.clone(),
            stored: existing.address.to_string(),
            asked: address.to_string(),
        })
    }

    /// Removes node `name`, its block claims and its liveness key in one
    /// transaction; `false` if it was not registered.
    pub fn remove_node(&self, name: &str) -> Result<bool, StoreError> {
        let view = self.snapshot()?;
        let Some(node) = view.nodes.iter().find(|n| n.name == name) else {
            return Ok(false);
        };
        let mut txn = Txn {
            equal: vec![(node_key(name), to_json(node))],
            deletes: vec![node_key(name), format!("{ALIVE}{name}")],
            ..Txn::default()
        };
        txn.deletes.extend(node.pod_cidrs.iter().map(block_key));
        if self.kv.transact(&txn)? {
            Ok(true)
        } else {
            Err(StoreError::Contention(format!("node {name}")))
        }
    }

    /// Waits up to `timeout` for a change to the node set after `revision`.
    pub fn wait_for_change(
        &self,
        revision: u64,
        timeout: Duration,
    ) -> Result<Option<u64>, StoreError> {
        self.kv.wait(NODES, revision, timeout)
    }

    /// Marks node `name` alive for `ttl` (an etcd lease, or an expiring file entry).
    pub fn heartbeat(&self, name: &str, ttl: Duration) -> Result<(), StoreError> {
        self.kv
            .refresh_lease(&format!("{ALIVE}{name}"), "alive", ttl)
    }
}

fn node_key(name: &str) -> String {
    format!("{NODES}{name}")
}

fn block_key(cidr: &IpNet) -> String {
    format!("{BLOCKS}{}", cidr.to_string().replace('/', "-"))
}

pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

pub(crate) fn from_json<T: serde::de::DeserializeOwned>(
    key: &str,
    value: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(value).map_err(|e| StoreError::Corrupt {
        key: key.to_string(),
        detail: e.to_string(),
    })
}
