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
}
