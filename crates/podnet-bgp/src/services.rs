//! Service addresses over BGP (kube-router's `--advertise-cluster-ip`,
//! `--advertise-external-ip`, `--advertise-loadbalancer-ip`; Calico's
//! `serviceClusterIPs`, `serviceExternalIPs`, `serviceLoadBalancerIPs`).
//!
//! What one node advertises, as both of them do:
//! - cluster IPs: the service CIDRs, from every node; and for a service
//!   with `externalTrafficPolicy: Local`, its cluster IP as a host route
//!   (/32, /128) from the nodes with a ready endpoint of it, so that the
//!   longer prefix steers its traffic to exactly those nodes;
//! - external and load-balancer IPs: each as a host route, from every node
//!   (`Cluster`), or only from the nodes with a ready endpoint (`Local`);
//!   a router spreads the traffic over the nodes that advertise it (ECMP).
//!
//! None of these is ever installed on a node: its own advertisement is a
//! route in BIRD only, and what it learns from peers stays out of the
//! kernel (the node's service rules answer those addresses).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use podnet_cluster::Advertise;
use podnet_services::{Endpoints, Service, TrafficPolicy};

/// One service's addresses as one node sees them: the input the node's
/// advertisement is computed from (small, so that a node keeps one per service).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceAddresses {
    /// Its cluster IPs.
    pub cluster_ips: Vec<IpAddr>,
    /// Its external IPs.
    pub external_ips: Vec<IpAddr>,
    /// Its load-balancer IPs.
    pub load_balancer_ips: Vec<IpAddr>,
    /// `externalTrafficPolicy: Local`.
    pub local_policy: bool,
    /// Whether this node runs a ready endpoint of it, per family (IPv4, IPv6).
    pub ready_here: (bool, bool),
}

impl ServiceAddresses {
    /// The addresses of `svc`, with `eps`, as node `node` sees them; none
    /// for a service no proxy of ours answers (headless, ExternalName, left
    /// to another proxy).
    pub fn of(svc: &Service, eps: Option<&Endpoints>, node: &str) -> Self {
        if !svc.proxied() {
            return ServiceAddresses::default();
        }
        let ready =
            |v6: bool| eps.is_some_and(|e| e.ready_on(node).any(|ep| ep.address.is_ipv6() == v6));
        ServiceAddresses {
            cluster_ips: svc.all_cluster_ips(),
            external_ips: svc.external_ips.clone(),
            load_balancer_ips: svc.load_balancer_ips.clone(),
            local_policy: svc.external_traffic_policy == TrafficPolicy::Local,
            ready_here: (ready(false), ready(true)),
        }
    }

    /// Whether this node may attract traffic for `ip` under a `Local` policy.
    fn serves(&self, ip: &IpAddr) -> bool {
        if ip.is_ipv6() {
            self.ready_here.1
        } else {
            self.ready_here.0
        }
    }
}

/// The node's service routes in BGP.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceRoutes {
    /// Prefixes the node originates (a route in BIRD, never in the kernel).
    pub advertised: BTreeSet<IpNet>,
    /// Every prefix the cluster may advertise for services (the service
    /// CIDRs and everything in them, every external and load-balancer IP):
    /// never exported to the node's kernel, whoever advertises it.
    pub reserved: BTreeSet<IpNet>,
}

/// What node should advertise and keep out of its kernel, given what the
/// cluster advertises (`advertise`), its service CIDRs and every service.
pub fn service_routes<'a>(
    advertise: &Advertise,
    service_cidrs: &[IpNet],
    services: impl IntoIterator<Item = &'a ServiceAddresses>,
) -> ServiceRoutes {
    let mut out = ServiceRoutes {
        reserved: service_cidrs.iter().map(IpNet::trunc).collect(),
        ..ServiceRoutes::default()
    };
    if !(advertise.cluster_ips || advertise.external_ips || advertise.load_balancer_ips) {
        return out;
    }
    if advertise.cluster_ips {
        out.advertised
            .extend(service_cidrs.iter().map(IpNet::trunc));
    }
    for s in services {
        let mut take = |on: bool, ips: &[IpAddr], local_only: bool| {
            for ip in ips.iter().filter(|_| on) {
                out.reserved.insert(IpNet::from(*ip));
                if !local_only || s.serves(ip) {
                    out.advertised.insert(IpNet::from(*ip));
                }
            }
        };
        // A cluster IP is a host route only to steer a Local service.
        take(
            advertise.cluster_ips && s.local_policy,
            &s.cluster_ips,
            true,
        );
        take(advertise.external_ips, &s.external_ips, s.local_policy);
        take(
            advertise.load_balancer_ips,
            &s.load_balancer_ips,
            s.local_policy,
        );
    }
    out
}

/// Keeps [`ServiceAddresses`] per service as changes come, and says when
/// what the node advertises may have changed.
#[derive(Debug, Default)]
pub struct ServiceBook {
    services: BTreeMap<String, ServiceAddresses>,
}

impl ServiceBook {
    /// Records `service`'s addresses; true when they differ from before.
    pub fn put(&mut self, service: String, addresses: ServiceAddresses) -> bool {
        self.services.insert(service, addresses.clone()) != Some(addresses)
    }

    /// Forgets `service`; true when it was known.
    pub fn remove(&mut self, service: &str) -> bool {
        self.services.remove(service).is_some()
    }

    /// Replaces everything (a full sync); true when anything differs.
    pub fn replace(&mut self, all: BTreeMap<String, ServiceAddresses>) -> bool {
        let changed = all != self.services;
        self.services = all;
        changed
    }

    /// Every service's addresses.
    pub fn all(&self) -> impl Iterator<Item = &ServiceAddresses> {
        self.services.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn lb(local: bool, ready_here: bool) -> ServiceAddresses {
        ServiceAddresses {
            cluster_ips: vec![ip("10.96.0.10")],
            external_ips: vec![ip("198.51.100.7")],
            load_balancer_ips: vec![ip("203.0.113.10"), ip("2001:db8::10")],
            local_policy: local,
            ready_here: (ready_here, false),
        }
    }

    fn all() -> Advertise {
        Advertise {
            cluster_ips: true,
            external_ips: true,
            load_balancer_ips: true,
        }
    }

    #[test]
    fn cluster_policy_addresses_come_from_every_node() {
        let cidrs = [net("10.96.0.0/12")];
        let r = service_routes(&all(), &cidrs, [&lb(false, false)]);
        let want: BTreeSet<IpNet> = [
            "10.96.0.0/12",
            "198.51.100.7/32",
            "203.0.113.10/32",
            "2001:db8::10/128",
        ]
        .into_iter()
        .map(net)
        .collect();
        assert_eq!(r.advertised, want);
        assert_eq!(r.reserved, want, "what is advertised is never installed");
    }

    #[test]
    fn local_policy_addresses_come_only_from_nodes_with_a_ready_endpoint() {
        let cidrs = [net("10.96.0.0/12")];
        let with = service_routes(&all(), &cidrs, [&lb(true, true)]);
        assert!(with.advertised.contains(&net("10.96.0.10/32")));
        assert!(with.advertised.contains(&net("203.0.113.10/32")));
        // Ready for IPv4 only: the IPv6 address stays with IPv6 endpoints.
        assert!(!with.advertised.contains(&net("2001:db8::10/128")));
        let without = service_routes(&all(), &cidrs, [&lb(true, false)]);
        assert_eq!(
            without.advertised,
            [net("10.96.0.0/12")].into_iter().collect(),
            "only the service CIDR"
        );
        assert!(
            without.reserved.contains(&net("203.0.113.10/32")),
            "another node's advertisement stays out of this node's kernel"
        );
    }

    #[test]
    fn nothing_is_advertised_unless_asked() {
        let cidrs = [net("10.96.0.0/12")];
        let r = service_routes(&Advertise::default(), &cidrs, [&lb(false, true)]);
        assert!(r.advertised.is_empty());
        assert_eq!(r.reserved, cidrs.into_iter().collect());
        let only_lb = Advertise {
            load_balancer_ips: true,
            ..Advertise::default()
        };
        let r = service_routes(&only_lb, &cidrs, [&lb(false, true)]);
        assert_eq!(
            r.advertised,
            [net("203.0.113.10/32"), net("2001:db8::10/128")]
                .into_iter()
                .collect()
        );
    }

    #[test]
    fn the_book_says_when_something_changed() {
        let mut book = ServiceBook::default();
        assert!(book.put("default/lb".into(), lb(true, false)));
        assert!(!book.put("default/lb".into(), lb(true, false)));
        assert!(book.put("default/lb".into(), lb(true, true)));
        assert!(book.remove("default/lb"));
        assert!(!book.remove("default/lb"));
        assert!(!book.replace(BTreeMap::new()));
    }
}
