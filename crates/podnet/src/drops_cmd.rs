//! `podnet drops`: recent NetworkPolicy denials and anti-spoofing drops
//! with who dropped them, and the kernel's drop counters; in the lab when
//! one is running, else on this node.

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::Duration;

use podnet_agent::drops::{denials_per_policy, dropped_by, read_drop_log, DropRecord};
use podnet_kernel::filewatch::DirWatch;
use podnet_kernel::nftables::{Family, NftHandle};
use podnet_kernel::Netns;
use podnet_lab::Lab;
use podnet_policy::World;
use serde::Serialize;

/// `podnet drops` arguments.
#[derive(clap::Args)]
pub struct DropsArgs {
    /// Only this node (in a lab; every node when absent).
    #[arg(long)]
    node: Option<String>,
    /// Keep printing drops as they are logged, until interrupted.
    #[arg(short, long)]
    follow: bool,
    /// How many of the most recent drops to print.
    #[arg(short = 'n', long, default_value_t = 20)]
    limit: usize,
    /// Print drops and counters as JSON.
    #[arg(long, conflicts_with = "follow")]
    json: bool,
    /// The lab to read.
    #[arg(long, default_value = podnet_lab::DEFAULT_NAME)]
    lab: String,
    /// On a node: the store, as given to the agent.
    #[command(flatten)]
    store: crate::store_args::StoreArgs,
    /// On a node: the agent's drop log.
    #[arg(long, default_value = "/var/log/podnet/drops.jsonl")]
    drop_log: PathBuf,
}

/// Where the policies that drops are attributed to are read.
enum PolicySource {
    /// A lab's store (reached from its control namespace).
    Lab(Lab, podnet_lab::StoreKind),
    /// A store, as given to the agent.
    Store(podnet_store::StoreConfig),
}

impl PolicySource {
    /// Namespaces, pods and policies, now.
    fn world(&self) -> Result<World, Box<dyn std::error::Error>> {
        Ok(match self {
            PolicySource::Lab(lab, kind) => {
                lab.with_store(*kind, |s| Ok(s.policy_snapshot()?.world))?
            }
            PolicySource::Store(config) => podnet_store::open(config)?.policy_snapshot()?.world,
        })
    }
}

/// One node's drop log and namespace.
struct Source {
    node: String,
    log: PathBuf,
    netns: Option<Netns>,
}

/// A drop with its node and who dropped it.
#[derive(Serialize)]
struct Shown {
    node: String,
    #[serde(flatten)]
    record: DropRecord,
    by: String,
}

/// A kernel counter line: node, what, direction, packets.
#[derive(Serialize)]
struct CounterLine {
    node: String,
    by: String,
    direction: String,
    packets: u64,
}

/// Prints recent drops and the counters (or follows the logs).
pub fn run(args: DropsArgs) -> Result<(), Box<dyn std::error::Error>> {
    let lab = Lab::new(&args.lab)?;
    let (sources, store) = match lab.state() {
        Ok(state) => {
            let mut sources = Vec::new();
            for n in state.nodes.iter() {
                if args.node.as_ref().is_some_and(|want| *want != n.name) {
                    continue;
                }
                sources.push(Source {
                    node: n.name.clone(),
                    log: podnet_lab::drop_log(&lab, &n.name),
                    netns: Some(Netns::open_named(&n.ns)?),
                });
            }
            if let (Some(want), true) = (&args.node, sources.is_empty()) {
                return Err(format!("lab {} has no node {want}", args.lab).into());
            }
            (sources, PolicySource::Lab(lab, state.spec.store))
        }
        Err(_) => {
            let node = args.node.clone().unwrap_or_else(|| "this node".into());
            let log = args.drop_log.clone();
            (
                vec![Source {
                    node,
                    log,
                    netns: None,
                }],
                PolicySource::Store(args.store.config()?),
            )
        }
    };
    let world = store.world()?;
    if args.follow {
        return follow(&sources, &store, world);
    }
    let mut shown = Vec::new();
    for s in &sources {
        let records =
            read_drop_log(&s.log).map_err(|e| format!("read {}: {e}", s.log.display()))?;
        shown.extend(records.into_iter().map(|record| Shown {
            node: s.node.clone(),
            by: dropped_by(&world, &record),
            record,
        }));
    }
    shown.sort_by_key(|s| s.record.time_ms);
    let recent = &shown[shown.len().saturating_sub(args.limit)..];
    let counters = counters(&sources, &world)?;
    if args.json {
        let v = serde_json::json!({ "drops": recent, "counters": counters });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    print_drops(recent);
    print_counters(&counters);
    Ok(())
}

/// Per-policy denials and anti-spoofing drops from the kernel's named counters.
fn counters(
    sources: &[Source],
    world: &World,
) -> Result<Vec<CounterLine>, Box<dyn std::error::Error>> {
    let mut out = Vec::new();
    for s in sources {
        let mut nft = match &s.netns {
            Some(ns) => NftHandle::in_netns(ns)?,
            None => NftHandle::current()?,
        };
        let denials: Vec<(String, u64)> = nft
            .counters(Family::Inet, podnet_firewall::TABLE)?
            .into_iter()
            .map(|c| (c.name, c.packets))
            .collect();
        for (policy, direction, packets) in denials_per_policy(world, &denials) {
            out.push(CounterLine {
                node: s.node.clone(),
                by: policy,
                direction,
                packets,
            });
        }
        // The anti-spoofing table is inet (routed model) or bridge.
        let mut spoofed = 0;
        for family in [Family::Inet, Family::Bridge] {
            spoofed += nft
                .counters(family, podnet_dataplane::antispoof::TABLE)?
                .iter()
                .filter(|c| c.name == podnet_dataplane::antispoof::COUNTER)
                .map(|c| c.packets)
                .sum::<u64>();
        }
        out.push(CounterLine {
            node: s.node.clone(),
            by: "anti-spoofing".into(),
            direction: "from pods".into(),
            packets: spoofed,
        });
    }
    Ok(out)
}

/// `HH:MM:SS.mmm` (UTC) of a time in milliseconds since the epoch.
fn clock(ms: u64) -> String {
    let (s, ms) = (ms / 1000, ms % 1000);
    let (h, m, s) = ((s / 3600) % 24, (s / 60) % 60, s % 60);
    format!("{h:02}:{m:02}:{s:02}.{ms:03}")
}

fn flow(r: &DropRecord) -> String {
    match r.protocol.as_str() {
        "tcp" | "udp" | "sctp" => format!(
            "{} {}:{} > {}:{}",
            r.protocol, r.src, r.sport, r.dst, r.dport
        ),
        "icmp" | "icmpv6" => format!("{} {} > {} type {}", r.protocol, r.src, r.dst, r.sport),
        p => format!("{p} {} > {}", r.src, r.dst),
    }
}

fn line(s: &Shown) -> String {
    let what = match (s.record.reason.as_str(), s.record.direction.as_deref()) {
        ("policy", Some(d)) => format!("denied {d}"),
        ("antispoof", _) => "spoofed".to_string(),
        (r, _) => r.to_string(),
    };
    format!(
        "{:<12}  {:<8} {:<15} {:<46} {}",
        clock(s.record.time_ms),
        s.node,
        what,
        flow(&s.record),
        s.by
    )
}

fn print_drops(shown: &[Shown]) {
    if shown.is_empty() {
        println!("no drops logged");
    } else {
        println!(
            "{:<12}  {:<8} {:<15} {:<46} BY",
            "TIME (UTC)", "NODE", "DROPPED", "FLOW"
        );
        for s in shown {
            println!("{}", line(s));
        }
    }
}

fn print_counters(counters: &[CounterLine]) {
    println!();
    println!(
        "{:<8} {:<32} {:<10} PACKETS (kernel counters)",
        "NODE", "DROPPED BY", "DIRECTION"
    );
    for c in counters {
        println!(
            "{:<8} {:<32} {:<10} {}",
            c.node, c.by, c.direction, c.packets
        );
    }
}

/// A drop log read from where the last read stopped.
struct Tail {
    node: String,
    path: PathBuf,
    offset: u64,
}

impl Tail {
    /// Records appended since the last call (from the start after a rotation).
    fn new_records(&mut self) -> Vec<DropRecord> {
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return Vec::new();
        };
        let len = f.metadata().map_or(0, |m| m.len());
        if len < self.offset {
            self.offset = 0; // rotated
        }
        let mut text = String::new();
        if f.seek(SeekFrom::Start(self.offset)).is_err() || f.read_to_string(&mut text).is_err() {
            return Vec::new();
        }
        // Only whole lines: a line being written is read next time.
        let whole = text.rfind('\n').map_or(0, |i| i + 1);
        self.offset += whole as u64;
        text[..whole]
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

/// Prints drops as they are logged, until the process is interrupted.
fn follow(
    sources: &[Source],
    store: &PolicySource,
    mut world: World,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut read_at = std::time::Instant::now();
    let mut tails: Vec<Tail> = sources
        .iter()
        .map(|s| Tail {
            node: s.node.clone(),
            path: s.log.clone(),
            offset: std::fs::metadata(&s.log).map_or(0, |m| m.len()),
        })
        .collect();
    let mut watches = Vec::new();
    for s in sources {
        let dir = s.log.parent().unwrap_or(std::path::Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        watches.push(DirWatch::new(dir)?);
    }
    println!(
        "{:<12}  {:<8} {:<15} {:<46} BY",
        "TIME (UTC)", "NODE", "DROPPED", "FLOW"
    );
    loop {
        for t in &mut tails {
            for record in t.new_records() {
                // Policies change while we follow: attribution reads them again.
                if read_at.elapsed() > Duration::from_secs(5) {
                    if let Ok(w) = store.world() {
                        world = w;
                    }
                    read_at = std::time::Instant::now();
                }
                let by = dropped_by(&world, &record);
                println!(
                    "{}",
                    line(&Shown {
                        node: t.node.clone(),
                        record,
                        by
                    })
                );
            }
        }
        // Any log's directory changing wakes us; each watch is asked in turn.
        let each = Duration::from_millis(250) / watches.len().max(1) as u32;
        for w in &watches {
            if w.wait(each)? {
                break;
            }
        }
    }
}
