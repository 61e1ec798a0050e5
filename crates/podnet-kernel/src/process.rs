//! The calling process itself: who it runs as, and its heap.

/// Whether this process runs as root (effective user 0).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Gives freed heap memory back to the system, so that the resident size
/// reflects what the process holds rather than its peak.
pub fn release_freed_memory() {
    // SAFETY: malloc_trim only releases free heap pages; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn note_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// While alive, Ctrl-C (SIGINT) and SIGTERM are noted instead of ending the
/// process, so that work with temporary kernel state can remove it first;
/// dropping it restores the default actions.
#[derive(Debug)]
pub struct InterruptGuard(());

impl InterruptGuard {
    /// Starts noting interrupts.
    pub fn new() -> Self {
        INTERRUPTED.store(false, std::sync::atomic::Ordering::SeqCst);
        for sig in [libc::SIGINT, libc::SIGTERM] {
            // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
            unsafe {
                libc::signal(
                    sig,
                    note_interrupt as extern "C" fn(libc::c_int) as libc::sighandler_t,
                );
            }
        }
        InterruptGuard(())
    }

    /// Whether an interrupt arrived since [`InterruptGuard::new`].
    pub fn interrupted(&self) -> bool {
        INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Default for InterruptGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for InterruptGuard {
    fn drop(&mut self) {
        for sig in [libc::SIGINT, libc::SIGTERM] {
            // SAFETY: restoring the default action has no preconditions.
            unsafe {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
    }
}

/// Waits up to `timeout` for `fd` (a socket, a listener) to become readable;
/// returns whether it did.
pub fn wait_readable(fd: std::os::fd::BorrowedFd<'_>, timeout: std::time::Duration) -> bool {
    use std::os::fd::AsRawFd;
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: poll on one valid pollfd, borrowed for the duration of the call.
    unsafe { libc::poll(&mut pfd, 1, ms) > 0 }
}
