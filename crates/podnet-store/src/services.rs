//! Services and endpoints in the store, next to the cluster.
//!
//! Keys live under their own root, `/podnet-services/`, so that the node
//! agents' cluster snapshots (`/podnet/`) stay small with 100,000 services.
//! - `services/NS/NAME`: the service, with its cluster IP and node ports filled in;
//! - `endpoints/NS/NAME`: its endpoints;
//! - `claims/ip/IP`, `claims/nodeport/PROTO/PORT`: who holds a cluster IP or node
//!   port. A write claims what it newly takes in the same transaction (failing
//!   if someone else just did), so two services never get one address or port.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use podnet_cluster::ClusterSpec;
use podnet_services::validate::{check_endpoints, check_settings, Allocations};
use podnet_services::{Endpoints, Service, ServiceName, ServiceSettings};

use crate::cluster::{from_json, to_json, ClusterStore};
use crate::error::StoreError;
#[cfg(doc)]
use crate::kv::KvBackend;
use crate::kv::Txn;

/// Root of every service key.
pub const SERVICES_ROOT: &str = "/podnet-services/";
const SERVICES: &str = "/podnet-services/services/";
const ENDPOINTS: &str = "/podnet-services/endpoints/";
const CLAIMS: &str = "/podnet-services/claims/";
const MAX_ATTEMPTS: usize = 16;

/// Services and endpoints as stored, unparsed, at one revision: the agent
/// parses only what changed since its last look.
#[derive(Debug, Clone, Default)]
pub struct ServiceSnapshot {
    /// Store revision.
    pub revision: u64,
    /// `(name, service JSON)`, sorted by name.
    pub services: Vec<(ServiceName, String)>,
    /// `(name, endpoints JSON)`, sorted by name.
    pub endpoints: Vec<(ServiceName, String)>,
}

fn service_key(n: &ServiceName) -> String {
    format!("{SERVICES}{n}")
}

fn endpoints_key(n: &ServiceName) -> String {
    format!("{ENDPOINTS}{n}")
}

/// Entries under [`SERVICES_ROOT`] split into services and endpoints, by name
/// (claims and anything else are left out).
type ByKind<V> = (Vec<(ServiceName, V)>, Vec<(ServiceName, V)>);

fn by_kind<V>(entries: impl IntoIterator<Item = (String, V)>) -> ByKind<V> {
    let (mut services, mut endpoints) = (Vec::new(), Vec::new());
    for (key, value) in entries {
        if let Some(n) = key.strip_prefix(SERVICES).and_then(ServiceName::parse) {
            services.push((n, value));
        } else if let Some(n) = key.strip_prefix(ENDPOINTS).and_then(ServiceName::parse) {
            endpoints.push((n, value));
        }
    }
    (services, endpoints)
}

/// Transactions in flight when writing many.
pub const WRITERS: usize = 8;

/// The write of `admitted` over `previous` (its stored form and text):
/// conditional on the stored text (or on its absence), with its claims.
fn service_txn(key: &ServiceName, admitted: &Service, previous: Option<&(Service, String)>) -> Txn {
    let held = previous.map(|p| claims(&p.0)).unwrap_or_default();
    let wanted = claims(admitted);
    let owner = key.to_string();
    let mut txn = Txn::default();
    match previous {
        Some((_, raw)) => txn.equal.push((service_key(key), raw.clone())),
        None => txn.absent.push(service_key(key)),
    }
    for c in wanted.difference(&held) {
        txn.absent.push(c.clone());
        txn.puts.push((c.clone(), owner.clone()));
    }
    txn.deletes.extend(held.difference(&wanted).cloned());
    txn.puts.push((service_key(key), to_json(admitted)));
    txn
}

/// Appends `more`'s conditions and operations to `into`.
fn merge(into: &mut Txn, more: Txn) {
    into.absent.extend(more.absent);
    into.equal.extend(more.equal);
    into.puts.extend(more.puts);
    into.deletes.extend(more.deletes);
}

/// The claim keys a service holds.
fn claims(svc: &Service) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    if let Some(ip) = svc.cluster_ip {
        out.insert(format!("{CLAIMS}ip/{ip}"));
    }
    for p in &svc.ports {
        if let Some(np) = p.node_port {
            out.insert(format!("{CLAIMS}nodeport/{}/{np}", p.protocol.as_str()));
        }
    }
    out
}

/// What changed among services and endpoints after a revision: new stored
/// text, or `None` for a deletion.
#[derive(Debug, Clone, Default)]
pub struct ServiceChanges {
    /// The revision these changes bring a reader up to.
    pub revision: u64,
    /// Changed services.
    pub services: Vec<(ServiceName, Option<String>)>,
    /// Changed endpoints.
    pub endpoints: Vec<(ServiceName, Option<String>)>,
}

/// The service settings a cluster spec implies (service CIDRs, node port range), checked.
pub fn service_settings(spec: &ClusterSpec) -> Result<ServiceSettings, StoreError> {
    let (min, max) = spec.node_ports()?;
    let settings = ServiceSettings {
        service_cidrs: spec.service_cidrs.clone(),
        node_port_min: min,
        node_port_max: max,
    };
    check_settings(&settings)?;
    Ok(settings)
}

/// Parses a stored service.
pub fn parse_service(name: &ServiceName, raw: &str) -> Result<Service, StoreError> {
    from_json(&service_key(name), raw)
}

/// Parses stored endpoints.
pub fn parse_endpoints(name: &ServiceName, raw: &str) -> Result<Endpoints, StoreError> {
    from_json(&endpoints_key(name), raw)
}

impl ClusterStore {
    /// The cluster's service settings (service CIDRs, node port range).
    pub fn service_settings(&self) -> Result<ServiceSettings, StoreError> {
        service_settings(&self.cluster()?.ok_or(StoreError::NoCluster)?)
    }

    /// Every stored service, parsed.
    pub fn services(&self) -> Result<Vec<Service>, StoreError> {
        self.stored_services("")?
            .iter()
            .map(|(n, raw)| parse_service(n, raw))
            .collect()
    }

    /// One stored service, parsed (only the keys starting with its name are read).
    pub fn service(&self, name: &ServiceName) -> Result<Option<Service>, StoreError> {
        self.stored_services(&name.to_string())?
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(n, raw)| parse_service(&n, &raw))
            .transpose()
    }

    /// The stored text of the services whose `namespace/name` starts with
    /// `prefix` (endpoints and claims are not read).
    fn stored_services(&self, prefix: &str) -> Result<Vec<(ServiceName, String)>, StoreError> {
        let listing = self.kv().list(&format!("{SERVICES}{prefix}"))?;
        Ok(by_kind(listing.entries).0)
    }

    /// Services and endpoints, unparsed.
    /// The claims are not read (a third of the keys at scale, and nothing a
    /// proxy needs); the revision is the older of the two listings', so a
    /// change between them is read again, never missed.
    pub fn service_snapshot(&self) -> Result<ServiceSnapshot, StoreError> {
        let mut listings = self.kv().list_many(&[SERVICES, ENDPOINTS])?.into_iter();
        let (Some(services), Some(endpoints)) = (listings.next(), listings.next()) else {
            return Ok(ServiceSnapshot::default());
        };
        let revision = services.revision.min(endpoints.revision);
        Ok(ServiceSnapshot {
            revision,
            services: by_kind(services.entries).0,
            endpoints: by_kind(endpoints.entries).1,
        })
    }

    /// What changed among services and endpoints after `revision`, when the
    /// store still knows (`None`: list everything with [`Self::service_snapshot`]).
    pub fn service_changes_since(
        &self,
        revision: u64,
    ) -> Result<Option<ServiceChanges>, StoreError> {
        let Some(changes) = self.kv().changes_since(SERVICES_ROOT, revision)? else {
            return Ok(None);
        };
        let (services, endpoints) = by_kind(changes.entries);
        Ok(Some(ServiceChanges {
            revision: changes.revision,
            services,
            endpoints,
        }))
    }

    /// Waits up to `timeout` for a change to services or endpoints after
    /// `revision`: `None` when none came; the revision it brings a reader
    /// to, and the changes themselves when the store delivers them with the
    /// notice (etcd), otherwise `None` ([`Self::service_changes_since`] or a
    /// listing then tells).
    pub fn wait_for_service_changes(
        &self,
        revision: u64,
        timeout: Duration,
    ) -> Result<Option<(u64, Option<ServiceChanges>)>, StoreError> {
        Ok(
            match self.kv().wait_changes(SERVICES_ROOT, revision, timeout)? {
                crate::kv::Waited::Quiet => None,
                crate::kv::Waited::Changed(rev, changes) => Some((
                    rev,
                    changes.map(|c| {
                        let (services, endpoints) = by_kind(c.entries);
                        ServiceChanges {
                            revision: c.revision,
                            services,
                            endpoints,
                        }
                    }),
                )),
            },
        )
    }

    /// Waits up to `timeout` for a change to services or endpoints after `revision`.
    pub fn wait_for_service_change(
        &self,
        revision: u64,
        timeout: Duration,
    ) -> Result<Option<u64>, StoreError> {
        self.kv().wait(SERVICES_ROOT, revision, timeout)
    }

    /// Creates or updates a service: checks it, keeps its stored cluster IP and
    /// node ports, allocates missing ones, refuses ones another service holds.
    /// Returns the service as stored. Refused input writes nothing.
    pub fn put_service(&self, svc: Service) -> Result<Service, StoreError> {
        let settings = self.service_settings()?;
        for _ in 0..MAX_ATTEMPTS {
            let all = self.stored_services("")?;
            let key = svc.key();
            let mut stored = Vec::with_capacity(all.len());
            let mut previous = None;
            for (n, raw) in &all {
                let s = parse_service(n, raw)?;
                if *n == key {
                    previous = Some((s.clone(), raw.clone()));
                }
                stored.push(s);
            }
            let mut alloc = Allocations::of(&stored);
            let admitted = alloc.admit(svc.clone(), previous.as_ref().map(|p| &p.0), &settings)?;
            let txn = service_txn(&key, &admitted, previous.as_ref());
            if self.kv().transact(&txn)? {
                return Ok(admitted);
            }
        }
        Err(StoreError::Contention(format!("service {}", svc.key())))
    }

    /// Creates or updates many services at once, as [`Self::put_service`]
    /// does one (`podnet cluster apply` with many services): one read of what
    /// is stored, every service admitted against it and the ones before it
    /// (nothing is written if one is refused), then conditional writes of at
    /// most the store's [`KvBackend::max_txn_ops`] operations each, [`WRITERS`] in flight (etcd commits
    /// concurrent transactions with one disk sync). Returns each service as
    /// stored and its stored form before, if it had one (a service named
    /// twice: its last version, once).
    pub fn put_services(
        &self,
        services: Vec<Service>,
    ) -> Result<Vec<(Service, Option<Service>)>, StoreError> {
        if services.is_empty() {
            return Ok(Vec::new());
        }
        let settings = self.service_settings()?;
        let mut stored: HashMap<ServiceName, (Service, String)> = HashMap::new();
        for (n, raw) in self.stored_services("")? {
            stored.insert(n.clone(), (parse_service(&n, &raw)?, raw));
        }
        let mut alloc = Allocations::of(stored.values().map(|(s, _)| s));
        // A service named twice is written once, as its last version.
        let mut last_of: HashMap<ServiceName, usize> = HashMap::new();
        for (i, s) in services.iter().enumerate() {
            last_of.insert(s.key(), i);
        }
        let (mut txns, mut out) = (vec![Txn::default()], Vec::with_capacity(services.len()));
        for (i, svc) in services.into_iter().enumerate() {
            if last_of.get(&svc.key()) != Some(&i) {
                continue;
            }
            let key = svc.key();
            let previous = stored.get(&key);
            let admitted = alloc.admit(svc, previous.map(|p| &p.0), &settings)?;
            let txn = service_txn(&key, &admitted, previous);
            let size = |t: &Txn| t.absent.len() + t.equal.len() + t.puts.len() + t.deletes.len();
            let last = txns.last_mut().expect("one at least");
            if size(last) + size(&txn) > self.kv().max_txn_ops() && size(last) > 0 {
                txns.push(txn);
            } else {
                merge(last, txn);
            }
            out.push((admitted, previous.map(|p| p.0.clone())));
        }
        self.write_concurrently(&txns, "apply services")?;
        Ok(out)
    }

    /// Sets the endpoints of many services (replacing what was there), in
    /// transactions of at most the store's [`KvBackend::max_txn_ops`] keys,
    /// [`WRITERS`] in flight.
    pub fn put_many_endpoints<'a>(
        &self,
        all: impl IntoIterator<Item = &'a Endpoints>,
    ) -> Result<(), StoreError> {
        let mut puts = Vec::new();
        for eps in all {
            check_endpoints(eps)?;
            puts.push((endpoints_key(&eps.key()), to_json(eps)));
        }
        let txns: Vec<Txn> = puts
            .chunks(self.kv().max_txn_ops())
            .map(|c| Txn {
                puts: c.to_vec(),
                ..Txn::default()
            })
            .collect();
        self.write_concurrently(&txns, "set endpoints")
    }

    /// Commits `txns`, [`WRITERS`] at a time; the first refused or failed one is the error.
    fn write_concurrently(&self, txns: &[Txn], what: &str) -> Result<(), StoreError> {
        let next = std::sync::atomic::AtomicUsize::new(0);
        let failed: std::sync::Mutex<Option<StoreError>> = std::sync::Mutex::new(None);
        std::thread::scope(|s| {
            for _ in 0..WRITERS {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(txn) = txns.get(i) else { return };
                    let err = match self.kv().transact(txn) {
                        Ok(true) => continue,
                        Ok(false) => {
                            StoreError::Contention(format!("{what}: a service changed meanwhile"))
                        }
                        Err(e) => e,
                    };
                    if let Ok(mut f) = failed.lock() {
                        f.get_or_insert(err);
                    }
                    next.store(txns.len(), std::sync::atomic::Ordering::Relaxed);
                    return;
                });
            }
        });
        match failed.into_inner() {
            Ok(Some(e)) => Err(e),
            _ => Ok(()),
        }
    }

    /// Sets the endpoints of a service (replacing what was there).
    pub fn put_endpoints(&self, eps: &Endpoints) -> Result<(), StoreError> {
        check_endpoints(eps)?;
        let txn = Txn {
            puts: vec![(endpoints_key(&eps.key()), to_json(eps))],
            ..Txn::default()
        };
        self.kv().transact(&txn)?;
        Ok(())
    }

    /// Deletes a service, its endpoints and its claims; false when there was none.
    pub fn delete_service(&self, name: &ServiceName) -> Result<bool, StoreError> {
        let found = self.stored_services(&name.to_string())?;
        let Some((_, raw)) = found.iter().find(|(n, _)| n == name) else {
            return Ok(false);
        };
        let svc = parse_service(name, raw)?;
        let mut txn = Txn {
            equal: vec![(service_key(name), raw.clone())],
            deletes: vec![service_key(name), endpoints_key(name)],
            ..Txn::default()
        };
        txn.deletes.extend(claims(&svc));
        if self.kv().transact(&txn)? {
            Ok(true)
        } else {
            Err(StoreError::Contention(format!("service {name}")))
        }
    }
}
