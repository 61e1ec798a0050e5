//! The node's service and policy tables against the store.

use std::collections::{HashMap, HashSet};

use podnet_kernel::nftables::{Family, NftHandle, SetElement};
use podnet_policy::World;
use podnet_proxy::inspect::observe_table;
use podnet_proxy::plan::fragment;
use podnet_proxy::table::{desired_table, diff_table};
use podnet_services::{Endpoints, Service};
use podnet_store::{parse_endpoints, parse_service, ClusterStore};

use super::{Check, ClusterView, DoctorConfig, Problem, ProblemKind};
use crate::error::{kernel, AgentError};

/// What the store says the tables should hold, read before the kernel is.
pub(super) struct Wanted {
    services: Vec<(Service, Option<Endpoints>)>,
    /// Stored services that do not parse (the proxy skips them too).
    unreadable: Vec<String>,
    world: World,
}

impl Wanted {
    /// Reads services, endpoints and the policy world (as the agent's loops do).
    pub(super) fn read(store: &ClusterStore, cfg: &DoctorConfig) -> Result<Self, AgentError> {
        let mut wanted = Wanted {
            services: Vec::new(),
            unreadable: Vec::new(),
            world: World::default(),
        };
        if cfg.services {
            let snap = store.service_snapshot()?;
            let endpoints: HashMap<_, _> = snap.endpoints.into_iter().collect();
            for (name, raw) in &snap.services {
                match parse_service(name, raw) {
                    Ok(svc) => {
                        let eps = endpoints
                            .get(name)
                            .and_then(|raw| parse_endpoints(name, raw).ok());
                        wanted.services.push((svc, eps));
                    }
                    Err(e) => wanted.unreadable.push(format!("service {name}: {e}")),
                }
            }
        }
        if cfg.policies {
            wanted.world = store.policy_snapshot()?.world;
        }
        Ok(wanted)
    }
}

/// The services and policies checks, in the caller's namespace.
pub(super) fn check(
    view: &ClusterView,
    wanted: &Wanted,
    cfg: &DoctorConfig,
    nft: &mut NftHandle,
) -> Result<Vec<Check>, AgentError> {
    let mut checks = Vec::new();
    if cfg.services {
        checks.push(services(nft, view, wanted)?);
    }
    if cfg.policies {
        checks.push(policies(nft, view, wanted)?);
    }
    Ok(checks)
}

fn services(nft: &mut NftHandle, view: &ClusterView, w: &Wanted) -> Result<Check, AgentError> {
    let table = format!("table inet {}", podnet_proxy::TABLE);
    let mut problems: Vec<Problem> = w
        .unreadable
        .iter()
        .map(|u| Problem {
            kind: ProblemKind::Wrong,
            object: u.clone(),
            detail: "not proxied".into(),
        })
        .collect();
    // The table is read once; each service's part is checked against it.
    let node = view.node.name.as_str();
    let desired = desired_table(&w.services, node);
    let observed = observe_table(nft, &desired.layout())
        .map_err(|e| AgentError::inspect(format!("read {table}"), e))?;
    let present: HashSet<(&str, &SetElement)> = observed
        .elements
        .iter()
        .flat_map(|(set, els)| els.iter().map(move |e| (set.as_str(), e)))
        .collect();
    for (svc, eps) in &w.services {
        let whole = fragment(svc, eps.as_ref(), node)
            .elements
            .iter()
            .all(|(set, e)| set.spec().dynamic || present.contains(&(set.name().as_str(), e)));
        if !whole {
            problems.push(Problem {
                kind: ProblemKind::Wrong,
                object: format!("service {}/{}", svc.namespace, svc.name),
                detail: format!("elements of it are missing from {table}"),
            });
        }
    }
    // What no service needs: the deletions a sync would make.
    for (set, stale, _) in &diff_table(desired, &observed).change {
        if !stale.is_empty() {
            problems.push(Problem {
                kind: ProblemKind::Extra,
                object: format!("set inet {} {}", podnet_proxy::TABLE, set.name()),
                detail: format!("{} elements no service needs", stale.len()),
            });
        }
    }
    if w.services.is_empty() {
        let sets = nft
            .set_names(Family::Inet, podnet_proxy::TABLE)
            .map_err(kernel(format!("read {table}")))?;
        if !sets.is_empty() {
            problems.push(Problem {
                kind: ProblemKind::Extra,
                object: table.clone(),
                detail: format!("{} sets while the store has no services", sets.len()),
            });
        }
    }
    let summary = format!("{} services in {table}", w.services.len());
    Ok(Check::new("services", summary, problems))
}

fn policies(nft: &mut NftHandle, view: &ClusterView, w: &Wanted) -> Result<Check, AgentError> {
    let table = format!("table inet {}", podnet_firewall::TABLE);
    let plan = podnet_firewall::plan(&w.world, &view.node.name);
    let diffs = podnet_firewall::inspect::differences(nft, &plan)
        .map_err(|e| AgentError::inspect(format!("read {table}"), e))?;
    let problems = diffs
        .into_iter()
        .map(|d| {
            let kind = if d.set_missing {
                ProblemKind::Missing
            } else if d.set_extra {
                ProblemKind::Extra
            } else {
                ProblemKind::Wrong
            };
            let object = format!("set inet {} {}", podnet_firewall::TABLE, d.set);
            let detail = if d.set_missing {
                format!("{} elements", d.missing)
            } else if d.set_extra {
                format!("{} elements, no policy needs it", d.extra)
            } else {
                format!("{} elements missing, {} extra", d.missing, d.extra)
            };
            Problem {
                kind,
                object,
                detail,
            }
        })
        .collect();
    let summary = format!(
        "{} policies: {} sets, {} elements in {table}",
        w.world.policies.len(),
        plan.sets.len(),
        plan.len()
    );
    Ok(Check::new("policies", summary, problems))
}
