//! `networking.k8s.io/v1 NetworkPolicy` and `metav1.LabelSelector`.

use podnet_policy::model::Protocol;
use podnet_policy::{
    IpBlock, LabelSelector, NetworkPolicy, Operator, Peer, PolicyPort, PolicyRule, PolicySpec,
    PolicyType, PortRef, Requirement,
};
use serde_json::Value;

use crate::reader::{kind_of, Findings, Obj};

/// Reads a NetworkPolicy's `spec` (policyTypes defaulted as the API server does).
pub fn spec(path: &str, value: Option<&Value>, f: &mut Findings) -> PolicySpec {
    let mut o = Obj::new(path, value, f);
    if !o.has("podSelector") {
        f.error(
            o.at("podSelector"),
            "required (use {} to select every pod of the namespace)",
        );
    }
    let pod_selector = selector(&o.at("podSelector"), o.take("podSelector"), f);
    let mut policy_types = Vec::new();
    for (p, v) in o.list("policyTypes", f) {
        match v.as_str() {
            Some("Ingress") => policy_types.push(PolicyType::Ingress),
            Some("Egress") => policy_types.push(PolicyType::Egress),
            _ => f.error(
                p,
                format!("unsupported value {v}: \"Ingress\" or \"Egress\""),
            ),
        }
    }
    let ingress = rules(&mut o, "ingress", "from", f);
    let egress = rules(&mut o, "egress", "to", f);
    o.finish(f);
    PolicySpec {
        pod_selector,
        policy_types,
        ingress,
        egress,
    }
    .defaulted()
}

fn rules(
    o: &mut Obj<'_>,
    field: &'static str,
    peers: &'static str,
    f: &mut Findings,
) -> Vec<PolicyRule> {
    o.list(field, f)
        .into_iter()
        .map(|(path, v)| {
            let mut r = Obj::new(&path, Some(v), f);
            let peers = r
                .list(peers, f)
                .into_iter()
                .map(|(p, v)| peer(&p, v, f))
                .collect();
            let ports = r
                .list("ports", f)
                .into_iter()
                .map(|(p, v)| port(&p, v, f))
                .collect();
            r.finish(f);
            PolicyRule { peers, ports }
        })
        .collect()
}

fn peer(path: &str, v: &Value, f: &mut Findings) -> Peer {
    let mut o = Obj::new(path, Some(v), f);
    let pod_selector = o
        .has("podSelector")
        .then(|| selector(&o.at("podSelector"), o.take("podSelector"), f));
    let namespace_selector = o
        .has("namespaceSelector")
        .then(|| selector(&o.at("namespaceSelector"), o.take("namespaceSelector"), f));
    let ip_block = o.has("ipBlock").then(|| {
        let at = o.at("ipBlock");
        let mut b = Obj::new(&at, o.take("ipBlock"), f);
        let cidr = b.string("cidr", f);
        let cidr_at = b.at("cidr");
        let except_at = b.at("except");
        let except = b.strings("except", f);
        b.finish(f);
        if cidr.is_none() {
            f.error(&cidr_at, "required");
        }
        IpBlock {
            cidr: cidr
                .and_then(|c| net(&cidr_at, &c, f))
                .unwrap_or_else(default_net),
            except: except
                .iter()
                .enumerate()
                .filter_map(|(i, e)| net(&format!("{except_at}[{i}]"), e, f))
                .collect(),
        }
    });
    o.finish(f);
    Peer {
        pod_selector,
        namespace_selector,
        ip_block,
    }
}

fn default_net() -> ipnet::IpNet {
    ipnet::IpNet::V4(Default::default())
}

fn net(path: &str, text: &str, f: &mut Findings) -> Option<ipnet::IpNet> {
    match text.parse() {
        Ok(n) => Some(n),
        Err(_) => {
            f.error(
                path,
                format!("{text:?} is not a CIDR (like 10.0.0.0/8 or fd00::/64)"),
            );
            None
        }
    }
}

fn port(path: &str, v: &Value, f: &mut Findings) -> PolicyPort {
    let mut o = Obj::new(path, Some(v), f);
    let protocol = protocol(&o.at("protocol"), o.take("protocol"), f);
    let port = match o.take("port") {
        None => None,
        Some(Value::String(s)) => Some(PortRef::Name(s.clone())),
        Some(n) => match n.as_u64() {
            Some(n) => Some(PortRef::Number(u32::try_from(n).unwrap_or(u32::MAX))),
            None => {
                f.error(
                    o.at("port"),
                    format!("must be a port number or name, not {n}"),
                );
                None
            }
        },
    };
    let end_port = o.number("endPort", f);
    o.finish(f);
    PolicyPort {
        protocol,
        port,
        end_port,
    }
}

/// Reads a protocol (`TCP` when absent).
pub fn protocol(path: &str, v: Option<&Value>, f: &mut Findings) -> Protocol {
    match v.map(|v| (v, v.as_str())) {
        None => Protocol::Tcp,
        Some((_, Some("TCP"))) => Protocol::Tcp,
        Some((_, Some("UDP"))) => Protocol::Udp,
        Some((_, Some("SCTP"))) => Protocol::Sctp,
        Some((v, _)) => {
            f.error(
                path,
                format!("unsupported value {v}: \"TCP\", \"UDP\" or \"SCTP\""),
            );
            Protocol::Tcp
        }
    }
}

/// Reads a label selector (`{}` when absent).
pub fn selector(path: &str, v: Option<&Value>, f: &mut Findings) -> LabelSelector {
    let mut o = Obj::new(path, v, f);
    let match_labels = o.string_map("matchLabels", f);
    let match_expressions = o
        .list("matchExpressions", f)
        .into_iter()
        .filter_map(|(p, v)| requirement(&p, v, f))
        .collect();
    o.finish(f);
    LabelSelector {
        match_labels,
        match_expressions,
    }
}

fn requirement(path: &str, v: &Value, f: &mut Findings) -> Option<Requirement> {
    let mut o = Obj::new(path, Some(v), f);
    let key = o.string("key", f);
    let op_at = o.at("operator");
    let operator = match o.take("operator") {
        Some(Value::String(s)) => Operator::parse(s).or_else(|| {
            f.error(
                &op_at,
                format!(
                    "unsupported value {s:?}: \"In\", \"NotIn\", \"Exists\" or \"DoesNotExist\""
                ),
            );
            None
        }),
        Some(other) => {
            f.error(&op_at, format!("must be a string, not {}", kind_of(other)));
            None
        }
        None => {
            f.error(&op_at, "required");
            None
        }
    };
    let values = o.strings("values", f).into_iter().collect();
    let key_at = o.at("key");
    o.finish(f);
    if key.is_none() {
        f.error(key_at, "required");
    }
    Some(Requirement {
        key: key?,
        operator: operator?,
        values,
    })
}

/// The manifest of a stored policy (`kubectl get -o yaml`).
pub fn render(p: &NetworkPolicy) -> Value {
    let rules = |rules: &[PolicyRule], peers: &str| -> Vec<Value> {
        rules
            .iter()
            .map(|r| {
                let mut m = serde_json::Map::new();
                if !r.peers.is_empty() {
                    m.insert(
                        peers.into(),
                        serde_json::to_value(&r.peers).unwrap_or_default(),
                    );
                }
                if !r.ports.is_empty() {
                    m.insert(
                        "ports".into(),
                        serde_json::to_value(&r.ports).unwrap_or_default(),
                    );
                }
                Value::Object(m)
            })
            .collect()
    };
    let mut spec = serde_json::json!({
        "podSelector": p.spec.pod_selector,
        "policyTypes": p.spec.policy_types,
    });
    if !p.spec.ingress.is_empty() {
        spec["ingress"] = rules(&p.spec.ingress, "from").into();
    }
    if !p.spec.egress.is_empty() {
        spec["egress"] = rules(&p.spec.egress, "to").into();
    }
    serde_json::json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": p.name, "namespace": p.namespace},
        "spec": spec,
    })
}
