//! Reading back what the kernel holds: the whole table, or one service's part.

use std::collections::BTreeSet;

use podnet_kernel::nftables::{Family, NftHandle, SetElement};
use podnet_services::{Endpoints, Service};

use crate::error::ProxyError;
use crate::layout::{encode, Layout, TABLE};
use crate::plan::fragment;
use crate::table::ObservedTable;

/// The table's set names, and the elements of the sets of `layout` that a
/// sync compares (present, and not filled by the packet path): one dump
/// per set, whatever the number of services.
pub fn observe_table(nft: &mut NftHandle, layout: &Layout) -> Result<ObservedTable, ProxyError> {
    let names: BTreeSet<String> = nft.set_names(Family::Inet, TABLE)?.into_iter().collect();
    let mut elements = std::collections::BTreeMap::new();
    for set in layout.sets() {
        let name = set.name();
        if names.contains(&name) && !set.spec().dynamic {
            elements.insert(name.clone(), nft.set_elements(Family::Inet, TABLE, &name)?);
        }
    }
    Ok(ObservedTable { names, elements })
}

/// Whether the kernel behind `nft` holds exactly the elements of `svc` with
/// `eps` on node `node`: everything its fragment needs is there, and no other
/// element is keyed by one of its frontends.
pub fn is_programmed(
    nft: &mut NftHandle,
    svc: &Service,
    eps: Option<&Endpoints>,
    node: &str,
) -> Result<bool, ProxyError> {
    let want: BTreeSet<(String, SetElement)> = fragment(svc, eps, node)
        .elements
        .into_iter()
        .map(|(s, e)| (s.name(), e))
        .collect();
    let mut prefixes = Vec::new();
    for p in &svc.ports {
        let (Ok(port), proto) = (u16::try_from(p.port), p.protocol.number()) else {
            continue;
        };
        for ip in svc
            .all_cluster_ips()
            .iter()
            .chain(&svc.external_ips)
            .chain(&svc.load_balancer_ips)
        {
            prefixes.push((false, encode::service(*ip, proto, port)));
        }
        if let Some(np) = p.node_port.and_then(|n| u16::try_from(n).ok()) {
            prefixes.push((true, encode::node_port(proto, np)));
        }
    }
    let mut have = BTreeSet::new();
    for set in nft.set_names(Family::Inet, TABLE)? {
        let node_port_set = set.starts_with("nodeport-") || set.starts_with("affinity-nodeports");
        let keyed_by_service = !set.starts_with("hairpin")
            && !set.starts_with("affinity4-")
            && !set.starts_with("affinity6-")
            && !set.starts_with("affinity-np");
        if !keyed_by_service {
            continue;
        }
        for e in nft.set_elements(Family::Inet, TABLE, &set)? {
            let ours = prefixes
                .iter()
                .any(|(np, pre)| *np == node_port_set && e.key.starts_with(pre));
            if ours {
                have.insert((set.clone(), e));
            }
        }
    }
    Ok(have == want)
}
