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

/// The PEM files an etcd member serves TLS with, and the CA its clients
/// must be signed by (client certificates are then required).
#[derive(Debug, Clone)]
pub struct EtcdTls {
    /// The CA that signs the member and its clients.
    pub ca: PathBuf,
    /// The member's certificate.
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
    /// A client certificate and key for the health probe.
    pub client: (PathBuf, PathBuf),
}

/// One member of a test etcd cluster: its name, client port and the cluster it joins.
#[derive(Debug, Clone)]
pub struct EtcdMember {
    /// Member name.
    pub name: String,
    /// Client port (the peer port is the next one).
    pub port: u16,
    /// `--initial-cluster` (`name=peer-url,...`); just itself when `None`.
    pub initial_cluster: Option<String>,
    /// TLS for clients (peers talk plain HTTP inside the test namespace).
    pub tls: Option<EtcdTls>,
}

impl EtcdMember {
    /// A single-member cluster named `test` on port 2379, plain HTTP.
    pub fn single() -> Self {
        EtcdMember {
            name: "test".into(),
            port: ETCD_PORT,
            initial_cluster: None,
            tls: None,
        }
    }
}

/// An etcd server listening on `IP:PORT` inside a test namespace.
#[derive(Debug)]
pub struct EtcdServer {
    netns: String,
    ip: String,
    member: EtcdMember,
    data: TempDir,
    child: Option<Child>,
}

impl EtcdServer {
    /// Starts etcd in `ns` on `ip` (an address the namespace holds, or 127.0.0.1)
    /// and waits until it answers.
    pub fn start(ns: &NetnsGuard, ip: &str) -> Self {
        Self::start_member(ns, ip, EtcdMember::single())
    }

    /// Starts one member as `member` says and waits until it answers (a
    /// member of a larger cluster answers once a quorum has started).
    pub fn start_member(ns: &NetnsGuard, ip: &str, member: EtcdMember) -> Self {
        let server = Self::spawn_member(ns, ip, member);
        server.wait_healthy(ns);
        server
    }

    /// Starts one member without waiting (the members of a new cluster
    /// wait for each other).
    pub fn spawn_member(ns: &NetnsGuard, ip: &str, member: EtcdMember) -> Self {
        let mut server = EtcdServer {
            netns: ns.name().to_string(),
            ip: ip.to_string(),
            member,
            data: TempDir::new("etcd"),
            child: None,
        };
        server.spawn(ns);
        server
    }

    /// The client URL, `http://IP:PORT` (`https://` with TLS).
    pub fn url(&self) -> String {
        let scheme = if self.member.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}:{}", self.ip, self.member.port)
    }

    /// The peer URL, `http://IP:PORT+1`.
    pub fn peer_url(&self) -> String {
        format!("http://{}:{}", self.ip, self.member.port + 1)
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
        self.spawn(ns);
        self.wait_healthy(ns);
    }

    fn spawn(&mut self, ns: &NetnsGuard) {
        assert_eq!(ns.name(), self.netns, "etcd must run in its own namespace");
        let client = self.url();
        let peer = self.peer_url();
        let cluster = (self.member.initial_cluster.clone())
            .unwrap_or_else(|| format!("{}={peer}", self.member.name));
        let mut cmd = Command::new("etcd");
        cmd.args(["--name", &self.member.name, "--data-dir"])
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
            .args(["--initial-cluster", &cluster])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(tls) = &self.member.tls {
            cmd.arg("--client-cert-auth")
                .arg("--trusted-ca-file")
                .arg(&tls.ca)
                .arg("--cert-file")
                .arg(&tls.cert)
                .arg("--key-file")
                .arg(&tls.key);
        }
        podnet_kernel::netns::enter_before_exec(&mut cmd, ns.netns());
        self.child = Some(cmd.spawn().expect("start etcd (is etcd-server installed?)"));
    }

    /// Waits until the member answers `/health` (with TLS, as a client
    /// holding a certificate).
    pub fn wait_healthy(&self, ns: &NetnsGuard) {
        let health = format!("{}/health", self.url());
        let mut probe: Vec<String> = ["curl", "-sf", "-m", "1"].map(String::from).to_vec();
        if let Some(tls) = &self.member.tls {
            for (flag, path) in [
                ("--cacert", &tls.ca),
                ("--cert", &tls.client.0),
                ("--key", &tls.client.1),
            ] {
                probe.push(flag.into());
                probe.push(path.display().to_string());
            }
        }
        probe.push(health.clone());
        let args: Vec<&str> = probe.iter().map(String::as_str).collect();
        let healthy = wait_until(Duration::from_secs(20), || ns.exec(&args).status.success());
        assert!(healthy, "etcd did not become healthy at {health}");
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
    }
}
