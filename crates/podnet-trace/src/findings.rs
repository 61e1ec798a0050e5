//! What each kind of fault looks like in words: summary, evidence, fix.

use std::net::IpAddr;

use podnet_policy::{PolicyType, World};

use crate::events::Packet;
use crate::report::{Cause, Finding, NfStep};
use crate::topology::Cluster;

fn finding(cause: Cause, summary: String, evidence: Vec<String>, fix: Option<String>) -> Finding {
    Finding {
        cause,
        fatal: true,
        summary,
        evidence,
        fix,
    }
}

/// `ip route get` failed with ENETUNREACH (or the route is of a dropping kind).
pub fn no_route(place: &str, pkt: &Packet, answer: &str) -> Finding {
    finding(
        Cause::NoRoute,
        format!("{place} has no route to {}", pkt.dst),
        vec![format!("ip route get {} from {}: {answer}", pkt.dst, pkt.src)],
        Some(format!(
            "add a route to {} on {place} (for a pod block: restart or check the node's agent; `podnet doctor` lists missing routes)",
            pkt.dst
        )),
    )
}

/// A blackhole, unreachable or prohibit route.
pub fn route_unreachable(place: &str, pkt: &Packet, route: &str) -> Finding {
    finding(
        Cause::RouteUnreachable,
        format!("{place} routes {} to a dropping route: {route}", pkt.dst),
        vec![format!("ip route get {}: {route}", pkt.dst)],
        Some("remove the blackhole/unreachable route".into()),
    )
}

/// The input path refused the source: reverse-path filtering.
pub fn rp_filter(place: &str, iif: &str, pkt: &Packet, back: &str, setting: &str) -> Finding {
    finding(
        Cause::RpFilter,
        format!(
            "{place} drops {} arriving on {iif}: reverse-path filter (rp_filter {setting}); the route back to {} {back}",
            pkt.src, pkt.src
        ),
        vec![format!(
            "ip route get {} from {} iif {iif}: Invalid argument (rp_filter)",
            pkt.dst, pkt.src
        )],
        Some(format!(
            "make the route back to {} leave by {iif} (a symmetric path), or set rp_filter to 2 (loose) or 0 on {place}",
            pkt.src
        )),
    )
}

/// A node sends another node's pod block somewhere other than podnet's route.
pub fn missing_block_route(place: &str, owner: &str, block: &str, route: &str) -> Finding {
    Finding {
        cause: Cause::MissingBlockRoute,
        fatal: false,
        summary: format!(
            "{place} has no podnet route for {owner}'s pod block {block}: the packet follows `{route}`"
        ),
        evidence: vec![format!("ip route get: {route} (not proto 113)")],
        fix: Some(format!(
            "let the agent on {place} reconcile (restart it), or add the route it would: `podnet doctor` names it"
        )),
    }
}

/// A drop in nf_tables, named by who owns the table.
pub fn netfilter_drop(
    place: &str,
    step: &NfStep,
    pkt: &Packet,
    original: &Packet,
    cluster: &Cluster,
) -> Finding {
    let table = step.table.split_whitespace().last().unwrap_or_default();
    let hook = step.hook.as_deref().unwrap_or("?");
    let shown = step
        .rule
        .as_deref()
        .map(|r| format!("rule `{r}`"))
        .unwrap_or_else(|| "no rule".into());
    let evidence = vec![format!(
        "trace: {} chain {} (hook {hook}) {} => {}: {shown}",
        step.table, step.chain, step.kind, step.verdict
    )];
    match table {
        "podnet-policy" => network_policy(place, step, pkt, cluster, evidence),
        "podnet-antispoof" => finding(
            Cause::AntiSpoofing,
            format!(
                "{place} dropped {} as spoofed: the pod's interface may only send from the addresses podnet gave the pod",
                pkt.src
            ),
            evidence,
            Some("send from the pod's own address (`lab get pods -o wide`); anti-spoofing is `antiSpoofing` in the cluster spec".into()),
        ),
        "podnet-services" => service_without_endpoints(place, original, cluster, evidence),
        _ if step.kind == "policy" => finding(
            Cause::ChainPolicyDrop,
            format!(
                "{place}: base chain `{} {}` (hook {hook}) has policy drop and no rule accepted the packet",
                step.table, step.chain
            ),
            evidence,
            Some(format!(
                "accept the traffic in `{} {}` or remove the chain (`nft delete table {}`)",
                step.table, step.chain, step.table
            )),
        ),
        _ => finding(
            Cause::RuleDrop,
            format!("{place}: a rule of `{}` chain {} drops the packet", step.table, step.chain),
            evidence,
            Some(format!("change or delete that rule (handle {})", step.handle.unwrap_or(0))),
        ),
    }
}

fn pod_name(world: &World, ip: IpAddr) -> Option<&podnet_policy::Pod> {
    world.pods.iter().find(|p| p.ips.contains(&ip))
}

fn network_policy(
    place: &str,
    step: &NfStep,
    pkt: &Packet,
    cluster: &Cluster,
    mut evidence: Vec<String>,
) -> Finding {
    let ingress = step.chain.starts_with("ingress");
    let (dir, ip, word) = if ingress {
        (PolicyType::Ingress, pkt.dst, "ingress")
    } else {
        (PolicyType::Egress, pkt.src, "egress")
    };
    let pod = pod_name(&cluster.world, ip);
    let who = pod
        .map(|p| format!("pod {}/{}", p.namespace, p.name))
        .unwrap_or_else(|| format!("the pod at {ip}"));
    let policies: Vec<String> = pod
        .map(|p| {
            cluster
                .world
                .isolating(p, dir)
                .iter()
                .map(|k| k.to_string())
                .collect()
        })
        .unwrap_or_default();
    let names = if policies.is_empty() {
        "podnet's default deny".to_string()
    } else {
        format!("NetworkPolicy {}", policies.join(", "))
    };
    evidence.push(format!(
        "{who} is isolated for {word} by {}",
        policies.join(", ")
    ));
    let (proto, peer) = (
        format!("{:?}", pkt.proto).to_lowercase(),
        if ingress { pkt.src } else { pkt.dst },
    );
    finding(
        Cause::NetworkPolicy,
        format!(
            "{place}: {names} isolates {who} for {word}, and no rule allows {proto} {} {peer} port {}",
            if ingress { "from" } else { "to" },
            pkt.dport
        ),
        evidence,
        Some(format!(
            "add an {word} rule allowing this peer and port to {}, or delete it if the isolation is a mistake",
            policies.first().cloned().unwrap_or_else(|| "a policy selecting the pod".into())
        )),
    )
}

fn service_without_endpoints(
    place: &str,
    original: &Packet,
    cluster: &Cluster,
    mut evidence: Vec<String>,
) -> Finding {
    let dst = std::net::SocketAddr::new(original.dst, original.dport);
    let svc = cluster.service_at(dst, original.proto);
    let name = svc
        .map(|(s, _)| format!("service {}/{}", s.namespace, s.name))
        .unwrap_or_else(|| format!("the service at {dst}"));
    if let Some((_, eps)) = svc {
        let all = eps.as_ref().map(|e| e.endpoints.len()).unwrap_or(0);
        let ready = eps
            .as_ref()
            .map(|e| e.endpoints.iter().filter(|x| x.ready).count())
            .unwrap_or(0);
        evidence.push(format!("{name}: {all} endpoints, {ready} ready"));
    }
    finding(
        Cause::ServiceNoEndpoints,
        format!("{place}: {name} has no ready endpoint; the connection is rejected"),
        evidence,
        Some(format!(
            "make a pod matching {name}'s selector ready (`lab get pods`, readiness), or fix the selector"
        )),
    )
}

/// The VXLAN device lacks the static neighbour of the remote VTEP.
pub fn missing_neighbour(place: &str, dev: &str, gw: IpAddr, owner: Option<&str>) -> Finding {
    finding(
        Cause::MissingNeighbour,
        format!(
            "{place}: {dev} has no neighbour entry for {gw}{}",
            owner.map(|o| format!(" ({o}'s VTEP)")).unwrap_or_default()
        ),
        vec![format!(
            "ip neigh show dev {dev}: no permanent entry for {gw}"
        )],
        Some(format!(
            "restart the agent on {place} (it adds `{gw} lladdr VTEP-MAC` to {dev})"
        )),
    )
}

/// The VXLAN device lacks the FDB entry of the remote VTEP.
pub fn missing_fdb(place: &str, dev: &str, mac: &str, owner: Option<&str>) -> Finding {
    finding(
        Cause::MissingFdb,
        format!(
            "{place}: {dev} has no FDB entry for {mac}{}: the VXLAN packet has no destination",
            owner.map(|o| format!(" ({o}'s VTEP)")).unwrap_or_default()
        ),
        vec![format!("bridge fdb show dev {dev}: nothing for {mac}")],
        Some(format!(
            "restart the agent on {place} (it adds `{mac} dst NODE-ADDRESS` to {dev})"
        )),
    )
}

/// ARP or ND did not resolve the next hop.
pub fn neighbour_failed(place: &str, dev: &str, nh: IpAddr, state: &str) -> Finding {
    finding(
        Cause::NeighbourFailed,
        format!("{place}: no ARP/ND answer from {nh} on {dev} (neighbour {state})"),
        vec![format!("ip neigh show {nh} dev {dev}: {state}")],
        Some(format!(
            "check that {nh} exists, is up and on the same link as {dev}"
        )),
    )
}

/// The packet is larger than the next link's MTU.
pub fn mtu(
    place: &str,
    pkt: &Packet,
    out: (&str, u32),
    next: Option<(&str, &str, u32)>,
) -> Finding {
    let (summary, evidence) = match next {
        Some((nplace, nif, nmtu)) => (
            format!(
                "MTU black hole: {place} {} mtu {} sends {} bytes, {nplace} {nif} mtu {nmtu} drops them",
                out.0, out.1, pkt.size
            ),
            vec![format!("{place} {} mtu {} / {nplace} {nif} mtu {nmtu}", out.0, out.1)],
        ),
        None => (
            format!(
                "{place}: {} bytes with DF do not fit {} mtu {} (fragmentation needed)",
                pkt.size, out.0, out.1
            ),
            vec![format!("{place} {} mtu {}", out.0, out.1)],
        ),
    };
    finding(
        Cause::Mtu,
        summary,
        evidence,
        Some("give every link on the path the same MTU (the fabric's), or lower the pod MTU below the smallest".into()),
    )
}
