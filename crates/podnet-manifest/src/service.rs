//! `v1 Service`, in the fields podnet's service proxy implements.

use std::net::IpAddr;

use ipnet::IpNet;
use podnet_services::{
    IpFamily, IpFamilyPolicy, Service, ServicePort, ServiceType, SessionAffinity, TargetPort,
    TrafficDistribution, TrafficPolicy,
};
use serde_json::Value;

use crate::policy::protocol;
use crate::reader::{Findings, Obj};

/// Reads a Service's `spec` (and the load-balancer addresses of its `status`).
pub fn spec(
    path: &str,
    v: Option<&Value>,
    status: Option<&Value>,
    name: &str,
    namespace: &str,
    f: &mut Findings,
) -> Service {
    let mut o = Obj::new(path, v, f);
    let types = [
        ("ClusterIP", ServiceType::ClusterIP),
        ("NodePort", ServiceType::NodePort),
        ("LoadBalancer", ServiceType::LoadBalancer),
        ("ExternalName", ServiceType::ExternalName),
    ];
    let service_type = o.choice("type", &types, ServiceType::ClusterIP, f);
    let (cluster_ip, headless) = cluster_ip(&mut o, f);
    let external_name = o.string("externalName", f).filter(|n| !n.is_empty());
    let ports = o
        .list("ports", f)
        .into_iter()
        .map(|(p, v)| port(&p, v, f))
        .collect();
    let selector = o.string_map("selector", f);
    let external_ips = addresses(&mut o, "externalIPs", f);
    let lb_at = o.at("loadBalancerIP");
    let mut load_balancer_ips: Vec<IpAddr> = o
        .string("loadBalancerIP", f)
        .and_then(|s| addr(&lb_at, &s, f))
        .into_iter()
        .collect();
    let affinities = [
        ("None", SessionAffinity::None),
        ("ClientIP", SessionAffinity::ClientIP),
    ];
    let session_affinity = o.choice("sessionAffinity", &affinities, SessionAffinity::None, f);
    let timeout = affinity_timeout(&mut o, f);
    let external_traffic_policy = policy(&mut o, "externalTrafficPolicy", f);
    let internal_traffic_policy = policy(&mut o, "internalTrafficPolicy", f);
    let traffic_distribution = o.has("trafficDistribution").then(|| {
        let choices = [("PreferClose", TrafficDistribution::PreferClose)];
        o.choice(
            "trafficDistribution",
            &choices,
            TrafficDistribution::PreferClose,
            f,
        )
    });
    let cluster_ips = cluster_ips(&mut o, headless, f);
    let ip_families = families(&mut o, f);
    let ip_family_policy = o.has("ipFamilyPolicy").then(|| {
        let choices = [
            ("SingleStack", IpFamilyPolicy::SingleStack),
            ("PreferDualStack", IpFamilyPolicy::PreferDualStack),
            ("RequireDualStack", IpFamilyPolicy::RequireDualStack),
        ];
        o.choice("ipFamilyPolicy", &choices, IpFamilyPolicy::SingleStack, f)
    });
    let health_check_node_port = o.number("healthCheckNodePort", f);
    let load_balancer_source_ranges = source_ranges(&mut o, f);
    o.ignore(&["allocateLoadBalancerNodePorts", "loadBalancerClass"], f);
    o.finish(f);
    load_balancer_ips.extend(status_ips(path, status, f));
    Service {
        name: name.to_string(),
        namespace: namespace.to_string(),
        service_type,
        cluster_ip,
        ports,
        selector,
        external_ips,
        load_balancer_ips,
        session_affinity,
        session_affinity_timeout_seconds: timeout,
        external_traffic_policy,
        internal_traffic_policy,
        traffic_distribution,
        headless,
        external_name,
        labels: Default::default(),
        load_balancer_source_ranges,
        health_check_node_port,
        cluster_ips,
        ip_families,
        ip_family_policy,
    }
}

/// `spec.clusterIPs`: addresses (`None` only as a headless service's).
fn cluster_ips(o: &mut Obj<'_>, headless: bool, f: &mut Findings) -> Vec<IpAddr> {
    let parsed = each(o, "clusterIPs", f, |t| match (t, headless) {
        ("None", true) => Ok(None),
        ("None", false) => Err("\"None\" only with clusterIP: None".into()),
        _ if headless => Err("a headless service has no cluster IPs".into()),
        _ => ip(t).map(Some),
    });
    parsed.into_iter().flatten().collect()
}

/// `spec.ipFamilies`: `IPv4` and `IPv6`.
fn families(o: &mut Obj<'_>, f: &mut Findings) -> Vec<IpFamily> {
    each(o, "ipFamilies", f, |t| match t {
        "IPv4" => Ok(IpFamily::IPv4),
        "IPv6" => Ok(IpFamily::IPv6),
        other => Err(format!("{other:?} is not IPv4 or IPv6")),
    })
}

/// `spec.loadBalancerSourceRanges`: CIDRs, each bad one named.
fn source_ranges(o: &mut Obj<'_>, f: &mut Findings) -> Vec<IpNet> {
    each(o, "loadBalancerSourceRanges", f, |t| {
        t.trim().parse().map_err(|_| format!("{t:?} is not a CIDR"))
    })
}

/// A list of strings, each parsed; a bad one is named by its index.
fn each<'a, T>(
    o: &mut Obj<'a>,
    field: &'a str,
    f: &mut Findings,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Vec<T> {
    let at = o.at(field);
    o.strings(field, f)
        .iter()
        .enumerate()
        .filter_map(|(i, t)| parse(t).map_err(|e| f.error(format!("{at}[{i}]"), e)).ok())
        .collect()
}

fn ip(text: &str) -> Result<IpAddr, String> {
    text.parse()
        .map_err(|_| format!("{text:?} is not an IP address"))
}

/// `spec.clusterIP`: an address, empty (allocate one), or `None`
/// (headless); the address and whether the service is headless.
fn cluster_ip(o: &mut Obj<'_>, f: &mut Findings) -> (Option<IpAddr>, bool) {
    let at = o.at("clusterIP");
    match o.string("clusterIP", f).as_deref() {
        None | Some("") => (None, false),
        Some("None") => (None, true),
        Some(text) => (addr(&at, text, f), false),
    }
}

/// A list of addresses, each bad one named.
fn addresses(o: &mut Obj<'_>, field: &'static str, f: &mut Findings) -> Vec<IpAddr> {
    each(o, field, f, ip)
}

fn addr(path: &str, text: &str, f: &mut Findings) -> Option<IpAddr> {
    text.parse()
        .map_err(|_| f.error(path, format!("{text:?} is not an IP address")))
        .ok()
}

fn port(path: &str, v: &Value, f: &mut Findings) -> ServicePort {
    let mut o = Obj::new(path, Some(v), f);
    let name = o.string("name", f).unwrap_or_default();
    let protocol = protocol(&o.at("protocol"), o.take("protocol"), f);
    let port_at = o.at("port");
    let port = o.number("port", f).unwrap_or_else(|| {
        f.error(port_at, "required");
        0
    });
    let target_port = match o.take("targetPort") {
        None => None,
        Some(Value::String(s)) => Some(TargetPort::Name(s.clone())),
        Some(v) => Some(TargetPort::Number(
            v.as_u64()
                .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
                .unwrap_or(0),
        )),
    };
    let node_port = o.number("nodePort", f);
    o.ignore(&["appProtocol"], f);
    o.finish(f);
    ServicePort {
        name,
        protocol,
        port,
        target_port,
        node_port,
    }
}

fn affinity_timeout(o: &mut Obj<'_>, f: &mut Findings) -> Option<u32> {
    let at = o.at("sessionAffinityConfig");
    let mut c = Obj::new(&at, o.take("sessionAffinityConfig"), f);
    let ip_at = c.at("clientIP");
    let mut ip = Obj::new(&ip_at, c.take("clientIP"), f);
    let t = ip.number("timeoutSeconds", f);
    ip.finish(f);
    c.finish(f);
    t
}

fn policy(o: &mut Obj<'_>, field: &'static str, f: &mut Findings) -> TrafficPolicy {
    let options = [
        ("Cluster", TrafficPolicy::Cluster),
        ("Local", TrafficPolicy::Local),
    ];
    o.choice(field, &options, TrafficPolicy::Cluster, f)
}

/// `status.loadBalancer.ingress[].ip`: addresses a load balancer gave the service.
fn status_ips(_spec_path: &str, status: Option<&Value>, f: &mut Findings) -> Vec<IpAddr> {
    let ingress = status
        .and_then(|s| s.get("loadBalancer"))
        .and_then(|l| l.get("ingress"))
        .and_then(Value::as_array);
    ingress
        .into_iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, v)| {
            let text = v.get("ip")?.as_str()?;
            addr(&format!("status.loadBalancer.ingress[{i}].ip"), text, f)
        })
        .collect()
}

/// The manifest of a stored service (`kubectl get -o yaml`).
pub fn render(s: &Service) -> Value {
    let mut spec = serde_json::to_value(s).unwrap_or_default();
    if let Some(m) = spec.as_object_mut() {
        m.remove("name");
        m.remove("namespace");
        m.remove("labels");
        if m.remove("headless").is_some() {
            m.insert("clusterIP".into(), "None".into());
        }
    }
    let mut metadata = serde_json::json!({"name": s.name, "namespace": s.namespace});
    if !s.labels.is_empty() {
        metadata["labels"] = serde_json::json!(s.labels);
    }
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata,
        "spec": spec,
    })
}
