//! The verdict: delivered, or where and why not, from the probe's outcome,
//! the hops' findings and the counters that grew.

use podnet_kernel::probe::ProbeOutcome;

use crate::report::{Cause, Finding, Hop, Verdict};

/// Counters that grew at one place during the probe, already filtered to the telling ones.
pub type Grown = Vec<String>;

fn from_finding(hops: &[Hop], i: usize, f: &Finding, extra: Vec<String>) -> Verdict {
    let mut evidence = f.evidence.clone();
    evidence.extend(extra);
    Verdict {
        delivered: false,
        cause: f.cause,
        hop: Some(i),
        place: Some(hops[i].place.clone()),
        summary: f.summary.clone(),
        evidence,
        fix: f.fix.clone(),
    }
}

fn outcome_line(outcome: &ProbeOutcome) -> Option<String> {
    match outcome {
        ProbeOutcome::Icmp {
            from,
            icmp_type,
            code,
            mtu,
        } => Some(format!(
            "ICMP type {icmp_type} code {code} from {from}{}",
            mtu.map(|m| format!(" (mtu {m})")).unwrap_or_default()
        )),
        ProbeOutcome::Local { errno, mtu } => Some(format!(
            "the sender's kernel refused: {}{}",
            std::io::Error::from_raw_os_error(*errno),
            mtu.map(|m| format!(" (mtu {m})")).unwrap_or_default()
        )),
        _ => None,
    }
}

/// Judges the trace. `grown[i]` are the counters that grew at hop `i`'s place.
pub fn judge(outcome: &ProbeOutcome, hops: &[Hop], grown: &[Grown]) -> Verdict {
    let counters = |i: usize| grown.get(i).cloned().unwrap_or_default();
    let mut extra: Vec<String> = outcome_line(outcome).into_iter().collect();
    match outcome {
        // A reject on the way (a service without endpoints) also answers with a reset.
        ProbeOutcome::Refused { .. } if hops.iter().any(|h| h.findings.iter().any(|f| f.fatal)) => {
        }
        ProbeOutcome::Answered { from } | ProbeOutcome::Refused { from } => {
            let refused = matches!(outcome, ProbeOutcome::Refused { .. });
            let last = hops.len().checked_sub(1);
            return Verdict {
                delivered: true,
                cause: if refused {
                    Cause::Refused
                } else {
                    Cause::Delivered
                },
                hop: last,
                place: last.map(|i| hops[i].place.clone()),
                summary: if refused {
                    format!("delivered; {from} has nothing listening on the port (reset / port unreachable)")
                } else {
                    format!("delivered and answered by {from}")
                },
                evidence: warnings(hops),
                fix: None,
            };
        }
        _ => {}
    }
    for (i, hop) in hops.iter().enumerate() {
        if let Some(f) = hop.findings.iter().find(|f| f.fatal) {
            extra.extend(counters(i));
            // A node that sent a pod block the wrong way is the cause of
            // what happened to the packet further on.
            let root = hops[..i].iter().enumerate().find_map(|(j, h)| {
                h.findings
                    .iter()
                    .find(|w| w.cause == Cause::MissingBlockRoute)
                    .map(|w| (j, w))
            });
            if let Some((j, w)) = root {
                extra.push(format!("then: {}", f.summary));
                return from_finding(hops, j, w, extra);
            }
            return from_finding(hops, i, f, extra);
        }
    }
    for (i, hop) in hops.iter().enumerate() {
        if let Some(f) = hop.findings.first() {
            extra.extend(counters(i));
            return from_finding(hops, i, f, extra);
        }
    }
    if let Some(i) = (1..hops.len()).find(|&i| hops[i - 1].seen && !hops[i].seen) {
        extra.extend(counters(i - 1));
        extra.extend(counters(i));
        return Verdict {
            delivered: false,
            cause: Cause::Lost,
            hop: Some(i),
            place: Some(hops[i].place.clone()),
            summary: format!(
                "the packet left {} and never reached {}",
                hops[i - 1].place,
                hops[i].place
            ),
            evidence: extra,
            fix: Some(
                "look at the link between them (MTU, state, a bridge or macvlan filter)".into(),
            ),
        };
    }
    // Slow, not lost: the answer reached the sender after the probe stopped waiting.
    let arrived = hops.last().is_some_and(|h| h.delivered);
    if arrived && hops.first().is_some_and(|h| h.answer_seen) {
        let last = hops.len() - 1;
        return Verdict {
            delivered: true,
            cause: Cause::Delivered,
            hop: Some(last),
            place: Some(hops[last].place.clone()),
            summary: format!(
                "delivered; the answer reached {} after the probe stopped waiting (raise --timeout-ms)",
                hops[0].place
            ),
            evidence: warnings(hops),
            fix: None,
        };
    }
    if let Some(last) = hops.last().filter(|h| h.delivered) {
        let i = hops.len() - 1;
        extra.extend(counters(i));
        return Verdict {
            delivered: false,
            cause: Cause::ReplyLost,
            hop: Some(i),
            place: Some(last.place.clone()),
            summary: format!(
                "the request reached {}, but no answer came back",
                last.place
            ),
            evidence: extra,
            fix: Some(
                "trace the other direction (`podnet trace DST SRC`) to see where the answer goes"
                    .into(),
            ),
        };
    }
    let i = hops.len().saturating_sub(1);
    extra.extend(counters(i));
    Verdict {
        delivered: false,
        cause: Cause::Unknown,
        hop: hops.last().map(|_| i),
        place: hops.last().map(|h| h.place.clone()),
        summary: "the packet did not arrive, and the trace could not see where it was lost".into(),
        evidence: extra,
        fix: None,
    }
}

fn warnings(hops: &[Hop]) -> Vec<String> {
    hops.iter()
        .flat_map(|h| h.findings.iter().map(|f| format!("warning: {}", f.summary)))
        .collect()
}

/// Whether a counter's growth says something about a drop.
pub fn telling(name: &str) -> bool {
    const WORDS: [&str; 9] = [
        "NoRoutes",
        "ReversePathFilter",
        "FragFails",
        "InAddrErrors",
        "InDiscards",
        "OutDiscards",
        "InHdrErrors",
        "InTooBig",
        "Unreachs",
    ];
    WORDS.iter().any(|w| name.contains(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hop(place: &str, seen: bool, delivered: bool, answer_seen: bool) -> Hop {
        Hop {
            place: place.into(),
            kind: "pod".into(),
            netns: String::new(),
            iif: None,
            oif: None,
            packet: String::new(),
            route: None,
            nat: Vec::new(),
            encap: None,
            netfilter: Vec::new(),
            seen,
            delivered,
            answer_seen,
            findings: Vec::new(),
        }
    }

    #[test]
    fn a_late_answer_is_delivered_a_missing_one_is_reply_lost_a_gap_is_lost() {
        let late = [
            hop("pod a", true, false, true),
            hop("pod b", true, true, false),
        ];
        let v = judge(&ProbeOutcome::Timeout, &late, &[]);
        assert!(v.delivered, "{v:?}");
        let lost_reply = [
            hop("pod a", true, false, false),
            hop("pod b", true, true, false),
        ];
        assert_eq!(
            judge(&ProbeOutcome::Timeout, &lost_reply, &[]).cause,
            Cause::ReplyLost
        );
        let gap = [
            hop("pod a", true, false, false),
            hop("node n", false, false, false),
        ];
        let v = judge(
            &ProbeOutcome::Timeout,
            &gap,
            &[vec![], vec!["counter X +1".into()]],
        );
        assert_eq!((v.cause, v.place.as_deref()), (Cause::Lost, Some("node n")));
        assert!(v.evidence.contains(&"counter X +1".to_string()));
    }
}
