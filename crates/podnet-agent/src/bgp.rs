//! The node's BGP speaker (backend `bgp`): BIRD, run and configured by the
//! agent as Calico's confd and calico-node do.
//!
//! On every reconcile the agent renders `bird.conf` from the cluster
//! ([`podnet_bgp::node_bgp`], [`podnet_bgp::render`]). When it differs from
//! what BIRD runs, the new file is checked over BIRD's control socket
//! (`configure check`) before it replaces the old one, then applied
//! (`configure`): BIRD adds and removes sessions without resetting the
//! others. With no BIRD answering on the socket, the agent starts one, with
//! `-R` when BIRD's routes are in the kernel (a restart: they stay, and its
//! peers keep its routes, until it has synced). BIRD is a daemon of its
//! own: an agent that dies or restarts leaves it, and the routes, alone.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use podnet_bgp::{BgpError, BirdControl, NodeBgp};

/// How long a BIRD just started may take to answer on its socket.
const START_DEADLINE: Duration = Duration::from_secs(10);

/// Why the node's BGP speaker could not be run or configured.
#[derive(Debug, thiserror::Error)]
pub enum SpeakerError {
    /// No BIRD binary.
    #[error("BIRD not found (looked for {0}): install bird2, or pass --bird")]
    NoBird(String),
    /// BIRD could not be started, or exited at once.
    #[error("start BIRD ({command}): {detail}")]
    Start {
        /// The command line.
        command: String,
        /// What went wrong (BIRD's own message when it gave one).
        detail: String,
    },
    /// Writing BIRD's files failed.
    #[error("write {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// BIRD's socket refused, or BIRD refused the configuration.
    #[error(transparent)]
    Control(#[from] BgpError),
    /// The node cannot speak BGP (no IPv4 router ID, not registered).
    #[error(transparent)]
    Topology(#[from] podnet_bgp::TopologyError),
}

/// The node's BIRD: where its files are, and what it was last given.
pub struct Speaker {
    dir: PathBuf,
    bird: PathBuf,
    /// The configuration BIRD runs, as far as this agent knows.
    applied: Option<String>,
}

impl Speaker {
    /// A speaker keeping its files in `dir`, running `bird` (a path, or a
    /// name looked up in `PATH` and the sbin directories).
    pub fn new(dir: &Path, bird: &Path) -> Result<Self, SpeakerError> {
        let bird =
            find_program(bird).ok_or_else(|| SpeakerError::NoBird(bird.display().to_string()))?;
        std::fs::create_dir_all(dir).map_err(|source| SpeakerError::Write {
            path: dir.display().to_string(),
            source,
        })?;
        Ok(Speaker {
            dir: dir.to_path_buf(),
            bird,
            applied: None,
        })
    }

    /// BIRD's control socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join(podnet_bgp::SOCKET_FILE)
    }

    fn conf(&self) -> PathBuf {
        self.dir.join("bird.conf")
    }

    /// Makes BIRD run `node`'s configuration; true when it changed something.
    /// A BIRD that must be started is started with `-R` when `restarting`
    /// (routes it wrote are in the kernel): it keeps them, and its peers
    /// keep its routes, until it has synced again. A first start goes
    /// without: there is nothing to keep, and a BIRD in recovery would hold
    /// back its routes until every peer has sent all of its own.
    pub fn sync(
        &mut self,
        node: &NodeBgp,
        restarting: impl FnOnce() -> bool,
    ) -> Result<bool, SpeakerError> {
        let mut text = podnet_bgp::render(node);
        text += &format!(
            "\nlog \"{}\" {{ info, remote, warning, error, auth, fatal, bug }};\n",
            self.dir.join("bird.log").display()
        );
        let mut control = match BirdControl::connect(&self.socket()) {
            Ok(c) => c,
            Err(BgpError::Unreachable { .. }) => {
                write(&self.conf(), &text)?;
                self.start(restarting())?;
                self.applied = Some(text);
                return Ok(true);
            }
            Err(e) => return Err(e.into()),
        };
        if self.applied.as_deref() == Some(text.as_str()) {
            return Ok(false);
        }
        let next = self.dir.join("bird.conf.next");
        write(&next, &text)?;
        control.configure_check(&next)?;
        std::fs::rename(&next, self.conf()).map_err(|source| SpeakerError::Write {
            path: self.conf().display().to_string(),
            source,
        })?;
        control.configure(&self.conf())?;
        self.applied = Some(text);
        Ok(true)
    }

    /// Starts BIRD (it daemonizes once its configuration has been read) and
    /// waits until it answers on its socket.
    fn start(&self, restarting: bool) -> Result<(), SpeakerError> {
        let (conf, socket, pid) = (self.conf(), self.socket(), self.dir.join("bird.pid"));
        let mut cmd = Command::new(&self.bird);
        if restarting {
            cmd.arg("-R");
        }
        cmd.arg("-c")
            .arg(&conf)
            .arg("-s")
            .arg(&socket)
            .arg("-P")
            .arg(&pid)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let command = format!(
            "{}{} -c {} -s {} -P {}",
            self.bird.display(),
            if restarting { " -R" } else { "" },
            conf.display(),
            socket.display(),
            pid.display()
        );
        let out = cmd.output().map_err(|e| SpeakerError::Start {
            command: command.clone(),
            detail: e.to_string(),
        })?;
        if !out.status.success() {
            return Err(SpeakerError::Start {
                command,
                detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        let deadline = Instant::now() + START_DEADLINE;
        let mut pause = Duration::from_millis(2);
        loop {
            match BirdControl::connect(&socket) {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() >= deadline => {
                    return Err(SpeakerError::Start {
                        command,
                        detail: format!("no answer on its socket within {START_DEADLINE:?}: {e}"),
                    })
                }
                Err(_) => {}
            }
            std::thread::park_timeout(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// Stops BIRD (the node left the cluster): its peers are told at once
    /// (a Cease), so they withdraw its routes without waiting for a timer.
    pub fn shut_down(&self) -> Result<(), SpeakerError> {
        match BirdControl::connect(&self.socket()) {
            Ok(mut c) => Ok(c.down()?),
            Err(BgpError::Unreachable { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

fn write(path: &Path, text: &str) -> Result<(), SpeakerError> {
    std::fs::write(path, text).map_err(|source| SpeakerError::Write {
        path: path.display().to_string(),
        source,
    })
}

/// `program` itself if it has a directory, else the first match in `PATH`
/// or the sbin directories (a daemon's usual home).
pub fn find_program(program: &Path) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return program.is_file().then(|| program.to_path_buf());
    }
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"])
        .map(|dir| Path::new(dir).join(program))
        .find(|p| p.is_file());
    found
}
