//! Waiting for a directory's files to change (inotify), for readers that
//! follow a log as it is written (`podnet drops --follow`).

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

use crate::error::{KernelError, Result};

/// A watch on one directory: files written, created or renamed into it.
#[derive(Debug)]
pub struct DirWatch {
    fd: OwnedFd,
}

impl DirWatch {
    /// Watches `dir` (which must exist) for files written, created or renamed into it.
    pub fn new(dir: &Path) -> Result<Self> {
        Self::with_mask(dir, libc::IN_MODIFY | libc::IN_CREATE | libc::IN_MOVED_TO)
    }

    /// Watches `dir` for files renamed into it only (writers that replace
    /// files by atomic rename).
    pub fn renames_into(dir: &Path) -> Result<Self> {
        Self::with_mask(dir, libc::IN_MOVED_TO)
    }

    fn with_mask(dir: &Path, mask: u32) -> Result<Self> {
        let what = || format!("watch {}", dir.display());
        // SAFETY: inotify_init1 takes flags only; a negative result is an error.
        let raw = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
        if raw < 0 {
            return Err(KernelError::io(what(), std::io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let path = CString::new(dir.as_os_str().as_bytes())
            .map_err(|e| KernelError::io(what(), std::io::Error::other(e)))?;
        // SAFETY: a valid inotify descriptor and a NUL-terminated path.
        if unsafe { libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), mask) } < 0 {
            return Err(KernelError::io(what(), std::io::Error::last_os_error()));
        }
        Ok(DirWatch { fd })
    }

    /// Waits up to `timeout` for a change; returns whether one came.
    pub fn wait(&self, timeout: Duration) -> Result<bool> {
        if !crate::process::wait_readable(self.fd.as_fd(), timeout) {
            return Ok(false);
        }
        // Drain the events: which file changed does not matter to the reader.
        let mut buf = [0u8; 4096];
        // SAFETY: reads into a buffer of the given length from a valid descriptor.
        while unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_wakes_the_watch() {
        let dir = std::env::temp_dir().join(format!("podnet-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let w = DirWatch::new(&dir).unwrap();
        assert!(!w.wait(Duration::from_millis(1)).unwrap());
        std::fs::write(dir.join("f"), "x").unwrap();
        assert!(w.wait(Duration::from_secs(5)).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
