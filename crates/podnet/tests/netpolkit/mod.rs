//! The truth-table harness: a case file applies manifests and changes labels
//! step by step; after each step every (source, destination, port, protocol)
//! is probed and compared with the expectation the case writes down.
//!
//! Expectations start from "everything allowed"; each rule in `expect`
//! (in order) turns the probes it matches to allowed or denied:
//! `- deny: {to: x/*}` then `- allow: {from: y/*, to: x/a, port: 80}`.
//! Patterns: `x/a`, `x/*`, `*/a`, `*`, `ext1`, `ext*`. Denied traffic is
//! dropped, so a denied probe is one that gets no answer within a second;
//! an expected answer that does not come is retried with longer waits
//! before it counts as a failure, so load cannot fail a case.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use podnet_kernel::Netns;
use podnet_lab::echo;
use podnet_lab::get::Resource;
use podnet_lab::objects::LabelChange;
use podnet_lab::Lab;
use podnet_manifest::{Document, Object};
use serde::Deserialize;

const PORTS: [u16; 2] = [80, 81];
const PROTOCOLS: [&str; 2] = ["TCP", "UDP"];
const FIRST_WAIT: Duration = Duration::from_secs(1);
const RETRY_WAITS: [Duration; 2] = [Duration::from_secs(3), Duration::from_secs(5)];

/// One case file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// What the case shows.
    pub description: String,
    /// Steps, in order.
    pub steps: Vec<Step>,
}

/// One step: a change, then what must hold.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Manifests to apply.
    #[serde(default)]
    pub apply: Option<String>,
    /// Manifests to delete.
    #[serde(default)]
    pub delete: Option<String>,
    /// A label change.
    #[serde(default)]
    pub label: Option<LabelStep>,
    /// Rules over "everything allowed".
    #[serde(default)]
    pub expect: Vec<Rule>,
    /// Further probes with their own expectation (services, extra pods).
    #[serde(default)]
    pub probes: Vec<Probe>,
}

/// `label: {pod: x/a, set: {k: v}, remove: [k]}` or `{namespace: y, ...}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelStep {
    #[serde(default)]
    pod: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    set: BTreeMap<String, String>,
    #[serde(default)]
    remove: Vec<String>,
}

/// `allow: MATCH` or `deny: MATCH`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    #[serde(default)]
    allow: Option<Match>,
    #[serde(default)]
    deny: Option<Match>,
}

/// Which probes a rule is about (absent fields match everything).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Match {
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    protocol: Option<String>,
    /// 4 or 6.
    #[serde(default)]
    family: Option<u8>,
}

/// An explicit probe: `to` is a pod `ns/name` or a service `svc/ns/name` (its cluster IP).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Probe {
    from: String,
    to: String,
    port: u16,
    protocol: String,
    allowed: bool,
}

/// `*` matches any run of characters.
fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, rest)) => {
            text.starts_with(head)
                && (0..=text.len() - head.len()).any(|i| glob(rest, &text[head.len() + i..]))
        }
    }
}

impl Match {
    fn matches(&self, from: &str, to: &str, port: u16, protocol: &str, family: u8) -> bool {
        self.family.is_none_or(|f| f == family)
            && self.from.as_deref().is_none_or(|p| glob(p, from))
            && self.to.as_deref().is_none_or(|p| glob(p, to))
            && self.port.is_none_or(|p| p == port)
            && self.protocol.as_deref().is_none_or(|p| p == protocol)
    }
}

/// The expectation of one probe under `rules`.
fn expected(rules: &[Rule], from: &str, to: &str, port: u16, protocol: &str, family: u8) -> bool {
    let mut allowed = true;
    for r in rules {
        if r.allow
            .as_ref()
            .is_some_and(|m| m.matches(from, to, port, protocol, family))
        {
            allowed = true;
        }
        if r.deny
            .as_ref()
            .is_some_and(|m| m.matches(from, to, port, protocol, family))
        {
            allowed = false;
        }
    }
    allowed
}

/// A probe to run: from a namespace to an address.
struct Shot {
    from: String,
    to: String,
    port: u16,
    protocol: &'static str,
    from_ns: String,
    addr: IpAddr,
    want: bool,
}

fn protocol_name(p: &str) -> &'static str {
    if p == "UDP" {
        "UDP"
    } else {
        "TCP"
    }
}

/// One probe: whether the echo server answered within `wait`.
fn shoot(ns: &str, addr: IpAddr, port: u16, protocol: &str, wait: Duration) -> bool {
    let Ok(netns) = Netns::open_named(ns) else {
        return false;
    };
    let to = SocketAddr::new(addr, port);
    if protocol == "UDP" {
        echo::udp_client(&netns, addr.is_ipv6())
            .and_then(|s| echo::ask_udp(&s, to, wait))
            .is_ok()
    } else {
        echo::ask(&netns, to, wait).is_ok()
    }
}

/// The lab's sources (pods `ns/name`, external hosts by name) and destination pods.
struct Ends {
    sources: Vec<(String, String)>,
    /// `(ns/name, netns, addresses)`.
    pods: Vec<(String, String, Vec<IpAddr>)>,
}

fn ends(lab: &Lab, base_pods: &[String]) -> Ends {
    let state = lab.state().unwrap();
    let pods: Vec<(String, String, Vec<IpAddr>)> = state
        .pods
        .iter()
        .filter(|p| base_pods.contains(&p.key().to_string()))
        .map(|p| (p.key().to_string(), p.name.clone(), p.ips.clone()))
        .collect();
    let mut sources: Vec<(String, String)> = pods
        .iter()
        .map(|(k, ns, _)| (k.clone(), ns.clone()))
        .collect();
    sources.extend(state.hosts.iter().map(|h| (h.name.clone(), h.ns.clone())));
    Ends { sources, pods }
}

/// Runs every shot in parallel; returns each outcome.
fn fire(shots: &[Shot], wait: Duration) -> Vec<bool> {
    std::thread::scope(|s| {
        let handles: Vec<_> = shots
            .iter()
            .map(|x| s.spawn(move || shoot(&x.from_ns, x.addr, x.port, x.protocol, wait)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(false))
            .collect()
    })
}

/// Probes the grid and the step's explicit probes; returns a report of
/// every mismatch (empty when all hold).
fn verify(lab: &Lab, step: &Step, base_pods: &[String], families: &[u8]) -> String {
    let e = ends(lab, base_pods);
    let mut shots = Vec::new();
    for (from, from_ns) in &e.sources {
        for (to, _, addrs) in &e.pods {
            if from == to {
                continue; // a pod reaches itself over loopback, never through the network
            }
            for addr in addrs.iter().filter(|a| families.contains(&family(a))) {
                if from.starts_with("ext") && addr.is_ipv6() {
                    continue; // outside hosts have IPv4 only
                }
                for port in PORTS {
                    for protocol in PROTOCOLS {
                        let want = expected(&step.expect, from, to, port, protocol, family(addr));
                        shots.push(Shot {
                            from: from.clone(),
                            to: to.clone(),
                            port,
                            protocol,
                            from_ns: from_ns.clone(),
                            addr: *addr,
                            want,
                        });
                    }
                }
            }
        }
    }
    for p in &step.probes {
        let from_ns = lab
            .exec_target(
                p.from.rsplit('/').next().unwrap(),
                p.from.split('/').next().unwrap(),
            )
            .unwrap();
        let addr = target_address(lab, &p.to);
        shots.push(Shot {
            from: p.from.clone(),
            to: p.to.clone(),
            port: p.port,
            protocol: protocol_name(&p.protocol),
            from_ns,
            addr,
            want: p.allowed,
        });
    }
    let mut got = fire(&shots, FIRST_WAIT);
    for wait in RETRY_WAITS {
        let again: Vec<usize> = (0..shots.len())
            .filter(|i| shots[*i].want && !got[*i])
            .collect();
        if again.is_empty() {
            break;
        }
        let retry: Vec<Shot> = again
            .iter()
            .map(|i| Shot {
                from: shots[*i].from.clone(),
                to: shots[*i].to.clone(),
                from_ns: shots[*i].from_ns.clone(),
                ..shots[*i]
            })
            .collect();
        for (i, ok) in again.iter().zip(fire(&retry, wait)) {
            got[*i] = ok;
        }
    }
    report(&shots, &got, &e)
}

fn family(a: &IpAddr) -> u8 {
    if a.is_ipv6() {
        6
    } else {
        4
    }
}

fn target_address(lab: &Lab, to: &str) -> IpAddr {
    if let Some(svc) = to.strip_prefix("svc/") {
        let (ns, name) = svc.split_once('/').unwrap();
        let (s, _) = lab
            .services()
            .unwrap()
            .into_iter()
            .find(|(s, _)| s.namespace == ns && s.name == name)
            .unwrap();
        return s.cluster_ip.unwrap();
    }
    let (ns, name) = to.split_once('/').unwrap();
    let state = lab.state().unwrap();
    state
        .pod(ns, name)
        .unwrap()
        .ips
        .iter()
        .copied()
        .find(IpAddr::is_ipv4)
        .unwrap()
}

/// Mismatches as upstream prints reachability: a grid per port and protocol,
/// `.` allowed and `X` denied as expected, `!` where the kernel disagreed.
fn report(shots: &[Shot], got: &[bool], e: &Ends) -> String {
    let wrong: Vec<usize> = (0..shots.len())
        .filter(|i| shots[*i].want != got[*i])
        .collect();
    if wrong.is_empty() {
        return String::new();
    }
    let mut out = String::new();
    for i in &wrong {
        let s = &shots[*i];
        let word = |b: bool| if b { "allowed" } else { "denied" };
        out.push_str(&format!(
            "  {} -> {} ({}) {}/{}: expected {}, got {}\n",
            s.from,
            s.to,
            s.addr,
            s.port,
            s.protocol,
            word(s.want),
            word(got[*i])
        ));
    }
    let families: std::collections::BTreeSet<u8> = shots.iter().map(|s| family(&s.addr)).collect();
    for fam in families {
        for port in PORTS {
            for protocol in PROTOCOLS {
                out.push_str(&grid(shots, got, e, (fam, port, protocol)));
            }
        }
    }
    out
}

/// One grid: rows sources, columns destinations, for one family, port and protocol.
fn grid(shots: &[Shot], got: &[bool], e: &Ends, (fam, port, protocol): (u8, u16, &str)) -> String {
    let mut out = format!(
        "\n  IPv{fam} {port}/{protocol}   (row: from, column: to)\n  {:<6}",
        ""
    );
    for (to, _, _) in &e.pods {
        out.push_str(&format!("{to:>5}"));
    }
    out.push('\n');
    for (from, _) in &e.sources {
        out.push_str(&format!("  {from:<6}"));
        for (to, _, _) in &e.pods {
            let idx = shots.iter().position(|s| {
                &s.from == from
                    && &s.to == to
                    && s.port == port
                    && s.protocol == protocol
                    && family(&s.addr) == fam
            });
            let mark = match idx {
                None => "-",
                Some(i) if shots[i].want != got[i] => "!",
                Some(i) if got[i] => ".",
                Some(_) => "X",
            };
            out.push_str(&format!("{mark:>5}"));
        }
        out.push('\n');
    }
    out
}

/// Deletes every tracked flow on every node, so each step's probes are new
/// flows: a UDP probe that happened to reuse the source port of a probe an
/// earlier step allowed would otherwise ride that flow's conntrack entry
/// (established flows survive a policy change by design).
fn forget_flows(lab: &Lab) {
    for n in lab.state().unwrap().nodes {
        let ns = Netns::open_named(&n.ns).unwrap();
        let mut ct = podnet_kernel::conntrack::ConntrackHandle::in_netns(&ns).unwrap();
        for v6 in [false, true] {
            for flow in ct.flows(v6).unwrap() {
                if let Err(e) = ct.delete(&flow) {
                    // Gone meanwhile (expired or closed) is fine.
                    assert!(e.is_not_found(), "delete flow: {e}");
                }
            }
        }
    }
}

fn docs(text: &str) -> Vec<Document> {
    podnet_manifest::parse(text).unwrap_or_else(|e| panic!("case manifest: {e}"))
}

/// Runs one case on `lab`; returns its failures (empty when every step held).
pub fn run_case(lab: &Lab, path: &Path, base_pods: &[String], families: &[u8]) -> String {
    let case: Case = serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut failures = String::new();
    for (n, step) in case.steps.iter().enumerate() {
        if let Some(text) = &step.apply {
            lab.apply(&docs(text))
                .unwrap_or_else(|e| panic!("{}: step {}: apply: {e}", path.display(), n + 1));
        }
        if let Some(text) = &step.delete {
            lab.delete(&docs(text))
                .unwrap_or_else(|e| panic!("{}: step {}: delete: {e}", path.display(), n + 1));
        }
        if let Some(l) = &step.label {
            let mut changes: Vec<LabelChange> = l
                .set
                .iter()
                .map(|(k, v)| LabelChange::Set(k.clone(), v.clone()))
                .collect();
            changes.extend(l.remove.iter().map(|k| LabelChange::Remove(k.clone())));
            let result = match (&l.pod, &l.namespace) {
                (Some(pod), _) => {
                    let (ns, name) = pod.split_once('/').unwrap();
                    lab.label("pod", name, ns, &changes)
                }
                (None, Some(ns)) => lab.label("namespace", ns, "", &changes),
                (None, None) => panic!(
                    "{}: a label step names a pod or a namespace",
                    path.display()
                ),
            };
            result.unwrap_or_else(|e| panic!("{}: step {}: label: {e}", path.display(), n + 1));
        }
        forget_flows(lab);
        let r = verify(lab, step, base_pods, families);
        if !r.is_empty() {
            failures.push_str(&format!(
                "{} ({}), step {}:\n{r}\n",
                path.display(),
                case.description,
                n + 1
            ));
        }
    }
    failures
}

/// Back to the base cluster: every policy, service and extra pod or
/// namespace deleted, base labels restored.
pub fn reset(lab: &Lab, base: &[Document]) {
    let mut extra = Vec::new();
    for what in [
        Resource::NetworkPolicies,
        Resource::Services,
        Resource::Pods,
        Resource::Namespaces,
    ] {
        for o in lab.objects(what, None).unwrap() {
            let builtin = matches!(&o, Object::Namespace(n) if n.name == "default" || n.name == "kube-system");
            let in_base = base.iter().any(|d| d.object.describe() == o.describe());
            if !builtin && !in_base {
                extra.push(Document {
                    object: o,
                    ignored: Vec::new(),
                });
            }
        }
    }
    extra.reverse();
    lab.delete(&extra).unwrap();
    lab.apply(base).unwrap();
}

/// The base manifest and its pods' `ns/name`.
pub fn base() -> (Vec<Document>, Vec<String>) {
    let docs = docs(include_str!("../netpol/base.yaml"));
    let pods = docs
        .iter()
        .filter_map(|d| match &d.object {
            Object::Pod(p) => Some(p.pod.key().to_string()),
            _ => None,
        })
        .collect();
    (docs, pods)
}
