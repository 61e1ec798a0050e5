//! The lab's control plane: the cluster store (embedded file or a real etcd
//! server in its own namespace) and one agent process per node.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use podnet_kernel::Netns;
use podnet_store::{ClusterStore, EtcdSecurity, StoreConfig, StoreError};

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
    /// The store the lab's agents use. An etcd lab made with TLS (its
    /// certificates are in the state directory) is reached over `https://`
    /// with the lab's client certificate, as the user `podnet`.
    pub fn store_config(&self, kind: StoreKind) -> Result<StoreConfig, LabError> {
        let pki = self.pki_dir();
        Ok(match kind {
            StoreKind::Embedded => StoreConfig::from(
                format!("file:{}", self.state_dir().join("store").display()).as_str(),
            ),
            StoreKind::Etcd if !pki.exists() => {
                StoreConfig::from(format!("etcd:http://{}:{ETCD_PORT}", control_address()).as_str())
            }
            StoreKind::Etcd => StoreConfig {
                url: format!("etcd:https://{}:{ETCD_PORT}", control_address()),
                etcd: EtcdSecurity {
                    password: Some(read_secret(&pki.join(PASSWORD_FILE))?),
                    username: Some(ETCD_USER.into()),
                    ..tls_files(&pki)
                },
            },
        })
    }

    /// Runs `f` with a client of the lab's store, from a namespace that reaches it.
    pub fn with_store<T: Send>(
        &self,
        kind: StoreKind,
        f: impl FnOnce(&ClusterStore) -> Result<T, LabError> + Send,
    ) -> Result<T, LabError> {
        let config = self.store_config(kind)?;
        let ns = Netns::open_named(&self.control_ns())?;
        ns.run(move || f(&podnet_store::open(&config)?))?
    }

    /// Directory of node `name`'s files (CNI config, IPAM state, agent log).
    pub fn node_dir(&self, name: &str) -> PathBuf {
        self.state_dir().join("nodes").join(name)
    }

    /// The lab's CA, etcd's certificate and the agents' client certificate
    /// and password (an etcd lab with TLS only).
    pub fn pki_dir(&self) -> PathBuf {
        self.state_dir().join("pki")
    }
}

/// The etcd user the lab's agents and commands authenticate as.
const ETCD_USER: &str = "podnet";
/// The file holding that user's password, in the PKI directory.
const PASSWORD_FILE: &str = "podnet.password";

/// The lab's CA and client certificate, without credentials.
fn tls_files(pki: &Path) -> EtcdSecurity {
    EtcdSecurity {
        ca_file: Some(pki.join("ca.pem")),
        cert_file: Some(pki.join("client.pem")),
        key_file: Some(pki.join("client-key.pem")),
        ..EtcdSecurity::default()
    }
}

/// Creates the control-plane namespace on segment 1 and, for etcd, starts
/// the server (with TLS: makes the CA and certificates first, and turns on
/// authentication once it answers).
pub(crate) fn start_store(lab: &Lab, state: &LabState) -> Result<(), LabError> {
    let ctl = Netns::create_named(&lab.control_ns())?;
    let link = fabric::Plug::segment(lab, 1, control_address(), state.spec.has_router());
    fabric::plug(&ctl, &link, state.spec.fabric.mtu)?;
    if state.spec.store == StoreKind::Embedded {
        return Ok(());
    }
    if state.spec.etcd_tls {
        make_pki(lab)?;
    }
    start_etcd(lab, &ctl)?;
    if state.spec.etcd_tls {
        enable_auth(lab, &ctl)?;
    }
    Ok(())
}

/// The lab's CA, a certificate for its etcd member and one for its clients,
/// and the etcd passwords, in the PKI directory.
fn make_pki(lab: &Lab) -> Result<(), LabError> {
    let pki = lab.pki_dir();
    std::fs::create_dir_all(&pki)
        .map_err(|e| LabError::io(format!("create {}", pki.display()), e))?;
    let ca = podnet_pki::Authority::new(&format!("podnet lab {} CA", lab.name))?;
    ca.write_cert(&pki.join("ca.pem"))?;
    ca.issue_server(&pki, "etcd", &[control_address()])?;
    ca.issue_client(&pki, "client")?;
    for file in ["root.password", PASSWORD_FILE] {
        write_secret(&pki.join(file), &random_hex(16)?)?;
    }
    Ok(())
}

/// Turns on etcd's authentication: `root`, and the user `podnet` allowed podnet's keys only.
fn enable_auth(lab: &Lab, ctl: &Netns) -> Result<(), LabError> {
    let pki = lab.pki_dir();
    let root = read_secret(&pki.join("root.password"))?;
    let password = read_secret(&pki.join(PASSWORD_FILE))?;
    let endpoint = format!("https://{}:{ETCD_PORT}", control_address());
    ctl.run(move || {
        podnet_store::EtcdKv::with_security(&endpoint, &tls_files(&pki))?.enable_auth(
            &root,
            ETCD_USER,
            &password,
            podnet_store::KEY_PREFIX,
        )
    })??;
    Ok(())
}

/// Starts etcd in the control-plane namespace (on its existing data) and waits until it answers.
pub(crate) fn start_etcd(lab: &Lab, ctl: &Netns) -> Result<(), LabError> {
    let data = lab.state_dir().join("etcd");
    let pki = lab.pki_dir();
    let tls = pki.exists();
    let scheme = if tls { "https" } else { "http" };
    let client = format!("{scheme}://{}:{ETCD_PORT}", control_address());
    let peer = format!("http://{}:{}", control_address(), ETCD_PORT + 1);
    let mut args: Vec<String> = [
        "--name",
        "lab",
        "--data-dir",
        &data.display().to_string(),
        "--listen-client-urls",
        &client,
        "--advertise-client-urls",
        &client,
        "--listen-peer-urls",
        &peer,
        "--initial-advertise-peer-urls",
        &peer,
        "--initial-cluster",
        &format!("lab={peer}"),
    ]
    .map(String::from)
    .to_vec();
    if tls {
        // Clients must present a certificate of the lab's CA, and then
        // authenticate as a user.
        args.push("--client-cert-auth".into());
        for (flag, file) in [
            ("--trusted-ca-file", "ca.pem"),
            ("--cert-file", "etcd.pem"),
            ("--key-file", "etcd-key.pem"),
        ] {
            args.push(flag.into());
            args.push(pki.join(file).display().to_string());
        }
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let log = lab.state_dir().join("etcd.log");
    spawn_daemon(ctl, Path::new("etcd"), &args, Some(&log))?;
    let endpoint = client.clone();
    wait_for(START_DEADLINE, "etcd to answer", || {
        let probe = match tls {
            true => tls_files(&pki),
            false => EtcdSecurity::default(),
        };
        let endpoint = endpoint.clone();
        ctl.run(move || etcd_answers(&endpoint, &probe))
            .unwrap_or(false)
    })
}

/// Whether etcd answers a read: with data, or by asking for credentials
/// (authentication is on and the probe holds none).
fn etcd_answers(endpoint: &str, probe: &EtcdSecurity) -> bool {
    use podnet_store::KvBackend;
    let reply =
        podnet_store::EtcdKv::with_security(endpoint, probe).map(|kv| kv.list("/podnet/cluster"));
    matches!(reply, Ok(Ok(_)) | Ok(Err(StoreError::Auth { .. })))
}

/// Writes a secret readable by its owner only.
fn write_secret(path: &Path, secret: &str) -> Result<(), LabError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(secret.as_bytes()))
        .map_err(|e| LabError::io(format!("write {}", path.display()), e))
}

fn read_secret(path: &Path) -> Result<String, LabError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|e| LabError::io(format!("read {}", path.display()), e))
}

/// `bytes` random bytes from the kernel, as hex.
fn random_hex(bytes: usize) -> Result<String, LabError> {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|e| LabError::io("read /dev/urandom", e))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Starts node `node`'s agent in its namespace and waits for its CNI config.
pub(crate) fn start_agent(lab: &Lab, state: &LabState, node: &LabNode) -> Result<(), LabError> {
    let dir = lab.node_dir(&node.name);
    std::fs::create_dir_all(&dir)
        .map_err(|e| LabError::io(format!("create {}", dir.display()), e))?;
    let cluster_file = cluster_file(lab);
    let netns = Netns::open_named(&node.ns)?;
    let model = state.spec.model.name();
    let (addr, store) = (
        node.address.to_string(),
        lab.store_config(state.spec.store)?,
    );
    let (cni_dir, ipam_dir) = (dir.join("cni"), dir.join("ipam"));
    let (cluster_arg, cni_arg, ipam_arg, drops_arg) = (
        cluster_file.display().to_string(),
        cni_dir.display().to_string(),
        ipam_dir.display().to_string(),
        drop_log(lab, &node.name).display().to_string(),
    );
    let store_args = agent_store_args(lab, &store);
    let bird_arg = lab.bird_dir(&node.name).display().to_string();
    let mut args = vec![
        "agent",
        "--node",
        &node.name,
        "--address",
        &addr,
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
        "--bird-dir",
        &bird_arg,
    ];
    args.extend(store_args.iter().map(String::as_str));
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

/// The agent's store flags: the URL and, with TLS, the lab's files (the
/// password from its file, never on the command line).
fn agent_store_args(lab: &Lab, store: &StoreConfig) -> Vec<String> {
    let mut args = vec!["--store".to_string(), store.url.clone()];
    let etcd = &store.etcd;
    let files = [
        ("--etcd-cafile", &etcd.ca_file),
        ("--etcd-certfile", &etcd.cert_file),
        ("--etcd-keyfile", &etcd.key_file),
    ];
    for (flag, file) in files {
        if let Some(file) = file {
            args.extend([flag.to_string(), file.display().to_string()]);
        }
    }
    if let Some(user) = &etcd.username {
        let password = lab.pki_dir().join(PASSWORD_FILE);
        args.extend(["--etcd-username".into(), user.clone()]);
        args.extend([
            "--etcd-password-file".into(),
            password.display().to_string(),
        ]);
    }
    args
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

/// Waits (up to `deadline`) until no process is left in `netns`.
pub(crate) fn wait_for_exit(netns: &Netns, deadline: Duration) {
    let Ok(id) = netns.id() else { return };
    let alone = || podnet_kernel::netns::processes_in(id).is_empty();
    if wait_for(deadline, "the node's processes to exit", alone).is_err() {
        tracing::warn!(target: "podnet-lab", "processes still in {id:?} after {deadline:?}; killing them");
    }
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
