//! `kubectl apply` and `kubectl delete` against the store: one object at a
//! time, created or replaced by kind, namespace and name.

use std::collections::BTreeSet;

use podnet_manifest::Object;
use podnet_policy::ObjectName;
use podnet_services::validate::Allocations;

use crate::cluster::ClusterStore;
use crate::error::StoreError;

/// What applying one object did, in kubectl's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It did not exist.
    Created,
    /// It existed and changed.
    Configured,
    /// It existed as it is.
    Unchanged,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Outcome::Created => "created",
            Outcome::Configured => "configured",
            Outcome::Unchanged => "unchanged",
        })
    }
}

fn outcome<T: PartialEq>(old: Option<T>, new: &T) -> Outcome {
    match old {
        None => Outcome::Created,
        Some(o) if o == *new => Outcome::Unchanged,
        Some(_) => Outcome::Configured,
    }
}

impl ClusterStore {
    /// Checks a whole manifest before any of it is applied, so a refused
    /// object leaves nothing half-applied: namespaces exist (in the store or
    /// earlier in the manifest), pods are placed (unless `placing`, as the lab
    /// does), and services are admitted together with the stored ones
    /// (addresses and node ports free, inside their ranges).
    pub fn check_objects(&self, objects: &[&Object], placing: bool) -> Result<(), StoreError> {
        let world = self.policy_snapshot()?.world;
        let mut namespaces: BTreeSet<String> = world.namespaces.keys().cloned().collect();
        let settings = self.service_settings()?;
        let stored = self.services()?;
        let mut alloc = Allocations::of(&stored);
        let stored: std::collections::HashMap<_, _> = stored.iter().map(|s| (s.key(), s)).collect();
        for obj in objects {
            let (kind, name) = match obj {
                Object::Namespace(ns) => {
                    namespaces.insert(ns.name.clone());
                    continue;
                }
                Object::Pod(m) if m.pod.node.is_empty() && !placing => {
                    return Err(StoreError::Unplaced(m.pod.key().to_string()));
                }
                Object::Pod(m) => ("Pod", m.pod.key()),
                Object::Service(s) => {
                    let previous = stored.get(&s.key()).copied();
                    alloc.admit(s.clone(), previous, &settings)?;
                    ("Service", ObjectName::new(&s.namespace, &s.name))
                }
                Object::NetworkPolicy(p) => ("NetworkPolicy", p.key()),
                Object::EndpointSlice(s) => {
                    self.check_slice(s, objects)?;
                    ("EndpointSlice", ObjectName::new(&s.namespace, &s.name))
                }
                Object::BgpPeer(p) => {
                    self.check_bgp_peer(p)?;
                    continue;
                }
            };
            if !namespaces.contains(&name.namespace) {
                return Err(StoreError::NoNamespace {
                    kind,
                    namespace: name.namespace.clone(),
                    name: name.to_string(),
                });
            }
        }
        Ok(())
    }

    /// Creates or replaces every object of a manifest (checked first with
    /// [`Self::check_objects`]): namespaces, pods and policies one by one
    /// in order, then all services together ([`Self::put_services`]: one
    /// read, batched writes), so a manifest of 100,000 services does not
    /// read the store 100,000 times. Outcomes come in the objects' order.
    pub fn apply_objects(&self, objects: &[&Object]) -> Result<Vec<Outcome>, StoreError> {
        let mut outcomes = vec![Outcome::Unchanged; objects.len()];
        let mut services = Vec::new();
        let mut at = Vec::new();
        let mut slices = Vec::new();
        for (i, obj) in objects.iter().enumerate() {
            match obj {
                Object::Service(s) => {
                    services.push(s.clone());
                    at.push(i);
                }
                // After the services: a slice's service may come in the same manifest.
                Object::EndpointSlice(_) => slices.push(i),
                other => outcomes[i] = self.apply_object(other)?,
            }
        }
        let stored = self.put_services(services)?;
        let by_key: std::collections::HashMap<_, _> = stored
            .into_iter()
            .map(|(new, old)| (new.key(), outcome(old, &new)))
            .collect();
        for i in at {
            if let Object::Service(s) = objects[i] {
                outcomes[i] = by_key.get(&s.key()).copied().unwrap_or(Outcome::Unchanged);
            }
        }
        for i in slices {
            outcomes[i] = self.apply_object(objects[i])?;
        }
        self.refresh_sliced_services(objects)?;
        Ok(outcomes)
    }

    /// Services of the manifest without a selector get their endpoints
    /// from the slices already stored (a service deleted and applied again).
    fn refresh_sliced_services(&self, objects: &[&Object]) -> Result<(), StoreError> {
        let selectorless: Vec<_> = objects
            .iter()
            .filter_map(|o| match o {
                Object::Service(s) if s.selector.is_empty() => Some(s.key()),
                _ => None,
            })
            .collect();
        if selectorless.is_empty() {
            return Ok(());
        }
        let slices = self.endpoint_slices()?;
        for service in selectorless {
            if slices.iter().any(|s| s.service_key() == service) {
                self.refresh_slice_endpoints(&service)?;
            }
        }
        Ok(())
    }

    /// Creates or replaces one object. A pod needs `spec.nodeName` here
    /// (outside a lab nothing schedules pods); its addresses come from its
    /// `status.podIPs`.
    pub fn apply_object(&self, obj: &Object) -> Result<Outcome, StoreError> {
        match obj {
            Object::Namespace(ns) => {
                let old = self.namespace(&ns.name)?;
                self.put_namespace(ns)?;
                Ok(outcome(old, ns))
            }
            Object::Pod(m) => {
                if m.pod.node.is_empty() {
                    return Err(StoreError::Unplaced(m.pod.key().to_string()));
                }
                let old = self.pod(&m.pod.key())?;
                self.put_pod(&m.pod)?;
                Ok(outcome(old, &m.pod))
            }
            Object::Service(s) => {
                let old = self.service(&s.key())?;
                let stored = self.put_service(s.clone())?;
                self.refresh_sliced_services(&[obj])?;
                Ok(outcome(old, &stored))
            }
            Object::NetworkPolicy(p) => {
                let old = self.policy(&p.key())?;
                let stored = self.put_policy(p)?;
                Ok(outcome(old, &stored))
            }
            Object::EndpointSlice(s) => Ok(outcome(self.put_endpoint_slice(s)?, s)),
            Object::BgpPeer(p) => Ok(outcome(self.put_bgp_peer(p)?, p)),
        }
    }

    /// A slice names a service without a selector: the stored one, unless
    /// the manifest itself gives the service.
    fn check_slice(
        &self,
        slice: &podnet_services::EndpointSlice,
        objects: &[&Object],
    ) -> Result<(), StoreError> {
        let in_manifest = objects.iter().find_map(|o| match o {
            Object::Service(s) if s.key() == slice.service_key() => Some(s),
            _ => None,
        });
        match in_manifest {
            Some(s) if !s.selector.is_empty() => Err(StoreError::SliceForSelector {
                slice: slice.key().to_string(),
                service: s.key().to_string(),
            }),
            Some(_) => Ok(()),
            None => self.check_slice_service(slice),
        }
    }

    /// Deletes one object (a namespace with everything in it); false when it did not exist.
    pub fn delete_object(&self, obj: &Object) -> Result<bool, StoreError> {
        match obj {
            Object::Namespace(ns) => self.delete_namespace_and_contents(&ns.name),
            Object::Pod(m) => self.delete_pod(&m.pod.key()),
            Object::Service(s) => self.delete_service(&s.key()),
            Object::NetworkPolicy(p) => self.delete_policy(&p.key()),
            Object::EndpointSlice(s) => self.delete_endpoint_slice(&s.key()),
            Object::BgpPeer(p) => self.delete_bgp_peer(&p.name),
        }
    }

    /// Deletes a namespace's pods, services and policies, then the namespace.
    pub fn delete_namespace_and_contents(&self, name: &str) -> Result<bool, StoreError> {
        let world = self.policy_snapshot()?.world;
        for p in world.pods.iter().filter(|p| p.namespace == name) {
            self.delete_pod(&p.key())?;
        }
        for p in world.policies.iter().filter(|p| p.namespace == name) {
            self.delete_policy(&p.key())?;
        }
        for s in self.services()?.iter().filter(|s| s.namespace == name) {
            self.delete_service(&s.key())?;
        }
        self.delete_namespace(name)
    }
}
