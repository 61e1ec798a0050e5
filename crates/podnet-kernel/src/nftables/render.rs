//! Rules as `nft list` would print them, decoded from the kernel's
//! expressions: loads into registers are remembered and printed where a
//! comparison, lookup or statement uses them (`ip daddr 10.96.0.10 tcp dport
//! 80 jump svc-...`). Rules of any table are rendered, not only podnet's;
//! an expression this renderer does not know is printed by its name.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::netlink::codec;

use super::trace::parse_verdict;
use super::wire::{be_u32, be_u64};

/// What a register holds: its `nft` description and how to print values compared with it.
#[derive(Debug, Clone)]
struct Held {
    text: String,
    kind: ValueKind,
    len: usize,
    /// For an address under a mask: the prefix length to print with the value.
    prefix: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ValueKind {
    Addr,
    Port,
    L4Proto,
    NfProto,
    IfName,
    CtState,
    /// `ct state & MASK`: the comparison that follows prints the mask's states.
    CtStateMasked,
    /// `ct status` (host-order flags).
    CtStatus,
    /// A route type (`fib daddr type`).
    FibType,
    Number,
}

/// The rendering state of one rule.
#[derive(Default)]
struct Renderer {
    regs: BTreeMap<u32, Held>,
    out: Vec<String>,
}

/// Renders the `NFTA_RULE_EXPRESSIONS` attribute of a rule.
pub fn render_expressions(list: &[u8]) -> String {
    let mut r = Renderer::default();
    for (_, elem) in codec::attrs(list) {
        let name = codec::find_attr(elem, 1)
            .map(codec::attr_string)
            .unwrap_or_default();
        let data = codec::find_attr(elem, 2).unwrap_or(&[]);
        r.expr(&name, data);
    }
    r.out.join(" ")
}

/// 32-bit register number of a register attribute (128-bit registers 1-4 map to words 8, 12, 16, 20).
fn word(reg: u32) -> u32 {
    match reg {
        1..=4 => 8 + (reg - 1) * 4,
        r => r,
    }
}

fn attr_u32(data: &[u8], ty: u16) -> Option<u32> {
    codec::find_attr(data, ty).and_then(be_u32)
}

fn value_bytes(data: &[u8], ty: u16) -> Vec<u8> {
    codec::find_attr(data, ty)
        .and_then(|d| codec::find_attr(d, 1))
        .map(<[u8]>::to_vec)
        .unwrap_or_default()
}

impl Renderer {
    fn expr(&mut self, name: &str, d: &[u8]) {
        match name {
            "payload" => self.payload(d),
            "meta" => self.meta(d),
            "ct" => self.ct(d),
            "cmp" => self.cmp(d),
            "bitwise" => self.bitwise(d),
            "lookup" => self.lookup(d),
            "immediate" => self.immediate(d),
            "counter" => self.counter(d),
            "objref" => self.objref(d),
            "log" => self.log(d),
            "masq" => self.out.push("masquerade".into()),
            "nat" => self.nat(d),
            "reject" => self.reject(d),
            "fib" => self.load(d, 1, "fib daddr type", ValueKind::FibType, 4),
            "numgen" => {
                let m = attr_u32(d, 2).unwrap_or(0);
                self.load(
                    d,
                    1,
                    &format!("numgen random mod {m}"),
                    ValueKind::Number,
                    4,
                );
            }
            "dynset" => {
                let set = codec::find_attr(d, 1).map(codec::attr_string);
                self.out
                    .push(format!("update @{}", set.unwrap_or_default()));
            }
            "notrack" => self.out.push("notrack".into()),
            other => self.out.push(format!("[{other}]")),
        }
    }

    fn load(&mut self, d: &[u8], dreg_attr: u16, text: &str, kind: ValueKind, len: usize) {
        if let Some(reg) = attr_u32(d, dreg_attr) {
            let held = Held {
                text: text.to_string(),
                kind,
                len,
                prefix: None,
            };
            self.regs.insert(word(reg), held);
        }
    }

    fn payload(&mut self, d: &[u8]) {
        let (base, offset, len) = (
            attr_u32(d, 2).unwrap_or(0),
            attr_u32(d, 3).unwrap_or(0),
            attr_u32(d, 4).unwrap_or(0),
        );
        let (text, kind) = match (base, offset, len) {
            (1, 12, 4) => ("ip saddr".to_string(), ValueKind::Addr),
            (1, 16, 4) => ("ip daddr".to_string(), ValueKind::Addr),
            (1, 8, 16) => ("ip6 saddr".to_string(), ValueKind::Addr),
            (1, 24, 16) => ("ip6 daddr".to_string(), ValueKind::Addr),
            (1, 9, 1) => ("ip protocol".to_string(), ValueKind::L4Proto),
            (2, 0, 2) => ("th sport".to_string(), ValueKind::Port),
            (2, 2, 2) => ("th dport".to_string(), ValueKind::Port),
            (base, offset, len) => {
                let b = ["ll", "nh", "th", "ih"].get(base as usize).unwrap_or(&"?");
                (
                    format!("@{b},{},{}", offset * 8, len * 8),
                    ValueKind::Number,
                )
            }
        };
        self.load(d, 1, &text, kind, len as usize);
    }

    fn meta(&mut self, d: &[u8]) {
        let key = attr_u32(d, 2).unwrap_or(u32::MAX);
        let (name, kind) = match key {
            1 => ("meta protocol", ValueKind::Number),
            3 => ("meta mark", ValueKind::Number),
            4 => ("meta iif", ValueKind::Number),
            5 => ("meta oif", ValueKind::Number),
            6 => ("iifname", ValueKind::IfName),
            7 => ("oifname", ValueKind::IfName),
            12 => ("meta nftrace", ValueKind::Number),
            15 => ("meta nfproto", ValueKind::NfProto),
            16 => ("meta l4proto", ValueKind::L4Proto),
            _ => ("meta ?", ValueKind::Number),
        };
        if let Some(sreg) = attr_u32(d, 3) {
            let value = self.reg_text(sreg);
            self.out.push(format!("{name} set {value}"));
        } else {
            let len = if kind == ValueKind::IfName { 16 } else { 4 };
            self.load(d, 1, name, kind, len);
        }
    }

    fn ct(&mut self, d: &[u8]) {
        let key = attr_u32(d, 2).unwrap_or(u32::MAX);
        let dir = codec::find_attr(d, 3).and_then(|b| b.first().copied());
        let dir = match dir {
            Some(0) => " original",
            Some(1) => " reply",
            _ => "",
        };
        let (name, kind, len) = match key {
            0 => ("state".to_string(), ValueKind::CtState, 4),
            2 => ("status".to_string(), ValueKind::CtStatus, 4),
            3 => ("mark".to_string(), ValueKind::Number, 4),
            12 => (
                format!("{dir} proto-dst").trim().to_string(),
                ValueKind::Port,
                2,
            ),
            20 => (
                format!("{dir} ip daddr").trim().to_string(),
                ValueKind::Addr,
                4,
            ),
            22 => (
                format!("{dir} ip6 daddr").trim().to_string(),
                ValueKind::Addr,
                16,
            ),
            k => (format!("key {k}"), ValueKind::Number, 4),
        };
        if let Some(sreg) = attr_u32(d, 4) {
            let value = self.reg_text(sreg);
            self.out.push(format!("ct {name} set {value}"));
        } else {
            self.load(d, 1, &format!("ct {name}"), kind, len);
        }
    }

    fn reg_text(&self, reg: u32) -> String {
        self.regs
            .get(&word(reg))
            .map(|h| h.text.clone())
            .unwrap_or_else(|| format!("reg {reg}"))
    }

    fn cmp(&mut self, d: &[u8]) {
        let reg = word(attr_u32(d, 1).unwrap_or(0));
        let op = match attr_u32(d, 2).unwrap_or(0) {
            0 => "",
            1 => "!= ",
            2 => "< ",
            3 => "<= ",
            4 => "> ",
            _ => ">= ",
        };
        let value = value_bytes(d, 3);
        let Some(held) = self.regs.get(&reg).cloned() else {
            self.out.push(format!("reg {reg} {op}{}", hex(&value)));
            return;
        };
        if held.kind == ValueKind::CtStateMasked {
            // `ct state & MASK != 0` was written as `ct state a,b`.
            return self.out.push(held.text);
        }
        let mut shown = format_value(held.kind, &value);
        if let Some(bits) = held.prefix {
            shown.push_str(&format!("/{bits}"));
        }
        self.out.push(format!("{} {op}{shown}", held.text));
    }

    fn bitwise(&mut self, d: &[u8]) {
        let (sreg, dreg) = (
            word(attr_u32(d, 1).unwrap_or(0)),
            word(attr_u32(d, 2).unwrap_or(0)),
        );
        let (mask, xor) = (value_bytes(d, 4), value_bytes(d, 5));
        let Some(mut held) = self.regs.get(&sreg).cloned() else {
            return;
        };
        match held.kind {
            ValueKind::CtState => {
                held.text = format!("{} {}", held.text, ct_states(&mask));
                held.kind = ValueKind::CtStateMasked;
            }
            ValueKind::CtStatus if xor.iter().all(|b| *b == 0) => {
                held.text = format!("{} {}", held.text, ct_statuses(&mask));
                held.kind = ValueKind::CtStateMasked;
            }
            ValueKind::Addr => {
                held.prefix = Some(mask.iter().map(|b| b.count_ones()).sum());
            }
            _ => held.text = format!("{} {}", held.text, mask_text(&mask, &xor)),
        }
        self.regs.insert(dreg, held);
    }

    fn lookup(&mut self, d: &[u8]) {
        let set = codec::find_attr(d, 1)
            .map(codec::attr_string)
            .unwrap_or_default();
        let key = self.concat_text(word(attr_u32(d, 2).unwrap_or(0)));
        let inverted = attr_u32(d, 5).unwrap_or(0) & 1 != 0;
        if let Some(dreg) = attr_u32(d, 3) {
            let held = Held {
                text: format!("{key} map @{set}"),
                kind: ValueKind::Number,
                len: 4,
                prefix: None,
            };
            self.regs.insert(word(dreg), held);
            // A map whose result is a verdict decides the rule here.
            if dreg == 0 {
                self.out.push(format!("{key} vmap @{set}"));
            }
            return;
        }
        let op = if inverted { "!= " } else { "" };
        self.out.push(format!("{key} {op}@{set}"));
    }

    /// The fields of a concatenated key that starts at register word `start`.
    fn concat_text(&self, start: u32) -> String {
        let mut parts = Vec::new();
        let mut w = start;
        while let Some(h) = self.regs.get(&w) {
            parts.push(h.text.clone());
            w += h.len.div_ceil(4).max(1) as u32;
            if parts.len() > 8 {
                break;
            }
        }
        if parts.is_empty() {
            return format!("reg {start}");
        }
        parts.join(" . ")
    }

    fn immediate(&mut self, d: &[u8]) {
        let dreg = attr_u32(d, 1).unwrap_or(0);
        let data = codec::find_attr(d, 2).unwrap_or(&[]);
        if let Some(verdict) = codec::find_attr(data, 2).and_then(parse_verdict) {
            self.out.push(verdict.to_string());
            return;
        }
        let value = codec::find_attr(data, 1).unwrap_or(&[]).to_vec();
        let held = Held {
            text: format_number(&value),
            kind: ValueKind::Number,
            len: value.len(),
            prefix: None,
        };
        self.regs.insert(word(dreg), held);
    }

    fn counter(&mut self, d: &[u8]) {
        let u64_of = |ty| codec::find_attr(d, ty).and_then(be_u64).unwrap_or(0);
        self.out
            .push(format!("counter packets {} bytes {}", u64_of(2), u64_of(1)));
    }

    /// A named counter, or one chosen by an object map for a register's key.
    fn objref(&mut self, d: &[u8]) {
        if let Some(set) = codec::find_attr(d, 4).map(codec::attr_string) {
            let key = self.reg_text(attr_u32(d, 3).unwrap_or(0));
            self.out.push(format!("counter name {key} map @{set}"));
            return;
        }
        let name = codec::find_attr(d, 2).map(codec::attr_string);
        self.out
            .push(format!("counter name \"{}\"", name.unwrap_or_default()));
    }

    fn log(&mut self, d: &[u8]) {
        let mut s = "log".to_string();
        if let Some(p) = codec::find_attr(d, 2) {
            s.push_str(&format!(" prefix \"{}\"", codec::attr_string(p)));
        }
        if let Some(g) = codec::find_attr(d, 1).and_then(|b| b.get(0..2)) {
            s.push_str(&format!(" group {}", u16::from_be_bytes([g[0], g[1]])));
        }
        self.out.push(s);
    }

    /// `dnat ip to ADDR:PORT`, or `dnat ip to KEY map @set` when a map gives both.
    fn nat(&mut self, d: &[u8]) {
        let kind = if attr_u32(d, 1) == Some(0) {
            "snat"
        } else {
            "dnat"
        };
        let family = if attr_u32(d, 2) == Some(10) {
            "ip6"
        } else {
            "ip"
        };
        let addr = attr_u32(d, 3).map(|r| self.reg_text(r)).unwrap_or_default();
        let mut s = format!("{kind} {family} to {addr}");
        if let Some(p) = attr_u32(d, 5).map(|r| self.reg_text(r)) {
            if !addr.contains(" map @") {
                s.push_str(&format!(":{p}"));
            }
        }
        self.out.push(s);
    }

    /// `reject` (ICMP port unreachable, nft's default), or `reject with ...`.
    fn reject(&mut self, d: &[u8]) {
        let code = codec::find_attr(d, 2).and_then(|b| b.first().copied());
        let text = match (attr_u32(d, 1), code) {
            (Some(1), _) => "reject with tcp reset".to_string(),
            (Some(2), Some(1)) | (None, _) => "reject".to_string(),
            (Some(2), Some(c)) => format!("reject with icmpx {c}"),
            (Some(t), c) => format!("reject with type {t} code {}", c.unwrap_or(0)),
        };
        self.out.push(text);
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut s = "0x".to_string();
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn format_number(bytes: &[u8]) -> String {
    match bytes.len() {
        1 => bytes[0].to_string(),
        2 => u16::from_be_bytes([bytes[0], bytes[1]]).to_string(),
        4 => match <[u8; 4]>::try_from(bytes) {
            Ok(b) => IpAddr::from(b).to_string(),
            Err(_) => hex(bytes),
        },
        16 => match <[u8; 16]>::try_from(bytes) {
            Ok(b) => IpAddr::from(b).to_string(),
            Err(_) => hex(bytes),
        },
        _ => hex(bytes),
    }
}

fn format_value(kind: ValueKind, v: &[u8]) -> String {
    match kind {
        ValueKind::Addr => format_number(v),
        ValueKind::Port if v.len() >= 2 => u16::from_be_bytes([v[0], v[1]]).to_string(),
        ValueKind::L4Proto if v.len() == 1 => match v[0] {
            6 => "tcp".into(),
            17 => "udp".into(),
            1 => "icmp".into(),
            58 => "ipv6-icmp".into(),
            n => n.to_string(),
        },
        ValueKind::NfProto if v.len() == 1 => match v[0] {
            2 => "ipv4".into(),
            10 => "ipv6".into(),
            n => n.to_string(),
        },
        ValueKind::IfName => format!("\"{}\"", codec::attr_string(v)),
        ValueKind::FibType if v.len() == 4 => {
            let types = [
                "unspec",
                "unicast",
                "local",
                "broadcast",
                "anycast",
                "multicast",
                "blackhole",
                "unreachable",
                "prohibit",
            ];
            let t = u32::from_ne_bytes([v[0], v[1], v[2], v[3]]) as usize;
            types
                .get(t)
                .map_or_else(|| t.to_string(), |n| n.to_string())
        }
        _ if v.len() == 4 => u32::from_ne_bytes([v[0], v[1], v[2], v[3]]).to_string(),
        _ => hex(v),
    }
}

/// `& MASK`, or `| BITS` when the mask keeps everything but the bits set
/// (32-bit values such as marks are host order, as the kernel computes them).
fn mask_text(mask: &[u8], xor: &[u8]) -> String {
    let host = |b: &[u8]| <[u8; 4]>::try_from(b).ok().map(u32::from_ne_bytes);
    match (host(mask), host(xor)) {
        (Some(m), Some(x)) if x != 0 && m == !x => format!("| 0x{x:x}"),
        (Some(m), Some(0) | None) => format!("& 0x{m:x}"),
        (Some(m), Some(x)) => format!("& 0x{m:x} ^ 0x{x:x}"),
        _ => format!("& {}", hex(mask)),
    }
}

/// The conntrack status flags of a mask, by name.
fn ct_statuses(mask: &[u8]) -> String {
    let names = [
        (0x10, "snat"),
        (0x20, "dnat"),
        (0x8, "confirmed"),
        (0x2, "seen-reply"),
    ];
    flag_names(mask, &names).unwrap_or_else(|| match <[u8; 4]>::try_from(mask) {
        Ok(b) => format!("& 0x{:x}", u32::from_ne_bytes(b)),
        Err(_) => hex(mask),
    })
}

fn ct_states(mask: &[u8]) -> String {
    let names = [
        (1, "invalid"),
        (2, "established"),
        (4, "related"),
        (8, "new"),
    ];
    flag_names(mask, &names).unwrap_or_else(|| hex(mask))
}

/// The names of the bits a host-order 32-bit mask holds; `None` when it
/// holds none of them (or is not 32 bits).
fn flag_names(mask: &[u8], names: &[(u32, &str)]) -> Option<String> {
    let bits = u32::from_ne_bytes(<[u8; 4]>::try_from(mask).ok()?);
    let shown: Vec<&str> = names
        .iter()
        .filter(|(b, _)| bits & b != 0)
        .map(|(_, n)| *n)
        .collect();
    (!shown.is_empty()).then(|| shown.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nftables::build::ct_state_any;
    use crate::nftables::ruleset::{consts::*, CmpOp, Expr, Rule};
    use crate::nftables::wire::rule_expressions;

    fn render(exprs: Vec<Expr>) -> String {
        let rule = Rule {
            exprs,
            comment: String::new(),
        };
        render_expressions(&rule_expressions(&rule))
    }

    #[test]
    fn renders_matches_lookups_and_verdicts() {
        let text = render(vec![
            Expr::MetaLoad {
                key: META_L4PROTO,
                dreg: reg(0),
            },
            Expr::CmpReg(CmpOp::Eq, reg(0), vec![6]),
            Expr::PayloadLoad {
                base: PAYLOAD_NETWORK,
                offset: 16,
                len: 4,
                dreg: reg(0),
            },
            Expr::CmpReg(CmpOp::Neq, reg(0), vec![10, 96, 0, 10]),
            Expr::PayloadLoad {
                base: PAYLOAD_NETWORK,
                offset: 12,
                len: 4,
                dreg: reg(0),
            },
            Expr::PayloadLoad {
                base: PAYLOAD_TRANSPORT,
                offset: 2,
                len: 2,
                dreg: reg(1),
            },
            Expr::Lookup {
                set: "allowed".into(),
                sreg: reg(0),
                dreg: None,
            },
            Expr::Counter,
            Expr::Jump("svc-x".into()),
        ]);
        assert_eq!(
            text,
            "meta l4proto tcp ip daddr != 10.96.0.10 ip saddr . th dport @allowed \
             counter packets 0 bytes 0 jump svc-x"
        );
    }

    #[test]
    fn renders_prefixes() {
        let text = render(vec![
            Expr::PayloadLoad {
                base: PAYLOAD_NETWORK,
                offset: 12,
                len: 4,
                dreg: reg(0),
            },
            Expr::Bitwise {
                reg: reg(0),
                mask: vec![255, 255, 255, 0],
                xor: vec![0; 4],
            },
            Expr::CmpReg(CmpOp::Eq, reg(0), vec![10, 244, 0, 0]),
            Expr::Masquerade,
        ]);
        assert_eq!(text, "ip saddr 10.244.0.0/24 masquerade");
    }

    #[test]
    fn renders_ct_state_and_drop() {
        let mut exprs = ct_state_any(CT_STATE_ESTABLISHED | CT_STATE_RELATED);
        exprs.push(Expr::Drop);
        let text = render(exprs);
        assert_eq!(text, "ct state established,related drop");
    }
}
