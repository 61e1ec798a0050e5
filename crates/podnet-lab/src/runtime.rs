//! The lab's container runtime: runs the CNI plugin and pod processes the way a real runtime does.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use podnet_kernel::Netns;

use crate::error::LabError;

/// One CNI invocation: verb, attachment and network config.
pub struct CniCall<'a> {
    /// The plugin binary.
    pub plugin: &'a Path,
    /// `CNI_COMMAND`.
    pub command: &'a str,
    /// `CNI_CONTAINERID`.
    pub container_id: &'a str,
    /// `CNI_NETNS`.
    pub netns_path: &'a str,
    /// `CNI_IFNAME`.
    pub ifname: &'a str,
    /// The network config (stdin).
    pub config: &'a str,
}

impl CniCall<'_> {
    /// The plugin process as a runtime on `node` starts it: inside the node's namespace, a clean
    /// environment with the `CNI_*` variables, `CNI_PATH` the plugin's own directory, piped stdio.
    pub fn command(&self, node: &Netns) -> Command {
        let dir = self.plugin.parent().unwrap_or(Path::new("/"));
        let mut cmd = Command::new(self.plugin);
        cmd.env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("CNI_COMMAND", self.command)
            .env("CNI_CONTAINERID", self.container_id)
            .env("CNI_NETNS", self.netns_path)
            .env("CNI_IFNAME", self.ifname)
            .env("CNI_PATH", dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        podnet_kernel::netns::enter_before_exec(&mut cmd, node);
        cmd
    }
}

/// Runs the plugin inside the node's namespace, as a runtime on that node would.
pub fn run_cni(node: &Netns, call: &CniCall<'_>) -> Result<String, LabError> {
    let mut child = call
        .command(node)
        .spawn()
        .map_err(|e| LabError::io(format!("run {}", call.plugin.display()), e))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(call.config.as_bytes())
            .map_err(|e| LabError::io("write plugin stdin", e))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| LabError::io("wait for plugin", e))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(LabError::Plugin {
            command: call.command.to_string(),
            pod: call.container_id.to_string(),
            output: format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)),
        });
    }
    Ok(stdout)
}

/// Starts a long-running process inside `netns`, detached from this one, its
/// output appended to `log` (or discarded).
pub fn spawn_daemon(
    netns: &Netns,
    program: &Path,
    args: &[&str],
    log: Option<&Path>,
) -> Result<u32, LabError> {
    let (stdout, stderr) = match log {
        Some(path) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| LabError::io(format!("open {}", path.display()), e))?;
            let g = f
                .try_clone()
                .map_err(|e| LabError::io("duplicate log descriptor", e))?;
            (Stdio::from(f), Stdio::from(g))
        }
        None => (Stdio::null(), Stdio::null()),
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr);
    podnet_kernel::netns::enter_before_exec(&mut cmd, netns);
    podnet_kernel::process::detach_before_exec(&mut cmd);
    let child = cmd
        .spawn()
        .map_err(|e| LabError::io(format!("start {}", program.display()), e))?;
    Ok(child.id())
}
