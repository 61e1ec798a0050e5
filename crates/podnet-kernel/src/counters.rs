//! A namespace's protocol counters (`nstat`): `/proc/net/snmp`,
//! `/proc/net/netstat` and `/proc/net/snmp6`, named as `nstat` names them
//! (`IpExtInNoRoutes`, `TcpExtIPReversePathFilter`, `Ip6InNoRoutes`).

use std::collections::BTreeMap;

use crate::error::{KernelError, Result};
use crate::netns::Netns;

/// Counter name to value.
pub type Counters = BTreeMap<String, u64>;

/// The counters of `netns` now.
pub fn read_in(netns: &Netns) -> Result<Counters> {
    netns.run(|| {
        let mut out = Counters::new();
        // thread-self: /proc/self/net shows the namespace of the main thread.
        for file in ["snmp", "netstat"] {
            let path = format!("/proc/thread-self/net/{file}");
            let text = std::fs::read_to_string(&path)
                .map_err(|e| KernelError::io(format!("read {path}"), e))?;
            parse_paired(&text, &mut out);
        }
        // snmp6 is absent when IPv6 is disabled.
        if let Ok(text) = std::fs::read_to_string("/proc/thread-self/net/snmp6") {
            parse_flat(&text, &mut out);
        }
        Ok(out)
    })?
}

/// Counters that grew between `before` and `after`, with how much.
pub fn grown(before: &Counters, after: &Counters) -> Vec<(String, u64)> {
    after
        .iter()
        .filter_map(|(k, v)| {
            let old = before.get(k).copied().unwrap_or(0);
            (*v > old).then(|| (k.clone(), v - old))
        })
        .collect()
}

/// `Prefix: Name1 Name2 ...` followed by `Prefix: 1 2 ...`.
fn parse_paired(text: &str, out: &mut Counters) {
    let lines: Vec<&str> = text.lines().collect();
    for pair in lines.chunks(2) {
        let [names, values] = pair else { continue };
        let (Some((prefix, names)), Some((_, values))) =
            (names.split_once(':'), values.split_once(':'))
        else {
            continue;
        };
        for (n, v) in names.split_whitespace().zip(values.split_whitespace()) {
            if let Ok(v) = v.parse::<u64>() {
                out.insert(format!("{prefix}{n}"), v);
            }
        }
    }
}

/// `Name value` per line.
fn parse_flat(text: &str, out: &mut Counters) {
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        if let (Some(n), Some(Ok(v))) = (parts.next(), parts.next().map(str::parse::<u64>)) {
            out.insert(n.to_string(), v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_formats_and_finds_growth() {
        let mut before = Counters::new();
        parse_paired(
            "IpExt: InNoRoutes InTruncatedPkts\nIpExt: 0 0\nTcpExt: IPReversePathFilter\nTcpExt: 1\n",
            &mut before,
        );
        parse_flat("Ip6InNoRoutes 3\n", &mut before);
        assert_eq!(before.get("IpExtInNoRoutes"), Some(&0));
        assert_eq!(before.get("TcpExtIPReversePathFilter"), Some(&1));
        let mut after = before.clone();
        after.insert("IpExtInNoRoutes".into(), 2);
        assert_eq!(grown(&before, &after), vec![("IpExtInNoRoutes".into(), 2)]);
    }
}
