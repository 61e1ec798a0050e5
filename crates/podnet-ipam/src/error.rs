//! IPAM errors.

use std::path::PathBuf;

/// What can go wrong when allocating or releasing addresses.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    /// The IPAM configuration is invalid.
    #[error("invalid IPAM configuration: {0}")]
    Config(String),
    /// Every address of a range set is taken by a live attachment.
    #[error("no IP addresses available in range set {0}")]
    Exhausted(String),
    /// The state on disk could not be read or written.
    #[error("IPAM store {path}: {source}")]
    Store {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The state on disk is not what podnet wrote.
    #[error("IPAM store {path} is corrupt: {detail} (move it aside to start over; pods keep their addresses)")]
    Corrupt {
        /// The file involved.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
}
