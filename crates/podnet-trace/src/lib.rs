//! `podnet trace`: why can't A reach B.
//!
//! One real probe (a TCP SYN, a UDP datagram or an ICMP echo, DF set) is
//! sent from A. Before it leaves, every namespace it may cross gets a
//! temporary nf_tables table that marks the probe's packets for tracing
//! (the mark does not survive a veth or a tunnel, so each namespace needs
//! its own) and a socket for the trace events; counters are read before
//! and after, and where tracefs can be used, the kernel's drop reasons.
//! Then the path is walked namespace by namespace with the kernel's own
//! route decisions (asked on the input path, so that reverse-path filtering
//! answers too), neighbour and FDB entries and link MTUs, and the verdict
//! names the hop, the cause and the fix. Everything temporary is removed
//! when the trace ends, also on failure or Ctrl-C.

pub mod error;
pub mod events;
mod findings;
pub mod report;
pub mod session;
pub mod topology;
pub mod verdict;
pub mod walk;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use podnet_kernel::counters;
use podnet_kernel::probe::{self, ProbeOutcome, ProbeProto, ProbeSpec};
use podnet_kernel::process::InterruptGuard;
use podnet_kernel::rtnl::RouteQuery;
use podnet_kernel::tracefs::DropCapture;
use podnet_kernel::{Netns, RouteHandle};

pub use error::TraceError;
pub use report::{Cause, Trace};
pub use topology::{Cluster, Place, PlaceKind, Request};

use events::Packet;
use report::{Outcome, ProbeInfo};
use session::{Match, Session};
use walk::{View, Walk};

/// How long the event sockets must stay quiet before a namespace's events count as all in.
const QUIET: Duration = Duration::from_millis(100);

/// A source port of its own for each trace, so that a flow an earlier
/// trace left in conntrack is not ridden by this one.
fn pick_port() -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    40000 + ((nanos ^ std::process::id().wrapping_mul(2654435761)) % 20000) as u16
}

fn proto_word(p: ProbeProto) -> &'static str {
    match p {
        ProbeProto::Tcp => "tcp",
        ProbeProto::Udp => "udp",
        ProbeProto::Icmp => "icmp",
    }
}

/// The source the kernel would choose in `netns` for `dst`, if it has a route.
fn chosen_source(netns: &Netns, dst: IpAddr) -> Option<IpAddr> {
    let q = RouteQuery {
        dst,
        src: None,
        iif: None,
        proto: None,
    };
    RouteHandle::in_netns(netns)
        .ok()?
        .route_get(&q)
        .ok()?
        .prefsrc
}

/// Runs one trace over `places` (the sender is `req.from`).
pub fn run(
    places: &[Place],
    cluster: &Cluster,
    req: &Request,
    vxlan_port: Option<u16>,
) -> Result<Trace, TraceError> {
    let from = places
        .get(req.from)
        .ok_or_else(|| TraceError::Request("no such sending place".into()))?;
    let interrupts = InterruptGuard::new();
    let sport = pick_port();
    let src_ns = Netns::open(&from.netns)
        .map_err(|e| TraceError::Place(from.name.clone(), e.to_string()))?;
    let src = req.src.or_else(|| chosen_source(&src_ns, req.dst.ip()));
    let m = Match {
        proto: req.proto.number(req.dst.is_ipv6()),
        sport,
        vxlan_port,
    };
    let mut session = Session::start(places, &m)?;
    let mut warnings = Vec::new();
    let mut capture = if req.drop_reasons {
        DropCapture::start()
            .map_err(|e| warnings.push(format!("no drop reasons: {e}")))
            .ok()
    } else {
        None
    };
    let spec = ProbeSpec {
        src,
        sport,
        dst: req.dst,
        proto: req.proto,
        size: req.size,
        timeout: req.timeout,
    };
    let outcome = probe::send_in(&session.stations[req.from].netns, &spec);
    let events = session.collect(QUIET);
    let reasons = capture.as_mut().map(DropCapture::stop);
    let removed = session.remove();
    if interrupts.interrupted() {
        removed?;
        return Err(TraceError::Interrupted);
    }
    removed?;
    let outcome = outcome?;
    let events = events?;
    for p in session.overruns() {
        warnings.push(format!(
            "{}: trace events were lost (buffer overrun)",
            places[p].name
        ));
    }
    let drop_reasons = match reasons {
        Some(Ok(r)) => r,
        Some(Err(e)) => {
            warnings.push(format!("drop reasons: {e}"));
            Vec::new()
        }
        None => Vec::new(),
    };
    let mut views = Vec::new();
    for (station, ev) in session.stations.iter().zip(events) {
        let netns = Netns::open(&places[station.place].netns)?;
        views.push(View::read(places[station.place].clone(), netns, ev)?);
    }
    let grown = grown_counters(&session, &views)?;
    let probe_pkt = Packet {
        proto: req.proto,
        src: src.unwrap_or(if req.dst.is_ipv6() {
            IpAddr::from([0u8; 16])
        } else {
            IpAddr::from([0u8; 4])
        }),
        sport,
        dst: req.dst.ip(),
        dport: req.dst.port(),
        size: req.size,
    };
    let walk = Walk {
        cluster,
        probe: probe_pkt,
        vxlan_port,
    };
    let hops = walk.run(&mut views, req.from);
    let per_hop: Vec<verdict::Grown> = hops
        .iter()
        .map(|h| {
            places
                .iter()
                .position(|p| p.name == h.place)
                .and_then(|i| grown.get(i).cloned())
                .unwrap_or_default()
        })
        .collect();
    let verdict = verdict::judge(&outcome, &hops, &per_hop);
    Ok(Trace {
        probe: ProbeInfo {
            proto: proto_word(req.proto).into(),
            from: from.name.clone(),
            to: req.to.clone(),
            src: SocketAddr::new(probe_pkt.src, sport).to_string(),
            dst: req.dst.to_string(),
            size: req.size,
        },
        outcome: describe_outcome(&outcome),
        hops,
        verdict,
        drop_reasons_read: capture.is_some(),
        drop_reasons,
        warnings,
    })
}

/// For each station: the telling counters that grew, and link drop
/// counters that grew (links as its view read them after the probe).
fn grown_counters(session: &Session, views: &[View]) -> Result<Vec<verdict::Grown>, TraceError> {
    let mut out = Vec::new();
    for (s, view) in session.stations.iter().zip(views) {
        let after = counters::read_in(&s.netns)?;
        let mut lines: Vec<String> = counters::grown(&s.counters_before, &after)
            .into_iter()
            .filter(|(k, _)| verdict::telling(k))
            .map(|(k, v)| format!("counter {k} +{v}"))
            .collect();
        for l in view.links() {
            if let Some(b) = s.links_before.iter().find(|b| b.index == l.index) {
                let (rx, tx) = (
                    l.dropped.0.saturating_sub(b.dropped.0),
                    l.dropped.1.saturating_sub(b.dropped.1),
                );
                if rx + tx > 0 {
                    lines.push(format!("link {} dropped rx +{rx} tx +{tx}", l.name));
                }
            }
        }
        out.push(lines);
    }
    Ok(out)
}

fn describe_outcome(o: &ProbeOutcome) -> Outcome {
    let (kind, from, detail) = match o {
        ProbeOutcome::Answered { from } => ("answered", Some(*from), format!("answered by {from}")),
        ProbeOutcome::Refused { from } => (
            "refused",
            Some(*from),
            format!("refused by {from} (nothing listens there)"),
        ),
        ProbeOutcome::Icmp {
            from,
            icmp_type,
            code,
            mtu,
        } => (
            "icmp-error",
            Some(*from),
            format!(
                "ICMP error type {icmp_type} code {code} from {from}{}",
                mtu.map(|m| format!(", mtu {m}")).unwrap_or_default()
            ),
        ),
        ProbeOutcome::Local { errno, mtu } => (
            "local-error",
            None,
            format!(
                "not sent: {}{}",
                std::io::Error::from_raw_os_error(*errno),
                mtu.map(|m| format!(" (mtu {m})")).unwrap_or_default()
            ),
        ),
        ProbeOutcome::Timeout => ("timeout", None, "no answer in time".to_string()),
    };
    Outcome {
        kind: kind.into(),
        from: from.map(|f| f.to_string()),
        detail,
    }
}
