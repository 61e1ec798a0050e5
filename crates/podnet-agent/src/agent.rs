//! The agent's life: start (register, configure), then reconcile on every change.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use podnet_bgp::ServiceBook;
use podnet_cluster::{allocate_blocks, plan_remote_nodes, pod_mtu, Backend, ClusterSpec, Node};
use podnet_dataplane::Model;
use podnet_kernel::nftables::NftHandle;
use podnet_kernel::rtnl::{Removal, RTPROT_BIRD, RTPROT_PODNET_NODES};
use podnet_kernel::{sysctl, RouteHandle};
use podnet_store::{ClusterStore, StoreError};

use crate::bgp::Speaker;
use crate::cniconf::{render_conflist, write_if_changed, NETWORK_NAME};
use crate::datapath::{DatapathChanges, NodeDatapath};
use crate::drops::run_drop_log;
use crate::error::{kernel, AgentError};
use crate::metrics::AgentMetrics;
use crate::policy::run_policy_firewall;
use crate::services::{run_service_proxy, Advertiser};
use crate::underlay::Underlay;
use crate::watch::{watch_kernel, watch_store, Wake};

/// Everything an agent needs to know about its node.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The node's name in the cluster.
    pub node: String,
    /// The node's underlay address (held by one of its interfaces).
    pub address: IpAddr,
    /// Store URL (`file:DIR` or `etcd:http://HOST:PORT`).
    pub store: podnet_store::StoreConfig,
    /// Initialise the cluster with this spec if the store has none.
    pub cluster: Option<ClusterSpec>,
    /// Pod CIDR blocks to ask for instead of the next free ones.
    pub pod_cidrs: Vec<IpNet>,
    /// Same-node pod model written into the CNI config.
    pub model: Model,
    /// Directory of the CNI config the agent writes.
    pub cni_conf_dir: PathBuf,
    /// IPAM state directory written into the CNI config (plugin default when absent).
    pub ipam_dir: Option<PathBuf>,
    /// Full reconcile at least this often, to repair drift nobody announced.
    pub resync: Duration,
    /// Liveness lease TTL; the agent renews it every third of it.
    pub lease_ttl: Duration,
    /// Run the service proxy (Services on nf_tables).
    pub services: bool,
    /// Full service sync (drift repair) at least this often; changes apply at once regardless.
    pub service_resync: Duration,
    /// Enforce NetworkPolicy for the node's pods.
    pub policies: bool,
    /// Full policy sync (drift repair) at least this often; changes apply at once regardless.
    pub policy_resync: Duration,
    /// Append NetworkPolicy denials and anti-spoofing drops here (NFLOG); none: not read.
    pub drop_log: Option<PathBuf>,
    /// Serve `/metrics`, `/healthz` and `/livez` here; none: no endpoint.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Serve kube-proxy's health contract (`/healthz`, `/livez`) here; none: no endpoint.
    pub healthz_addr: Option<std::net::SocketAddr>,
    /// Backend `bgp`: BIRD's directory (configuration, control socket, log).
    pub bird_dir: PathBuf,
    /// Backend `bgp`: the BIRD binary (a path, or a name looked up in `PATH`).
    pub bird: PathBuf,
}

/// A started agent: registered, configured, ready to reconcile.
pub struct Agent {
    config: AgentConfig,
    store: ClusterStore,
    cluster: ClusterSpec,
    node: Node,
    underlay: Underlay,
    datapath: NodeDatapath,
    revision: u64,
    last_heartbeat: Option<Instant>,
    backoff: Duration,
    /// The last reconcile failed: retry after `backoff`, not after `resync`.
    failing: bool,
    /// The agent's metrics, shared with its loops.
    metrics: Arc<AgentMetrics>,
    /// The metrics endpoint's socket, bound at start.
    metrics_listener: Option<std::net::TcpListener>,
    /// The health endpoint's socket, bound at start.
    healthz_listener: Option<std::net::TcpListener>,
    /// The node's BGP speaker (backend `bgp`).
    speaker: Option<Speaker>,
    /// Every service's addresses, as the service loop last programmed
    /// them: what the speaker advertises is computed from these.
    service_book: Arc<Mutex<ServiceBook>>,
}

impl Agent {
    /// Registers the node and writes its CNI config. Everything that can
    /// be refused is checked before anything is written: the underlay is
    /// only read, the requested blocks are checked against the given spec,
    /// and the store is asked before the node is touched. So bad input or an
    /// unreachable store changes nothing, on the node or in the store.
    pub fn start(config: AgentConfig) -> Result<Self, AgentError> {
        let mut h = RouteHandle::current().map_err(kernel("open rtnetlink"))?;
        let nft = NftHandle::current().map_err(kernel("open nfnetlink"))?;
        let underlay = Underlay::discover(&mut h, config.address)?;
        let listen = |addr: Option<std::net::SocketAddr>, what: &str| match addr {
            Some(addr) => crate::http::bind(addr)
                .map(Some)
                .map_err(|e| AgentError::inspect(format!("serve {what} on {addr}"), e)),
            None => Ok(None),
        };
        let metrics_listener = listen(config.metrics_addr, "metrics")?;
        let healthz_listener = listen(config.healthz_addr, "health checks")?;
        if let Some(spec) = &config.cluster {
            spec.validate().map_err(StoreError::from)?;
            allocate_blocks(spec, &config.node, &config.pod_cidrs, &[])
                .map_err(StoreError::from)?;
        }
        // BIRD is looked for before the store is touched when the given spec
        // says bgp: a node that cannot speak BGP changes nothing.
        let speaker_for = |backend: Backend| {
            (backend == Backend::Bgp)
                .then(|| Speaker::new(&config.bird_dir, &config.bird))
                .transpose()
        };
        let mut speaker = match &config.cluster {
            Some(spec) => speaker_for(spec.backend)?,
            None => None,
        };
        let store = podnet_store::open(&config.store)?;
        let cluster = match &config.cluster {
            Some(spec) => store.init_cluster(spec)?,
            None => store.cluster()?.ok_or(StoreError::NoCluster)?,
        };
        if speaker.is_none() {
            speaker = speaker_for(cluster.backend)?;
        }
        let node = store.register_node(
            &config.node,
            config.address,
            underlay.link_local,
            &config.pod_cidrs,
        )?;
        configure_node(&config, &cluster, &node, &underlay)?;
        let metrics = AgentMetrics::new(metrics_listener.is_some());
        if let Ok(mut facts) = metrics.facts.lock() {
            let dir = config
                .ipam_dir
                .clone()
                .unwrap_or_else(|| podnet_ipam::DEFAULT_DATA_DIR.into());
            facts.ipam = Some((dir, node.pod_cidrs.clone()));
        }
        Ok(Agent {
            config,
            store,
            cluster,
            node,
            underlay,
            datapath: NodeDatapath::new(h, nft),
            revision: 0,
            last_heartbeat: None,
            backoff: Duration::from_millis(100),
            failing: false,
            metrics,
            metrics_listener,
            healthz_listener,
            speaker,
            service_book: Arc::default(),
        })
    }

    /// Reads the cluster and makes the datapath match it once, logging `why`
    /// with any change it makes. `Ok(None)` when this node is no longer
    /// registered (it was removed: time to stop).
    fn reconcile(&mut self, why: &str) -> Result<Option<DatapathChanges>, AgentError> {
        let view = self.store.snapshot()?;
        if !view.nodes.iter().any(|n| n.name == self.node.name) {
            return Ok(None);
        }
        let remotes = plan_remote_nodes(
            self.cluster.backend,
            &self.node.name,
            &self.underlay.segments,
            &view.nodes,
        );
        let mut changes = self.datapath.reconcile(
            &self.cluster,
            &self.node,
            &self.underlay,
            &remotes,
            self.config.services,
        )?;
        changes.added += self
            .datapath
            .allow_forwarding(NETWORK_NAME, &self.node.pod_cidrs)?;
        changes.removed += self.datapath.sweep_antispoof(self.config.model)?;
        if self.sync_speaker(&view)? {
            changes.added += 1;
        }
        self.revision = view.revision;
        if !changes.is_empty() {
            tracing::info!(
                target: "podnet-agent",
                revision = view.revision,
                remotes = remotes.len(),
                added = changes.added,
                removed = changes.removed,
                "revision {} ({why}): {} remote nodes, {} added, {} removed",
                view.revision,
                remotes.len(),
                changes.added,
                changes.removed
            );
        }
        Ok(Some(changes))
    }

    /// Gives BIRD the sessions the cluster wants now (backend `bgp`); true
    /// when its configuration changed.
    fn sync_speaker(&mut self, view: &podnet_store::ClusterView) -> Result<bool, AgentError> {
        let Some(speaker) = self.speaker.as_mut() else {
            return Ok(false);
        };
        let settings = self.cluster.bgp_settings();
        let mut peers = view.bgp_peers.clone();
        for p in &settings.peers {
            if !peers.iter().any(|q| q.name == p.name) {
                peers.push(p.clone());
            }
        }
        let has_v6 = self.node.pod_cidrs.iter().any(|b| b.addr().is_ipv6());
        let mut node = podnet_bgp::node_bgp(
            &settings,
            &view.nodes,
            &peers,
            &self.node.name,
            &self.underlay.segments,
            self.underlay.global_v6.filter(|_| has_v6),
        )
        .map_err(crate::bgp::SpeakerError::from)?;
        node.services = {
            let book = self.service_book.lock().unwrap_or_else(|e| e.into_inner());
            podnet_bgp::service_routes(&settings.advertise, &self.cluster.service_cidrs, book.all())
        };
        // Asked only when BIRD must be started: a route listing is not free.
        let datapath = &mut self.datapath;
        let restarting = || match datapath.count_routes(RTPROT_BIRD) {
            Ok(n) => n > 0,
            Err(e) => {
                tracing::warn!(target: "podnet-agent",
                    "{e}; starting BIRD with -R, so that routes it may have written stay");
                true
            }
        };
        let changed = speaker.sync(&node, restarting)?;
        if changed {
            tracing::info!(target: "podnet-agent",
                "BIRD configured: AS {}, {} sessions ({}), {} service prefixes advertised",
                node.asn,
                node.peers.len(),
                node.peers.iter().map(|p| p.description.as_str()).collect::<Vec<_>>().join(", "),
                node.services.advertised.len()
            );
        }
        Ok(changed)
    }

    /// Reconciles on every store change, on every removal of part of the
    /// node's datapath, and at least every `resync`, until `stop` is set or
    /// the node is removed from the cluster. Store outages are logged and
    /// retried: the kernel keeps the last good state meanwhile.
    pub fn run(&mut self, stop: &AtomicBool) {
        let halt = AtomicBool::new(false);
        let (tx, rx) = mpsc::channel();
        // The first pass gives the watchers the revision to start from.
        if !self.pass("start") {
            return;
        }
        let (url, revision) = (self.config.store.clone(), self.revision);
        std::thread::scope(|s| {
            let (tx_store, halt_ref) = (tx.clone(), &halt);
            s.spawn(move || watch_store(&url, revision, &tx_store, halt_ref));
            s.spawn(|| watch_kernel(&tx, &halt));
            self.spawn_loops(s, &halt, &tx);
            while !stop.load(Ordering::Relaxed) {
                let why = self.wait_for_wake(&rx);
                if stop.load(Ordering::Relaxed) || !self.pass(&why) {
                    break;
                }
            }
            halt.store(true, Ordering::Relaxed);
        });
    }

    /// The loops beside the datapath's: BGP session watch, service proxy,
    /// policy firewall, drop log and metrics endpoint, as configured; each
    /// ends at `halt`.
    fn spawn_loops<'s>(
        &self,
        s: &'s std::thread::Scope<'s, '_>,
        halt: &'s AtomicBool,
        wake: &mpsc::Sender<Wake>,
    ) {
        let (url, node) = (self.config.store.clone(), self.node.name.clone());
        if self.config.services {
            let (url, node, resync, m) = (
                url.clone(),
                node.clone(),
                self.config.service_resync,
                self.metrics.clone(),
            );
            // With a BGP speaker, the service loop also tells it what to advertise.
            let advertiser = self.speaker.as_ref().map(|_| Advertiser {
                book: self.service_book.clone(),
                wake: wake.clone(),
            });
            s.spawn(move || run_service_proxy(&url, &node, resync, halt, &m, advertiser));
        }
        if self.config.policies {
            let (resync, m) = (self.config.policy_resync, self.metrics.clone());
            s.spawn(move || run_policy_firewall(&url, &node, resync, halt, &m));
        }
        if let Some(socket) = self.speaker.as_ref().map(Speaker::socket) {
            s.spawn(move || crate::bgp_sessions::run_session_watch(&socket, halt));
        }
        if let Some(path) = self.config.drop_log.clone() {
            let stats = self.metrics.drops.clone();
            s.spawn(move || run_drop_log(&path, &stats, halt));
        }
        for (listener, endpoint) in [
            (&self.metrics_listener, crate::http::Endpoint::Metrics),
            (&self.healthz_listener, crate::http::Endpoint::Health),
        ] {
            if let Some(listener) = listener.as_ref().and_then(|l| l.try_clone().ok()) {
                let (m, expected) = (self.metrics.clone(), self.health_limits());
                s.spawn(move || crate::http::serve(&listener, endpoint, &m, &expected, halt));
            }
        }
    }

    /// The loops `/healthz` expects to have synced, each within twice its
    /// resync interval (and a margin for a slow pass).
    fn health_limits(&self) -> Vec<(&'static str, Duration)> {
        let c = &self.config;
        let margin = Duration::from_secs(10);
        let mut out = vec![("datapath", c.resync.min(c.lease_ttl / 3) * 2 + margin)];
        if c.services {
            out.push(("services", c.service_resync * 2 + margin));
        }
        if c.policies {
            out.push(("policies", c.policy_resync * 2 + margin));
        }
        out
    }

    /// One heartbeat (when due) and one reconcile; false when the node is gone.
    fn pass(&mut self, why: &str) -> bool {
        let _pass = tracing::info_span!("reconcile", node = %self.node.name, why).entered();
        let heartbeat_every = self.config.lease_ttl / 3;
        if self
            .last_heartbeat
            .is_none_or(|t| t.elapsed() >= heartbeat_every)
        {
            let beat = self.store.heartbeat(&self.node.name, self.config.lease_ttl);
            self.metrics.store_reachable(beat.is_ok());
            match beat {
                Ok(()) => self.last_heartbeat = Some(Instant::now()),
                Err(e) => tracing::warn!(target: "podnet-agent", "heartbeat: {e}"),
            }
        }
        self.failing = false;
        let started = Instant::now();
        let result = self.reconcile(why);
        match &result {
            Ok(_) => {
                let changed = (why == "store change").then_some(started);
                self.metrics.pass_ok("datapath", started.elapsed(), changed);
                let (routes, fdb, neighbours) = self.datapath.programmed();
                self.metrics.programmed("routes", routes);
                self.metrics.programmed("fdb_entries", fdb);
                self.metrics.programmed("neighbours", neighbours);
            }
            Err(e) => {
                self.metrics.pass_failed("datapath");
                if matches!(e, AgentError::Store(_)) {
                    self.metrics.store_reachable(false);
                }
            }
        }
        match result {
            Ok(Some(_)) => self.backoff = Duration::from_millis(100),
            Ok(None) => {
                tracing::info!(target: "podnet-agent", "this node was removed from the cluster; stopping");
                if let Some(Err(e)) = self.speaker.as_ref().map(Speaker::shut_down) {
                    tracing::warn!(target: "podnet-agent", "stop BIRD: {e}");
                }
                return false;
            }
            Err(e) => {
                tracing::warn!(target: "podnet-agent",
                    "reconcile: {e}; keeping the current datapath, retrying"
                );
                self.failing = true;
                self.backoff = (self.backoff * 2).min(Duration::from_secs(2));
            }
        }
        true
    }

    /// Blocks until a relevant wake, the resync interval, or the next
    /// heartbeat; returns why, for the log.
    fn wait_for_wake(&self, rx: &Receiver<Wake>) -> String {
        let wait = if self.failing {
            self.backoff
        } else {
            self.config.resync.min(self.config.lease_ttl / 3)
        };
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(wake) if self.concerns_us(&wake) => {
                    // Coalesce a burst (our own deletions echo back too).
                    while rx.try_recv().is_ok() {}
                    return match wake {
                        Wake::Store => "store change".into(),
                        Wake::Services => "service addresses".into(),
                        Wake::Kernel(r) => format!("kernel: {r:?} removed"),
                    };
                }
                Ok(_) => continue,
                Err(_) => return "resync".into(),
            }
        }
    }

    /// Whether a wake may mean our datapath or the cluster changed.
    fn concerns_us(&self, wake: &Wake) -> bool {
        let vxlan = self.datapath.vxlan_index();
        match wake {
            Wake::Store | Wake::Services | Wake::Kernel(Removal::Unknown) => true,
            Wake::Kernel(Removal::Route { protocol }) => *protocol == RTPROT_PODNET_NODES,
            Wake::Kernel(Removal::Link { index }) => {
                *index == self.underlay.index || Some(*index) == vxlan
            }
            Wake::Kernel(Removal::StaticEntry { index }) => Some(*index) == vxlan,
        }
    }
}

/// Writes the node's CNI config (MTU derived from the underlay) and turns on forwarding.
fn configure_node(
    config: &AgentConfig,
    cluster: &ClusterSpec,
    node: &Node,
    underlay: &Underlay,
) -> Result<(), AgentError> {
    let mtu = pod_mtu(cluster.backend, underlay.mtu, underlay.address, cluster.mtu);
    let conf = render_conflist(
        cluster,
        &node.pod_cidrs,
        config.model,
        mtu,
        config.ipam_dir.as_deref(),
    );
    write_if_changed(&config.cni_conf_dir, &conf)?;
    sysctl::write("net/ipv4/ip_forward", "1").map_err(kernel("enable IPv4 forwarding"))?;
    if node.pod_cidrs.iter().any(|c| c.addr().is_ipv6()) {
        sysctl::write("net/ipv6/conf/all/forwarding", "1")
            .map_err(kernel("enable IPv6 forwarding"))?;
    }
    tracing::info!(target: "podnet-agent",
        "node {} at {} ({} mtu {}): blocks {:?}, backend {:?}, pod mtu {mtu}",
        node.name, node.address, underlay.name, underlay.mtu, node.pod_cidrs, cluster.backend
    );
    Ok(())
}
