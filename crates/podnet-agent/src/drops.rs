//! The node's drop log: NetworkPolicy denials and anti-spoofing drops,
//! read from NFLOG and appended to a file, one JSON object per line, for
//! `podnet drops`.
//!
//! The kernel's drop rules log to [`podnet_kernel::nflog::DROP_GROUP`] with
//! a prefix that says which rule dropped (`podnet-policy in4`,
//! `podnet-antispoof`). The agent writes what it reads as it comes; which
//! policies a denial belongs to is worked out by the reader, from the store
//! (the policies that isolate the local pod), so the log stays a plain
//! record of what the kernel did. The file is rotated at [`MAX_BYTES`]
//! (one older file kept, `FILE.1`).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use podnet_kernel::nflog::{LogWatch, LoggedPacket, DROP_GROUP};
use podnet_kernel::RouteHandle;
use podnet_policy::{Direction, World};
use serde::{Deserialize, Serialize};

/// Size at which the drop log is rotated.
pub const MAX_BYTES: u64 = 4 << 20;

/// One dropped packet, as the drop log holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropRecord {
    /// When the agent read it, in milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// `policy` (a NetworkPolicy denial) or `antispoof`.
    pub reason: String,
    /// For policy denials: `ingress` (to a local pod) or `egress` (from one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<String>,
    /// The interface the packet came in on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iface: Option<String>,
    /// `tcp`, `udp`, `icmp`, `icmpv6`, `arp` or the protocol number.
    pub protocol: String,
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port (ICMP: type).
    pub sport: u16,
    /// Destination port (ICMP: code).
    pub dport: u16,
}

impl DropRecord {
    /// The record of one logged packet; `None` for packets of other rules
    /// or whose headers could not be read.
    pub fn from_logged(p: &LoggedPacket, iface: Option<String>, time_ms: u64) -> Option<Self> {
        let flow = p.flow?;
        let (reason, direction) = if let Some(rest) = p.prefix.strip_prefix("podnet-policy ") {
            let dir = if rest.starts_with("in") {
                "ingress"
            } else {
                "egress"
            };
            ("policy", Some(dir.to_string()))
        } else if p.prefix == "podnet-antispoof" {
            ("antispoof", None)
        } else {
            return None;
        };
        let protocol = match flow.protocol {
            0 => "arp".to_string(),
            1 => "icmp".to_string(),
            6 => "tcp".to_string(),
            17 => "udp".to_string(),
            58 => "icmpv6".to_string(),
            132 => "sctp".to_string(),
            n => n.to_string(),
        };
        Some(DropRecord {
            time_ms,
            reason: reason.into(),
            direction,
            iface,
            protocol,
            src: flow.src,
            dst: flow.dst,
            sport: flow.sport,
            dport: flow.dport,
        })
    }

    /// The local pod's address: the destination of an ingress denial, the
    /// source of anything else.
    pub fn local_address(&self) -> IpAddr {
        match self.direction.as_deref() {
            Some("ingress") => self.dst,
            _ => self.src,
        }
    }
}

/// Drops read so far, for metrics.
#[derive(Debug, Default)]
pub struct DropStats {
    /// Policy denials logged.
    pub denied: AtomicU64,
    /// Anti-spoofing drops logged.
    pub spoofed: AtomicU64,
}

/// Appends the node's logged drops to `path` until `halt` is set.
pub(crate) fn run_drop_log(path: &Path, stats: &DropStats, halt: &AtomicBool) {
    let mut watch = match LogWatch::bind(None, DROP_GROUP) {
        Ok(w) => w,
        Err(e) => {
            return tracing::warn!(target: "podnet-agent",
                "drop log: cannot read NFLOG group {DROP_GROUP}: {e}; `podnet drops` shows counters only")
        }
    };
    let mut writer = DropWriter::new(path.to_path_buf());
    let mut names = InterfaceNames::default();
    while !halt.load(Ordering::Relaxed) {
        let packets = match watch.recv(Duration::from_millis(250)) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(target: "podnet-agent", "drop log: {e}");
                return;
            }
        };
        for p in &packets {
            let iface = p.indev.and_then(|i| names.name(i));
            let Some(record) = DropRecord::from_logged(p, iface, now_ms()) else {
                continue;
            };
            let counter = if record.reason == "policy" {
                &stats.denied
            } else {
                &stats.spoofed
            };
            counter.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = writer.append(&record) {
                tracing::warn!(target: "podnet-agent", "drop log {}: {e}", path.display());
            }
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Interface names by index, looked up once each.
#[derive(Default)]
struct InterfaceNames {
    handle: Option<RouteHandle>,
    known: HashMap<u32, String>,
}

impl InterfaceNames {
    fn name(&mut self, index: u32) -> Option<String> {
        if let Some(n) = self.known.get(&index) {
            return Some(n.clone());
        }
        if self.handle.is_none() {
            self.handle = RouteHandle::current().ok();
        }
        let link = self.handle.as_mut()?.link_by_index(index).ok()??;
        self.known.insert(index, link.name.clone());
        Some(link.name)
    }
}

/// Appends JSON lines to the drop log, rotating it at [`MAX_BYTES`].
struct DropWriter {
    path: PathBuf,
    file: Option<(File, u64)>,
}

impl DropWriter {
    fn new(path: PathBuf) -> Self {
        DropWriter { path, file: None }
    }

    fn append(&mut self, record: &DropRecord) -> std::io::Result<()> {
        let mut line = serde_json::to_string(record).map_err(std::io::Error::other)?;
        line.push('\n');
        if self
            .file
            .as_ref()
            .is_some_and(|(_, size)| *size >= MAX_BYTES)
        {
            self.file = None;
            let mut old = self.path.clone().into_os_string();
            old.push(".1");
            std::fs::rename(&self.path, old)?;
        }
        if self.file.is_none() {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            let size = f.metadata()?.len();
            self.file = Some((f, size));
        }
        let (f, size) = self.file.as_mut().expect("opened above");
        f.write_all(line.as_bytes())?;
        *size += line.len() as u64;
        Ok(())
    }
}

/// The records of a drop log (its rotated part first), oldest first;
/// lines that do not parse are skipped.
pub fn read_drop_log(path: &Path) -> std::io::Result<Vec<DropRecord>> {
    let mut old = path.to_path_buf().into_os_string();
    old.push(".1");
    let mut out = Vec::new();
    for p in [PathBuf::from(old), path.to_path_buf()] {
        match std::fs::read_to_string(&p) {
            Ok(text) => out.extend(text.lines().filter_map(|l| serde_json::from_str(l).ok())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// The policies (`namespace/name`) that isolate `pod` for `dir`: those a
/// denial of its traffic in that direction belongs to.
pub fn policy_names(world: &World, pod: &podnet_policy::Pod, dir: Direction) -> Vec<String> {
    world
        .isolating(pod, dir)
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// Who dropped a packet, in words: the policies that isolate the local pod
/// (a denial is the default deny of every policy that selects the pod for
/// that direction, when none of them allows the packet), or anti-spoofing.
pub fn dropped_by(world: &World, r: &DropRecord) -> String {
    let iface = r.iface.as_deref().unwrap_or("its interface");
    if r.reason == "antispoof" {
        return format!(
            "anti-spoofing: {} is not an address of the pod on {iface}",
            r.src
        );
    }
    let dir = match r.direction.as_deref() {
        Some("ingress") => Direction::Ingress,
        _ => Direction::Egress,
    };
    let local = r.local_address();
    let Some(pod) = world.pods.iter().find(|p| p.ips.contains(&local)) else {
        return format!("default deny: no pod holds {local} any more");
    };
    let policies = policy_names(world, pod, dir);
    if policies.is_empty() {
        return format!("pod {}/{} is no longer isolated", pod.namespace, pod.name);
    }
    format!(
        "{} (isolate{} {}/{} for {}, none allows this)",
        policies.join(", "),
        if policies.len() == 1 { "s" } else { "" },
        pod.namespace,
        pod.name,
        r.direction.as_deref().unwrap_or("egress")
    )
}

/// Packets denied per policy, from the kernel's per-pod denial counters
/// (`denied-in-ADDR`, `denied-out-ADDR`): a policy counts the denials of
/// every pod it isolates in that direction.
pub fn denials_per_policy(world: &World, counters: &[(String, u64)]) -> Vec<(String, String, u64)> {
    let mut per: std::collections::BTreeMap<(String, String), u64> = Default::default();
    for (name, packets) in counters {
        let Some(rest) = name.strip_prefix("denied-") else {
            continue;
        };
        let Some((dir, addr)) = rest.split_once('-') else {
            continue;
        };
        let (direction, word) = match dir {
            "in" => (Direction::Ingress, "ingress"),
            _ => (Direction::Egress, "egress"),
        };
        let Ok(ip) = addr.parse::<IpAddr>() else {
            continue;
        };
        let Some(pod) = world.pods.iter().find(|p| p.ips.contains(&ip)) else {
            continue;
        };
        for policy in world.isolating(pod, direction) {
            *per.entry((policy.to_string(), word.to_string()))
                .or_default() += packets;
        }
    }
    per.into_iter().map(|((p, d), n)| (p, d, n)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use podnet_kernel::nflog::Flow;

    #[test]
    fn records_name_the_rule_and_the_local_pod() {
        let flow = Flow {
            protocol: 6,
            src: "10.244.0.2".parse().unwrap(),
            dst: "10.244.1.3".parse().unwrap(),
            sport: 40000,
            dport: 80,
        };
        let p = LoggedPacket {
            prefix: "podnet-policy in4".into(),
            indev: None,
            outdev: None,
            flow: Some(flow),
        };
        let r = DropRecord::from_logged(&p, Some("eth0".into()), 5).unwrap();
        assert_eq!((r.reason.as_str(), r.protocol.as_str()), ("policy", "tcp"));
        assert_eq!(r.local_address(), flow.dst);
        let out = LoggedPacket {
            prefix: "podnet-policy out4".into(),
            ..p.clone()
        };
        assert_eq!(
            DropRecord::from_logged(&out, None, 5)
                .unwrap()
                .local_address(),
            flow.src
        );
        let other = LoggedPacket {
            prefix: "someone else".into(),
            ..p
        };
        assert!(DropRecord::from_logged(&other, None, 5).is_none());
    }

    #[test]
    fn the_log_rotates_and_reads_back_in_order() {
        let dir = std::env::temp_dir().join(format!("podnet-drops-{}", std::process::id()));
        let path = dir.join("drops.jsonl");
        let mut w = DropWriter::new(path.clone());
        let r = |t| DropRecord {
            time_ms: t,
            reason: "antispoof".into(),
            direction: None,
            iface: None,
            protocol: "udp".into(),
            src: "10.0.0.9".parse().unwrap(),
            dst: "10.0.0.1".parse().unwrap(),
            sport: 1,
            dport: 2,
        };
        w.append(&r(1)).unwrap();
        w.file.as_mut().unwrap().1 = MAX_BYTES; // as if full
        w.append(&r(2)).unwrap();
        let back = read_drop_log(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(back.iter().map(|r| r.time_ms).collect::<Vec<_>>(), [1, 2]);
    }
}
