//! Store errors, each naming the store and what failed.

use podnet_cluster::ClusterError;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached (etcd down, connection refused, timeout).
    #[error("store {endpoint} unreachable: {reason}")]
    Unreachable {
        /// The etcd endpoint or file path.
        endpoint: String,
        /// What the transport said.
        reason: String,
    },
    /// A store option is wrong (a TLS file that does not read, a user
    /// without a password): named by its command-line flag.
    #[error("--{field}: {reason}")]
    Config {
        /// The flag, without dashes.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The TLS handshake with a member failed: a wrong CA, a refused client
    /// certificate.
    #[error("store {endpoint}: TLS: {reason}")]
    Tls {
        /// The member.
        endpoint: String,
        /// What failed, and what it means.
        reason: String,
    },
    /// etcd refused the credentials, or asks for some and got none.
    #[error("store {endpoint}: authentication{}: {reason}", user.as_deref().map(|u| format!(" as {u}")).unwrap_or_default())]
    Auth {
        /// The member.
        endpoint: String,
        /// The user we authenticated as, if any.
        user: Option<String>,
        /// etcd's reason, and what to do.
        reason: String,
    },
    /// The store answered something we cannot read.
    #[error("store {endpoint}: unexpected reply to {op}: {detail}")]
    Protocol {
        /// The endpoint.
        endpoint: String,
        /// The operation.
        op: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// A local file operation of the embedded store failed.
    #[error("store {path}: {op}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// The operation.
        op: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A stored record that does not parse.
    #[error("store record {key} is corrupt: {detail}")]
    Corrupt {
        /// The key.
        key: String,
        /// The parse error.
        detail: String,
    },
    /// The cluster has not been initialised in this store.
    #[error("the store holds no cluster yet; initialise it with a cluster spec")]
    NoCluster,
    /// The store already holds a different cluster spec.
    #[error("the store already holds a different cluster spec ({stored}); refusing to change it")]
    ClusterMismatch {
        /// The stored spec, as JSON.
        stored: String,
    },
    /// Another node already registered with this node's name from another address.
    #[error("node {node} is registered with address {stored}, not {asked}")]
    AddressMismatch {
        /// Node name.
        node: String,
        /// Address in the store.
        stored: String,
        /// Address asked for.
        asked: String,
    },
    /// A registered node asked for a block other than the ones it owns.
    #[error("node {node} owns {stored}, not {asked}; remove the node to change its blocks")]
    BlockMismatch {
        /// Node name.
        node: String,
        /// Blocks in the store.
        stored: String,
        /// Block asked for.
        asked: String,
    },
    /// Concurrent writers kept winning; gave up after several attempts.
    #[error("store contention: {0} kept changing under us")]
    Contention(String),
    /// A service or its endpoints were refused.
    #[error(transparent)]
    Service(#[from] podnet_services::ServiceError),
    /// The cluster or node definition is invalid.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// A policy, pod or namespace was refused; every bad field is named.
    #[error(transparent)]
    Invalid(#[from] podnet_policy::FieldErrors),
    /// A pod without a node, outside a lab (nothing schedules it).
    #[error("Pod {0}: spec.nodeName is required (podnet does not schedule pods outside a lab)")]
    Unplaced(String),
    /// An EndpointSlice for a service whose endpoints come from its selector.
    #[error("EndpointSlice {slice}: service {service} has a selector, so its endpoints come from its pods; remove the selector to give them by hand")]
    SliceForSelector {
        /// The slice.
        slice: String,
        /// Its service.
        service: String,
    },
    /// An object names a namespace the store does not hold.
    #[error("{kind} {name}: namespace {namespace:?} not found (apply a v1 Namespace first)")]
    NoNamespace {
        /// The object's kind.
        kind: &'static str,
        /// Its name.
        name: String,
        /// The namespace it names.
        namespace: String,
    },
}
