//! What a trace found, as data: the probe, what came back, the hops in
//! order, and the verdict. Serialized as `--json`; read back by `lab graph`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One trace, whole.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Trace {
    /// What was sent.
    pub probe: ProbeInfo,
    /// What came back to the sender.
    pub outcome: Outcome,
    /// The path, hop by hop, in order.
    pub hops: Vec<Hop>,
    /// Delivered or not, and if not: where and why.
    pub verdict: Verdict,
    /// Whether the kernel's drop reasons (tracefs `skb:kfree_skb`) were read.
    pub drop_reasons_read: bool,
    /// Drop reasons the kernel reported for the probe, if read.
    #[serde(default)]
    pub drop_reasons: Vec<String>,
    /// Problems of the trace itself (cleanup failures, overrun event buffers).
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// The probe.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeInfo {
    /// `tcp`, `udp` or `icmp`.
    pub proto: String,
    /// Who sent it (a place name).
    pub from: String,
    /// What it was sent to, as asked (`service default/web`, `pod default/b`, an address).
    pub to: String,
    /// Source address and port.
    pub src: String,
    /// Destination address and port.
    pub dst: String,
    /// IP packet size in bytes.
    pub size: usize,
}

/// What came back to the sender.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outcome {
    /// `answered`, `refused`, `icmp-error`, `local-error` or `timeout`.
    pub kind: String,
    /// Who answered or sent the error.
    pub from: Option<String>,
    /// In words.
    pub detail: String,
}

/// One namespace on the path.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hop {
    /// The place (`pod default/a`, `node node1`, `router`, `host client`).
    pub place: String,
    /// `pod`, `node`, `router`, `host` or `other`.
    pub kind: String,
    /// Its network namespace.
    pub netns: String,
    /// The interface the packet came in on.
    pub iif: Option<String>,
    /// The interface it left by.
    pub oif: Option<String>,
    /// The packet as it arrived (`tcp 10.244.1.2:40001 > 10.96.0.10:80`).
    pub packet: String,
    /// The route the kernel chose.
    pub route: Option<String>,
    /// Address translations made here.
    #[serde(default)]
    pub nat: Vec<String>,
    /// Encapsulation on the way out (`vxlan vni 1 198.18.1.1 > 198.18.1.2`).
    pub encap: Option<String>,
    /// Each netfilter decision, in order.
    #[serde(default)]
    pub netfilter: Vec<NfStep>,
    /// Whether trace events show the packet here.
    pub seen: bool,
    /// The packet reached its destination here.
    pub delivered: bool,
    /// An answer to the probe passed here.
    #[serde(default)]
    pub answer_seen: bool,
    /// What is wrong here.
    #[serde(default)]
    pub findings: Vec<Finding>,
}

/// One nf_tables decision.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NfStep {
    /// `inet`, `ip`, `ip6` or `bridge`, and the table: `inet podnet-services`.
    pub table: String,
    /// The chain.
    pub chain: String,
    /// The hook of the base chain it was reached from.
    pub hook: Option<String>,
    /// `rule`, `policy` or `return`.
    pub kind: String,
    /// The rule's handle.
    pub handle: Option<u64>,
    /// The rule as nft text.
    pub rule: Option<String>,
    /// The rule's comment.
    pub comment: Option<String>,
    /// The verdict (`accept`, `drop`, `jump CHAIN`, ...).
    pub verdict: String,
    /// `request` (the probe), `reply`, `encap` (its VXLAN packet) or `icmp`.
    pub packet: String,
}

/// Why a packet did not arrive (or a warning on a path that works).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cause {
    /// Delivered and answered.
    Delivered,
    /// Delivered; nothing listens on the port (a reset or port unreachable).
    Refused,
    /// No route to the destination.
    NoRoute,
    /// A blackhole, unreachable or prohibit route.
    RouteUnreachable,
    /// A node routes another node's pod block outside podnet's route.
    MissingBlockRoute,
    /// A base chain's drop policy.
    ChainPolicyDrop,
    /// A rule that drops or rejects, outside podnet's tables.
    RuleDrop,
    /// A NetworkPolicy isolates the pod and none allows the flow.
    NetworkPolicy,
    /// The source address is not the pod's.
    AntiSpoofing,
    /// The service has no ready endpoint.
    ServiceNoEndpoints,
    /// The VXLAN device has no FDB entry for the remote VTEP.
    MissingFdb,
    /// The VXLAN device has no neighbour entry for the remote VTEP.
    MissingNeighbour,
    /// ARP or neighbour discovery got no answer.
    NeighbourFailed,
    /// The packet is larger than a link on the path.
    Mtu,
    /// The reverse-path filter refused the source.
    RpFilter,
    /// The packet left one namespace and never showed up in the next.
    Lost,
    /// The request arrived; the answer did not make it back.
    ReplyLost,
    /// The trace could not follow the packet further.
    Unknown,
}

impl Cause {
    /// The cause's name, as in JSON.
    pub fn name(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }
}

/// Something wrong at one hop.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Finding {
    /// What kind of problem.
    pub cause: Cause,
    /// Whether it stops the packet (false: a warning).
    pub fatal: bool,
    /// In one sentence.
    pub summary: String,
    /// What shows it (events, route answers, counters, entries).
    #[serde(default)]
    pub evidence: Vec<String>,
    /// What would fix it.
    pub fix: Option<String>,
}

/// The answer to "why can't A reach B".
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Verdict {
    /// Whether the probe reached its destination.
    pub delivered: bool,
    /// Why (or `delivered`/`refused`).
    pub cause: Cause,
    /// Index of the hop where it stopped, if it did.
    pub hop: Option<usize>,
    /// That hop's place.
    pub place: Option<String>,
    /// In one sentence.
    pub summary: String,
    /// What shows it.
    #[serde(default)]
    pub evidence: Vec<String>,
    /// What would fix it.
    pub fix: Option<String>,
}

impl fmt::Display for Trace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.probe;
        writeln!(
            f,
            "trace {} {} > {} ({}, {} bytes, from {})",
            p.proto, p.src, p.dst, p.to, p.size, p.from
        )?;
        for (i, hop) in self.hops.iter().enumerate() {
            write_hop(f, i, hop)?;
        }
        writeln!(f, "probe: {}", self.outcome.detail)?;
        if !self.verdict.delivered {
            for r in &self.drop_reasons {
                writeln!(f, "kernel drop reason during the probe: {r}")?;
            }
        }
        let v = &self.verdict;
        let head = if v.delivered { "DELIVERED" } else { "DROPPED" };
        writeln!(f, "{head}: {}", v.summary)?;
        for e in &v.evidence {
            writeln!(f, "  evidence: {e}")?;
        }
        if let Some(fix) = &v.fix {
            writeln!(f, "  fix: {fix}")?;
        }
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        Ok(())
    }
}

fn write_hop(f: &mut fmt::Formatter<'_>, i: usize, hop: &Hop) -> fmt::Result {
    let iif = hop.iif.as_deref().unwrap_or("-");
    let oif = hop.oif.as_deref().unwrap_or("-");
    let seen = if hop.seen {
        ""
    } else {
        "  (no trace events here)"
    };
    writeln!(f, "{:>2}. {}  in {iif} out {oif}{seen}", i + 1, hop.place)?;
    writeln!(f, "      packet {}", hop.packet)?;
    for s in hop.netfilter.iter().filter(|s| s.packet != "reply") {
        let rule = s
            .rule
            .as_deref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default();
        let hook = s.hook.as_deref().unwrap_or("-");
        writeln!(
            f,
            "      nft {hook:<11} {} {} {}{rule} => {}",
            s.table, s.chain, s.kind, s.verdict
        )?;
        if let Some(c) = &s.comment {
            writeln!(f, "          comment \"{c}\"")?;
        }
    }
    for n in &hop.nat {
        writeln!(f, "      nat {n}")?;
    }
    if let Some(r) = &hop.route {
        writeln!(f, "      route {r}")?;
    }
    if let Some(e) = &hop.encap {
        writeln!(f, "      encap {e}")?;
    }
    if hop.delivered {
        writeln!(f, "      delivered")?;
    }
    for x in &hop.findings {
        let mark = if x.fatal { "!!" } else { "warning:" };
        writeln!(f, "      {mark} {}", x.summary)?;
    }
    Ok(())
}
