//! Shared fixtures of the plugin tests: a node namespace, pods, and a runtime that calls the plugin.

#![allow(dead_code)]

use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use podnet_kernel::RouteHandle;
use podnet_testkit::{require_root, unique_name, NetnsGuard};
use serde_json::{json, Value};

/// The podnet binary under test.
pub fn plugin() -> &'static str {
    env!("CARGO_BIN_EXE_podnet")
}

/// What one plugin invocation printed and returned.
#[derive(Debug)]
pub struct Outcome {
    /// Exit code.
    pub code: i32,
    /// Parsed stdout (Null when empty).
    pub json: Value,
    /// Raw stdout.
    pub stdout: String,
}

impl Outcome {
    /// Panics unless the call succeeded.
    pub fn ok(self) -> Value {
        assert_eq!(self.code, 0, "plugin failed: {}", self.stdout);
        self.json
    }

    /// Panics unless the call failed with CNI error `code`.
    pub fn err(self, code: u64) -> Value {
        assert_ne!(self.code, 0, "plugin should have failed: {}", self.stdout);
        assert_eq!(self.json["code"].as_u64(), Some(code), "{}", self.stdout);
        assert!(
            self.json["msg"].as_str().is_some_and(|m| !m.is_empty()),
            "{}",
            self.stdout
        );
        self.json
    }
}

/// A node: its namespace, an IPAM data dir, and the network config.
pub struct Node {
    /// The node's namespace.
    pub ns: NetnsGuard,
    /// IPAM state directory (removed on drop).
    pub data_dir: PathBuf,
    /// Network config sent on stdin.
    pub config: Value,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

impl Node {
    /// A node with the given model and IPv4 (and optionally IPv6) range.
    pub fn new(model: &str, subnet: &str, subnet6: Option<&str>) -> Node {
        require_root();
        let ns = NetnsGuard::new("node");
        let data_dir = std::env::temp_dir().join(unique_name("ipam"));
        let mut ranges = vec![json!([{"subnet": subnet}])];
        if let Some(s6) = subnet6 {
            ranges.push(json!([{"subnet": s6}]));
        }
        let config = json!({
            "cniVersion": "1.1.0",
            "name": "testnet",
            "type": "podnet",
            "model": model,
            "mtu": 1400,
            "ipMasq": true,
            "clusterCIDRs": ["10.244.0.0/16", "fd00:10:244::/56"],
            "ipam": {"ranges": ranges, "dataDir": data_dir.to_string_lossy()},
        });
        // The node's own address, on its loopback (no route out of the machine).
        let mut h = RouteHandle::in_netns(ns.netns()).unwrap();
        let lo = h.link_by_name("lo").unwrap().unwrap();
        h.replace_address(lo.index, "198.18.0.1/32".parse().unwrap())
            .unwrap();
        Node {
            ns,
            data_dir,
            config,
        }
    }

    /// Runs the plugin inside the node, as a runtime on that node would.
    pub fn cni(
        &self,
        command: &str,
        id: &str,
        netns: &str,
        ifname: &str,
        config: &Value,
    ) -> Outcome {
        self.cni_env(
            &[
                ("CNI_COMMAND", command),
                ("CNI_CONTAINERID", id),
                ("CNI_NETNS", netns),
                ("CNI_IFNAME", ifname),
            ],
            config,
        )
    }

    /// Runs the plugin with exactly these CNI variables (plus CNI_PATH).
    pub fn cni_env(&self, vars: &[(&str, &str)], config: &Value) -> Outcome {
        self.cni_raw(vars, config.to_string().as_bytes())
    }

    /// Runs the plugin with raw bytes on stdin.
    pub fn cni_raw(&self, vars: &[(&str, &str)], stdin: &[u8]) -> Outcome {
        let out = self.spawn_raw(vars, stdin).wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let json = if stdout.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&stdout)
                .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {stdout:?}"))
        };
        Outcome {
            code: out.status.code().unwrap_or(-1),
            json,
            stdout,
        }
    }

    /// Starts the plugin without waiting (for concurrency and SIGKILL tests).
    pub fn spawn(&self, vars: &[(&str, &str)], config: &Value) -> std::process::Child {
        self.spawn_raw(vars, config.to_string().as_bytes())
    }

    /// Starts the plugin with raw bytes on stdin, without waiting.
    pub fn spawn_raw(&self, vars: &[(&str, &str)], stdin: &[u8]) -> std::process::Child {
        let mut cmd = Command::new(plugin());
        podnet_kernel::netns::enter_before_exec(&mut cmd, self.ns.netns());
        cmd.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env(
                "CNI_PATH",
                format!(
                    "{}:/usr/lib/cni",
                    Path::new(plugin()).parent().unwrap().display()
                ),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        child
    }

    /// Host-side interfaces podnet made in the node.
    pub fn podnet_links(&self) -> Vec<String> {
        let mut h = RouteHandle::in_netns(self.ns.netns()).unwrap();
        h.links()
            .unwrap()
            .into_iter()
            .map(|l| l.name)
            .filter(|n| n.starts_with("pn"))
            .collect()
    }

    /// Routes podnet installed in the node (`proto 112`).
    pub fn podnet_routes(&self) -> usize {
        let mut h = RouteHandle::in_netns(self.ns.netns()).unwrap();
        h.routes()
            .unwrap()
            .iter()
            .filter(|r| r.protocol == 112)
            .count()
    }

    /// IPAM allocations recorded for the network.
    pub fn allocations(&self) -> Vec<Value> {
        let path = self.data_dir.join("testnet/allocations.json");
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice::<Value>(&b).unwrap()["allocations"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    }

    /// Panics unless podnet left nothing behind in the node: no interface, route or allocation.
    pub fn assert_clean(&self) {
        // Interfaces whose pod namespace was removed disappear asynchronously (kernel netns cleanup).
        podnet_testkit::wait_until(Duration::from_secs(10), || self.podnet_links().is_empty());
        assert!(
            self.podnet_links().is_empty(),
            "leaked interfaces: {:?}",
            self.podnet_links()
        );
        assert_eq!(self.podnet_routes(), 0, "leaked routes");
        assert!(
            self.allocations().is_empty(),
            "leaked allocations: {:?}",
            self.allocations()
        );
    }
}

/// A pod: a namespace named after its container ID.
pub struct Pod {
    /// Its namespace.
    pub ns: NetnsGuard,
    /// Its container ID.
    pub id: String,
}

impl Pod {
    /// A fresh pod namespace.
    pub fn new(tag: &str) -> Pod {
        let ns = NetnsGuard::new(tag);
        let id = ns.name().to_string();
        Pod { ns, id }
    }

    /// `CNI_NETNS` of the pod.
    pub fn path(&self) -> String {
        self.ns.path()
    }

    /// ADD through the plugin; returns the result.
    pub fn add(&self, node: &Node) -> Value {
        node.cni("ADD", &self.id, &self.path(), "eth0", &node.config)
            .ok()
    }

    /// DEL through the plugin.
    pub fn del(&self, node: &Node) {
        node.cni("DEL", &self.id, &self.path(), "eth0", &node.config)
            .ok();
    }
}

/// The first address of `family` in a CNI result.
pub fn result_ip(result: &Value, v6: bool) -> IpAddr {
    result["ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ip| {
            ip["address"]
                .as_str()
                .unwrap()
                .split('/')
                .next()
                .unwrap()
                .parse::<IpAddr>()
                .unwrap()
        })
        .find(|ip| ip.is_ipv6() == v6)
        .expect("an address of the family")
}

/// Opens a TCP connection from `from` to a listener in `to`; returns the source address the listener saw.
pub fn tcp_seen_source(
    from: &NetnsGuard,
    to: &NetnsGuard,
    to_ip: IpAddr,
) -> Result<IpAddr, String> {
    let listener = to
        .netns()
        .run(move || TcpListener::bind(SocketAddr::new(to_ip, 0)))
        .unwrap()
        .map_err(|e| e.to_string())?;
    let target = listener.local_addr().unwrap();
    let stream = from
        .netns()
        .run(move || TcpStream::connect_timeout(&target, Duration::from_secs(3)))
        .unwrap()
        .map_err(|e| e.to_string())?;
    drop(stream);
    let (_conn, peer) = listener.accept().map_err(|e| e.to_string())?;
    Ok(peer.ip())
}
