//! The on-disk state of one network's allocations: one JSON file under a lock.
//!
//! Why a locked file and atomic rename rather than a database: the plugin runs
//! once per pod and must start fast; an allocation is a read-modify-write of a
//! few kilobytes. `flock` serialises concurrent plugin processes and is
//! released by the kernel when a process dies, even by SIGKILL, so a killed
//! ADD can never wedge the lock. The new state is written to a temporary file,
//! synced, then renamed over the old one: a reader sees the old state or the
//! new one, never half of each. What a killed ADD committed but never used is
//! found again by its attachment (a retried ADD reuses it, DEL releases it) or
//! by its namespace being gone (GC, and reclaim on exhaustion).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::IpamError;

const STATE_FILE: &str = "allocations.json";
const LOCK_FILE: &str = "lock";
const FORMAT_VERSION: u32 = 1;

/// One address held by one attachment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Allocation {
    /// The address.
    pub ip: IpAddr,
    /// Index of the range set it came from.
    pub range_set: usize,
    /// `CNI_CONTAINERID` of the attachment.
    pub container_id: String,
    /// `CNI_IFNAME` of the attachment.
    pub ifname: String,
    /// `CNI_NETNS` at allocation time.
    pub netns_path: String,
    /// Device and inode of that namespace, when it could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns_id: Option<(u64, u64)>,
}

/// Everything stored for one network.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    /// Format version, to refuse files written by a future podnet.
    pub version: u32,
    /// Live allocations.
    pub allocations: Vec<Allocation>,
    /// Last address handed out per range set, so that freed addresses are not reused at once.
    pub last_allocated: Vec<Option<IpAddr>>,
}

/// A network's state directory, locked for the lifetime of this value.
pub struct LockedStore {
    dir: PathBuf,
    _lock: File,
}

impl LockedStore {
    /// Takes the network's lock (blocking) and returns the store.
    pub fn lock(dir: &Path) -> Result<Self, IpamError> {
        let io = |source| IpamError::Store {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|source| IpamError::Store {
                path: lock_path.clone(),
                source,
            })?;
        loop {
            // SAFETY: flock on a valid fd; released on close or process death.
            if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } == 0 {
                break;
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(IpamError::Store {
                    path: lock_path,
                    source: err,
                });
            }
        }
        Ok(LockedStore {
            dir: dir.to_path_buf(),
            _lock: lock,
        })
    }

    /// Reads the current state (empty when nothing was stored yet).
    pub fn read(&self) -> Result<State, IpamError> {
        let path = self.dir.join(STATE_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(State {
                    version: FORMAT_VERSION,
                    ..State::default()
                })
            }
            Err(source) => return Err(IpamError::Store { path, source }),
        };
        let state: State = serde_json::from_slice(&bytes).map_err(|e| IpamError::Corrupt {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        if state.version != FORMAT_VERSION {
            return Err(IpamError::Corrupt {
                path,
                detail: format!("unknown format version {}", state.version),
            });
        }
        Ok(state)
    }

    /// Replaces the state atomically (write temp, sync, rename).
    pub fn write(&self, state: &State) -> Result<(), IpamError> {
        let path = self.dir.join(STATE_FILE);
        let tmp = self.dir.join(format!("{STATE_FILE}.tmp"));
        let io = |source| IpamError::Store {
            path: tmp.clone(),
            source,
        };
        let bytes = serde_json::to_vec_pretty(state).map_err(|e| IpamError::Corrupt {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        let mut f = File::create(&tmp).map_err(io)?;
        f.write_all(&bytes).map_err(io)?;
        // Sync before rename so a power cut cannot leave an empty file behind the new name.
        f.sync_data().map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(|source| IpamError::Store { path, source })
    }
}
