//! Network namespaces: open, create, remove, and run a closure inside one.
//!
//! Named namespaces live in `/run/netns/NAME`, as with `ip netns`, so the
//! tools see what podnet made. To act inside a namespace podnet never moves a
//! long-lived thread: [`Netns::run`] does `setns` on a fresh thread that is
//! thrown away afterwards, so no thread is ever stranded in the wrong namespace.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{KernelError, Result};

/// Directory that holds named network namespaces (`ip netns` convention).
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// An open handle on a network namespace.
#[derive(Debug)]
pub struct Netns {
    file: File,
    path: PathBuf,
}

/// The identity of a namespace: device and inode of its nsfs file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NetnsId {
    /// `st_dev` of the namespace file.
    pub dev: u64,
    /// `st_ino` of the namespace file.
    pub ino: u64,
}

impl Netns {
    /// Opens the namespace at `path` (`/run/netns/x`, `/proc/PID/ns/net`, ...).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| {
            KernelError::io(format!("open network namespace {}", path.display()), e)
        })?;
        let ns = Netns {
            file,
            path: path.to_path_buf(),
        };
        // A plain file is not a namespace: setns would fail later with a vaguer error.
        if !ns.is_nsfs()? {
            return Err(KernelError::NotANamespace(path.display().to_string()));
        }
        Ok(ns)
    }

    /// Opens the calling thread's current network namespace.
    pub fn current() -> Result<Self> {
        Netns::open("/proc/thread-self/ns/net")
    }

    /// Opens the named namespace `/run/netns/NAME`.
    pub fn open_named(name: &str) -> Result<Self> {
        Netns::open(Path::new(NETNS_RUN_DIR).join(name))
    }

    fn is_nsfs(&self) -> Result<bool> {
        // SAFETY: fstatfs on a valid fd into a zeroed struct.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::fstatfs(self.file.as_raw_fd(), &mut st) };
        if rc < 0 {
            return Err(KernelError::io(
                "fstatfs network namespace",
                std::io::Error::last_os_error(),
            ));
        }
        const NSFS_MAGIC: i64 = 0x6e73_6673;
        Ok(st.f_type as i64 == NSFS_MAGIC)
    }

    /// The path this namespace was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The namespace's identity (device and inode).
    pub fn id(&self) -> Result<NetnsId> {
        let md = self
            .file
            .metadata()
            .map_err(|e| KernelError::io(format!("stat {}", self.path.display()), e))?;
        Ok(NetnsId {
            dev: md.dev(),
            ino: md.ino(),
        })
    }

    /// Runs `f` with this network namespace as the current one.
    ///
    /// `ip netns exec NAME` for one closure: on a fresh thread that is
    /// discarded afterwards, or right here when the calling thread is already
    /// in this namespace (the CNI plugin acting on its own node).
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        let here = netns_id_at(Path::new("/proc/thread-self/ns/net"));
        if here.is_some() && here == self.id().ok() {
            return Ok(f());
        }
        let fd = self.file.as_fd();
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    enter(fd)?;
                    Ok(f())
                })
                .join()
                .map_err(|_| {
                    KernelError::io(
                        "thread inside network namespace panicked",
                        std::io::Error::other("panic"),
                    )
                })?
        })
    }

    /// Creates the named namespace `/run/netns/NAME` (`ip netns add NAME`).
    pub fn create_named(name: &str) -> Result<Self> {
        validate_name(name)?;
        std::fs::create_dir_all(NETNS_RUN_DIR)
            .map_err(|e| KernelError::io(format!("create {NETNS_RUN_DIR}"), e))?;
        let path = Path::new(NETNS_RUN_DIR).join(name);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| KernelError::io(format!("create network namespace {name}"), e))?;
        let made = std::thread::scope(|scope| {
            scope
                .spawn(|| -> Result<()> {
                    // SAFETY: unshare only affects this short-lived thread.
                    if unsafe { libc::unshare(libc::CLONE_NEWNET) } < 0 {
                        return Err(KernelError::io(
                            "unshare(CLONE_NEWNET)",
                            std::io::Error::last_os_error(),
                        ));
                    }
                    bind_mount(Path::new("/proc/thread-self/ns/net"), &path)
                })
                .join()
                .unwrap_or_else(|_| {
                    Err(KernelError::io(
                        "create namespace",
                        std::io::Error::other("panic"),
                    ))
                })
        });
        if let Err(e) = made {
            // The mount point we made; an error removing it is reported with the cause.
            return Err(match std::fs::remove_file(&path) {
                Ok(()) => e,
                Err(rm) => KernelError::io(
                    format!(
                        "create namespace {name} ({e}); then remove {}",
                        path.display()
                    ),
                    rm,
                ),
            });
        }
        let ns = Netns::open(&path)?;
        ns.run(|| crate::rtnl::set_up_by_name("lo"))??;
        Ok(ns)
    }

    /// Removes the named namespace (`ip netns del NAME`); absent is success.
    pub fn remove_named(name: &str) -> Result<()> {
        validate_name(name)?;
        let path = Path::new(NETNS_RUN_DIR).join(name);
        let c = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| {
            KernelError::io(
                "namespace path",
                std::io::Error::from_raw_os_error(libc::EINVAL),
            )
        })?;
        // SAFETY: umount2 with a valid C string.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(KernelError::io(
                format!("remove network namespace {name}"),
                e,
            )),
        }
    }

    /// Lists the names in `/run/netns`.
    pub fn list_named() -> Vec<String> {
        std::fs::read_dir(NETNS_RUN_DIR)
            .map(|rd| {
                rd.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl AsFd for Netns {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// Kills (SIGKILL) every process, other than this one, whose network
/// namespace is `netns`, and waits (up to 5 s) until each has exited.
///
/// For servers a lab or a test started inside its namespaces: the namespace
/// is only freed once nothing lives in it any more, and a restarted server
/// must not meet its predecessor's sockets. A dying process leaves its
/// namespace before the kernel has closed its files, so leaving is not
/// enough: it has exited (a zombie, or reaped) once its files are closed.
pub fn kill_processes_in(netns: &Netns) {
    kill_selected_in(netns, |_| true);
}

/// Like [`kill_processes_in`], for the processes whose command name
/// (`/proc/PID/comm`) `select` accepts: the agent of a node, not the BGP
/// daemon beside it.
pub fn kill_selected_in(netns: &Netns, select: impl Fn(&str) -> bool) {
    let Ok(id) = netns.id() else { return };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut pause = std::time::Duration::from_millis(1);
    let mut killed = std::collections::BTreeSet::new();
    loop {
        killed.extend(signal_processes_in(id, &select));
        killed.retain(|pid| !exited(*pid));
        if killed.is_empty() || std::time::Instant::now() >= deadline {
            return;
        }
        std::thread::park_timeout(pause);
        pause = (pause * 2).min(std::time::Duration::from_millis(50));
    }
}

/// Whether process `pid` has exited: gone, or every one of its threads a
/// zombie (a killed process's leader turns zombie while its other threads
/// still run; the files close with the last of them).
fn exited(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return true;
    };
    tasks.flatten().all(|task| {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            return true;
        };
        // `tid (comm) state ...`: the command may hold spaces and parentheses.
        let state = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next());
        matches!(state, Some('Z' | 'X') | None)
    })
}

/// Sends SIGKILL to every other process in namespace `id` that `select`
/// accepts (by command name); returns their pids.
fn signal_processes_in(id: NetnsId, select: &dyn Fn(&str) -> bool) -> Vec<u32> {
    let mut found = Vec::new();
    for pid in processes_in(id) {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if select(comm.trim_end()) {
            // SAFETY: kill(2) on a pid just found; racing with its exit is harmless.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            found.push(pid);
        }
    }
    found
}

/// The processes, other than this one, whose network namespace is `id`
/// and that have not exited.
pub fn processes_in(id: NetnsId) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let me = std::process::id();
    dir.flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| netns_id_at(Path::new(&format!("/proc/{pid}/ns/net"))) == Some(id))
        .filter(|pid| !exited(*pid))
        .collect()
}

/// Makes `cmd` start inside `netns` (`ip netns exec`): the child calls `setns` before `exec`.
///
/// `netns` must stay open until the command is spawned.
pub fn enter_before_exec(cmd: &mut std::process::Command, netns: &Netns) {
    use std::os::unix::process::CommandExt;
    let fd = netns.file.as_raw_fd();
    // SAFETY: between fork and exec the child only makes the async-signal-safe setns(2).
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Moves the calling thread into the namespace `fd` refers to.
pub fn enter(fd: BorrowedFd<'_>) -> Result<()> {
    // SAFETY: setns with a valid namespace fd.
    if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
        return Err(KernelError::io(
            "setns(CLONE_NEWNET)",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Identity of the namespace file at `path`, or `None` when it no longer exists.
pub fn netns_id_at(path: &Path) -> Option<NetnsId> {
    let md = std::fs::metadata(path).ok()?;
    Some(NetnsId {
        dev: md.dev(),
        ino: md.ino(),
    })
}

fn validate_name(name: &str) -> Result<()> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(KernelError::io(
            format!("invalid network namespace name {name:?}"),
            std::io::Error::from_raw_os_error(libc::EINVAL),
        ));
    }
    Ok(())
}

fn bind_mount(src: &Path, dst: &Path) -> Result<()> {
    let s = CString::new(src.as_os_str().as_encoded_bytes()).expect("path without NUL");
    let d = CString::new(dst.as_os_str().as_encoded_bytes()).map_err(|_| {
        KernelError::io(
            "namespace path",
            std::io::Error::from_raw_os_error(libc::EINVAL),
        )
    })?;
    // SAFETY: mount(2) with valid C strings and a bind flag.
    let rc = unsafe {
        libc::mount(
            s.as_ptr(),
            d.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        )
    };
    if rc < 0 {
        return Err(KernelError::io(
            format!("bind-mount {}", dst.display()),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}
