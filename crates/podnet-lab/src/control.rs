//! The lab's control plane: the cluster store (embedded file or a real etcd
//! server in its own namespace) and one agent process per node.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use podnet_kernel::Netns;
use podnet_store::ClusterStore;

use crate::error::LabError;
use crate::fabric::{self, control_address};
use crate::runtime::spawn_daemon;
use crate::spec::StoreKind;
use crate::state::{LabNode, LabState};
use crate::Lab;

/// etcd's client port.
pub const ETCD_PORT: u16 = 2379;
/// How long a store or an agent may take to come up.
const START_DEADLINE: Duration = Duration::from_secs(30);

impl Lab {
    /// The store URL the lab's agents use.
    pub fn store_url(&self, kind: StoreKind) -> String {
        match kind {
            StoreKind::Embedded => format!("file:{}", self.state_dir().join("store").display()),
            StoreKind::Etcd => format!("etcd:http://{}:{ETCD_PORT}", control_address()),
        }
    }

    /// Runs `f` with a client of the lab's store, from a namespace that reaches it.
    pub fn with_store<T: Send>(
        &self,
        kind: StoreKind,
        f: impl FnOnce(&ClusterStore) -> Result<T, LabError> + Send,
    ) -> Result<T, LabError> {
        let url = self.store_url(kind);
        let ns = Netns::open_named(&self.control_ns())?;
        ns.run(move || f(&podnet_store::open(&url)?))?
    }

    /// Directory of node `name`'s files (CNI config, IPAM state, agent log).
    pub fn node_dir(&self, name: &str) -> PathBuf {
        self.state_dir().join("nodes").join(name)
    }
}

/// Creates the control-plane namespace on segment 1 and, for etcd, starts the server.
pub(crate) fn start_store(lab: &Lab, state: &LabState) -> Result<(), LabError> {
    let ctl = Netns::create_named(&lab.control_ns())?;
    let link = fabric::Plug::segment(lab, 1, control_address(), state.spec.has_router());
    fabric::plug(&ctl, &link, state.spec.fabric.mtu)?;
    if state.spec.store == StoreKind::Embedded {
        return Ok(());
    }
    start_etcd(lab, &ctl)
}

/// Starts etcd in the control-plane namespace (on its existing data) and waits until it answers.
pub(crate) fn start_etcd(lab: &Lab, ctl: &Netns) -> Result<(), LabError> {
    let data = lab.state_dir().join("etcd");
    let client = format!("http://{}:{ETCD_PORT}", control_address());
    let peer = format!("http://{}:{}", control_address(), ETCD_PORT + 1);
    let initial = format!("lab={peer}");
    let data_arg = data.display().to_string();
    let args = [
        "--name",
        "lab",
        "--data-dir",
        &data_arg,
        "--listen-client-urls",
        &client,
        "--advertise-client-urls",
        &client,
        "--listen-peer-urls",
        &peer,
        "--initial-advertise-peer-urls",
        &peer,
        "--initial-cluster",
        &initial,
    ];
    let log = lab.state_dir().join("etcd.log");
    spawn_daemon(ctl, Path::new("etcd"), &args, Some(&log))?;
    wait_for(START_DEADLINE, "etcd to answer", || {
        lab.with_store(StoreKind::Etcd, |s| Ok(s.snapshot()?))
            .is_ok()
    })
}

/// Starts node `node`'s agent in its namespace and waits for its CNI config.
pub(crate) fn start_agent(lab: &Lab, state: &LabState, node: &LabNode) -> Result<(), LabError> {
    let dir = lab.node_dir(&node.name);
    std::fs::create_dir_all(&dir)
        .map_err(|e| LabError::io(format!("create {}", dir.display()), e))?;
    let cluster_file = cluster_file(lab);
    let netns = Netns::open_named(&node.ns)?;
    let model = state.spec.model.name();
    let (addr, store) = (node.address.to_string(), lab.store_url(state.spec.store));
    let (cni_dir, ipam_dir) = (dir.join("cni"), dir.join("ipam"));
    let (cluster_arg, cni_arg, ipam_arg, drops_arg) = (
        cluster_file.display().to_string(),
        cni_dir.display().to_string(),
        ipam_dir.display().to_string(),
        drop_log(lab, &node.name).display().to_string(),
    );
    let args = [
        "agent",
        "--node",
        &node.name,
        "--address",
        &addr,
        "--store",
        &store,
        "--cluster",
        &cluster_arg,
        "--model",
        model,
        "--cni-conf-dir",
        &cni_arg,
        "--ipam-dir",
        &ipam_arg,
        "--drop-log",
        &drops_arg,
        // Each node has its own namespace, so every agent takes the same port.
        "--metrics-addr",
        METRICS_ADDR,
        // Labs show drift repair quickly; a real node can sync less often.
        "--service-resync-secs",
        "5",
        "--policy-resync-secs",
        "5",
    ];
    let log = dir.join("agent.log");
    // Ready once it logs its start, which it does after writing the CNI
    // config; a restarted agent leaves the config in place meanwhile.
    let starts = || {
        std::fs::read_to_string(&log)
            .map(|text| text.matches(AGENT_STARTED).count())
            .unwrap_or(0)
    };
    let before = starts();
    spawn_daemon(&netns, &state.plugin, &args, Some(&log))?;
    let what = format!(
        "the agent of {} to start (log: {})",
        node.name,
        log.display()
    );
    wait_for(START_DEADLINE, &what, || starts() > before)
}

/// Where every lab agent serves `/metrics`, `/healthz` and `/livez`, in its node's namespace.
pub const METRICS_ADDR: &str = "0.0.0.0:9101";

/// Node `node`'s drop log (NetworkPolicy denials, anti-spoofing drops).
pub fn drop_log(lab: &Lab, node: &str) -> PathBuf {
    lab.node_dir(node).join("drops.jsonl")
}

/// What an agent logs once it has registered and written its CNI config.
const AGENT_STARTED: &str = " podnet-agent: node ";

/// The cluster spec file every agent of the lab is started with.
fn cluster_file(lab: &Lab) -> PathBuf {
    lab.state_dir().join("cluster.json")
}

/// Writes the cluster spec file, once per lab.
pub(crate) fn write_cluster_file(lab: &Lab, state: &LabState) -> Result<(), LabError> {
    let json = serde_json::to_string(&state.spec.cluster()).unwrap_or_default();
    std::fs::write(cluster_file(lab), json).map_err(|e| LabError::io("write cluster.json", e))
}

/// Polls `ready` with growing pauses until it holds or `deadline` passes.
pub(crate) fn wait_for(
    deadline: Duration,
    what: &str,
    mut ready: impl FnMut() -> bool,
) -> Result<(), LabError> {
    let end = Instant::now() + deadline;
    let mut pause = Duration::from_millis(2);
    loop {
        if ready() {
            return Ok(());
        }
        if Instant::now() >= end {
            return Err(LabError::Timeout(format!("waited {deadline:?} for {what}")));
        }
        std::thread::park_timeout(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}
