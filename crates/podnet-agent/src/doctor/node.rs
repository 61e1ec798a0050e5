//! The node's own state: sysctls, the cross-node datapath, pods with their
//! IPAM allocations and host routes, and the masquerade chain.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;
use podnet_cluster::{plan_remote_nodes, pod_mtu};
use podnet_dataplane::names::{
    host_veth_name, network_group, parse_host_veth_alias, HOST_VETH_PREFIX,
};
use podnet_dataplane::Model;
use podnet_ipam::{Allocation, Ipam};
use podnet_kernel::nftables::{NetworkRuleset, NftHandle};
use podnet_kernel::rtnl::RTPROT_PODNET;
use podnet_kernel::{sysctl, Link, RouteHandle};

use super::{Check, ClusterView, DoctorConfig, DoctorReport, PlanInputs, Problem, ProblemKind};
use crate::cniconf::NETWORK_NAME;
use crate::datapath::observe;
use crate::error::{kernel, AgentError};
use crate::plan::{desired, plan, DatapathOp};
use crate::underlay::Underlay;

fn problem(kind: ProblemKind, object: impl Into<String>, detail: impl Into<String>) -> Problem {
    Problem {
        kind,
        object: object.into(),
        detail: detail.into(),
    }
}

/// A pod's host-side interface and the allocations that name it.
struct PodPort<'a> {
    link: &'a Link,
    allocations: Vec<&'a Allocation>,
}

/// The node's checks, in the handle's namespace (the caller's thread).
pub(super) fn check(
    view: &ClusterView,
    cfg: &DoctorConfig,
    nft: &mut NftHandle,
) -> Result<DoctorReport, AgentError> {
    let mut h = RouteHandle::current().map_err(kernel("open rtnetlink"))?;
    let underlay = Underlay::discover(&mut h, view.node.address)?;
    let links = h.links().map_err(kernel("list links"))?;
    let allocations = read_allocations(view)?;
    let (ports, orphans) = match_pods(&links, &allocations);
    let mut checks = vec![sysctls(view, &ports)?];
    let (datapath, observed, inputs, datapath_plan) = datapath(&mut h, view, &underlay, cfg)?;
    checks.push(datapath);
    checks.push(pods(view, &underlay, &ports, &orphans, &links));
    checks.push(host_routes(&mut h, view, &ports, &links)?);
    checks.push(masquerade(view, !ports.is_empty(), nft)?);
    checks.push(antispoof(view, &ports, nft)?);
    checks.push(foreign_firewalls(view, nft)?);
    Ok(DoctorReport {
        node: view.node.name.clone(),
        description: format!(
            "{} on {} (mtu {}), backend {}, model {}, blocks {}",
            view.node.address,
            underlay.name,
            underlay.mtu,
            view.cluster.backend.name(),
            view.conf.model.name(),
            join(&view.node.pod_cidrs)
        ),
        checks,
        datapath_plan,
        observed,
        inputs: Some(inputs),
    })
}

fn join<T: ToString>(items: &[T]) -> String {
    let v: Vec<String> = items.iter().map(ToString::to_string).collect();
    v.join(", ")
}

fn read_allocations(view: &ClusterView) -> Result<Vec<Allocation>, AgentError> {
    let dir = view
        .conf
        .data_dir
        .clone()
        .unwrap_or_else(|| podnet_ipam::DEFAULT_DATA_DIR.into());
    let what = || format!("read IPAM state in {}", Path::new(&dir).display());
    let ipam = Ipam::of_blocks(&dir, NETWORK_NAME, &view.conf.blocks)
        .map_err(|e| AgentError::inspect(what(), e))?;
    ipam.allocations()
        .map_err(|e| AgentError::inspect(what(), e))
}

/// Pairs every pod interface with its allocations; the rest are orphans.
fn match_pods<'a>(
    links: &'a [Link],
    allocations: &'a [Allocation],
) -> (Vec<PodPort<'a>>, Vec<&'a Allocation>) {
    let group = network_group(NETWORK_NAME);
    let mut by_name: BTreeMap<String, Vec<&Allocation>> = BTreeMap::new();
    for a in allocations {
        by_name
            .entry(host_veth_name(NETWORK_NAME, &a.container_id, &a.ifname))
            .or_default()
            .push(a);
    }
    let mut ports = Vec::new();
    for link in links
        .iter()
        .filter(|l| l.group == group && l.name.starts_with(HOST_VETH_PREFIX))
    {
        ports.push(PodPort {
            link,
            allocations: by_name.remove(&link.name).unwrap_or_default(),
        });
    }
    (ports, by_name.into_values().flatten().collect())
}

fn sysctls(view: &ClusterView, ports: &[PodPort<'_>]) -> Result<Check, AgentError> {
    let mut want = vec![("net/ipv4/ip_forward".to_string(), "1")];
    if view.node.pod_cidrs.iter().any(|c| c.addr().is_ipv6()) {
        want.push(("net/ipv6/conf/all/forwarding".to_string(), "1"));
    }
    if view.conf.model == Model::Routed {
        for p in ports {
            want.push((format!("net/ipv4/conf/{}/proxy_arp", p.link.name), "1"));
        }
    }
    let mut problems = Vec::new();
    for (key, value) in &want {
        let have = sysctl::read(key).map_err(kernel(format!("read sysctl {key}")))?;
        if have != *value {
            let dotted = key.replace('/', ".");
            problems.push(problem(
                ProblemKind::Wrong,
                format!("sysctl {dotted} = {have}"),
                format!("want {value}"),
            ));
        }
    }
    Ok(Check::new(
        "sysctls",
        format!("{} settings (forwarding, proxy_arp)", want.len()),
        problems,
    ))
}

/// The datapath check, what it observed, the planner's inputs and its plan.
type DatapathCheck = (
    Check,
    crate::plan::ObservedDatapath,
    PlanInputs,
    Vec<String>,
);

/// The agent's own plan for the datapath: what its next reconcile would change.
fn datapath(
    h: &mut RouteHandle,
    view: &ClusterView,
    underlay: &Underlay,
    cfg: &DoctorConfig,
) -> Result<DatapathCheck, AgentError> {
    let remotes = plan_remote_nodes(
        view.cluster.backend,
        &view.node.name,
        &underlay.segments,
        &view.nodes,
    );
    let want = desired(&view.cluster, &view.node, underlay, &remotes, cfg.services);
    let observed = observe(h, underlay)?;
    let ops = plan(&want, &observed);
    let problems = ops
        .iter()
        .map(|op| {
            let (kind, object, detail) = match op {
                DatapathOp::CreateVxlan { reason } if reason != "missing" => (
                    ProblemKind::Wrong,
                    format!("link {}", crate::plan::VXLAN_DEVICE),
                    format!("{reason}: the agent re-creates it"),
                ),
                op if op.is_removal() => (ProblemKind::Extra, op.object(), String::new()),
                op => (ProblemKind::Missing, op.object(), String::new()),
            };
            problem(kind, object, detail)
        })
        .collect();
    let summary = format!(
        "{} remote nodes: {} routes, {} FDB entries, {} neighbours",
        remotes.len(),
        want.routes.len(),
        want.fdb.len(),
        want.neighbours.len()
    );
    let inputs = PlanInputs {
        cluster: view.cluster.clone(),
        node: view.node.name.clone(),
        nodes: view.nodes.clone(),
        underlay: underlay.clone(),
        services: cfg.services,
    };
    let plan_text = ops.iter().map(ToString::to_string).collect();
    Ok((
        Check::new("datapath", summary, problems),
        observed,
        inputs,
        plan_text,
    ))
}

/// "container CID IFNAME", from the alias the plugin sets on a pod's host interface.
fn pod_of(link: &Link) -> String {
    match parse_host_veth_alias(link.alias.as_deref().unwrap_or("")) {
        Some((_, container, ifname)) => format!("container {container} {ifname}"),
        None => "unknown container".to_string(),
    }
}

fn describe(a: &Allocation) -> String {
    format!("IPAM allocation {} ({} {})", a.ip, a.container_id, a.ifname)
}

/// Every allocation has a pod and every pod an allocation in this node's
/// blocks; the CNI config and pod interfaces have the backend's MTU.
fn pods(
    view: &ClusterView,
    underlay: &Underlay,
    ports: &[PodPort<'_>],
    orphans: &[&Allocation],
    links: &[Link],
) -> Check {
    let mut problems = Vec::new();
    let c = &view.cluster;
    let want_mtu = pod_mtu(c.backend, underlay.mtu, underlay.address, c.mtu);
    if view.conf.mtu != want_mtu {
        problems.push(problem(
            ProblemKind::Wrong,
            format!("CNI config mtu {}", view.conf.mtu),
            format!(
                "want {want_mtu}: backend {} over {} mtu {} (the agent rewrites it at start)",
                c.backend.name(),
                underlay.name,
                underlay.mtu
            ),
        ));
    }
    for a in orphans {
        let name = host_veth_name(NETWORK_NAME, &a.container_id, &a.ifname);
        problems.push(problem(
            ProblemKind::Extra,
            describe(a),
            format!("no pod interface {name}: the pod is gone, CNI DEL or GC releases it"),
        ));
    }
    for p in ports {
        let alias = pod_of(p.link);
        if p.allocations.is_empty() {
            problems.push(problem(
                ProblemKind::Extra,
                format!("link {}", p.link.name),
                format!("{alias}: a pod interface without an IPAM allocation"),
            ));
        }
        for a in &p.allocations {
            if !view.conf.blocks.iter().any(|b| b.contains(&a.ip)) {
                problems.push(problem(
                    ProblemKind::Wrong,
                    describe(a),
                    format!("outside this node's blocks {}", join(&view.conf.blocks)),
                ));
            }
        }
        // The pod's end has the same MTU; the host end is what the node sees.
        if p.link.mtu != want_mtu {
            problems.push(problem(
                ProblemKind::Wrong,
                format!("link {} mtu {}", p.link.name, p.link.mtu),
                format!("{alias}: want {want_mtu}"),
            ));
        }
        if view.conf.model == Model::Bridge {
            let bridged = p
                .link
                .master
                .and_then(|m| links.iter().find(|l| l.index == m))
                .is_some_and(|m| m.kind.as_deref() == Some("bridge"));
            if !bridged {
                problems.push(problem(
                    ProblemKind::Wrong,
                    format!("link {}", p.link.name),
                    format!("{alias}: not a port of a bridge"),
                ));
            }
        }
    }
    let allocated: usize = ports.iter().map(|p| p.allocations.len()).sum();
    Check::new(
        "pods",
        format!(
            "{} pod interfaces, {} IPAM allocations",
            ports.len(),
            allocated + orphans.len()
        ),
        problems,
    )
}

/// Routed model: one host route per pod address through its interface, and
/// no podnet host route without a pod.
fn host_routes(
    h: &mut RouteHandle,
    view: &ClusterView,
    ports: &[PodPort<'_>],
    links: &[Link],
) -> Result<Check, AgentError> {
    if view.conf.model != Model::Routed {
        return Ok(Check::new(
            "host-routes",
            "bridge model: pods are reached through the bridge's block route",
            Vec::new(),
        ));
    }
    let want: BTreeSet<(IpNet, u32)> = ports
        .iter()
        .flat_map(|p| {
            p.allocations
                .iter()
                .map(|a| (host_prefix(a.ip), p.link.index))
        })
        .collect();
    let have: BTreeSet<(IpNet, u32)> = h
        .routes()
        .map_err(kernel("list routes"))?
        .into_iter()
        .filter(|r| r.protocol == RTPROT_PODNET)
        .filter_map(|r| Some((r.dst, r.oif?)))
        .collect();
    let name = |index: u32| {
        links
            .iter()
            .find(|l| l.index == index)
            .map_or(format!("if{index}"), |l| l.name.clone())
    };
    let mut problems = Vec::new();
    for (dst, oif) in want.difference(&have) {
        problems.push(problem(
            ProblemKind::Missing,
            format!("route {dst} dev {}", name(*oif)),
            "the node cannot reach the pod",
        ));
    }
    for (dst, oif) in have.difference(&want) {
        problems.push(problem(
            ProblemKind::Extra,
            format!("route {dst} dev {}", name(*oif)),
            "no pod holds this address on this interface",
        ));
    }
    Ok(Check::new(
        "host-routes",
        format!("{} pod addresses", want.len()),
        problems,
    ))
}

fn host_prefix(ip: IpAddr) -> IpNet {
    let len = if ip.is_ipv4() { 32 } else { 128 };
    IpNet::new(ip, len).unwrap_or_else(|_| IpNet::from(ip))
}

/// The masquerade chain the plugin writes at every ADD, from the CNI config.
fn masquerade(
    view: &ClusterView,
    has_pods: bool,
    nft: &mut NftHandle,
) -> Result<Check, AgentError> {
    let c = &view.conf;
    let ruleset = NetworkRuleset::for_pods(NETWORK_NAME, &c.blocks, &c.cluster_cidrs, c.ip_masq);
    let chain = format!(
        "chain inet {} {}",
        podnet_kernel::nftables::TABLE,
        ruleset.postrouting_chain()
    );
    let current = nft
        .network_current(&ruleset)
        .map_err(kernel(format!("read {chain}")))?;
    let mut problems = Vec::new();
    // Before the first pod the plugin has written nothing: not a fault.
    if !current && has_pods {
        let kind = if ruleset.postrouting.is_empty() {
            ProblemKind::Extra
        } else {
            ProblemKind::Wrong
        };
        problems.push(problem(
            kind,
            chain.clone(),
            format!(
                "want {} masquerade rules for {} (the next pod ADD rewrites it)",
                ruleset.postrouting.len(),
                join(&c.blocks)
            ),
        ));
    }
    let summary = if c.ip_masq {
        format!(
            "{chain}: masquerade {} leaving {}",
            join(&c.blocks),
            join(&c.cluster_cidrs)
        )
    } else {
        "masquerade off".to_string()
    };
    Ok(Check::new("masquerade", summary, problems))
}

/// With anti-spoofing on: every pod interface and each of its addresses in
/// the anti-spoofing sets, and nothing of pods that are gone.
fn antispoof(
    view: &ClusterView,
    ports: &[PodPort<'_>],
    nft: &mut NftHandle,
) -> Result<Check, AgentError> {
    use podnet_dataplane::antispoof::{describe, held, pod_elements};
    if !view.conf.anti_spoofing {
        return Ok(Check::new("antispoof", "anti-spoofing off", Vec::new()));
    }
    let have: BTreeSet<(&str, podnet_kernel::nftables::SetElement)> =
        held(nft, view.conf.model)?.into_iter().collect();
    let want: BTreeSet<(&str, podnet_kernel::nftables::SetElement)> = ports
        .iter()
        .filter(|p| !p.allocations.is_empty())
        .flat_map(|p| {
            let ips: Vec<IpAddr> = p.allocations.iter().map(|a| a.ip).collect();
            pod_elements(&p.link.name, &ips)
        })
        .collect();
    let mut problems = Vec::new();
    for (set, e) in want.difference(&have) {
        problems.push(problem(
            ProblemKind::Missing,
            describe(set, e),
            "the pod can send from addresses it does not hold",
        ));
    }
    for (set, e) in have.difference(&want) {
        problems.push(problem(
            ProblemKind::Extra,
            describe(set, e),
            "no such pod address (the agent removes elements of deleted pods)",
        ));
    }
    let table = podnet_dataplane::antispoof::TABLE;
    Ok(Check::new(
        "antispoof",
        format!("{} elements in table {table}", want.len()),
        problems,
    ))
}

/// Another firewall's forward chain that drops by default must carry the
/// accept rules for the node's pod blocks (the agent inserts them).
fn foreign_firewalls(view: &ClusterView, nft: &mut NftHandle) -> Result<Check, AgentError> {
    let chains = nft
        .foreign_drop_chains_without(NETWORK_NAME)
        .map_err(kernel("list forward chains"))?;
    let blocks = join(&view.node.pod_cidrs);
    let problems = chains
        .iter()
        .map(|c| {
            problem(
                ProblemKind::Missing,
                format!(
                    "accept rules for {blocks} in chain {} {} {}",
                    c.family.nft_name(),
                    c.table,
                    c.name
                ),
                "its policy drops forwarded pod traffic; the agent inserts them",
            )
        })
        .collect();
    Ok(Check::new(
        "firewalls",
        "other forward chains with a drop policy let pod traffic through",
        problems,
    ))
}
