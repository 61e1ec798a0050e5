//! `podnet trace` in the lab: the lab's namespaces as places, names resolved
//! the way `lab connect` resolves them, and the cluster store's view.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use podnet_cluster::Backend;
use podnet_kernel::probe::ProbeProto;
use podnet_kernel::{Netns, RouteHandle};
use podnet_trace::{Cluster, Place, PlaceKind, Request, Trace};

use crate::error::LabError;
use crate::state::{self, LabState};
use crate::Lab;

/// What to send, besides from where and to what.
#[derive(Debug, Clone)]
pub struct TraceOptions {
    /// Protocol.
    pub proto: ProbeProto,
    /// IP packet size.
    pub size: usize,
    /// How long to wait for an answer.
    pub timeout: Duration,
    /// Read the kernel's drop reasons through tracefs.
    pub drop_reasons: bool,
}

impl Lab {
    /// Every namespace of the lab a packet may cross, as trace places.
    pub fn places(&self, state: &LabState) -> Vec<Place> {
        let path = |ns: &str| format!("/run/netns/{ns}");
        let mut out: Vec<Place> = state
            .nodes
            .iter()
            .map(|n| Place {
                name: format!("node {}", n.name),
                kind: PlaceKind::Node,
                netns: path(&n.ns),
                node: Some(n.name.clone()),
            })
            .collect();
        out.extend(state.pods.iter().map(|p| Place {
            name: format!("pod {}/{}", p.namespace, p.pod),
            kind: PlaceKind::Pod,
            netns: path(&p.name),
            node: Some(p.node.clone()),
        }));
        out.extend(state.hosts.iter().map(|h| Place {
            name: format!("host {}", h.name),
            kind: PlaceKind::Host,
            netns: path(&h.ns),
            node: None,
        }));
        for (ns, name, kind) in [
            (self.router_ns(), "router", PlaceKind::Router),
            (self.control_ns(), "control", PlaceKind::Other),
        ] {
            if std::path::Path::new(&path(&ns)).exists() {
                out.push(Place {
                    name: name.into(),
                    kind,
                    netns: path(&ns),
                    node: None,
                });
            }
        }
        out
    }

    /// The cluster as the store holds it (nodes, services, policies).
    pub fn cluster_view(&self, state: &LabState) -> Result<Cluster, LabError> {
        let kind = state.spec.store;
        let (nodes, world) = self.with_store(kind, |s| {
            Ok((s.snapshot()?.nodes, s.policy_snapshot()?.world))
        })?;
        let services = self.services()?;
        Ok(Cluster {
            nodes,
            services,
            world,
        })
    }

    /// Traces one probe from `from` to `to` (`NAME[:PORT]`), each a pod
    /// (`ns/name`, or `name` in `default`), node, external host, `router`,
    /// or an address; `to` may also be a service (`svc/NAME` or `svc/NS/NAME`).
    pub fn trace(&self, from: &str, to: &str, opts: &TraceOptions) -> Result<Trace, LabError> {
        let state = state::read(self)?;
        let places = self.places(&state);
        let cluster = self.cluster_view(&state)?;
        let (dst, label) = resolve_destination(&state, &cluster, to)?;
        let (from_idx, src) = resolve_source(&state, &places, from, dst.is_ipv6())?;
        let endpoints = service_endpoints(&state, &cluster, dst);
        let (places, from_idx) = on_the_way(places, from_idx, &state, dst, endpoints.as_deref());
        let spec = state.spec.cluster();
        let vxlan_port = (spec.backend != Backend::HostGw).then_some(spec.vxlan.port);
        let req = Request {
            from: from_idx,
            src,
            dst,
            to: label,
            proto: opts.proto,
            size: opts.size,
            timeout: opts.timeout,
            drop_reasons: opts.drop_reasons,
        };
        podnet_trace::run(&places, &cluster, &req, vxlan_port)
            .map_err(|e| LabError::Spec(format!("trace: {e}")))
    }
}

/// The addresses a probe to `dst` may be translated to: the endpoints of
/// the services `dst` is an address or node port of (`None`: not a service).
fn service_endpoints(state: &LabState, cluster: &Cluster, dst: SocketAddr) -> Option<Vec<IpAddr>> {
    let ip = dst.ip();
    let on_node = state.nodes.iter().any(|n| n.address == ip);
    let mut out: Option<Vec<IpAddr>> = None;
    for (svc, eps) in &cluster.services {
        let by_address = svc.cluster_ip == Some(ip)
            || svc.external_ips.contains(&ip)
            || svc.load_balancer_ips.contains(&ip);
        let by_node_port = on_node
            && svc
                .ports
                .iter()
                .any(|p| p.node_port == Some(u32::from(dst.port())));
        if by_address || by_node_port {
            let addrs = eps
                .iter()
                .flat_map(|e| e.endpoints.iter().map(|x| x.address));
            out.get_or_insert_with(Vec::new).extend(addrs);
        }
    }
    out
}

/// The places a probe to `dst` can pass through: every node, host, the
/// router and the control plane, the source, and the pods it may reach: the
/// one holding `dst`, or a service's endpoints when `dst` is a service's
/// (`endpoints`). Each place costs a trace a table, a socket and their
/// teardown, so pods no packet of the probe visits are left out; an address
/// the lab does not know keeps every pod.
fn on_the_way(
    places: Vec<Place>,
    from: usize,
    state: &LabState,
    dst: SocketAddr,
    endpoints: Option<&[IpAddr]>,
) -> (Vec<Place>, usize) {
    let ip = dst.ip();
    let infrastructure =
        state.nodes.iter().any(|n| n.address == ip) || state.hosts.iter().any(|h| h.address == ip);
    let targets: Option<Vec<IpAddr>> = match endpoints {
        Some(e) => Some(e.to_vec()),
        None if infrastructure => Some(Vec::new()),
        None => state
            .pods
            .iter()
            .any(|p| p.ips.contains(&ip))
            .then(|| vec![ip]),
    };
    let source = places[from].name.clone();
    let reached = |name: &str| {
        let Some(targets) = &targets else {
            return true; // unknown: any pod
        };
        state.pods.iter().any(|p| {
            name == format!("pod {}/{}", p.namespace, p.pod)
                && p.ips.iter().any(|a| targets.contains(a))
        })
    };
    let kept: Vec<Place> = places
        .into_iter()
        .filter(|p| p.kind != PlaceKind::Pod || p.name == source || reached(&p.name))
        .collect();
    let from = kept.iter().position(|p| p.name == source).unwrap_or(0);
    (kept, from)
}

fn split_pod(name: &str) -> (&str, &str) {
    name.split_once('/').unwrap_or(("default", name))
}

/// `NAME:PORT`, `[v6]:PORT`, `v6`, `NAME`.
fn split_port(text: &str) -> Result<(&str, Option<u16>), LabError> {
    if text.parse::<IpAddr>().is_ok() {
        return Ok((text, None));
    }
    if let Ok(sa) = text.parse::<SocketAddr>() {
        let host = text.rsplit_once(':').map(|(h, _)| h).unwrap_or(text);
        return Ok((
            host.trim_start_matches('[').trim_end_matches(']'),
            Some(sa.port()),
        ));
    }
    match text.rsplit_once(':') {
        Some((name, port)) => {
            let port = port
                .parse()
                .map_err(|_| LabError::Spec(format!("{text}: {port:?} is not a port")))?;
            Ok((name, Some(port)))
        }
        None => Ok((text, None)),
    }
}

fn resolve_destination(
    state: &LabState,
    cluster: &Cluster,
    to: &str,
) -> Result<(SocketAddr, String), LabError> {
    let (name, port) = split_port(to)?;
    let echo = crate::echo::ECHO_PORT;
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok((SocketAddr::new(ip, port.unwrap_or(echo)), ip.to_string()));
    }
    if let Some(svc) = name
        .strip_prefix("svc/")
        .or_else(|| name.strip_prefix("service/"))
    {
        let (ns, n) = split_pod(svc);
        let (s, _) = cluster
            .services
            .iter()
            .find(|(s, _)| s.namespace == ns && s.name == n)
            .ok_or_else(|| LabError::Spec(format!("the lab has no service {ns}/{n}")))?;
        let ip = s
            .cluster_ip
            .ok_or_else(|| LabError::Spec(format!("service {ns}/{n} has no cluster IP")))?;
        let first = s.ports.first().map(|p| p.port as u16).unwrap_or(80);
        return Ok((
            SocketAddr::new(ip, port.unwrap_or(first)),
            format!("service {ns}/{n}"),
        ));
    }
    let (ns, n) = split_pod(name);
    if let Ok(p) = state.pod(ns, n) {
        let ip = *p
            .ips
            .first()
            .ok_or_else(|| LabError::Spec(format!("pod {ns}/{n} has no address")))?;
        return Ok((
            SocketAddr::new(ip, port.unwrap_or(echo)),
            format!("pod {}/{}", p.namespace, p.pod),
        ));
    }
    if let Some(h) = state.hosts.iter().find(|h| h.name == name) {
        return Ok((
            SocketAddr::new(h.address, port.unwrap_or(echo)),
            format!("host {name}"),
        ));
    }
    let node = state.node(name)?;
    Ok((
        SocketAddr::new(node.address, port.unwrap_or(echo)),
        format!("node {name}"),
    ))
}

fn resolve_source(
    state: &LabState,
    places: &[Place],
    from: &str,
    v6: bool,
) -> Result<(usize, Option<IpAddr>), LabError> {
    let find = |name: String| {
        places
            .iter()
            .position(|p| p.name == name)
            .ok_or_else(|| LabError::Spec(format!("no place {name}")))
    };
    if let Ok(ip) = from.parse::<IpAddr>() {
        for (i, p) in places.iter().enumerate() {
            let ns = Netns::open(&p.netns)?;
            let holds = RouteHandle::in_netns(&ns)?
                .addresses(None)?
                .iter()
                .any(|a| a.net.addr() == ip);
            if holds {
                return Ok((i, Some(ip)));
            }
        }
        return Err(LabError::Spec(format!("no lab namespace holds {ip}")));
    }
    let (ns, n) = split_pod(from);
    if let Ok(p) = state.pod(ns, n) {
        let ip = p.ips.iter().find(|ip| ip.is_ipv6() == v6).copied();
        return Ok((find(format!("pod {}/{}", p.namespace, p.pod))?, ip));
    }
    if state.hosts.iter().any(|h| h.name == from) {
        return Ok((find(format!("host {from}"))?, None));
    }
    if from == "router" || from == "control" {
        return Ok((find(from.to_string())?, None));
    }
    state.node(from)?;
    Ok((find(format!("node {from}"))?, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_split_from_names_and_addresses() {
        assert_eq!(split_port("web:80").expect("ok"), ("web", Some(80)));
        assert_eq!(
            split_port("10.0.0.1:53").expect("ok"),
            ("10.0.0.1", Some(53))
        );
        assert_eq!(
            split_port("[fd00::1]:53").expect("ok"),
            ("fd00::1", Some(53))
        );
        assert_eq!(split_port("fd00::1").expect("ok"), ("fd00::1", None));
        assert_eq!(split_port("svc/web").expect("ok"), ("svc/web", None));
        assert!(split_port("web:http").is_err());
    }
}
