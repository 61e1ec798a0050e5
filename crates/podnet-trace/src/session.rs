//! The temporary state of one trace, in every namespace it may visit: a
//! table that sets `nftrace` for the probe's packets (both directions, its
//! ICMP errors, and its VXLAN packets between nodes), a trace-event socket,
//! and the counters before. All of it goes when the trace ends, also when it
//! fails or is interrupted.

use podnet_kernel::counters::{self, Counters};
use podnet_kernel::nftables::build::{set_nftrace, ChainDef};
use podnet_kernel::nftables::consts::*;
use podnet_kernel::nftables::{
    ChainKind, CmpOp, Expr, Family, Hook, NftHandle, Rule, TraceEvent, TraceWatch, Transaction,
};
use podnet_kernel::{Link, Netns, RouteHandle};

use crate::error::TraceError;
use crate::topology::{Place, PlaceKind};

/// The temporary table's name (in `inet`, and in `bridge` on nodes).
pub const TRACE_TABLE: &str = "podnet-trace";
/// Before everything else on the hook: defragmentation (-400), raw, conntrack.
const TRACE_PRIORITY: i32 = -500;
/// Offsets (bytes from the outer UDP header) of the inner transport ports of
/// a VXLAN packet: UDP 8 + VXLAN 8 + Ethernet 14 + inner IP header.
const VXLAN_INNER_L4: [u32; 2] = [8 + 8 + 14 + 20, 8 + 8 + 14 + 40];

/// What identifies the probe's packets.
#[derive(Debug, Clone, Copy)]
pub struct Match {
    /// IP protocol of the probe.
    pub proto: u8,
    /// The probe's source port (echo identifier for ICMP).
    pub sport: u16,
    /// The cluster's VXLAN port, to trace the probe inside it.
    pub vxlan_port: Option<u16>,
}

/// One namespace's part of a trace.
pub struct Station {
    /// Index of its place.
    pub place: usize,
    /// Its namespace.
    pub netns: Netns,
    watch: TraceWatch,
    families: Vec<Family>,
    /// Counters before the probe.
    pub counters_before: Counters,
    /// Links before the probe.
    pub links_before: Vec<Link>,
}

/// Every station of one trace.
pub struct Session {
    /// The stations, one per place.
    pub stations: Vec<Station>,
    removed: bool,
}

fn th_u16_is(offset: u32, value: u16) -> [Expr; 2] {
    [
        Expr::PayloadLoad {
            base: PAYLOAD_TRANSPORT,
            offset,
            len: 2,
            dreg: reg(1),
        },
        Expr::CmpReg(CmpOp::Eq, reg(1), value.to_be_bytes().to_vec()),
    ]
}

fn proto_is(proto: u8) -> [Expr; 2] {
    [
        Expr::MetaLoad {
            key: META_L4PROTO,
            dreg: reg(0),
        },
        Expr::CmpReg(CmpOp::Eq, reg(0), vec![proto]),
    ]
}

/// The rules that mark the probe's packets for tracing.
pub fn trace_rules(m: &Match, bridge: bool) -> Vec<Rule> {
    let rule = |parts: Vec<Expr>| {
        let mut exprs = parts;
        exprs.extend(set_nftrace());
        Rule {
            exprs,
            comment: "podnet trace: the probe's packets".into(),
        }
    };
    let mut rules = Vec::new();
    let icmp_probe = m.proto == 1 || m.proto == 58;
    if icmp_probe {
        rules.push(rule(proto_is(m.proto).to_vec()));
    } else {
        for offset in [0, 2] {
            rules.push(rule(
                [proto_is(m.proto), th_u16_is(offset, m.sport)].concat(),
            ));
        }
        // ICMPv4 errors (destination unreachable, time exceeded) quoting anything.
        for ty in [3u8, 11] {
            let is_type = [
                Expr::PayloadLoad {
                    base: PAYLOAD_TRANSPORT,
                    offset: 0,
                    len: 1,
                    dreg: reg(1),
                },
                Expr::CmpReg(CmpOp::Eq, reg(1), vec![ty]),
            ];
            rules.push(rule([proto_is(1), is_type].concat()));
        }
    }
    if let (Some(port), false, false) = (m.vxlan_port, bridge, icmp_probe) {
        for inner in VXLAN_INNER_L4 {
            for side in [0, 2] {
                rules.push(rule(
                    [
                        proto_is(17),
                        th_u16_is(2, port),
                        th_u16_is(inner + side, m.sport),
                    ]
                    .concat(),
                ));
            }
        }
    }
    rules
}

fn install(netns: &Netns, family: Family, rules: &[Rule]) -> Result<(), TraceError> {
    let mut tx = Transaction::new(family, TRACE_TABLE);
    let chains: Vec<ChainDef> = [("prerouting", Hook::Prerouting), ("output", Hook::Output)]
        .into_iter()
        .map(|(name, hook)| ChainDef {
            name: name.into(),
            kind: ChainKind::Base {
                ty: "filter",
                hook,
                priority: TRACE_PRIORITY,
            },
            rules: rules.to_vec(),
        })
        .collect();
    tx.replace_chains(&chains, &[]);
    NftHandle::in_netns(netns)?.commit(tx, "add the trace table")?;
    Ok(())
}

impl Session {
    /// Prepares every place: tables, event sockets, counters. On failure,
    /// what was already added is removed before the error returns.
    pub fn start(places: &[Place], m: &Match) -> Result<Self, TraceError> {
        let mut session = Session {
            stations: Vec::new(),
            removed: false,
        };
        for (i, place) in places.iter().enumerate() {
            let netns = Netns::open(&place.netns)
                .map_err(|e| TraceError::Place(place.name.clone(), e.to_string()))?;
            let watch = TraceWatch::open_in(&netns)?;
            let mut station = Station {
                place: i,
                counters_before: counters::read_in(&netns)?,
                links_before: RouteHandle::in_netns(&netns)?.links()?,
                netns,
                watch,
                families: Vec::new(),
            };
            let mut families = vec![Family::Inet];
            if place.kind == PlaceKind::Node {
                families.push(Family::Bridge);
            }
            for family in families {
                // Registered first, so that a failure half-way still removes it.
                station.families.push(family);
                let rules = trace_rules(m, family == Family::Bridge);
                if let Err(e) = install(&station.netns, family, &rules) {
                    session.stations.push(station);
                    return Err(match session.remove() {
                        Ok(()) => e,
                        Err(cleanup) => TraceError::Cleanup(format!("{e}; then {cleanup}")),
                    });
                }
            }
            session.stations.push(station);
        }
        Ok(session)
    }

    /// The trace events of each station, quiet for `quiet` after the last.
    pub fn collect(
        &mut self,
        quiet: std::time::Duration,
    ) -> Result<Vec<Vec<TraceEvent>>, TraceError> {
        let mut out = Vec::new();
        for s in &mut self.stations {
            out.push(s.watch.collect(quiet * 10, quiet)?);
        }
        Ok(out)
    }

    /// Stations whose event buffer overflowed (events were lost there).
    pub fn overruns(&self) -> Vec<usize> {
        self.stations
            .iter()
            .filter(|s| s.watch.overrun())
            .map(|s| s.place)
            .collect()
    }

    /// Removes every trace table; reports each one that could not be removed.
    pub fn remove(&mut self) -> Result<(), TraceError> {
        self.removed = true;
        let mut failures = Vec::new();
        for s in &self.stations {
            for family in &s.families {
                let done = NftHandle::in_netns(&s.netns)
                    .and_then(|mut h| h.delete_table(*family, TRACE_TABLE));
                if let Err(e) = done {
                    failures.push(format!("{}: {e}", s.netns.path().display()));
                }
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(TraceError::Cleanup(failures.join("; ")))
        }
    }
}

impl Drop for Session {
    /// The panic path: a trace that ends normally has removed its tables already.
    fn drop(&mut self) {
        if !self.removed {
            if let Err(e) = self.remove() {
                eprintln!("podnet trace: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_cover_both_directions_icmp_errors_and_vxlan() {
        let m = Match {
            proto: 6,
            sport: 41000,
            vxlan_port: Some(4789),
        };
        assert_eq!(trace_rules(&m, false).len(), 2 + 2 + 4);
        assert_eq!(trace_rules(&m, true).len(), 4);
        let icmp = Match { proto: 1, ..m };
        assert_eq!(trace_rules(&icmp, false).len(), 1);
    }
}
