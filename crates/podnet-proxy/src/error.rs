//! Errors of the service proxy.

use podnet_kernel::KernelError;

/// What went wrong while programming services.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The kernel refused a batch or a read; nothing of the batch was applied.
    #[error(transparent)]
    Kernel(#[from] KernelError),
}
