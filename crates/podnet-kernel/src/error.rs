//! Typed errors of the kernel layer, carrying the errno the kernel returned.

use std::io;

/// An error from a kernel operation.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// A netlink request was refused by the kernel.
    #[error("{op}: {}{}", io::Error::from_raw_os_error(*errno), extack.as_ref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Netlink {
        /// What podnet asked for, in `ip`/`nft` words.
        op: String,
        /// The positive errno the kernel answered.
        errno: i32,
        /// The kernel's extended-ack message, when it gave one.
        extack: Option<String>,
    },
    /// A system call or file operation failed.
    #[error("{op}: {source}")]
    Io {
        /// What podnet was doing.
        op: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A path that should name a network namespace names something else.
    #[error("{0} is not a network namespace")]
    NotANamespace(String),
    /// The kernel answered something podnet could not decode.
    #[error("{op}: unexpected netlink answer: {detail}")]
    Protocol {
        /// What podnet asked for.
        op: String,
        /// What was wrong with the answer.
        detail: String,
    },
}

impl KernelError {
    /// Wraps an `io::Error` with a description of the operation.
    pub fn io(op: impl Into<String>, source: io::Error) -> Self {
        KernelError::Io {
            op: op.into(),
            source,
        }
    }

    /// The errno behind this error, if there is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            KernelError::Netlink { errno, .. } => Some(*errno),
            KernelError::Io { source, .. } => source.raw_os_error(),
            KernelError::Protocol { .. } | KernelError::NotANamespace(_) => None,
        }
    }

    /// True when the object did not exist (deletes treat this as success).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self.errno(),
            Some(libc::ENOENT | libc::ENODEV | libc::ESRCH | libc::EADDRNOTAVAIL)
        )
    }

    /// True when the object already existed.
    pub fn is_exists(&self) -> bool {
        self.errno() == Some(libc::EEXIST)
    }
}

/// Result alias of the kernel layer.
pub type Result<T, E = KernelError> = std::result::Result<T, E>;
