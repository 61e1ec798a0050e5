//! Agent errors, each naming what it was doing.

use podnet_kernel::KernelError;
use podnet_store::StoreError;

/// Why the agent could not do its job.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A store operation failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A kernel operation failed.
    #[error("{context}: {source}")]
    Kernel {
        /// What the agent was doing.
        context: String,
        /// The kernel's answer.
        #[source]
        source: KernelError,
    },
    /// Same-node datapath upkeep (anti-spoofing sets) failed.
    #[error(transparent)]
    Dataplane(#[from] podnet_dataplane::DataplaneError),
    /// No interface of this node holds the configured address.
    #[error("no interface holds node address {0}; pass the node's underlay address")]
    NoUnderlay(std::net::IpAddr),
    /// Writing the CNI config failed.
    #[error("write CNI config {path}: {source}")]
    CniConfig {
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The node's BGP speaker (BIRD) could not be run or configured.
    #[error("BGP: {0}")]
    Bgp(#[from] crate::bgp::SpeakerError),
    /// Reading what a node holds, for `podnet doctor`, failed.
    #[error("{what}: {detail}")]
    Inspect {
        /// What was being read.
        what: String,
        /// Why it failed.
        detail: String,
    },
}

impl AgentError {
    /// An inspection failure naming what was being read.
    pub(crate) fn inspect(what: impl Into<String>, detail: impl ToString) -> Self {
        AgentError::Inspect {
            what: what.into(),
            detail: detail.to_string(),
        }
    }
}

/// Wraps a kernel error with what the agent was doing.
pub(crate) fn kernel(context: impl Into<String>) -> impl FnOnce(KernelError) -> AgentError {
    let context = context.into();
    move |source| AgentError::Kernel { context, source }
}
