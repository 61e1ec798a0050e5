//! After a batch lands, flows that can outlive their endpoint are cleaned
//! up: UDP conntrack entries to removed endpoints (a UDP client would
//! otherwise keep sending to a dead endpoint for as long as it keeps
//! sending) and ClientIP affinity entries that point at removed endpoints.
//! Failures are reported, never dropped: the services are programmed, and
//! what was left behind is said.

use std::collections::BTreeMap;
use std::net::IpAddr;

use podnet_kernel::conntrack::ConntrackHandle;
use podnet_kernel::nftables::{Family, NftHandle, SetElement, Transaction};
use podnet_services::Protocol;

use crate::layout::{encode, SetId, TABLE};
use crate::plan::{Flow, Frontend};

/// A frontend whose affinity entries go, optionally only those pointing at one endpoint.
type AffinityTarget = (Frontend, Option<(IpAddr, u16)>);

/// The kernel handles cleanup works with.
pub(crate) struct Cleanup<'a> {
    pub(crate) nft: &'a mut NftHandle,
    pub(crate) conntrack: &'a mut ConntrackHandle,
}

impl Cleanup<'_> {
    /// Deletes conntrack entries of UDP flows whose endpoint no longer serves the frontend.
    pub(crate) fn delete_stale_udp_flows(
        &mut self,
        gone: &[Flow],
        failures: &mut Vec<String>,
    ) -> usize {
        let udp: Vec<&Flow> = gone
            .iter()
            .filter(|f| f.frontend.protocol == Protocol::Udp)
            .collect();
        if udp.is_empty() {
            return 0;
        }
        let mut deleted = 0;
        for v6 in [false, true] {
            if !udp.iter().any(|f| f.backend.is_ipv6() == v6) {
                continue;
            }
            let flows = match self.conntrack.flows(v6) {
                Ok(f) => f,
                Err(e) => {
                    failures.push(format!("list UDP flows to removed endpoints: {e}"));
                    continue;
                }
            };
            for ct in flows {
                let stale = ct.original.proto == 17
                    && udp.iter().any(|f| {
                        ct.reply.src == f.backend
                            && ct.reply.src_port == f.backend_port
                            && ct.original.dst_port == f.frontend.port
                            && f.frontend.addr.is_none_or(|a| a == ct.original.dst)
                    });
                if !stale {
                    continue;
                }
                match self.conntrack.delete(&ct) {
                    Ok(()) => deleted += 1,
                    // Expired meanwhile: nothing left to delete.
                    Err(e) if e.is_not_found() => {}
                    Err(e) => failures.push(format!(
                        "delete UDP flow to {}:{}: {e}",
                        ct.reply.src, ct.reply.src_port
                    )),
                }
            }
        }
        deleted
    }

    /// Deletes affinity entries that point at removed endpoints, or belong to
    /// frontends that no longer have affinity (or changed its timeout).
    pub(crate) fn delete_stale_affinity(
        &mut self,
        gone: &[Flow],
        frontends: &[(u32, Frontend)],
        failures: &mut Vec<String>,
    ) -> usize {
        let mut by_map: BTreeMap<SetId, Vec<AffinityTarget>> = BTreeMap::new();
        let map_of = |fe: &Frontend, v6: bool, timeout: u32| match fe.addr {
            Some(_) => SetId::Affinity { v6, timeout },
            None => SetId::AffinityNodePortMap { v6, timeout },
        };
        for f in gone {
            if let Some(timeout) = f.affinity {
                by_map
                    .entry(map_of(&f.frontend, f.backend.is_ipv6(), timeout))
                    .or_default()
                    .push((f.frontend, Some((f.backend, f.backend_port))));
            }
        }
        for (timeout, fe) in frontends {
            let v6 = fe.addr.map(|a| a.is_ipv6());
            for v6 in [false, true]
                .into_iter()
                .filter(|v| v6.is_none_or(|x| x == *v))
            {
                by_map
                    .entry(map_of(fe, v6, *timeout))
                    .or_default()
                    .push((*fe, None));
            }
        }
        let mut deleted = 0;
        let mut tx = Transaction::new(Family::Inet, TABLE);
        for (set, targets) in by_map {
            let name = set.name();
            let entries = match self.nft.set_elements(Family::Inet, TABLE, &name) {
                Ok(e) => e,
                Err(e) if e.is_not_found() => continue, // gone with its last service
                Err(e) => {
                    failures.push(format!("read affinity map {name}: {e}"));
                    continue;
                }
            };
            let a = if set.v6() { 16 } else { 4 };
            let stale: Vec<SetElement> = entries
                .into_iter()
                .filter(|e| {
                    targets.iter().any(|(fe, backend)| {
                        affinity_matches(&e.key, e.data.as_deref(), a, fe, *backend)
                    })
                })
                .collect();
            deleted += stale.len();
            tx.delete_elements(&name, &stale);
        }
        if deleted == 0 {
            return 0;
        }
        match self.nft.commit(tx, "nft: delete stale affinity") {
            Ok(()) => deleted,
            Err(e) => {
                failures.push(format!("delete {deleted} stale affinity entries: {e}"));
                0
            }
        }
    }
}

/// Whether an affinity entry (`client . service addr . proto . port : endpoint`) belongs
/// to `frontend` (and, when given, points at `backend`).
fn affinity_matches(
    key: &[u8],
    data: Option<&[u8]>,
    a: usize,
    frontend: &Frontend,
    backend: Option<(IpAddr, u16)>,
) -> bool {
    let Some(tail) = key.get(a..) else {
        return false;
    };
    let fe_ok = match frontend.addr {
        Some(ip) => {
            tail == encode::service(ip, frontend.protocol.number(), frontend.port).as_slice()
        }
        None => tail == encode::node_port(frontend.protocol.number(), frontend.port).as_slice(),
    };
    fe_ok && backend.is_none_or(|(ip, port)| data == Some(&encode::endpoint(ip, port)[..]))
}
