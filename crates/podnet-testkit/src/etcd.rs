//! A real etcd server for tests: inside a test namespace, data in a temp dir, killed on Drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{unique_name, wait_until, NetnsGuard};

/// The etcd client port the test server listens on (inside its own namespace).
pub const ETCD_PORT: u16 = 2379;

/// A temporary directory removed on Drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates a fresh directory under the system temp dir.
    pub fn new(tag: &str) -> Self {
        let path = std::env::temp_dir().join(unique_name(tag));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    /// Its path.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// An etcd server listening on `IP:2379` inside a test namespace.
#[derive(Debug)]
pub struct EtcdServer {
    netns: String,
    ip: String,
    data: TempDir,
    child: Option<Child>,
}

impl EtcdServer {
    /// Starts etcd in `ns` on `ip` (an address the namespace holds, or 127.0.0.1)
    /// and waits until it answers.
    pub fn start(ns: &NetnsGuard, ip: &str) -> Self {
        let mut server = EtcdServer {
            netns: ns.name().to_string(),
            ip: ip.to_string(),
            data: TempDir::new("etcd"),
            child: None,
        };
        server.resume(ns);
        server
    }

    /// The client URL, `http://IP:2379`.
    pub fn url(&self) -> String {
        format!("http://{}:{ETCD_PORT}", self.ip)
    }

    /// Kills the server (SIGKILL), keeping its data.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on its data and waits until it answers.
    pub fn resume(&mut self, ns: &NetnsGuard) {
        assert_eq!(
            ns.name(),
            self.netns,
            "etcd must resume in its own namespace"
        );
        let client = self.url();
        let peer = format!("http://{}:{}", self.ip, ETCD_PORT + 1);
        let mut cmd = Command::new("etcd");
        cmd.args(["--name", "test", "--data-dir"])
            .arg(self.data.path())
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("test={peer}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        podnet_kernel::netns::enter_before_exec(&mut cmd, ns.netns());
        self.child = Some(cmd.spawn().expect("start etcd (is etcd-server installed?)"));
        let healthy = wait_until(Duration::from_secs(20), || {
            ns.exec(&["curl", "-sf", "-m", "1", &format!("{client}/health")])
                .status
                .success()
        });
        assert!(healthy, "etcd did not become healthy at {client}");
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
    }
}
