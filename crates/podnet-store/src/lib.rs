//! The cluster store: the cluster spec, nodes and their blocks, node liveness.
//!
//! [`ClusterStore`] holds the cluster logic (block allocation in one
//! transaction, node records, liveness) once, over a small key-value contract,
//! [`KvBackend`], that two real backends implement:
//! - [`FileKv`], the embedded default: per key root a snapshot and an
//!   append-only log committed by a tail file, under `flock`, watched with
//!   inotify; for one machine and for the lab;
//! - [`EtcdKv`], etcd's v3 API (through its JSON gateway), for clusters that
//!   span machines: transactions, revisions and leases are etcd's own.
//!
//! Agents work level-triggered: read a snapshot at revision R, reconcile, wait
//! for a change after R, read again. A reconnecting agent therefore misses
//! nothing: whatever happened meanwhile is in the next snapshot.

mod apply;
mod bgp;
mod cluster;
mod endpoints;
mod error;
mod etcd;
mod etcd_security;
mod file;
mod kv;
mod policy;
mod services;
mod slices;

pub use apply::Outcome;
pub use cluster::{ClusterStore, ClusterView};
pub use endpoints::endpoints_for;
pub use error::StoreError;
pub use etcd::EtcdKv;
pub use etcd_security::EtcdSecurity;
pub use file::FileKv;
pub use kv::{Changes, KvBackend, Listing, Txn, Waited};
pub use policy::{PolicySnapshot, BUILTIN_NAMESPACES, POLICY_ROOT};
pub use services::{
    parse_endpoints, parse_service, service_settings, ServiceChanges, ServiceSnapshot,
    SERVICES_ROOT,
};

/// The prefix of every key podnet keeps (`/podnet/`, `/podnet-services/`,
/// `/podnet-policy/`): what an etcd role for podnet must grant.
pub const KEY_PREFIX: &str = "/podnet";

/// Where the store is and, for etcd, how to reach it securely.
#[derive(Debug, Clone, Default)]
pub struct StoreConfig {
    /// `etcd:http(s)://HOST:PORT,...` (or just `http(s)://...`) for etcd,
    /// `file:DIR` (or a plain path) for the embedded store.
    pub url: String,
    /// TLS and credentials for etcd (unused by the embedded store).
    pub etcd: EtcdSecurity,
}

impl From<&str> for StoreConfig {
    /// A store reached without TLS or credentials.
    fn from(url: &str) -> Self {
        StoreConfig {
            url: url.to_string(),
            etcd: EtcdSecurity::default(),
        }
    }
}

impl std::fmt::Display for StoreConfig {
    /// The URL (never the credentials).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url)
    }
}

/// Opens the backend `config` names. etcd options given for the embedded
/// store are refused (they would silently go unused).
pub fn open(config: &StoreConfig) -> Result<ClusterStore, StoreError> {
    let url = config.url.as_str();
    let etcd = url
        .strip_prefix("etcd:")
        .or_else(|| (url.starts_with("http://") || url.starts_with("https://")).then_some(url));
    let backend: Box<dyn KvBackend> = match etcd {
        Some(endpoints) => Box::new(EtcdKv::with_security(endpoints, &config.etcd)?),
        None if config.etcd.uses_tls() || config.etcd.username.is_some() => {
            return Err(StoreError::Config {
                field: "store",
                reason: format!("etcd TLS or credentials given, but {url} is not an etcd store"),
            })
        }
        None => Box::new(FileKv::open(url.strip_prefix("file:").unwrap_or(url))?),
    };
    Ok(ClusterStore::new(backend))
}
