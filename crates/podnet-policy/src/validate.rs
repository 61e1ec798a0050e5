//! The checks a policy, pod or namespace must pass before it is stored.
//!
//! Every problem is reported with its field path, as the API server does:
//! `spec.ingress[0].from[1].ipBlock.except[0]: 10.0.0.0/8 is not inside cidr 192.168.0.0/16`.

use ipnet::IpNet;

use crate::error::{FieldError, FieldErrors};
use crate::model::{
    Namespace, NetworkPolicy, Peer, Pod, PolicyPort, PolicyRule, PolicyType, PortRef,
};
use crate::selector::{check_label_key, check_label_value};

/// Checks a NetworkPolicy; every refused field is named.
pub fn check_policy(policy: &NetworkPolicy) -> Result<(), FieldErrors> {
    let mut out = Vec::new();
    check_dns_label("metadata.namespace", &policy.namespace, &mut out);
    check_dns_subdomain("metadata.name", &policy.name, &mut out);
    let spec = &policy.spec;
    spec.pod_selector.check("spec.podSelector", &mut out);
    for direction in [PolicyType::Ingress, PolicyType::Egress] {
        let (field, peers) = match direction {
            PolicyType::Ingress => ("ingress", "from"),
            PolicyType::Egress => ("egress", "to"),
        };
        for (i, rule) in spec.rules(direction).iter().enumerate() {
            check_rule(&format!("spec.{field}[{i}]"), peers, rule, &mut out);
        }
    }
    FieldErrors::check(format!("NetworkPolicy {}", policy.key()), out)
}

fn check_rule(path: &str, peers_field: &str, rule: &PolicyRule, out: &mut Vec<FieldError>) {
    for (j, peer) in rule.peers.iter().enumerate() {
        check_peer(&format!("{path}.{peers_field}[{j}]"), peer, out);
    }
    for (j, port) in rule.ports.iter().enumerate() {
        check_port(&format!("{path}.ports[{j}]"), port, out);
    }
}

fn check_peer(path: &str, peer: &Peer, out: &mut Vec<FieldError>) {
    if let Some(s) = &peer.pod_selector {
        s.check(&format!("{path}.podSelector"), out);
    }
    if let Some(s) = &peer.namespace_selector {
        s.check(&format!("{path}.namespaceSelector"), out);
    }
    match &peer.ip_block {
        None if peer.pod_selector.is_none() && peer.namespace_selector.is_none() => out.push(
            FieldError::new(path, "must specify a peer: podSelector, namespaceSelector or ipBlock"),
        ),
        None => {}
        Some(_) if peer.pod_selector.is_some() || peer.namespace_selector.is_some() => {
            out.push(FieldError::new(
                path,
                "may not specify more than 1 peer type: ipBlock goes alone, without podSelector or namespaceSelector",
            ))
        }
        Some(block) => {
            let at = format!("{path}.ipBlock");
            check_no_host_bits(&format!("{at}.cidr"), &block.cidr, out);
            for (k, e) in block.except.iter().enumerate() {
                let ep = format!("{at}.except[{k}]");
                check_no_host_bits(&ep, e, out);
                if e.addr().is_ipv4() != block.cidr.addr().is_ipv4() {
                    out.push(FieldError::new(ep, format!("{e} is not of the family of cidr {}", block.cidr)));
                } else if !block.cidr.contains(e) || e.prefix_len() <= block.cidr.prefix_len() {
                    out.push(FieldError::new(
                        ep,
                        format!("{e} is not inside cidr {}", block.cidr),
                    ));
                }
            }
        }
    }
}

fn check_no_host_bits(path: &str, net: &IpNet, out: &mut Vec<FieldError>) {
    if net.trunc() != *net {
        out.push(FieldError::new(
            path,
            format!("{net} has host bits set (did you mean {}?)", net.trunc()),
        ));
    }
}

fn check_port(path: &str, p: &PolicyPort, out: &mut Vec<FieldError>) {
    match &p.port {
        Some(PortRef::Number(n)) if !(1..=65535).contains(n) => {
            out.push(FieldError::new(
                format!("{path}.port"),
                format!("{n} is out of range (1-65535)"),
            ));
        }
        Some(PortRef::Number(_)) => {}
        Some(PortRef::Name(name)) => check_port_name(&format!("{path}.port"), name, out),
        None => {}
    }
    let Some(end) = p.end_port else {
        return;
    };
    let at = format!("{path}.endPort");
    match &p.port {
        Some(PortRef::Number(start)) if end < *start => out.push(FieldError::new(
            at,
            format!("{end} must be greater than or equal to port {start}"),
        )),
        Some(PortRef::Number(_)) if end > 65535 => out.push(FieldError::new(
            at,
            format!("{end} is out of range (1-65535)"),
        )),
        Some(PortRef::Number(_)) => {}
        _ => out.push(FieldError::new(
            at,
            "may not be specified without a numeric port",
        )),
    }
}

/// Checks a port name (IANA_SVC_NAME): 1-15 lowercase letters, digits and
/// single inner hyphens, with at least one letter.
pub fn check_port_name(path: &str, name: &str, out: &mut Vec<FieldError>) {
    let b = name.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 15
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b.iter().any(u8::is_ascii_lowercase)
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
        && !name.contains("--");
    if !ok {
        out.push(FieldError::new(
            path,
            format!("{name:?} is not a valid port name: 1-15 lowercase letters, digits and single inner hyphens, with at least one letter"),
        ));
    }
}

/// Checks a name that must be a DNS label (namespaces): 1-63 lowercase
/// alphanumerics and `-`, alphanumeric at both ends.
pub fn check_dns_label(path: &str, name: &str, out: &mut Vec<FieldError>) {
    let b = name.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric();
    if !ok {
        out.push(FieldError::new(
            path,
            format!("{name:?} is not a DNS label: 1-63 lowercase letters, digits and '-', alphanumeric at both ends"),
        ));
    }
}

/// Checks a name that must be a DNS subdomain (pods, policies): dot-separated
/// DNS labels, at most 253 characters.
pub fn check_dns_subdomain(path: &str, name: &str, out: &mut Vec<FieldError>) {
    let mut inner = Vec::new();
    for label in name.split('.') {
        check_dns_label(path, label, &mut inner);
    }
    if name.len() > 253 || !inner.is_empty() {
        out.push(FieldError::new(
            path,
            format!("{name:?} is not a DNS subdomain: lowercase letters, digits, '-' and '.', at most 253 characters"),
        ));
    }
}

/// Checks a namespace: its name and labels.
pub fn check_namespace(ns: &Namespace) -> Result<(), FieldErrors> {
    let mut out = Vec::new();
    check_dns_label("metadata.name", &ns.name, &mut out);
    check_labels("metadata.labels", &ns.labels, &mut out);
    FieldErrors::check(format!("Namespace {}", ns.name), out)
}

/// Checks a pod record: names, labels and container ports.
pub fn check_pod(pod: &Pod) -> Result<(), FieldErrors> {
    let mut out = Vec::new();
    check_dns_label("metadata.namespace", &pod.namespace, &mut out);
    check_dns_subdomain("metadata.name", &pod.name, &mut out);
    check_labels("metadata.labels", &pod.labels, &mut out);
    for (i, p) in pod.ports.iter().enumerate() {
        let at = format!("spec.containers.ports[{i}]");
        if !(1..=65535).contains(&p.container_port) {
            out.push(FieldError::new(
                format!("{at}.containerPort"),
                format!("{} is out of range (1-65535)", p.container_port),
            ));
        }
        if !p.name.is_empty() {
            check_port_name(&format!("{at}.name"), &p.name, &mut out);
        }
    }
    FieldErrors::check(format!("Pod {}", pod.key()), out)
}

/// Checks every key and value of a label map.
pub fn check_labels(
    path: &str,
    labels: &std::collections::BTreeMap<String, String>,
    out: &mut Vec<FieldError>,
) {
    for (k, v) in labels {
        check_label_key(path, k, out);
        check_label_value(&format!("{path}[{k}]"), v, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{IpBlock, PolicySpec};
    use crate::selector::{LabelSelector, Operator, Requirement};

    fn policy_with(rule: PolicyRule) -> NetworkPolicy {
        NetworkPolicy {
            namespace: "x".into(),
            name: "p".into(),
            spec: PolicySpec {
                ingress: vec![PolicyRule::default(), rule],
                ..PolicySpec::default()
            }
            .defaulted(),
        }
    }

    fn errors(p: &NetworkPolicy) -> Vec<String> {
        match check_policy(p) {
            Ok(()) => Vec::new(),
            Err(e) => e.errors.iter().map(ToString::to_string).collect(),
        }
    }

    fn block(cidr: &str, except: &[&str]) -> Peer {
        Peer {
            ip_block: Some(IpBlock {
                cidr: cidr.parse().unwrap(),
                except: except.iter().map(|e| e.parse().unwrap()).collect(),
            }),
            ..Peer::default()
        }
    }

    #[test]
    fn except_outside_its_cidr_is_named() {
        let rule = PolicyRule {
            peers: vec![
                block("10.1.0.0/16", &[]),
                block("192.168.0.0/16", &["10.0.0.0/8"]),
            ],
            ports: vec![],
        };
        assert_eq!(
            errors(&policy_with(rule)),
            ["spec.ingress[1].from[1].ipBlock.except[0]: 10.0.0.0/8 is not inside cidr 192.168.0.0/16"]
        );
    }

    #[test]
    fn host_bits_and_bad_ports_and_end_ports() {
        let port = |port: Option<PortRef>, end_port: Option<u32>| PolicyPort {
            protocol: Default::default(),
            port,
            end_port,
        };
        let rule = PolicyRule {
            peers: vec![block("10.1.2.3/16", &[])],
            ports: vec![
                port(Some(PortRef::Number(70000)), None),
                port(Some(PortRef::Name("Http_Port".into())), None),
                port(None, Some(90)),
                port(Some(PortRef::Number(100)), Some(90)),
                port(Some(PortRef::Name("http".into())), Some(90)),
                port(Some(PortRef::Number(80)), Some(90)),
            ],
        };
        let e = errors(&policy_with(rule));
        let paths: Vec<&str> = e.iter().map(|s| s.split(": ").next().unwrap()).collect();
        assert_eq!(
            paths,
            [
                "spec.ingress[1].from[0].ipBlock.cidr",
                "spec.ingress[1].ports[0].port",
                "spec.ingress[1].ports[1].port",
                "spec.ingress[1].ports[2].endPort",
                "spec.ingress[1].ports[3].endPort",
                "spec.ingress[1].ports[4].endPort",
            ],
            "{e:#?}"
        );
    }

    #[test]
    fn peers_need_exactly_one_kind_or_both_selectors() {
        let both = Peer {
            pod_selector: Some(LabelSelector::default()),
            namespace_selector: Some(LabelSelector::default()),
            ip_block: None,
        };
        let mixed = Peer {
            pod_selector: Some(LabelSelector::default()),
            ..block("10.0.0.0/8", &[])
        };
        let rule = PolicyRule {
            peers: vec![both, Peer::default(), mixed],
            ports: vec![],
        };
        let e = errors(&policy_with(rule));
        assert_eq!(e.len(), 2, "{e:#?}");
        assert!(e[0].starts_with("spec.ingress[1].from[1]: must specify a peer"));
        assert!(e[1].starts_with("spec.ingress[1].from[2]: may not specify more than 1 peer type"));
    }

    #[test]
    fn selector_problems_carry_the_peer_path() {
        let peer = Peer {
            namespace_selector: Some(LabelSelector {
                match_expressions: vec![Requirement {
                    key: "team".into(),
                    operator: Operator::Exists,
                    values: ["a".to_string()].into(),
                }],
                ..LabelSelector::default()
            }),
            ..Peer::default()
        };
        let mut p = policy_with(PolicyRule::default());
        p.spec.egress = vec![PolicyRule {
            peers: vec![peer],
            ports: vec![],
        }];
        assert_eq!(
            errors(&p),
            ["spec.egress[0].to[0].namespaceSelector.matchExpressions[0].values: may not be specified when `operator` is 'Exists'"]
        );
    }

    #[test]
    fn port_names_follow_iana() {
        for good in ["http", "dns-tcp", "h2c", "a1"] {
            let mut out = Vec::new();
            check_port_name("p", good, &mut out);
            assert!(out.is_empty(), "{good}");
        }
        for bad in [
            "",
            "80",
            "-http",
            "http-",
            "a--b",
            "HTTP",
            "much-too-long-name",
        ] {
            let mut out = Vec::new();
            check_port_name("p", bad, &mut out);
            assert_eq!(out.len(), 1, "{bad}");
        }
    }
}
