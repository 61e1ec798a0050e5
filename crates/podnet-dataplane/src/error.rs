//! Dataplane errors.

use podnet_kernel::KernelError;

/// What can go wrong while plumbing a pod.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    /// The kernel refused an operation.
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// The pod's network namespace does not exist.
    #[error("network namespace {0} does not exist")]
    NoNamespace(String),
    /// The requested interface name is taken inside the pod.
    #[error("interface {ifname} already exists in {netns}")]
    InterfaceExists {
        /// `CNI_IFNAME`.
        ifname: String,
        /// `CNI_NETNS`.
        netns: String,
    },
    /// The request itself is inconsistent.
    #[error("{0}")]
    Invalid(String),
    /// CHECK found the pod's network not as it should be.
    #[error("check failed: {0}")]
    CheckFailed(String),
    /// An operation failed, and undoing what it had done failed too: what
    /// is left behind is named.
    #[error("{error}; rolling back failed too: {rollback}")]
    RollbackFailed {
        /// Why the operation failed.
        error: Box<DataplaneError>,
        /// Why the rollback failed (what was left behind).
        rollback: String,
    },
}

impl DataplaneError {
    /// The error that made the operation fail (itself, unless a rollback failed after it).
    pub fn cause(&self) -> &DataplaneError {
        match self {
            DataplaneError::RollbackFailed { error, .. } => error.cause(),
            other => other,
        }
    }
}
