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

/// Makes every thread allocate from one malloc arena. glibc gives threads
/// arenas of their own, and memory a thread frees in its arena is not reused
/// by another thread's allocations: a listing read by helper threads and
/// consumed by the main one would stay resident beside what replaces it.
/// For a daemon that allocates in bursts (the agent's full sync) one arena
/// keeps the peak at what is live; its threads rarely allocate at once.
pub fn use_one_malloc_arena() {
    // SAFETY: mallopt only sets a tunable of the allocator; M_ARENA_MAX
    // takes effect for arenas created afterwards, which is all of them
    // when called before other threads start.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
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

/// Takes an exclusive `flock` on `fd`, waiting for it (an interrupted wait
/// is resumed); the lock is released when the file closes or the process dies.
pub fn lock_exclusive(fd: std::os::fd::BorrowedFd<'_>) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    loop {
        // SAFETY: flock on a descriptor borrowed for the duration of the call.
        if unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX) } == 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Makes the child of `cmd` start a session of its own (`setsid`), so that
/// it outlives the terminal of whoever started it (a daemon).
pub fn detach_before_exec(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
}

/// Sends SIGKILL to process `pid` (a child we started and have not reaped,
/// so the pid cannot have been reused).
pub fn kill_hard(pid: u32) {
    // SAFETY: kill(2) has no memory effects; a wrong pid only fails.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGKILL);
    }
}

/// The calling thread pinned to one CPU; the previous mask comes back on drop.
pub struct CpuPin {
    before: libc::cpu_set_t,
}

impl CpuPin {
    /// Pins the calling thread to `cpu`.
    pub fn new(cpu: usize) -> Self {
        // SAFETY: cpu_set_t is plain data; the calls read and set this thread's mask.
        unsafe {
            let mut before: libc::cpu_set_t = std::mem::zeroed();
            libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut before);
            let mut only: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut only);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &only);
            CpuPin { before }
        }
    }
}

impl Drop for CpuPin {
    fn drop(&mut self) {
        // SAFETY: restores the mask read in `new`, on the same thread.
        unsafe {
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &self.before);
        }
    }
}
