//! Errors of the policy firewall.

use podnet_kernel::KernelError;

/// What went wrong while programming policies.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    /// The kernel refused a batch or a read; nothing of the batch was applied.
    #[error(transparent)]
    Kernel(#[from] KernelError),
}
