//! Lab errors.

/// What can go wrong in the lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A kernel operation failed.
    #[error(transparent)]
    Kernel(#[from] podnet_kernel::KernelError),
    /// The CNI plugin refused a pod.
    #[error("CNI {command} for {pod} failed: {output}")]
    Plugin {
        /// The verb.
        command: String,
        /// The pod.
        pod: String,
        /// The plugin's stdout (error JSON).
        output: String,
    },
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What the lab was doing.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A lab is already up.
    #[error("a lab already exists ({0}); run `podnet lab down` first")]
    AlreadyUp(String),
    /// No lab is up.
    #[error("no lab is running; start one with `podnet lab up`")]
    NotRunning,
    /// The connectivity matrix has failures.
    /// A lab spec (cluster.yaml or flags) that cannot be built.
    #[error("{0}")]
    Spec(String),
    /// Something the lab waited for did not happen in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The lab's certificates could not be made.
    #[error(transparent)]
    Pki(#[from] podnet_pki::PkiError),
    /// The cluster store failed.
    #[error(transparent)]
    Store(#[from] podnet_store::StoreError),
    /// A node's BIRD did not answer or refused a command.
    #[error("{node}: {source}")]
    Bird {
        /// The node.
        node: String,
        /// What BIRD's socket said.
        #[source]
        source: podnet_bgp::BgpError,
    },
    /// {0} connectivity checks failed.
    #[error("{0} of the connectivity checks failed")]
    Unreachable(usize),
}

impl LabError {
    /// Wraps an I/O error with what the lab was doing.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        LabError::Io {
            what: what.into(),
            source,
        }
    }
}
