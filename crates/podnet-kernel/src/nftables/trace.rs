//! nf_tables trace events (`nft monitor trace`): for every packet whose
//! `nftrace` mark is set, the kernel reports each rule that decided
//! something, each chain it returned from, and each base chain's policy,
//! to listeners of `NFNLGRP_NFTRACE` in the packet's namespace.
//!
//! The mark does not survive a veth or an encapsulation (FIELD-NOTES), so a
//! tracer sets it in every namespace on the path and listens in each.

use std::time::Duration;

use crate::error::Result;
use crate::netlink::codec;
use crate::netlink::{NetlinkSocket, Notifications, Protocol};
use crate::netns::Netns;

use super::wire::{be_u32, be_u64, Family, NFNL_SUBSYS_NFTABLES};

/// `NFNLGRP_NFTRACE`.
const NFNLGRP_NFTRACE: u32 = 9;
/// `NFT_MSG_TRACE`.
const NFT_MSG_TRACE: u16 = 17;

const NFTA_TRACE_TABLE: u16 = 1;
const NFTA_TRACE_CHAIN: u16 = 2;
const NFTA_TRACE_RULE_HANDLE: u16 = 3;
const NFTA_TRACE_TYPE: u16 = 4;
const NFTA_TRACE_VERDICT: u16 = 5;
const NFTA_TRACE_ID: u16 = 6;
const NFTA_TRACE_NETWORK_HEADER: u16 = 8;
const NFTA_TRACE_TRANSPORT_HEADER: u16 = 9;
const NFTA_TRACE_IIF: u16 = 10;
const NFTA_TRACE_OIF: u16 = 12;
const NFTA_TRACE_MARK: u16 = 14;
const NFTA_TRACE_NFPROTO: u16 = 15;
const NFTA_TRACE_POLICY: u16 = 16;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;

/// What a trace event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceKind {
    /// A rule matched and decided (`rule ... (verdict accept)`).
    Rule,
    /// The end of a regular chain was reached: back to the caller.
    Return,
    /// The end of a base chain: its policy decided.
    Policy,
    /// Something this code does not know.
    Other,
}

/// A verdict as nf_tables names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// `accept`
    Accept,
    /// `drop` (also what `reject` reports)
    Drop,
    /// `continue`: the rule did not end evaluation.
    Continue,
    /// `jump CHAIN`
    Jump(String),
    /// `goto CHAIN`
    Goto(String),
    /// `return`
    Return,
    /// `queue`, `stolen`, `repeat`, `stop`, or something unknown.
    Other(i32),
}

impl Verdict {
    /// The verdict of an `NFTA_VERDICT_CODE` (and its chain, for jumps and gotos).
    fn from_code(code: i32, chain: Option<String>) -> Self {
        match code {
            1 => Verdict::Accept,
            0 => Verdict::Drop,
            -1 => Verdict::Continue,
            -3 => Verdict::Jump(chain.unwrap_or_default()),
            -4 => Verdict::Goto(chain.unwrap_or_default()),
            -5 => Verdict::Return,
            other => Verdict::Other(other),
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Accept => f.write_str("accept"),
            Verdict::Drop => f.write_str("drop"),
            Verdict::Continue => f.write_str("continue"),
            Verdict::Jump(c) => write!(f, "jump {c}"),
            Verdict::Goto(c) => write!(f, "goto {c}"),
            Verdict::Return => f.write_str("return"),
            Verdict::Other(code) => write!(f, "verdict {code}"),
        }
    }
}

/// One trace event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceEvent {
    /// The table's family.
    pub family: Option<Family>,
    /// Table name.
    pub table: String,
    /// Chain name.
    pub chain: String,
    /// The rule's handle (rule events only).
    pub handle: Option<u64>,
    /// What the event reports.
    pub kind: TraceKind,
    /// The verdict (rule and policy events).
    pub verdict: Option<Verdict>,
    /// The trace id: the same for every event of one packet in one namespace.
    pub id: u32,
    /// Input interface index, if any.
    pub iif: Option<u32>,
    /// Output interface index, if any.
    pub oif: Option<u32>,
    /// The packet mark.
    pub mark: u32,
    /// `NFPROTO_*` the hook ran for (2 IPv4, 10 IPv6, 7 bridge).
    pub nfproto: Option<u32>,
    /// The first bytes of the network header, as the rule saw them.
    pub network_header: Vec<u8>,
    /// The first bytes of the transport header.
    pub transport_header: Vec<u8>,
}

/// Decodes the payload of an `NFT_MSG_TRACE` message (after `nfgenmsg`).
pub fn parse_trace(payload: &[u8]) -> Option<TraceEvent> {
    let family = Family::from_raw(*payload.first()?);
    let attrs = payload.get(4..)?;
    let mut e = TraceEvent {
        family,
        table: String::new(),
        chain: String::new(),
        handle: None,
        kind: TraceKind::Other,
        verdict: None,
        id: 0,
        iif: None,
        oif: None,
        mark: 0,
        nfproto: None,
        network_header: Vec::new(),
        transport_header: Vec::new(),
    };
    for (ty, p) in codec::attrs(attrs) {
        match ty {
            NFTA_TRACE_TABLE => e.table = codec::attr_string(p),
            NFTA_TRACE_CHAIN => e.chain = codec::attr_string(p),
            NFTA_TRACE_RULE_HANDLE => e.handle = be_u64(p),
            NFTA_TRACE_TYPE => {
                e.kind = match be_u32(p) {
                    Some(1) => TraceKind::Policy,
                    Some(2) => TraceKind::Return,
                    Some(3) => TraceKind::Rule,
                    _ => TraceKind::Other,
                }
            }
            NFTA_TRACE_VERDICT => e.verdict = parse_verdict(p),
            NFTA_TRACE_ID => e.id = be_u32(p).unwrap_or(0),
            NFTA_TRACE_NETWORK_HEADER => e.network_header = p.to_vec(),
            NFTA_TRACE_TRANSPORT_HEADER => e.transport_header = p.to_vec(),
            NFTA_TRACE_IIF => e.iif = be_u32(p),
            NFTA_TRACE_OIF => e.oif = be_u32(p),
            NFTA_TRACE_MARK => e.mark = be_u32(p).unwrap_or(0),
            NFTA_TRACE_NFPROTO => e.nfproto = be_u32(p),
            // A policy event carries the policy as a bare verdict code.
            NFTA_TRACE_POLICY => e.verdict = be_u32(p).map(|c| Verdict::from_code(c as i32, None)),
            _ => {}
        }
    }
    Some(e)
}

/// Decodes a nested `NFTA_VERDICT_*` (trace events and immediate expressions).
pub(super) fn parse_verdict(p: &[u8]) -> Option<Verdict> {
    let code = codec::find_attr(p, NFTA_VERDICT_CODE).and_then(be_u32)? as i32;
    let chain = codec::find_attr(p, NFTA_VERDICT_CHAIN).map(codec::attr_string);
    Some(Verdict::from_code(code, chain))
}

/// A subscription to the trace events of one namespace.
#[derive(Debug)]
pub struct TraceWatch {
    sock: NetlinkSocket,
    overrun: bool,
}

impl TraceWatch {
    /// Subscribes in `netns`.
    pub fn open_in(netns: &Netns) -> Result<Self> {
        let sock = NetlinkSocket::open_in(netns, Protocol::Netfilter)?;
        sock.join_group(NFNLGRP_NFTRACE)?;
        sock.set_receive_buffer(4 << 20);
        Ok(TraceWatch {
            sock,
            overrun: false,
        })
    }

    /// Whether the kernel dropped events since the socket opened (the buffer overflowed).
    pub fn overrun(&self) -> bool {
        self.overrun
    }

    /// Events that arrive within `timeout` of the first wait; returns as
    /// soon as a wait of `quiet` brings nothing new.
    pub fn collect(&mut self, timeout: Duration, quiet: Duration) -> Result<Vec<TraceEvent>> {
        let deadline = std::time::Instant::now() + timeout;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Ok(out);
            }
            match self
                .sock
                .wait_notifications(left.min(quiet), "nft monitor trace")?
            {
                Notifications::Overrun => self.overrun = true,
                Notifications::Messages(m) if m.is_empty() => return Ok(out),
                Notifications::Messages(m) => out.extend(
                    m.iter()
                        .filter(|(ty, _)| *ty == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_TRACE)
                        .filter_map(|(_, p)| parse_trace(p)),
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::codec::MessageBuilder;

    #[test]
    fn parses_a_policy_drop_and_a_rule_jump() {
        let mut m = MessageBuilder::new(0, 0).header(&[1, 0, 0, 0]);
        m.attr_str(NFTA_TRACE_TABLE, "filter")
            .attr_str(NFTA_TRACE_CHAIN, "forward")
            .attr_u32_be(NFTA_TRACE_TYPE, 1)
            .attr_u32_be(NFTA_TRACE_POLICY, 0)
            .attr_u32_be(NFTA_TRACE_IIF, 7)
            .attr(NFTA_TRACE_NETWORK_HEADER, &[0x45, 0]);
        let bytes = m.finish(1);
        let e = parse_trace(&bytes[16..]).expect("event");
        assert_eq!(e.family, Some(Family::Inet));
        assert_eq!((e.table.as_str(), e.chain.as_str()), ("filter", "forward"));
        assert_eq!(e.kind, TraceKind::Policy);
        assert_eq!(e.verdict, Some(Verdict::Drop));
        assert_eq!((e.iif, e.oif), (Some(7), None));
        assert_eq!(e.network_header, vec![0x45, 0]);

        let mut m = MessageBuilder::new(0, 0).header(&[1, 0, 0, 0]);
        m.attr_str(NFTA_TRACE_TABLE, "podnet-policy")
            .attr(NFTA_TRACE_RULE_HANDLE, &9u64.to_be_bytes())
            .attr_u32_be(NFTA_TRACE_TYPE, 3);
        let v = m.begin_nested(NFTA_TRACE_VERDICT);
        m.attr_u32_be(NFTA_VERDICT_CODE, (-3i32) as u32)
            .attr_str(NFTA_VERDICT_CHAIN, "ingress4");
        m.end_nested(v);
        let bytes = m.finish(1);
        let e = parse_trace(&bytes[16..]).expect("event");
        assert_eq!(e.handle, Some(9));
        assert_eq!(e.kind, TraceKind::Rule);
        assert_eq!(e.verdict, Some(Verdict::Jump("ingress4".into())));
        assert_eq!(e.verdict.expect("verdict").to_string(), "jump ingress4");
    }
}
