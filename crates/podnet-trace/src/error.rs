//! What can go wrong with a trace itself (not with the traced packet).

use podnet_kernel::KernelError;

/// A trace that could not run, or could not clean up after itself.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// A kernel call failed.
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// A place's namespace could not be opened.
    #[error("{0}: {1}")]
    Place(String, String),
    /// The request does not make sense (an unknown name, a bad address).
    #[error("{0}")]
    Request(String),
    /// Temporary state could not be removed; the message names it.
    #[error("trace cleanup failed: {0}")]
    Cleanup(String),
    /// Ctrl-C or SIGTERM arrived; the temporary state was removed.
    #[error("interrupted; the trace's temporary tables were removed")]
    Interrupted,
}
