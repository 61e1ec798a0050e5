//! The command line: parse, call one library function, report its error.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::store_args::StoreArgs;
use crate::{doctor_cmd, drops_cmd, lab_cmd, manifests, trace_cmd};
use ipnet::IpNet;
use podnet_agent::{Agent, AgentConfig};
use podnet_cluster::{Backend, ClusterSpec};
use podnet_lab::{Lab, LabSpec, Model, StoreKind};
use podnet_services::{Service, ServiceName};

/// podnet: a Kubernetes pod network.
#[derive(Parser)]
#[command(version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Top,
    /// Log level: error, warn, info, debug or trace (or a `tracing` filter like `podnet-agent=debug`).
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
}

/// How log lines look.
#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    /// One readable line per event.
    Text,
    /// One JSON object per event (fields, span, level, timestamp).
    Json,
}

/// Starts structured logging on stderr (stdout stays for results).
fn init_logging(level: &str, format: LogFormat) -> Result<(), Box<dyn std::error::Error>> {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .map_err(|e| format!("--log-level {level}: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let done = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    done.map_err(|e| format!("start logging: {e}").into())
}

#[derive(Subcommand)]
enum Top {
    /// Run the node agent: register the node, write its CNI config, keep cross-node routes right.
    Agent(Box<AgentArgs>),
    /// Inspect or change the cluster in its store.
    Cluster {
        #[command(flatten)]
        store: StoreArgs,
        #[command(subcommand)]
        action: ClusterAction,
    },
    /// Why can't A reach B: one real probe, followed hop by hop, with the verdict (hop, cause, fix).
    Trace(trace_cmd::TraceArgs),
    /// Check every invariant of a node against the cluster: what is missing, extra or wrong.
    Doctor(doctor_cmd::DoctorArgs),
    /// Recent NetworkPolicy denials and anti-spoofing drops, with the policy that denied them.
    Drops(drops_cmd::DropsArgs),
    /// A whole cluster (fabric, nodes, agents, pods) built from network namespaces on this machine.
    Lab {
        /// Name of the lab; prefixes its namespaces (`podnet-NAME-node1`, ...).
        #[arg(long, global = true, default_value = podnet_lab::DEFAULT_NAME)]
        name: String,
        #[command(subcommand)]
        action: LabAction,
    },
}

#[derive(clap::Args)]
struct AgentArgs {
    /// This node's name in the cluster.
    #[arg(long)]
    node: String,
    /// This node's underlay address (held by one of its interfaces).
    #[arg(long)]
    address: IpAddr,
    #[command(flatten)]
    store: StoreArgs,
    /// Cluster spec (YAML or JSON) to initialise the store with if it has none.
    #[arg(long)]
    cluster: Option<PathBuf>,
    /// Ask for this pod CIDR block (once per family) instead of the next free one.
    #[arg(long = "pod-cidr")]
    pod_cidrs: Vec<IpNet>,
    /// Same-node model written into the CNI config.
    #[arg(long, value_enum, default_value = "routed")]
    model: ModelArg,
    /// Where to write the CNI config.
    #[arg(long, default_value = "/etc/cni/net.d")]
    cni_conf_dir: PathBuf,
    /// IPAM state directory for the CNI config (the plugin's default when absent).
    #[arg(long)]
    ipam_dir: Option<PathBuf>,
    /// Full reconcile at least this often, in seconds.
    #[arg(long, default_value_t = 10)]
    resync_secs: u64,
    /// Liveness lease TTL in seconds.
    #[arg(long, default_value_t = 15)]
    lease_ttl_secs: u64,
    /// Do not run the service proxy (Services on nf_tables).
    #[arg(long)]
    no_services: bool,
    /// Full service sync (repairs drift) at least this often, in seconds; changes apply at once.
    #[arg(long, default_value_t = 60)]
    service_resync_secs: u64,
    /// Do not enforce NetworkPolicy.
    #[arg(long)]
    no_policies: bool,
    /// Full policy sync (repairs drift) at least this often, in seconds; changes apply at once.
    #[arg(long, default_value_t = 60)]
    policy_resync_secs: u64,
    /// Where NetworkPolicy denials and anti-spoofing drops are logged (`podnet drops` reads it).
    #[arg(long, default_value = "/var/log/podnet/drops.jsonl")]
    drop_log: PathBuf,
    /// Do not read NFLOG: drops are only counted, not logged.
    #[arg(long)]
    no_drop_log: bool,
    /// Serve Prometheus metrics (`/metrics`), `/healthz` and `/livez` on this address (e.g. 0.0.0.0:9101).
    #[arg(long)]
    metrics_addr: Option<std::net::SocketAddr>,
    /// Serve kube-proxy's health contract (`/healthz` JSON, `/livez`) on this address.
    #[arg(long, default_value = "0.0.0.0:10256")]
    healthz_addr: std::net::SocketAddr,
    /// Do not serve the health contract.
    #[arg(long)]
    no_healthz: bool,
    /// Backend bgp: BIRD's directory (bird.conf, control socket bird.ctl, log).
    #[arg(long, default_value = "/run/podnet/bird")]
    bird_dir: PathBuf,
    /// Backend bgp: the BIRD binary (Debian's bird2).
    #[arg(long, default_value = "bird")]
    bird: PathBuf,
}

/// `-f FILE|-`: the manifest of `apply` and `delete`.
#[derive(clap::Args)]
struct ManifestFile {
    /// The manifest file (YAML or JSON, several documents), or `-` for standard input.
    #[arg(short = 'f', long)]
    file: PathBuf,
}

#[derive(Subcommand)]
enum ClusterAction {
    /// Create or replace Kubernetes objects (Namespace, Pod, Service, NetworkPolicy) from manifests.
    Apply(ManifestFile),
    /// Delete the Kubernetes objects a manifest names.
    Delete(ManifestFile),
    /// Store a cluster spec (YAML or JSON) if the store has none.
    Init {
        /// The spec file.
        #[arg(short = 'f', long)]
        file: PathBuf,
    },
    /// Print the cluster spec and its nodes.
    Status,
    /// Remove a node (its block is freed; other nodes drop their routes to it).
    RemoveNode {
        /// Node name.
        node: String,
    },
    /// Create or update services from a YAML file (one service, or a list).
    ApplyServices {
        /// The file.
        #[arg(short = 'f', long)]
        file: PathBuf,
    },
    /// Set services' endpoints from a YAML file (one endpoints object, or a list).
    ApplyEndpoints {
        /// The file.
        #[arg(short = 'f', long)]
        file: PathBuf,
    },
    /// List services (as stored, with their cluster IPs and node ports) and their endpoints.
    Services,
    /// Delete a service and its endpoints.
    DeleteService {
        /// Service name.
        #[arg(value_name = "NAME")]
        service: String,
        /// Namespace.
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
    },
}

/// One object or a list of them, from a YAML file.
fn read_list<T: serde::de::DeserializeOwned>(
    file: &PathBuf,
) -> Result<Vec<T>, Box<dyn std::error::Error>> {
    let text =
        std::fs::read_to_string(file).map_err(|e| format!("read {}: {e}", file.display()))?;
    match serde_yaml_ng::from_str::<Vec<T>>(&text) {
        Ok(list) => Ok(list),
        Err(_) => {
            Ok(vec![serde_yaml_ng::from_str::<T>(&text)
                .map_err(|e| format!("{}: {e}", file.display()))?])
        }
    }
}

#[derive(Subcommand)]
enum LabAction {
    /// Build a lab cluster and print its connectivity matrix.
    Up(LabUpArgs),
    /// Print the lab's nodes and its connectivity matrix; fails on any unexpected result.
    #[command(alias = "status")]
    Check,
    /// Remove everything the lab made (also after a crashed `lab up`).
    Down,
    /// Add a node (with its agent, no pods) on a segment.
    AddNode {
        /// Segment number (1-based).
        #[arg(long, default_value_t = 1)]
        segment: usize,
    },
    /// Add pods to a node.
    AddPods {
        /// Node name.
        node: String,
        /// How many.
        #[arg(long, default_value_t = 1)]
        count: usize,
    },
    /// Remove a node: its pods, agent, namespace and cluster record.
    RemoveNode {
        /// Node name.
        node: String,
    },
    /// BGP sessions, their state and the routes learned: every node's
    /// (from BIRD's control socket) and the router's (from FRR's vtysh).
    Bgp {
        /// Only this node.
        node: Option<String>,
    },
    /// Kill a node's agent and start a new one.
    RestartAgent {
        /// Node name.
        node: String,
    },
    /// Create, change, list, delete and probe services.
    Service {
        #[command(subcommand)]
        action: ServiceAction,
    },
    /// Create or replace Kubernetes objects (Namespace, Pod, Service, NetworkPolicy), like `kubectl apply -f`.
    Apply(ManifestFile),
    /// Delete the objects a manifest names, like `kubectl delete -f`.
    Delete(ManifestFile),
    /// List pods, services, networkpolicies, namespaces, nodes or externalhosts, like `kubectl get`.
    Get {
        /// What to list.
        resource: String,
        /// Namespace (default: `default`).
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// Every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        /// `wide`, `json` or `yaml`.
        #[arg(short = 'o', long)]
        output: Option<String>,
    },
    /// Run a command in a pod's network namespace (or an external host's, or a node's), like `kubectl exec`.
    Exec {
        /// Pod (or external host, or node) name.
        target: String,
        /// The pod's namespace.
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        /// The command and its arguments (after `--`).
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Connect from a pod (`ns/name`), external host or node to another (or an
    /// address) and print the echo server's answer; fails when none comes.
    Connect {
        /// Client: `ns/name` (a pod; `default` namespace when no `/`), an external host or a node.
        from: String,
        /// Server: a pod, an external host, a node, or an address.
        to: String,
        /// Port.
        #[arg(long, default_value_t = 7777)]
        port: u16,
        /// A UDP datagram instead of a TCP connection.
        #[arg(long)]
        udp: bool,
    },
    /// Set (`key=value`) or remove (`key-`) labels of a pod or namespace, like `kubectl label`.
    Label {
        /// `pod` or `namespace`.
        kind: String,
        /// Its name.
        #[arg(value_name = "NAME")]
        object: String,
        /// Label changes.
        #[arg(required = true)]
        changes: Vec<String>,
        /// The pod's namespace.
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
    },
    /// Mark a pod ready or not ready (its service endpoints follow).
    SetReady {
        /// Pod name.
        pod: String,
        /// `true` or `false`.
        #[arg(long, action = clap::ArgAction::Set, default_value_t = true)]
        ready: bool,
    },
    /// Draw the lab (Graphviz): segments, router, nodes, pods, veths, bridges, VXLAN, hosts.
    Graph {
        /// Render to this file with `dot` (format from its extension: svg, png, pdf); DOT on stdout without.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Draw this trace's path (`podnet trace --json` output) and its drop point.
        #[arg(long)]
        trace: Option<PathBuf>,
    },
    /// Serve TCP echo in the current namespace (started inside each lab pod).
    #[command(hide = true)]
    EchoServer {
        /// Port to listen on (TCP and UDP); repeat for several.
        #[arg(long = "port", required = true)]
        ports: Vec<u16>,
        /// Name to answer with.
        #[arg(long, default_value = "")]
        id: String,
    },
}

#[derive(Subcommand)]
enum ServiceAction {
    /// Create or update services from a YAML file (one service, or a list);
    /// endpoints come from the pods their selector matches.
    Apply {
        /// The file.
        #[arg(short = 'f', long)]
        file: PathBuf,
    },
    /// Delete a service.
    Delete {
        /// Service name.
        #[arg(value_name = "NAME")]
        service: String,
        /// Namespace.
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
    },
    /// List services with their cluster IPs, node ports and endpoints.
    List,
    /// Connect to a service many times and count which endpoint answered.
    Probe {
        /// Service name.
        #[arg(value_name = "NAME")]
        service: String,
        /// Namespace.
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        /// Client: a pod, a node (`node1`), or `control` (outside the cluster, on the fabric).
        #[arg(long)]
        from: Option<String>,
        /// Connect to this address instead of the cluster IP (a node, external or load-balancer IP).
        #[arg(long)]
        to: Option<IpAddr>,
        /// Use the node port (with `--to NODE_ADDRESS`).
        #[arg(long)]
        node_port: bool,
        /// Connections (TCP) or datagrams (UDP).
        #[arg(long, default_value_t = 30)]
        count: usize,
        /// Which service port (by number; default the first).
        #[arg(long)]
        port: Option<u32>,
    },
}

#[derive(clap::Args)]
struct LabUpArgs {
    /// Cluster file (see examples/cluster.yaml); the flags below are ignored when given.
    #[arg(short = 'f', long)]
    file: Option<PathBuf>,
    /// Number of nodes.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Number of L2 segments the nodes are spread over (joined by a router).
    #[arg(long, default_value_t = 1)]
    segments: usize,
    /// Pods on each node.
    #[arg(long, default_value_t = 2)]
    pods_per_node: usize,
    /// Cross-node backend.
    #[arg(long, value_enum, default_value = "auto")]
    backend: BackendArg,
    /// Same-node model.
    #[arg(long, value_enum, default_value = "routed")]
    model: ModelArg,
    /// Cluster store.
    #[arg(long, value_enum, default_value = "embedded")]
    store: StoreArg,
    /// etcd as production runs it: TLS, client certificates and authentication
    /// (the lab makes its own CA; with `--store etcd`).
    #[arg(long)]
    etcd_tls: bool,
    /// MTU of the fabric links.
    #[arg(long, default_value_t = 1500)]
    fabric_mtu: u32,
    /// Hosts outside the cluster, behind the router (`ext1`, `ext2`, ... in 192.0.2.0/24).
    #[arg(long, default_value_t = 0)]
    external_hosts: usize,
    /// With `--backend bgp`: `tor` (the router is an FRR top-of-rack router,
    /// eBGP to every node), `mesh` (node-to-node iBGP) or `reflector`.
    #[arg(long, value_enum, default_value = "tor")]
    bgp_topology: BgpTopologyArg,
    /// With `--bgp-topology reflector`: BIRD on the first node of each
    /// segment, or FRR on the router.
    #[arg(long, value_enum, default_value = "bird")]
    bgp_reflector: BgpReflectorArg,
}

#[derive(Clone, Copy, ValueEnum)]
enum BgpTopologyArg {
    Tor,
    Mesh,
    Reflector,
}

#[derive(Clone, Copy, ValueEnum)]
enum BgpReflectorArg {
    Bird,
    Frr,
}

#[derive(Clone, Copy, ValueEnum)]
enum ModelArg {
    Routed,
    Bridge,
}

#[derive(Clone, Copy, ValueEnum)]
enum BackendArg {
    HostGw,
    Vxlan,
    Auto,
    Bgp,
}

#[derive(Clone, Copy, ValueEnum)]
enum StoreArg {
    Embedded,
    Etcd,
}

impl From<ModelArg> for Model {
    fn from(m: ModelArg) -> Self {
        match m {
            ModelArg::Routed => Model::Routed,
            ModelArg::Bridge => Model::Bridge,
        }
    }
}

impl From<BackendArg> for Backend {
    fn from(b: BackendArg) -> Self {
        match b {
            BackendArg::HostGw => Backend::HostGw,
            BackendArg::Vxlan => Backend::Vxlan,
            BackendArg::Auto => Backend::Auto,
            BackendArg::Bgp => Backend::Bgp,
        }
    }
}

/// Runs one command.
pub fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    init_logging(&cli.log_level, cli.log_format)?;
    match cli.command {
        Top::Agent(args) => run_agent(*args),
        Top::Cluster { store, action } => run_cluster(&store.config()?, action),
        Top::Lab { name, action } => run_lab(&name, action),
        Top::Trace(args) => trace_cmd::run(args),
        Top::Doctor(args) => doctor_cmd::run(args),
        Top::Drops(args) => drops_cmd::run(args),
    }
}

fn read_cluster_spec(path: &PathBuf) -> Result<ClusterSpec, Box<dyn std::error::Error>> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    let spec: ClusterSpec =
        serde_yaml_ng::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    spec.validate()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(spec)
}

fn run_agent(args: AgentArgs) -> Result<(), Box<dyn std::error::Error>> {
    podnet_kernel::process::use_one_malloc_arena();
    let cluster = args.cluster.as_ref().map(read_cluster_spec).transpose()?;
    let config = AgentConfig {
        node: args.node,
        address: args.address,
        store: args.store.config()?,
        cluster,
        pod_cidrs: args.pod_cidrs,
        model: args.model.into(),
        cni_conf_dir: args.cni_conf_dir,
        ipam_dir: args.ipam_dir,
        resync: Duration::from_secs(args.resync_secs.max(1)),
        lease_ttl: Duration::from_secs(args.lease_ttl_secs.max(3)),
        services: !args.no_services,
        service_resync: Duration::from_secs(args.service_resync_secs.max(1)),
        policies: !args.no_policies,
        policy_resync: Duration::from_secs(args.policy_resync_secs.max(1)),
        drop_log: (!args.no_drop_log).then_some(args.drop_log),
        metrics_addr: args.metrics_addr,
        healthz_addr: (!args.no_healthz).then_some(args.healthz_addr),
        bird_dir: args.bird_dir,
        bird: args.bird,
    };
    let mut agent = Agent::start(config)?;
    agent.run(&AtomicBool::new(false));
    Ok(())
}

fn run_cluster(
    store: &podnet_store::StoreConfig,
    action: ClusterAction,
) -> Result<(), Box<dyn std::error::Error>> {
    let store = podnet_store::open(store)?;
    match action {
        ClusterAction::Apply(ManifestFile { file }) => {
            let docs = manifests::read(&file)?;
            store.check_objects(&docs.iter().map(|d| &d.object).collect::<Vec<_>>(), false)?;
            for (doc, outcome) in docs.iter().zip(manifests::apply_all(&store, &docs)?) {
                println!(
                    "{} {outcome}{}",
                    doc.object.describe(),
                    manifests::ignored_note(doc)
                );
            }
            for (svc, eps) in store.sync_endpoints()? {
                println!(
                    "endpoints/{} set ({} addresses)",
                    svc.key(),
                    eps.endpoints.len()
                );
            }
        }
        ClusterAction::Delete(ManifestFile { file }) => {
            // Last first: what a namespace holds goes before the namespace.
            for doc in manifests::read(&file)?.into_iter().rev() {
                let found = store.delete_object(&doc.object)?;
                let what = if found { "deleted" } else { "not found" };
                println!("{} {what}", doc.object.describe());
            }
            store.sync_endpoints()?;
        }
        ClusterAction::Init { file } => {
            let spec = store.init_cluster(&read_cluster_spec(&file)?)?;
            println!("{}", serde_json::to_string_pretty(&spec)?);
        }
        ClusterAction::Status => {
            let view = store.snapshot()?;
            match &view.cluster {
                Some(c) => println!("{}", serde_json::to_string_pretty(c)?),
                None => println!("no cluster in {}", store.endpoint()),
            }
            for n in &view.nodes {
                let alive = if view.alive.contains(&n.name) {
                    "alive"
                } else {
                    "not alive"
                };
                let blocks: Vec<String> = n.pod_cidrs.iter().map(|c| c.to_string()).collect();
                println!("{} {} {} {alive}", n.name, n.address, blocks.join(","));
            }
        }
        ClusterAction::RemoveNode { node } => {
            if !store.remove_node(&node)? {
                return Err(format!("no node {node} in {}", store.endpoint()).into());
            }
        }
        ClusterAction::ApplyServices { file } => {
            for svc in read_list::<Service>(&file)? {
                println!("{}", serde_json::to_string(&store.put_service(svc)?)?);
            }
        }
        ClusterAction::ApplyEndpoints { file } => {
            for eps in read_list::<podnet_services::Endpoints>(&file)? {
                store.put_endpoints(&eps)?;
            }
        }
        ClusterAction::Services => {
            let snap = store.service_snapshot()?;
            for (name, raw) in &snap.services {
                println!("{raw}");
                if let Some((_, e)) = snap.endpoints.iter().find(|(n, _)| n == name) {
                    println!("  endpoints: {e}");
                }
            }
        }
        ClusterAction::DeleteService { service, namespace } => {
            let key = ServiceName {
                namespace,
                name: service,
            };
            if !store.delete_service(&key)? {
                return Err(format!("no service {key} in {}", store.endpoint()).into());
            }
        }
    }
    Ok(())
}

fn run_lab(name: &str, action: LabAction) -> Result<(), Box<dyn std::error::Error>> {
    let lab = Lab::new(name)?;
    match action {
        LabAction::Up(args) => {
            let spec = match &args.file {
                Some(path) => LabSpec::from_yaml(
                    &std::fs::read_to_string(path)
                        .map_err(|e| format!("read {}: {e}", path.display()))?,
                )?,
                None => {
                    let mut spec = LabSpec::from_flags(
                        args.nodes,
                        args.segments,
                        args.pods_per_node,
                        args.backend.into(),
                        args.model.into(),
                    );
                    spec.store = match args.store {
                        StoreArg::Embedded => StoreKind::Embedded,
                        StoreArg::Etcd => StoreKind::Etcd,
                    };
                    spec.etcd_tls = args.etcd_tls;
                    spec.fabric.mtu = args.fabric_mtu;
                    if matches!(args.backend, BackendArg::Bgp) {
                        use podnet_lab::spec::{BgpTopology, LabBgpSpec, ReflectorKind};
                        spec.bgp = Some(LabBgpSpec {
                            topology: match args.bgp_topology {
                                BgpTopologyArg::Tor => BgpTopology::Tor,
                                BgpTopologyArg::Mesh => BgpTopology::Mesh,
                                BgpTopologyArg::Reflector => BgpTopology::Reflector,
                            },
                            reflector: match args.bgp_reflector {
                                BgpReflectorArg::Bird => ReflectorKind::Bird,
                                BgpReflectorArg::Frr => ReflectorKind::Frr,
                            },
                            ..LabBgpSpec::default()
                        });
                    }
                    spec.external_hosts = (1..=args.external_hosts)
                        .map(|i| podnet_lab::spec::ExternalHostSpec {
                            name: format!("ext{i}"),
                            address: None,
                        })
                        .collect();
                    spec
                }
            };
            lab.up(&spec, &plugin_path())?;
        }
        LabAction::Check => lab.check()?,
        LabAction::Down => lab.down()?,
        LabAction::AddNode { segment } => println!("{}", lab.add_node(segment)?),
        LabAction::AddPods { node, count } => {
            for p in lab.add_pods(&node, count)? {
                println!("{} {:?}", p.name, p.ips);
            }
        }
        LabAction::RemoveNode { node } => lab.remove_node(&node)?,
        LabAction::RestartAgent { node } => lab.restart_agent(&node)?,
        LabAction::Bgp { node } => print!("{}", lab.bgp_report(node.as_deref())?),
        LabAction::Apply(ManifestFile { file }) => {
            lab_cmd::print(lab.apply(&manifests::read(&file)?)?)
        }
        LabAction::Delete(ManifestFile { file }) => {
            lab_cmd::print(lab.delete(&manifests::read(&file)?)?)
        }
        LabAction::Get {
            resource,
            namespace,
            all_namespaces,
            output,
        } => {
            let ns = (!all_namespaces).then(|| namespace.unwrap_or_else(|| "default".into()));
            lab_cmd::get(&lab, &resource, ns.as_deref(), output.as_deref())?
        }
        LabAction::Exec {
            target,
            namespace,
            command,
        } => lab_cmd::exec(&lab, &target, &namespace, &command)?,
        LabAction::Connect {
            from,
            to,
            port,
            udp,
        } => match lab.connect(&from, &to, port, udp)? {
            Ok(a) => println!(
                "{from} -> {to}:{port}: answered by {}, which saw {}",
                a.by, a.seen
            ),
            Err(e) => return Err(format!("{from} -> {to}:{port}: no answer ({e})").into()),
        },
        LabAction::Label {
            kind,
            object,
            changes,
            namespace,
        } => lab_cmd::label(&lab, &kind, &object, &namespace, &changes)?,
        LabAction::EchoServer { ports, id } => podnet_lab::echo::serve(&ports, &id)?,
        LabAction::Service { action } => run_lab_service(&lab, action)?,
        LabAction::SetReady { pod, ready } => lab.set_ready(&pod, ready)?,
        LabAction::Graph { out, trace } => lab_cmd::graph(&lab, out.as_deref(), trace.as_deref())?,
    }
    Ok(())
}

fn run_lab_service(lab: &Lab, action: ServiceAction) -> Result<(), Box<dyn std::error::Error>> {
    match action {
        ServiceAction::Apply { file } => {
            for svc in read_list::<Service>(&file)? {
                let stored = lab.apply_service(svc)?;
                println!("{}", serde_json::to_string(&stored)?);
            }
        }
        ServiceAction::Delete { service, namespace } => {
            let key = ServiceName {
                namespace,
                name: service,
            };
            if !lab.delete_service(&key)? {
                return Err(format!("no service {key}").into());
            }
        }
        ServiceAction::List => {
            for (svc, eps) in lab.services()? {
                let ready: Vec<String> = eps
                    .iter()
                    .flat_map(|e| &e.endpoints)
                    .filter(|e| e.ready)
                    .map(|e| format!("{}@{}", e.address, e.node))
                    .collect();
                println!("{}", serde_json::to_string(&svc)?);
                println!("  endpoints: {}", ready.join(" "));
            }
        }
        ServiceAction::Probe {
            service,
            namespace,
            from,
            to,
            node_port,
            count,
            port,
        } => {
            let key = ServiceName {
                namespace,
                name: service,
            };
            let (svc, _) = lab
                .services()?
                .into_iter()
                .find(|(s, _)| s.key() == key)
                .ok_or_else(|| format!("no service {key}"))?;
            let sp = match port {
                Some(n) => svc.ports.iter().find(|p| p.port == n),
                None => svc.ports.first(),
            }
            .ok_or("no such service port")?;
            let number = if node_port {
                sp.node_port.ok_or("the service port has no node port")?
            } else {
                sp.port
            };
            let addr = to
                .or(svc.cluster_ip)
                .ok_or("the service has no cluster IP")?;
            let target = std::net::SocketAddr::new(addr, u16::try_from(number)?);
            let client = match from {
                Some(f) => f,
                None => lab
                    .state()?
                    .pods
                    .first()
                    .ok_or("the lab has no pods")?
                    .name
                    .clone(),
            };
            let udp = sp.protocol == podnet_services::Protocol::Udp;
            let mut counts = std::collections::BTreeMap::new();
            for a in lab.probe_service(&client, target, udp, count)? {
                let k = match a {
                    Ok(a) => format!("{} (saw client {})", a.by, a.seen),
                    Err(e) => format!("error: {e}"),
                };
                *counts.entry(k).or_insert(0usize) += 1;
            }
            println!("{count} probes from {client} to {target}:");
            for (k, n) in counts {
                println!("  {n:>5}  {k}");
            }
        }
    }
    Ok(())
}

fn plugin_path() -> PathBuf {
    std::env::current_exe().unwrap_or_else(|_| "podnet".into())
}
