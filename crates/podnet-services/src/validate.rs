//! Checks on services and endpoints, and allocation of cluster IPs and node ports.
//!
//! [`check_service`] looks at one service alone; [`Allocations`] knows every
//! stored service and hands out free cluster IPs and node ports, refusing
//! duplicates. Both run before anything is stored, so refused input writes
//! nothing.

use std::collections::HashSet;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::error::ServiceError;
use crate::model::{Endpoints, Service, ServiceSettings, ServiceType, TargetPort};

/// Checks the service settings: CIDRs (at most one per family) and the node port range.
pub fn check_settings(settings: &ServiceSettings) -> Result<(), ServiceError> {
    if settings.service_cidrs.is_empty() {
        return Err(ServiceError::BadSettings("no service CIDR".into()));
    }
    let v4 = settings
        .service_cidrs
        .iter()
        .filter(|c| c.addr().is_ipv4())
        .count();
    if v4 > 1 || settings.service_cidrs.len() - v4 > 1 {
        return Err(ServiceError::BadSettings(
            "give at most one IPv4 and one IPv6 service CIDR".into(),
        ));
    }
    if settings.node_port_min == 0 || settings.node_port_min > settings.node_port_max {
        return Err(ServiceError::BadSettings(format!(
            "node port range {}-{} is empty",
            settings.node_port_min, settings.node_port_max
        )));
    }
    Ok(())
}

fn check_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn port_in_range(service: &str, field: &'static str, value: u32) -> Result<u16, ServiceError> {
    match u16::try_from(value) {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(ServiceError::PortOutOfRange {
            service: service.to_string(),
            field,
            value,
        }),
    }
}

/// What headless and ExternalName services may not have: an ExternalName
/// needs a DNS name and nothing else of a proxied service; a headless
/// service is of type ClusterIP and has no external addresses.
fn check_kind(svc: &Service, id: &str) -> Result<(), ServiceError> {
    let wrong = |what: &str| ServiceError::Kind {
        service: id.to_string(),
        detail: what.to_string(),
    };
    let external = svc.service_type == ServiceType::ExternalName;
    match (&svc.external_name, external) {
        (None, true) => return Err(wrong("type ExternalName needs externalName")),
        (Some(_), false) => return Err(wrong("externalName is only for type ExternalName")),
        (Some(name), true) if !dns_name(name) => {
            return Err(wrong(&format!("externalName {name:?} is not a DNS name")))
        }
        _ => {}
    }
    if (external || svc.headless) && svc.cluster_ip.is_some() {
        return Err(wrong(
            "a headless or ExternalName service has no cluster IP",
        ));
    }
    if svc.headless && svc.service_type != ServiceType::ClusterIP {
        return Err(wrong(
            "a headless service (clusterIP: None) must be of type ClusterIP",
        ));
    }
    let external_addresses = !svc.external_ips.is_empty() || !svc.load_balancer_ips.is_empty();
    if !svc.has_cluster_ip() && external_addresses {
        return Err(wrong(
            "a headless or ExternalName service takes no external or load-balancer IPs",
        ));
    }
    Ok(())
}

/// A DNS name: dot-separated labels of letters, digits and '-', at most 253 characters.
fn dns_name(name: &str) -> bool {
    let label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    name.len() <= 253 && name.trim_end_matches('.').split('.').all(label)
}

/// Checks one service on its own: names, ports, node ports, addresses, affinity.
pub fn check_service(svc: &Service, settings: &ServiceSettings) -> Result<(), ServiceError> {
    let id = format!("{}/{}", svc.namespace, svc.name);
    if !check_name(&svc.name) || !check_name(&svc.namespace) {
        return Err(ServiceError::BadName(id));
    }
    check_kind(svc, &id)?;
    // Headless and ExternalName services may have no ports (DNS only).
    if svc.ports.is_empty() && svc.has_cluster_ip() {
        return Err(ServiceError::NoPorts(id));
    }
    let mut seen = HashSet::new();
    for p in &svc.ports {
        let port = port_in_range(&id, "port", p.port)?;
        if let Some(TargetPort::Number(t)) = &p.target_port {
            port_in_range(&id, "targetPort", *t)?;
        }
        if svc.ports.len() > 1 && p.name.is_empty() {
            return Err(ServiceError::UnnamedPort(id));
        }
        let dup = |port: String| ServiceError::DuplicatePort {
            service: id.clone(),
            port,
        };
        if !seen.insert(format!("{}/{}", p.protocol.as_str(), port)) {
            return Err(dup(format!("{}/{}", p.protocol.as_str(), port)));
        }
        if !p.name.is_empty() && !seen.insert(p.name.clone()) {
            return Err(dup(p.name.clone()));
        }
        if let Some(np) = p.node_port {
            if !svc.has_node_ports() {
                return Err(ServiceError::NodePortOnClusterIp(id));
            }
            let np16 = port_in_range(&id, "nodePort", np)?;
            if np16 < settings.node_port_min || np16 > settings.node_port_max {
                return Err(ServiceError::NodePortOutOfRange {
                    service: id,
                    port: np,
                    min: settings.node_port_min,
                    max: settings.node_port_max,
                });
            }
        }
    }
    check_cluster_ips(svc, &id, settings)?;
    check_load_balancer_fields(svc, &id, settings)?;
    if !svc.load_balancer_ips.is_empty()
        && svc.service_type != crate::model::ServiceType::LoadBalancer
    {
        return Err(ServiceError::LoadBalancerIpsOnOtherType(id));
    }
    let families: Vec<bool> = svc.all_cluster_ips().iter().map(IpAddr::is_ipv4).collect();
    let fields = [
        ("externalIPs", &svc.external_ips),
        ("loadBalancerIPs", &svc.load_balancer_ips),
    ];
    for (field, ips) in fields {
        for ip in ips {
            let why = if settings.service_cidrs.iter().any(|c| c.contains(ip)) {
                Some("inside the service CIDRs")
            } else if !families.is_empty() && !families.contains(&ip.is_ipv4()) {
                Some("not of the cluster IP's address family")
            } else if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() {
                Some("not a unicast address")
            } else {
                None
            };
            if let Some(why) = why {
                return Err(ServiceError::BadExternalIp {
                    service: id,
                    field,
                    ip: *ip,
                    why,
                });
            }
        }
    }
    if let Some(t) = svc.session_affinity_timeout_seconds {
        if t == 0 || t > 86400 {
            return Err(ServiceError::BadAffinityTimeout {
                service: id,
                value: t,
            });
        }
    }
    Ok(())
}

/// Cluster IPs: inside the service CIDRs, at most one per family, the
/// first equal to `clusterIP`.
fn check_cluster_ips(
    svc: &Service,
    id: &str,
    settings: &ServiceSettings,
) -> Result<(), ServiceError> {
    let family = |detail: &str| ServiceError::Family {
        service: id.to_string(),
        detail: detail.to_string(),
    };
    if !svc.cluster_ips.is_empty() {
        if !svc.has_cluster_ip() {
            return Err(family(
                "spec.clusterIPs: a headless or ExternalName service has none",
            ));
        }
        if svc.cluster_ip.is_some_and(|ip| svc.cluster_ips[0] != ip) {
            return Err(family("spec.clusterIPs[0] must equal spec.clusterIP"));
        }
        let v4 = svc.cluster_ips.iter().filter(|ip| ip.is_ipv4()).count();
        if svc.cluster_ips.len() > 2 || v4 > 1 || svc.cluster_ips.len() - v4 > 1 {
            return Err(family("spec.clusterIPs: at most one address per family"));
        }
    }
    if svc.ip_families.len() > 2
        || (svc.ip_families.len() == 2 && svc.ip_families[0] == svc.ip_families[1])
    {
        return Err(family(
            "spec.ipFamilies: at most one of each, IPv4 and IPv6",
        ));
    }
    for ip in svc.all_cluster_ips() {
        if !settings.service_cidrs.iter().any(|c| c.contains(&ip)) {
            return Err(ServiceError::ClusterIpOutsideRange {
                service: id.to_string(),
                ip,
                cidrs: cidr_list(&settings.service_cidrs),
            });
        }
    }
    Ok(())
}

/// `loadBalancerSourceRanges` and `healthCheckNodePort`: for type
/// LoadBalancer only (the latter with externalTrafficPolicy Local), as
/// Kubernetes has it.
fn check_load_balancer_fields(
    svc: &Service,
    id: &str,
    settings: &ServiceSettings,
) -> Result<(), ServiceError> {
    let field = |field, detail: String| ServiceError::Field {
        service: id.to_string(),
        field,
        detail,
    };
    let lb = svc.service_type == ServiceType::LoadBalancer;
    if !svc.load_balancer_source_ranges.is_empty() && !lb {
        return Err(field(
            "spec.loadBalancerSourceRanges",
            "only for type LoadBalancer".into(),
        ));
    }
    if let Some(range) = svc
        .load_balancer_source_ranges
        .iter()
        .find(|r| r.trunc() != **r)
    {
        return Err(field(
            "spec.loadBalancerSourceRanges",
            format!(
                "{range} has host bits set (did you mean {}?)",
                range.trunc()
            ),
        ));
    }
    let Some(port) = svc.health_check_node_port else {
        return Ok(());
    };
    if !svc.wants_health_check() {
        return Err(field(
            "spec.healthCheckNodePort",
            "only for type LoadBalancer with externalTrafficPolicy Local".into(),
        ));
    }
    let in_range = u16::try_from(port)
        .is_ok_and(|p| (settings.node_port_min..=settings.node_port_max).contains(&p));
    if !in_range {
        return Err(field(
            "spec.healthCheckNodePort",
            format!(
                "{port} is outside the node port range {}-{}",
                settings.node_port_min, settings.node_port_max
            ),
        ));
    }
    Ok(())
}

/// Checks endpoints: addresses of one family per service, port numbers in range.
pub fn check_endpoints(eps: &Endpoints) -> Result<(), ServiceError> {
    let id = format!("{}/{}", eps.namespace, eps.name);
    for e in &eps.endpoints {
        // An EndpointSlice may name an endpoint outside the cluster (no node).
        if e.node.is_empty() && !eps.by_port_name {
            return Err(ServiceError::BadEndpoints {
                service: id,
                why: format!("endpoint {} has no node", e.address),
            });
        }
        for p in &e.ports {
            if p.port == 0 || p.port > 65535 {
                return Err(ServiceError::BadEndpoints {
                    service: id,
                    why: format!("endpoint {} port {} is out of range", e.address, p.port),
                });
            }
        }
    }
    Ok(())
}

fn cidr_list(cidrs: &[IpNet]) -> String {
    cidrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

pub use crate::allocate::Allocations;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Protocol, ServicePort, ServiceType};

    fn svc(name: &str, ty: ServiceType, port: u32, node_port: Option<u32>) -> Service {
        serde_json::from_value(serde_json::json!({
            "name": name, "type": ty, "ports": [{"port": port, "nodePort": node_port}]
        }))
        .unwrap()
    }

    #[test]
    fn headless_and_external_name_services_hold_no_address_and_say_what_is_wrong() {
        let settings = ServiceSettings::default();
        let parse = |v: serde_json::Value| -> Service { serde_json::from_value(v).unwrap() };
        let mut alloc = Allocations::default();
        let headless = parse(serde_json::json!({"name": "db", "headless": true, "ports": []}));
        let admitted = alloc.admit(headless, None, &settings).unwrap();
        assert_eq!(admitted.cluster_ip, None, "no address allocated");
        let alias = parse(serde_json::json!({
            "name": "search", "type": "ExternalName", "externalName": "search.example.com", "ports": []
        }));
        assert_eq!(
            alloc.admit(alias, None, &settings).unwrap().cluster_ip,
            None
        );
        for (v, want) in [
            (serde_json::json!({"name": "a", "type": "ExternalName", "ports": []}),
             "service default/a: type ExternalName needs externalName"),
            (serde_json::json!({"name": "a", "type": "ExternalName", "externalName": "bad_name!", "ports": []}),
             "service default/a: externalName \"bad_name!\" is not a DNS name"),
            (serde_json::json!({"name": "a", "externalName": "x.example", "ports": [{"port": 80}]}),
             "service default/a: externalName is only for type ExternalName"),
            (serde_json::json!({"name": "a", "headless": true, "type": "NodePort", "ports": [{"port": 80}]}),
             "service default/a: a headless service (clusterIP: None) must be of type ClusterIP"),
            (serde_json::json!({"name": "a", "headless": true, "externalIPs": ["192.0.2.1"], "ports": [{"port": 80}]}),
             "service default/a: a headless or ExternalName service takes no external or load-balancer IPs"),
        ] {
            let e = check_service(&parse(v), &settings).unwrap_err();
            assert_eq!(e.to_string(), want);
        }
    }

    #[test]
    fn port_out_of_range_is_named() {
        let s = svc("a", ServiceType::ClusterIP, 70000, None);
        let e = check_service(&s, &ServiceSettings::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "service default/a: port 70000 is out of range (1-65535)"
        );
    }

    #[test]
    fn duplicate_node_port_names_the_owner() {
        let settings = ServiceSettings::default();
        let mut a = Allocations::default();
        a.admit(
            svc("a", ServiceType::NodePort, 80, Some(30080)),
            None,
            &settings,
        )
        .unwrap();
        let e = a
            .admit(
                svc("b", ServiceType::NodePort, 81, Some(30080)),
                None,
                &settings,
            )
            .unwrap_err();
        assert!(
            e.to_string().contains("already used by service default/a"),
            "{e}"
        );
        // The same service may keep its own node port on update.
        let again = a
            .admit(
                svc("a", ServiceType::NodePort, 80, Some(30080)),
                None,
                &settings,
            )
            .unwrap();
        assert_eq!(again.ports[0].node_port, Some(30080));
    }

    #[test]
    fn allocation_fills_cluster_ip_and_node_ports_and_keeps_them_on_update() {
        let settings = ServiceSettings::default();
        let mut a = Allocations::default();
        let s = a
            .admit(svc("a", ServiceType::NodePort, 80, None), None, &settings)
            .unwrap();
        assert_eq!(s.cluster_ip, Some("10.96.0.10".parse().unwrap()));
        assert_eq!(s.ports[0].node_port, Some(30000));
        let t = a
            .admit(svc("b", ServiceType::NodePort, 80, None), None, &settings)
            .unwrap();
        assert_eq!(t.cluster_ip, Some("10.96.0.11".parse().unwrap()));
        assert_eq!(t.ports[0].node_port, Some(30001));
        let mut updated = svc("a", ServiceType::NodePort, 80, None);
        updated.ports.push(ServicePort {
            name: "x".into(),
            protocol: Protocol::Udp,
            port: 53,
            target_port: None,
            node_port: None,
        });
        updated.ports[0].name = "web".into();
        let u = a.admit(updated, Some(&s), &settings).unwrap();
        assert_eq!(u.cluster_ip, s.cluster_ip);
        assert_eq!(u.ports[0].node_port, Some(30000));
        assert_eq!(u.ports[1].node_port, Some(30000), "UDP has its own range");
    }

    #[test]
    fn cluster_ip_outside_the_service_cidr_is_refused() {
        let mut s = svc("a", ServiceType::ClusterIP, 80, None);
        s.cluster_ip = Some("192.168.1.1".parse().unwrap());
        let e = check_service(&s, &ServiceSettings::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "service default/a: cluster IP 192.168.1.1 is outside the service CIDRs (10.96.0.0/12)"
        );
    }

    #[test]
    fn node_port_checks() {
        let settings = ServiceSettings::default();
        let e =
            check_service(&svc("a", ServiceType::NodePort, 80, Some(80)), &settings).unwrap_err();
        assert!(
            e.to_string()
                .contains("outside the node port range 30000-32767"),
            "{e}"
        );
        let e = check_service(
            &svc("a", ServiceType::ClusterIP, 80, Some(30000)),
            &settings,
        )
        .unwrap_err();
        assert_eq!(e, ServiceError::NodePortOnClusterIp("default/a".into()));
    }

    /// Families: what each policy gets on a dual-stack cluster and on a
    /// single-stack one, and each wrong combination named by its field.
    #[test]
    fn ip_family_policies_and_their_refusals() {
        let dual = ServiceSettings {
            service_cidrs: vec![
                "10.96.0.0/12".parse().unwrap(),
                "fd00:96::/112".parse().unwrap(),
            ],
            ..ServiceSettings::default()
        };
        let single = ServiceSettings::default();
        let admit = |v: serde_json::Value, settings: &ServiceSettings| {
            let mut s: Service = serde_json::from_value(v).unwrap();
            s.ports = vec![ServicePort {
                name: String::new(),
                protocol: Protocol::Tcp,
                port: 80,
                target_port: None,
                node_port: None,
            }];
            Allocations::default().admit(s, None, settings)
        };
        let got = admit(
            serde_json::json!({"name": "a", "ports": [], "ipFamilyPolicy": "RequireDualStack"}),
            &dual,
        )
        .unwrap();
        assert_eq!(got.cluster_ips.len(), 2);
        assert_eq!(got.cluster_ip, Some(got.cluster_ips[0]));
        let got = admit(
            serde_json::json!({"name": "a", "ports": [], "ipFamilyPolicy": "PreferDualStack"}),
            &single,
        )
        .unwrap();
        assert!(
            got.cluster_ips.is_empty(),
            "one family where the cluster has one"
        );
        let got = admit(
            serde_json::json!({"name": "a", "ports": [], "ipFamilies": ["IPv6"]}),
            &dual,
        )
        .unwrap();
        assert!(got.cluster_ip.unwrap().is_ipv6());
        for (v, settings, want) in [
            (serde_json::json!({"name": "a", "ports": [], "ipFamilyPolicy": "RequireDualStack"}), &single,
             "RequireDualStack needs an IPv4 and an IPv6 service CIDR"),
            (serde_json::json!({"name": "a", "ports": [], "ipFamilies": ["IPv4", "IPv6"]}), &dual,
             "spec.ipFamilyPolicy SingleStack takes one family"),
            (serde_json::json!({"name": "a", "ports": [], "ipFamilies": ["IPv6"]}), &single,
             "the cluster has no IPv6 service CIDR"),
            (serde_json::json!({"name": "a", "ports": [], "clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.21"]}), &dual,
             "spec.clusterIPs[0] must equal spec.clusterIP"),
            (serde_json::json!({"name": "a", "ports": [], "loadBalancerSourceRanges": ["10.0.0.0/8"]}), &dual,
             "spec.loadBalancerSourceRanges: only for type LoadBalancer"),
            (serde_json::json!({"name": "a", "ports": [], "healthCheckNodePort": 30001}), &dual,
             "spec.healthCheckNodePort: only for type LoadBalancer with externalTrafficPolicy Local"),
        ] {
            let e = admit(v.clone(), settings).unwrap_err().to_string();
            assert!(e.contains(want), "{v}: {e}");
        }
    }
}
