//! The agent's service proxy loop: services and endpoints from the store to
//! the node's nf_tables, one changed service at a time.
//!
//! It runs in its own thread with its own store handle, so a large service
//! load never delays the node's routes, and the other way round. Each pass
//! reads the services unparsed, parses only those whose stored text changed
//! since the last pass, and hands the changes to [`ServiceProxy::update`]
//! (one atomic batch). The first pass, and one every `resync`, is a full
//! [`ServiceProxy::sync`] instead: it adopts what an earlier agent left and
//! repairs whatever was changed behind the agent's back.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use podnet_bgp::{ServiceAddresses, ServiceBook};

use podnet_proxy::{Change, ServiceProxy};
use podnet_services::{Endpoints, Service, ServiceName};
use podnet_store::{parse_endpoints, parse_service, ClusterStore, ServiceChanges, ServiceSnapshot};

use crate::metrics::AgentMetrics;
use crate::watch::Wake;

/// Hands the node's BGP speaker every service's addresses as programmed
/// (after the kernel has the service's rules, never before), and wakes the
/// reconciler when they changed.
pub(crate) struct Advertiser {
    /// Every service's addresses, shared with the reconciler.
    pub book: Arc<Mutex<ServiceBook>>,
    /// The reconciler's wake-up.
    pub wake: Sender<Wake>,
}

impl Advertiser {
    fn book(&self) -> std::sync::MutexGuard<'_, ServiceBook> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn changed(&self) {
        if self.wake.send(Wake::Services).is_err() {
            tracing::debug!(target: "podnet-agent", "services: the reconciler is gone");
        }
    }

    /// Records the services of `changes` once they are programmed.
    fn record(&self, entries: Vec<(String, Option<ServiceAddresses>)>) {
        let mut changed = false;
        {
            let mut book = self.book();
            for (name, entry) in entries {
                changed |= match entry {
                    Some(e) => book.put(name, e),
                    None => book.remove(&name),
                };
            }
        }
        if changed {
            self.changed();
        }
    }

    /// Replaces every service's addresses after a full sync.
    fn replace(&self, all: BTreeMap<String, ServiceAddresses>) {
        let changed = self.book().replace(all);
        if changed {
            self.changed();
        }
    }
}

/// What `changes` make of each service's addresses on `node` (`None`: gone).
fn entries(changes: &[Change], node: &str) -> Vec<(String, Option<ServiceAddresses>)> {
    changes
        .iter()
        .map(|c| match c {
            Change::Upsert(s, e) => (
                s.key().to_string(),
                Some(ServiceAddresses::of(s, e.as_ref(), node)),
            ),
            Change::Delete(n) => (n.to_string(), None),
        })
        .collect()
}

/// The stored text of a service and of its endpoints, hashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    service: u64,
    endpoints: Option<u64>,
}

fn hash(text: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

/// Keeps the node's service table equal to the store until `halt` is set.
pub(crate) fn run_service_proxy(
    url: &podnet_store::StoreConfig,
    node: &str,
    resync: Duration,
    halt: &AtomicBool,
    metrics: &AgentMetrics,
    advertiser: Option<Advertiser>,
) {
    let adv = advertiser.as_ref().map(|a| (a, node));
    let store = match podnet_store::open(url) {
        Ok(s) => s,
        Err(e) => return tracing::warn!(target: "podnet-agent", "services: {e}"),
    };
    let mut proxy = match ServiceProxy::new(node, None) {
        Ok(p) => p,
        Err(e) => return tracing::warn!(target: "podnet-agent", "services: {e}"),
    };
    let mut seen: HashMap<Box<str>, Seen> = HashMap::new();
    let mut health = crate::healthcheck::HealthChecks::default();
    // The changes the last wait delivered with its notice (etcd's watch
    // carries the values), relative to the revision the last pass left.
    let delivered: RefCell<Option<ServiceChanges>> = RefCell::new(None);
    let mut one = |full: bool, last: Option<u64>| {
        // Between full syncs, apply what the watch delivered, or learn what
        // changed from the store's change log when it has one (no full
        // read); otherwise compare every service.
        let at_hand = delivered.borrow_mut().take();
        let quick = match (last, at_hand) {
            (Some(_), Some(ch)) if !full => apply_delta(
                &mut proxy,
                &mut seen,
                ch,
                ("watch", Instant::now()),
                metrics,
                adv,
            ),
            (Some(after), _) if !full => {
                changed_since(&store, &mut proxy, &mut seen, after, metrics, adv)
            }
            _ => Ok(None),
        };
        let outcome = match quick {
            Ok(Some(r)) => Ok(r),
            Ok(None) => pass(&store, &mut proxy, &mut seen, full, metrics, adv),
            Err(e) => Err(e),
        };
        health.set(proxy.health_checks());
        let (services, elements) = proxy.programmed_counts();
        metrics.programmed("services", services);
        metrics.programmed("service_elements", elements);
        if outcome.is_err() {
            seen.clear();
        }
        outcome
    };
    crate::resync::run(
        "services",
        resync,
        halt,
        metrics,
        &mut one,
        |after, timeout| {
            let waited = store.wait_for_service_changes(after, timeout)?;
            Ok(waited.map(|(revision, changes)| {
                *delivered.borrow_mut() = changes;
                revision
            }))
        },
    );
}

/// Applies what the store's change log says changed after `after`; returns
/// the revision it brings the node up to, or `None` when the log cannot tell
/// (too far behind, no log, or a new service whose endpoints are not among
/// the changes): then [`pass`] compares everything.
fn changed_since(
    store: &ClusterStore,
    proxy: &mut ServiceProxy,
    seen: &mut HashMap<Box<str>, Seen>,
    after: u64,
    metrics: &AgentMetrics,
    adv: Option<(&Advertiser, &str)>,
) -> Result<Option<u64>, String> {
    let started = Instant::now();
    let Some(ch) = store
        .service_changes_since(after)
        .map_err(|e| e.to_string())?
    else {
        return Ok(None);
    };
    apply_delta(proxy, seen, ch, ("store change log", started), metrics, adv)
}

/// Applies `ch`, the changes after the revision the last pass left (found
/// `how`, the pass begun at `started`); returns the revision it brings the
/// node up to, or `None` when it cannot tell (a new service whose endpoints
/// are not among the changes): then [`pass`] compares everything.
fn apply_delta(
    proxy: &mut ServiceProxy,
    seen: &mut HashMap<Box<str>, Seen>,
    ch: ServiceChanges,
    (how, started): (&str, Instant),
    metrics: &AgentMetrics,
    adv: Option<(&Advertiser, &str)>,
) -> Result<Option<u64>, String> {
    // The last text written for each name wins.
    let mut services: HashMap<ServiceName, Option<String>> = ch.services.into_iter().collect();
    let mut endpoints: HashMap<ServiceName, Option<String>> = ch.endpoints.into_iter().collect();
    let names: std::collections::BTreeSet<ServiceName> =
        services.keys().chain(endpoints.keys()).cloned().collect();
    let mut changes = Vec::new();
    let mut new_seen = Vec::new();
    for name in names {
        let key = short(&name);
        let programmed = proxy.programmed(&name);
        let old = seen.get(&key).copied();
        let (svc, svc_hash) = match services.remove(&name) {
            Some(None) => {
                changes.push(Change::Delete(name));
                new_seen.push((key, None));
                continue;
            }
            Some(Some(raw)) => match parse_service(&name, &raw) {
                Ok(s) => (s, hash(&raw)),
                Err(e) => {
                    tracing::warn!(target: "podnet-agent", "services: skipping {name}: {e}");
                    continue;
                }
            },
            None => match (programmed.as_ref(), old) {
                (Some((s, _)), Some(o)) => (s.clone(), o.service),
                // Endpoints of a service this node does not program: ignored, as in `pass`.
                _ => continue,
            },
        };
        let (eps, eps_hash) = match endpoints.remove(&name) {
            Some(None) => (None, None),
            Some(Some(raw)) => match parse_endpoints(&name, &raw) {
                Ok(e) => (Some(e), Some(hash(&raw))),
                Err(e) => {
                    tracing::warn!(target: "podnet-agent", "services: endpoints of {name} ignored: {e}");
                    (None, None)
                }
            },
            None => match programmed {
                Some((_, e)) => (e, old.and_then(|o| o.endpoints)),
                // A new service whose endpoints were written before: read everything.
                None => return Ok(None),
            },
        };
        changes.push(Change::Upsert(Box::new(svc), eps));
        new_seen.push((
            key,
            Some(Seen {
                service: svc_hash,
                endpoints: eps_hash,
            }),
        ));
    }
    apply_changes(proxy, changes, (how, started), metrics, adv)?;
    for (key, s) in new_seen {
        match s {
            Some(s) => seen.insert(key, s),
            None => seen.remove(&key),
        };
    }
    Ok(Some(ch.revision))
}

/// Applies `changes` (if any) and logs them, with how they were found and the
/// time since `started`; then hands their addresses to the advertiser.
fn apply_changes(
    proxy: &mut ServiceProxy,
    changes: Vec<Change>,
    (how, started): (&str, Instant),
    metrics: &AgentMetrics,
    adv: Option<(&Advertiser, &str)>,
) -> Result<(), String> {
    if changes.is_empty() {
        return Ok(());
    }
    let advertised = adv.map(|(a, node)| (a, entries(&changes, node)));
    metrics.service_changes(changes.len(), 0);
    let names: Vec<String> = changes
        .iter()
        .take(5)
        .map(|c| match c {
            Change::Upsert(s, _) => s.key().to_string(),
            Change::Delete(n) => format!("-{n}"),
        })
        .collect();
    let count = changes.len();
    let report = proxy.update(changes).map_err(|e| e.to_string())?;
    if let Some((a, entries)) = advertised {
        a.record(entries);
    }
    metrics.service_changes(0, count);
    for failure in &report.cleanup_failures {
        tracing::warn!(target: "podnet-agent", "services: cleanup after a change failed: {failure}");
    }
    tracing::info!(target: "podnet-agent",
        "services: {count} changed ({}{}) applied in {:.2} ms ({how}): {report}",
        names.join(", "),
        if count > 5 { ", ..." } else { "" },
        started.elapsed().as_secs_f64() * 1e3
    );
    Ok(())
}

/// One pass; returns the store revision it read.
fn pass(
    store: &ClusterStore,
    proxy: &mut ServiceProxy,
    seen: &mut HashMap<Box<str>, Seen>,
    full: bool,
    metrics: &AgentMetrics,
    adv: Option<(&Advertiser, &str)>,
) -> Result<u64, String> {
    let started = Instant::now();
    let snap = store.service_snapshot().map_err(|e| e.to_string())?;
    let current = fingerprints(&snap);
    let revision = snap.revision;
    // The stored text is consumed as it is parsed: with 100,000 services,
    // holding the text and the parsed services at once would double the peak.
    let mut endpoints: HashMap<ServiceName, String> = snap.endpoints.into_iter().collect();
    let mut parse = |name: &ServiceName, raw: String| -> Option<(Service, Option<Endpoints>)> {
        let svc = parse_service(name, &raw)
            .map_err(|e| tracing::warn!(target: "podnet-agent", "services: skipping {name}: {e}"))
            .ok()?;
        let eps = endpoints.remove(name).and_then(|raw| {
            parse_endpoints(name, &raw)
                .map_err(|e| tracing::warn!(target: "podnet-agent", "services: endpoints of {name} ignored: {e}"))
                .ok()
        });
        Some((svc, eps))
    };
    if full {
        // Parsed one at a time as the sync takes them.
        let all = snap
            .services
            .into_iter()
            .filter_map(|(n, raw)| parse(&n, raw));
        full_sync(proxy, all, seen.is_empty(), started, adv)?;
    } else {
        let mut changes = Vec::new();
        for (name, raw) in snap.services {
            let key = short(&name);
            if seen.get(&key) != current.get(&key) {
                if let Some((s, e)) = parse(&name, raw) {
                    changes.push(Change::Upsert(Box::new(s), e));
                }
            }
        }
        for key in seen.keys().filter(|n| !current.contains_key(*n)) {
            if let Some(name) = ServiceName::parse(key) {
                changes.push(Change::Delete(name));
            }
        }
        apply_changes(
            proxy,
            changes,
            ("read every service", started),
            metrics,
            adv,
        )?;
    }
    *seen = current;
    Ok(revision)
}

/// Programs exactly `all` (logged when it changed something or is the
/// first), then hands their addresses to the advertiser.
fn full_sync(
    proxy: &mut ServiceProxy,
    all: impl Iterator<Item = (Service, Option<Endpoints>)>,
    first: bool,
    started: Instant,
    adv: Option<(&Advertiser, &str)>,
) -> Result<(), String> {
    let mut addresses = BTreeMap::new();
    let all = all.inspect(|(s, e)| {
        if let Some((_, node)) = adv {
            addresses.insert(
                s.key().to_string(),
                ServiceAddresses::of(s, e.as_ref(), node),
            );
        }
    });
    let report = proxy.sync(all).map_err(|e| e.to_string())?;
    // At 100,000 services the sync's peak is mostly freed by now.
    podnet_kernel::process::release_freed_memory();
    if let Some((a, _)) = adv {
        a.replace(addresses);
    }
    if !report.unchanged() || first {
        tracing::info!(target: "podnet-agent",
            "services: full sync of {} services in {:.1} ms: {report}",
            report.services,
            started.elapsed().as_secs_f64() * 1e3
        );
    }
    Ok(())
}

/// `namespace/name`: a compact key (100,000 of them stay in memory).
fn short(name: &ServiceName) -> Box<str> {
    name.to_string().into_boxed_str()
}

fn fingerprints(snap: &ServiceSnapshot) -> HashMap<Box<str>, Seen> {
    let eps: HashMap<&ServiceName, u64> =
        snap.endpoints.iter().map(|(n, r)| (n, hash(r))).collect();
    snap.services
        .iter()
        .map(|(n, raw)| {
            (
                short(n),
                Seen {
                    service: hash(raw),
                    endpoints: eps.get(n).copied(),
                },
            )
        })
        .collect()
}
