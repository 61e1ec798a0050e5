//! The endpoints controller: a service's endpoints are the pods its selector
//! picks in its namespace, with their readiness and named ports.

use podnet_policy::Pod;
use podnet_services::{Endpoint, EndpointPort, Endpoints, Service, ServiceName};

use crate::cluster::ClusterStore;
use crate::error::StoreError;

/// The endpoints `svc`'s selector picks among `pods` (none without a selector).
pub fn endpoints_for(svc: &Service, pods: &[Pod]) -> Endpoints {
    // Endpoints of every family the service has (both for dual-stack).
    let families: Vec<bool> = svc.all_cluster_ips().iter().map(|c| c.is_ipv4()).collect();
    let endpoints = pods
        .iter()
        .filter(|p| {
            p.namespace == svc.namespace
                && !svc.selector.is_empty()
                && svc.selector.iter().all(|(k, v)| p.labels.get(k) == Some(v))
        })
        .flat_map(|p| {
            p.ips
                .iter()
                .filter(|ip| families.is_empty() || families.contains(&ip.is_ipv4()))
                .map(move |ip| Endpoint {
                    address: *ip,
                    node: p.node.clone(),
                    ready: p.ready,
                    serving: p.ready,
                    terminating: false,
                    ports: p
                        .ports
                        .iter()
                        .filter(|c| !c.name.is_empty())
                        .map(|c| EndpointPort {
                            name: c.name.clone(),
                            protocol: c.protocol,
                            port: c.container_port,
                        })
                        .collect(),
                })
        })
        .collect();
    Endpoints {
        name: svc.name.clone(),
        namespace: svc.namespace.clone(),
        endpoints,
        by_port_name: false,
    }
}

impl ClusterStore {
    /// Rewrites the endpoints of every service with a selector from the
    /// stored pods; returns the services whose endpoints changed.
    pub fn sync_endpoints(&self) -> Result<Vec<(Service, Endpoints)>, StoreError> {
        let pods = self.policy_snapshot()?.world.pods;
        let snap = self.service_snapshot()?;
        let stored: std::collections::BTreeMap<&ServiceName, &String> =
            snap.endpoints.iter().map(|(n, r)| (n, r)).collect();
        let mut changed = Vec::new();
        for (name, raw) in &snap.services {
            let svc = crate::parse_service(name, raw)?;
            if svc.selector.is_empty() {
                continue;
            }
            let eps = endpoints_for(&svc, &pods);
            let old = stored
                .get(name)
                .and_then(|r| crate::parse_endpoints(name, r).ok());
            if old.as_ref() != Some(&eps) {
                changed.push((svc, eps));
            }
        }
        // Written together: a load of many services does not pay a
        // transaction per service.
        self.put_many_endpoints(changed.iter().map(|(_, e)| e))?;
        Ok(changed)
    }
}
