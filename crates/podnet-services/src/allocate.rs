//! [`Allocations`]: every cluster IP and node port in use, and who holds
//! it; hands out free ones (one cluster IP per family a service asks for,
//! node ports, the health-check node port) and refuses duplicates.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use ipnet::IpNet;

use crate::error::ServiceError;
use crate::model::{IpFamily, IpFamilyPolicy, Protocol, Service, ServiceName, ServiceSettings};
use crate::validate::check_service;

/// The cluster IPs and node ports of one service.
type Held = (Vec<IpAddr>, Vec<(Protocol, u16)>);

/// Every cluster IP and node port in use, and who holds it.
#[derive(Debug, Default)]
pub struct Allocations {
    ips: HashMap<IpAddr, ServiceName>,
    node_ports: HashMap<(Protocol, u16), ServiceName>,
    /// What each service holds, so that releasing it costs its own
    /// addresses and ports, not a scan of everyone's.
    held: HashMap<ServiceName, Held>,
    /// Per family (IPv4, IPv6): where the search for a free cluster IP goes
    /// on from (an offset from the first allocatable address), so that
    /// admitting many services in a row does not rescan the addresses
    /// already handed out.
    ip_cursor: [u128; 2],
}

impl Allocations {
    /// What `services` hold.
    pub fn of<'a>(services: impl IntoIterator<Item = &'a Service>) -> Self {
        let mut a = Allocations::default();
        for s in services {
            a.hold(s);
        }
        a
    }

    fn hold(&mut self, svc: &Service) {
        let key = svc.key();
        let ips = svc.all_cluster_ips();
        let ports: Vec<(Protocol, u16)> = node_ports_of(svc).collect();
        for ip in &ips {
            self.ips.insert(*ip, key.clone());
        }
        for port in &ports {
            self.node_ports.insert(*port, key.clone());
        }
        self.held.insert(key, (ips, ports));
    }

    /// Forgets what `name` holds (before it is updated or deleted).
    pub fn release(&mut self, name: &ServiceName) {
        let Some((ips, ports)) = self.held.remove(name) else {
            return;
        };
        for ip in ips {
            if self.ips.get(&ip) == Some(name) {
                self.ips.remove(&ip);
            }
        }
        for port in ports {
            if self.node_ports.get(&port) == Some(name) {
                self.node_ports.remove(&port);
            }
        }
    }

    /// Checks `svc` and fills in its cluster IPs and node ports; records them.
    ///
    /// An update keeps what the stored version had: pass the stored service as
    /// `previous`, and absent fields are taken from it before anything new is
    /// allocated.
    pub fn admit(
        &mut self,
        mut svc: Service,
        previous: Option<&Service>,
        settings: &ServiceSettings,
    ) -> Result<Service, ServiceError> {
        check_service(&svc, settings)?;
        if let Some(prev) = previous {
            keep_previous(&mut svc, prev);
        }
        let key = svc.key();
        let id = key.to_string();
        if svc.has_cluster_ip() {
            self.cluster_ips(&mut svc, &id, settings)?;
        }
        self.node_ports(&mut svc, &id, settings)?;
        self.release(&key);
        self.hold(&svc);
        Ok(svc)
    }

    /// The cluster IP of every family the service gets: the ones it names
    /// (if nobody else holds them), then free ones.
    fn cluster_ips(
        &mut self,
        svc: &mut Service,
        id: &str,
        settings: &ServiceSettings,
    ) -> Result<(), ServiceError> {
        let families = families(svc, id, settings)?;
        let given = svc.all_cluster_ips();
        let mut ips = Vec::new();
        for family in &families {
            let ip = match given.iter().find(|ip| IpFamily::of(ip) == *family) {
                Some(ip) => {
                    if let Some(owner) = self.ips.get(ip).filter(|o| **o != svc.key()) {
                        return Err(ServiceError::DuplicateClusterIp {
                            service: id.to_string(),
                            ip: *ip,
                            owner: owner.to_string(),
                        });
                    }
                    *ip
                }
                None => self.free_ip(id, *family, settings)?,
            };
            ips.push(ip);
        }
        svc.cluster_ip = ips.first().copied();
        let dual = ips.len() > 1;
        svc.cluster_ips = if dual { ips } else { Vec::new() };
        svc.ip_families = if dual { families } else { Vec::new() };
        Ok(())
    }

    /// Node ports of every port (NodePort and LoadBalancer) and the
    /// health-check node port: the ones given (if free), else free ones.
    fn node_ports(
        &mut self,
        svc: &mut Service,
        id: &str,
        settings: &ServiceSettings,
    ) -> Result<(), ServiceError> {
        let key = svc.key();
        let mut taken_here: HashSet<(Protocol, u16)> = HashSet::new();
        let given: Vec<(Protocol, u16)> = node_ports_of(svc).collect();
        for (proto, np) in &given {
            // Taken by another service, or twice by this one.
            let owner = match self.node_ports.get(&(*proto, *np)).filter(|o| **o != key) {
                Some(other) => Some(other.to_string()),
                None => (!taken_here.insert((*proto, *np))).then(|| id.to_string()),
            };
            if let Some(owner) = owner {
                return Err(ServiceError::DuplicateNodePort {
                    service: id.to_string(),
                    protocol: proto.as_str().into(),
                    port: *np,
                    owner,
                });
            }
        }
        let mut free = |proto: Protocol| -> Result<u32, ServiceError> {
            let port = (settings.node_port_min..=settings.node_port_max)
                .find(|p| {
                    !self.node_ports.contains_key(&(proto, *p))
                        && !taken_here.contains(&(proto, *p))
                })
                .ok_or_else(|| ServiceError::NodePortsExhausted(id.to_string()))?;
            taken_here.insert((proto, port));
            Ok(u32::from(port))
        };
        if svc.has_node_ports() {
            for p in svc.ports.iter_mut().filter(|p| p.node_port.is_none()) {
                p.node_port = Some(free(p.protocol)?);
            }
        }
        if svc.wants_health_check() && svc.health_check_node_port.is_none() {
            svc.health_check_node_port = Some(free(Protocol::Tcp)?);
        }
        Ok(())
    }

    fn free_ip(
        &mut self,
        id: &str,
        family: IpFamily,
        settings: &ServiceSettings,
    ) -> Result<IpAddr, ServiceError> {
        let cidr = cidr_of(settings, family)
            .ok_or_else(|| ServiceError::BadSettings("no service CIDR".into()))?;
        // The first address is the network; Kubernetes also keeps .1 for the
        // API server, so allocation starts at .10 like its DNS convention.
        let (network, v6) = match cidr.network() {
            IpAddr::V4(a) => (u128::from(u32::from(a)), false),
            IpAddr::V6(a) => (u128::from(a), true),
        };
        let host_bits = u32::from(cidr.max_prefix_len() - cidr.prefix_len());
        let size = 1u128.checked_shl(host_bits).unwrap_or(u128::MAX);
        // IPv4 keeps its broadcast address out.
        let usable = size.saturating_sub(if v6 { 10 } else { 11 }).min(1 << 20);
        let at = |offset: u128| -> IpAddr {
            let n = network + 10 + offset;
            if v6 {
                IpAddr::V6(n.into())
            } else {
                IpAddr::V4((n as u32).into())
            }
        };
        let cursor = &mut self.ip_cursor[usize::from(v6)];
        for step in 0..usable {
            let offset = (*cursor + step) % usable;
            let ip = at(offset);
            if !self.ips.contains_key(&ip) {
                *cursor = offset + 1;
                return Ok(ip);
            }
        }
        Err(ServiceError::ClusterIpsExhausted(id.to_string()))
    }
}

/// An update keeps the addresses and ports the stored version had, where
/// the new one leaves them out.
fn keep_previous(svc: &mut Service, prev: &Service) {
    if svc.cluster_ip.is_none() && svc.cluster_ips.is_empty() {
        svc.cluster_ip = prev.cluster_ip;
        svc.cluster_ips = prev.cluster_ips.clone();
    }
    for p in svc.ports.iter_mut().filter(|p| p.node_port.is_none()) {
        p.node_port = prev
            .ports
            .iter()
            .find(|q| q.protocol == p.protocol && q.port == p.port)
            .and_then(|q| q.node_port);
    }
    if !svc.has_node_ports() {
        svc.ports.iter_mut().for_each(|p| p.node_port = None);
    }
    if svc.wants_health_check() && svc.health_check_node_port.is_none() {
        svc.health_check_node_port = prev.health_check_node_port;
    }
}

/// Every node port a service holds: its ports' and its health check's.
fn node_ports_of(svc: &Service) -> impl Iterator<Item = (Protocol, u16)> + '_ {
    let ports = svc
        .ports
        .iter()
        .filter_map(|p| Some((p.protocol, u16::try_from(p.node_port?).ok()?)));
    let health = svc
        .health_check_node_port
        .and_then(|n| u16::try_from(n).ok())
        .map(|n| (Protocol::Tcp, n));
    ports.chain(health)
}

/// The service CIDR of a family, if the cluster has one.
fn cidr_of(settings: &ServiceSettings, family: IpFamily) -> Option<&IpNet> {
    settings
        .service_cidrs
        .iter()
        .find(|c| IpFamily::of(&c.addr()) == family)
}

/// The families a service gets, primary first: those its addresses and
/// `ipFamilies` name, completed as its `ipFamilyPolicy` says from the
/// families the cluster has service CIDRs for.
fn families(
    svc: &Service,
    id: &str,
    settings: &ServiceSettings,
) -> Result<Vec<IpFamily>, ServiceError> {
    let wrong = |detail: String| ServiceError::Family {
        service: id.to_string(),
        detail,
    };
    let mut wanted: Vec<IpFamily> = svc.all_cluster_ips().iter().map(IpFamily::of).collect();
    for (i, f) in svc.ip_families.iter().enumerate() {
        match wanted.get(i) {
            Some(have) if have != f => {
                return Err(wrong(format!(
                    "spec.ipFamilies[{i}] is {f:?} but spec.clusterIPs[{i}] is {have:?}"
                )))
            }
            Some(_) => {}
            None => wanted.push(*f),
        }
    }
    let cluster: Vec<IpFamily> = settings
        .service_cidrs
        .iter()
        .map(|c| IpFamily::of(&c.addr()))
        .collect();
    let policy = svc.ip_family_policy.unwrap_or_default();
    if wanted.is_empty() {
        wanted.push(cluster.first().copied().unwrap_or(IpFamily::IPv4));
    }
    match policy {
        IpFamilyPolicy::SingleStack if wanted.len() > 1 => {
            return Err(wrong("spec.ipFamilyPolicy SingleStack takes one family; use PreferDualStack or RequireDualStack".into()))
        }
        IpFamilyPolicy::SingleStack => {}
        IpFamilyPolicy::PreferDualStack | IpFamilyPolicy::RequireDualStack => {
            for f in &cluster {
                if !wanted.contains(f) {
                    wanted.push(*f);
                }
            }
        }
    }
    if policy == IpFamilyPolicy::RequireDualStack && wanted.len() < 2 {
        return Err(wrong("spec.ipFamilyPolicy RequireDualStack needs an IPv4 and an IPv6 service CIDR in the cluster".into()));
    }
    if let Some(f) = wanted.iter().find(|f| !cluster.contains(f)) {
        return Err(wrong(format!(
            "spec.ipFamilies: the cluster has no {f:?} service CIDR"
        )));
    }
    Ok(wanted)
}
