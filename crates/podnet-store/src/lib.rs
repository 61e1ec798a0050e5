//! The cluster store: the cluster spec, nodes and their blocks, node liveness.
//!
//! [`ClusterStore`] holds the cluster logic (block allocation in one
//! transaction, node records, liveness) once, over a small key-value contract,
//! [`KvBackend`], that two real backends implement:
//! - [`FileKv`], the embedded default: one JSON file under `flock`, replaced by
//!   atomic rename, watched with inotify; for one machine and for the lab;
//! - [`EtcdKv`], etcd's v3 API (through its JSON gateway), for clusters that
//!   span machines: transactions, revisions and leases are etcd's own.
//!
//! Agents work level-triggered: read a snapshot at revision R, reconcile, wait
//! for a change after R, read again. A reconnecting agent therefore misses
//! nothing: whatever happened meanwhile is in the next snapshot.

mod apply;
mod cluster;
mod endpoints;
mod error;
mod etcd;
mod file;
mod kv;
mod policy;
mod services;

pub use apply::Outcome;
pub use cluster::{ClusterStore, ClusterView};
pub use endpoints::endpoints_for;
pub use error::StoreError;
pub use etcd::EtcdKv;
pub use file::FileKv;
pub use kv::{Changes, KvBackend, Listing, Txn, Waited};
pub use policy::{PolicySnapshot, BUILTIN_NAMESPACES, POLICY_ROOT};
pub use services::{
    parse_endpoints, parse_service, service_settings, ServiceChanges, ServiceSnapshot,
    SERVICES_ROOT,
};

/// Opens the backend named by `url`: `etcd:http://HOST:PORT` (or just
/// `http://...`) for etcd, `file:DIR` (or a plain path) for the embedded store.
pub fn open(url: &str) -> Result<ClusterStore, StoreError> {
    let backend: Box<dyn KvBackend> = if let Some(rest) = url.strip_prefix("etcd:") {
        Box::new(EtcdKv::new(rest)?)
    } else if url.starts_with("http://") {
        Box::new(EtcdKv::new(url)?)
    } else {
        Box::new(FileKv::open(url.strip_prefix("file:").unwrap_or(url))?)
    };
    Ok(ClusterStore::new(backend))
}
