//! The on-disk state of one network's allocations: one JSON file under a lock.
//!
//! Why a locked file and atomic rename rather than a database: the plugin runs
//! once per pod and must start fast; an allocation is a read-modify-write of a
//! few kilobytes. `flock` serialises concurrent plugin processes and is
//! released by the kernel when a process dies, even by SIGKILL, so a killed
//! ADD can never wedge the lock. The new state is written to a temporary file
//! and renamed over the old one: a reader sees the old state or the new one,
//! never half of each. What a killed ADD committed but never used is found
//! again by its attachment (a retried ADD reuses it, DEL releases it) or by its
//! namespace being gone (GC, and reclaim on exhaustion).
//!
//! Why no fsync: the file records which pods hold addresses, and no pod
//! survives a reboot. The state carries the boot ID it was written under;
//! state from an earlier boot is void, so a node that crashed or rebooted
//! without DELs (the classic host-local leak) starts with every address free.
//! A file torn by a power cut is older than the current boot and is discarded
//! on the same grounds; a file that is unreadable but written during this boot
//! is reported as corrupt, never silently reset.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::os::fd::AsFd;
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
    /// `/proc/sys/kernel/random/boot_id` when the state was written.
    #[serde(default)]
    pub boot_id: String,
}

/// The kernel's ID of the current boot.
fn current_boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// When the current boot began, from `btime` in `/proc/stat`.
fn boot_time() -> Option<std::time::SystemTime> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let secs: u64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
}

/// True when `path` was last written before the current boot.
fn from_previous_boot(path: &Path) -> bool {
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    matches!((modified, boot_time()), (Some(m), Some(b)) if m < b)
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
        podnet_kernel::process::lock_exclusive(lock.as_fd()).map_err(|source| {
            IpamError::Store {
                path: lock_path,
                source,
            }
        })?;
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
        let mut state: State = match serde_json::from_slice(&bytes) {
            Ok(s) => s,
            // Torn by a crash of an earlier boot: none of its pods exist any more.
            Err(_) if from_previous_boot(&path) => {
                return Ok(State {
                    version: FORMAT_VERSION,
                    ..State::default()
                })
            }
            Err(e) => {
                return Err(IpamError::Corrupt {
                    path,
                    detail: e.to_string(),
                })
            }
        };
        if state.boot_id != current_boot_id() {
            // Written under an earlier boot: every pod it lists died with that boot.
            state.allocations.clear();
        }
        if state.version != FORMAT_VERSION {
            return Err(IpamError::Corrupt {
                path,
                detail: format!("unknown format version {}", state.version),
            });
        }
        Ok(state)
    }

    /// Replaces the state atomically (write temp, sync, rename).
    pub fn write(&self, state: &mut State) -> Result<(), IpamError> {
        state.boot_id = current_boot_id();
        let path = self.dir.join(STATE_FILE);
        let tmp = self.dir.join(format!("{STATE_FILE}.tmp"));
        let io = |source| IpamError::Store {
            path: tmp.clone(),
            source,
        };
        let bytes = serde_json::to_vec_pretty(&*state).map_err(|e| IpamError::Corrupt {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        let mut f = File::create(&tmp).map_err(io)?;
        f.write_all(&bytes).map_err(io)?;
        // No fsync: see the module documentation for why a torn file after a power cut is harmless.
        std::fs::rename(&tmp, &path).map_err(|source| IpamError::Store { path, source })
    }
}
