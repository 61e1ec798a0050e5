//! The node's service and policy tables against the store.

use std::collections::HashMap;

use podnet_kernel::nftables::{Family, NftHandle};
use podnet_policy::World;
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
) -> Result<Vec<Check>, AgentError> {
    let mut nft = NftHandle::current().map_err(kernel("open nfnetlink"))?;
    let mut checks = Vec::new();
    if cfg.services {
        checks.push(services(&mut nft, view, wanted)?);
    }
    if cfg.policies {
        checks.push(policies(&mut nft, view, wanted)?);
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
    for (svc, eps) in &w.services {
        let programmed =
            podnet_proxy::inspect::is_programmed(nft, svc, eps.as_ref(), &view.node.name)
                .map_err(|e| AgentError::inspect(format!("read {table}"), e))?;
        if !programmed {
            problems.push(Problem {
                kind: ProblemKind::Wrong,
                object: format!("service {}/{}", svc.namespace, svc.name),
                detail: format!("its elements in {table} differ from the store"),
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
