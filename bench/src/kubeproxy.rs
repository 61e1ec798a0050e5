//! The anchors' rulesets: what kube-proxy writes for the same services, in
//! its iptables mode (iptables-restore input) and in its nftables mode
//! (`nft -f` input). Rule shapes follow kube-proxy 1.31 for ClusterIP
//! services with 3 endpoints (the nat side, where the per-service cost is):
//!
//! - iptables: (in kube-proxy's "large cluster mode", which it enters above
//!   1,000 endpoints: no comments on endpoint rules, to keep the table small)
//!   `KUBE-SERVICES` holds one rule per service port, jumping to a
//!   `KUBE-SVC-*` chain that picks an endpoint with `-m statistic --mode
//!   random --probability` and jumps to one `KUBE-SEP-*` chain per endpoint
//!   (hairpin mark, then DNAT). One change rewrites the top-level chains
//!   whole and the changed service's chains (kube-proxy's partial restore).
//! - nftables: a `service-ips` verdict map jumps to one chain per service,
//!   which marks off-cluster clients for masquerade and then does
//!   `numgen random mod 3 vmap { ... }` into one chain per endpoint.

use std::fmt::Write;
use std::net::Ipv4Addr;

/// One generated service: its cluster IP and its three endpoints.
#[derive(Debug, Clone)]
pub struct GenService {
    /// Index (0-based).
    pub index: usize,
    /// Cluster IP.
    pub vip: Ipv4Addr,
    /// Endpoint addresses (port 8080).
    pub endpoints: [Ipv4Addr; 3],
}

/// Service `i` of the benchmark: cluster IP 10.96.0.0 + 10 + i, endpoints in 10.244.0.0/16.
pub fn service(i: usize) -> GenService {
    let vip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 0)) + 10 + i as u32);
    let base = u32::from(Ipv4Addr::new(10, 244, 0, 0)) + (i as u32 * 3) % 65_000;
    GenService {
        index: i,
        vip,
        endpoints: [0, 1, 2].map(|k| Ipv4Addr::from(base + k + 1)),
    }
}

fn svc_chain(s: &GenService) -> String {
    format!("KUBE-SVC-{:016X}", s.index)
}

fn sep_chain(s: &GenService, ep: Ipv4Addr) -> String {
    format!("KUBE-SEP-{:08X}{:08X}", s.index, u32::from(ep))
}

fn iptables_service_rules(t: &mut String, s: &GenService, endpoints: &[Ipv4Addr]) {
    let name = format!("bench/svc{}:http", s.index);
    let svc = svc_chain(s);
    let _ = writeln!(
        t,
        "-A {svc} -m comment --comment \"{name} cluster IP\" -m tcp -p tcp -d {}/32 --dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ",
        s.vip
    );
    let n = endpoints.len();
    for (k, ep) in endpoints.iter().enumerate() {
        let sep = sep_chain(s, *ep);
        if k + 1 < n {
            let _ = writeln!(
                t,
                "-A {svc} -m statistic --mode random --probability {:.11} -j {sep}",
                1.0 / (n - k) as f64
            );
        } else {
            let _ = writeln!(t, "-A {svc} -j {sep}");
        }
    }
    for ep in endpoints {
        let sep = sep_chain(s, *ep);
        let _ = writeln!(t, "-A {sep} -s {ep}/32 -j KUBE-MARK-MASQ");
        let _ = writeln!(
            t,
            "-A {sep} -m tcp -p tcp -j DNAT --to-destination {ep}:8080"
        );
    }
}

fn iptables_top_level(t: &mut String, services: &[GenService]) {
    let _ = writeln!(
        t,
        "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN"
    );
    let _ = writeln!(t, "-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000");
    let _ = writeln!(
        t,
        "-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully"
    );
    let _ = writeln!(t, "-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000");
    for s in services {
        let _ = writeln!(
            t,
            "-A KUBE-SERVICES -m comment --comment \"bench/svc{}:http cluster IP\" -m tcp -p tcp -d {}/32 --dport 80 -j {}",
            s.index,
            s.vip,
            svc_chain(s)
        );
    }
    let _ = writeln!(
        t,
        "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS"
    );
}

/// `*nat` and the top-level chains (declaring a chain in a restore empties it).
fn nat_header(t: &mut String) {
    t.push_str("*nat\n");
    for c in [
        "KUBE-SERVICES",
        "KUBE-NODEPORTS",
        "KUBE-POSTROUTING",
        "KUBE-MARK-MASQ",
    ] {
        let _ = writeln!(t, ":{c} - [0:0]");
    }
}

/// kube-proxy's first full sync in iptables mode (`iptables-restore --noflush`).
pub fn iptables_full(services: &[GenService]) -> String {
    let mut t = String::with_capacity(services.len() * 1200);
    nat_header(&mut t);
    for s in services {
        let _ = writeln!(t, ":{} - [0:0]", svc_chain(s));
        for ep in s.endpoints {
            let _ = writeln!(t, ":{} - [0:0]", sep_chain(s, ep));
        }
    }
    t.push_str(
        "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n",
    );
    t.push_str("-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n");
    t.push_str("-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n");
    iptables_top_level(&mut t, services);
    for s in services {
        iptables_service_rules(&mut t, s, &s.endpoints);
    }
    t.push_str("COMMIT\n");
    t
}

/// kube-proxy's partial sync after service `changed`'s third endpoint moved
/// from `old` to `new`: top-level chains whole, the service's chains, the
/// stale endpoint chain deleted.
pub fn iptables_one_change(
    services: &[GenService],
    changed: &GenService,
    old: Ipv4Addr,
    new: Ipv4Addr,
) -> String {
    let mut t = String::with_capacity(services.len() * 200);
    nat_header(&mut t);
    let mut eps = changed.endpoints;
    eps[2] = new;
    let _ = writeln!(t, ":{} - [0:0]", svc_chain(changed));
    for ep in eps {
        let _ = writeln!(t, ":{} - [0:0]", sep_chain(changed, ep));
    }
    // Declaring the stale chain empties it, so that it can be deleted below.
    let _ = writeln!(t, ":{} - [0:0]", sep_chain(changed, old));
    iptables_top_level(&mut t, services);
    iptables_service_rules(&mut t, changed, &eps);
    let _ = writeln!(t, "-X {}", sep_chain(changed, old));
    t.push_str("COMMIT\n");
    t
}

fn nft_service_chain(s: &GenService) -> String {
    format!("service-{:08X}-bench/svc{}/tcp/http", s.index, s.index)
}

fn nft_endpoint_chain(s: &GenService, ep: Ipv4Addr) -> String {
    format!(
        "endpoint-{:08X}-bench/svc{}/tcp/http__{ep}/8080",
        u32::from(ep) ^ s.index as u32,
        s.index
    )
}

fn nft_service(t: &mut String, s: &GenService, endpoints: &[Ipv4Addr]) {
    for ep in endpoints {
        let c = nft_endpoint_chain(s, *ep);
        let _ = writeln!(t, "add chain ip kube-proxy {c}");
        let _ = writeln!(
            t,
            "add rule ip kube-proxy {c} ip saddr {ep} jump mark-for-masquerade"
        );
        let _ = writeln!(
            t,
            "add rule ip kube-proxy {c} meta l4proto tcp dnat to {ep}:8080"
        );
    }
    let c = nft_service_chain(s);
    let _ = writeln!(t, "add chain ip kube-proxy {c}");
    nft_service_rules(t, s, endpoints);
}

/// The rules of a service's chain: mark off-cluster clients, then pick an endpoint chain.
fn nft_service_rules(t: &mut String, s: &GenService, endpoints: &[Ipv4Addr]) {
    let c = nft_service_chain(s);
    let _ = writeln!(
        t,
        "add rule ip kube-proxy {c} ip daddr {} tcp dport 80 ip saddr != 10.244.0.0/16 jump mark-for-masquerade",
        s.vip
    );
    let targets: Vec<String> = endpoints
        .iter()
        .enumerate()
        .map(|(k, ep)| format!("{k} : goto {}", nft_endpoint_chain(s, *ep)))
        .collect();
    let _ = writeln!(
        t,
        "add rule ip kube-proxy {c} numgen random mod {} vmap {{ {} }}",
        endpoints.len(),
        targets.join(", ")
    );
}

/// kube-proxy's first full sync in nftables mode (`nft -f`).
pub fn nft_full(services: &[GenService]) -> String {
    let mut t = String::with_capacity(services.len() * 1500);
    t.push_str(
        "add table ip kube-proxy
add map ip kube-proxy service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; }
add map ip kube-proxy service-nodeports { type inet_proto . inet_service : verdict ; }
add chain ip kube-proxy mark-for-masquerade
add rule ip kube-proxy mark-for-masquerade mark set mark or 0x4000
add chain ip kube-proxy masquerading
add rule ip kube-proxy masquerading mark and 0x4000 == 0 return
add rule ip kube-proxy masquerading mark set mark xor 0x4000
add rule ip kube-proxy masquerading masquerade fully-random
add chain ip kube-proxy services
add rule ip kube-proxy services ip daddr . meta l4proto . th dport vmap @service-ips
add rule ip kube-proxy services fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports
add chain ip kube-proxy nat-prerouting { type nat hook prerouting priority -100 ; }
add rule ip kube-proxy nat-prerouting jump services
add chain ip kube-proxy nat-output { type nat hook output priority -100 ; }
add rule ip kube-proxy nat-output jump services
add chain ip kube-proxy nat-postrouting { type nat hook postrouting priority 100 ; }
add rule ip kube-proxy nat-postrouting jump masquerading
",
    );
    for s in services {
        nft_service(&mut t, s, &s.endpoints);
        let _ = writeln!(
            t,
            "add element ip kube-proxy service-ips {{ {} . tcp . 80 : goto {} }}",
            s.vip,
            nft_service_chain(s)
        );
    }
    t
}

/// kube-proxy's nftables transaction after service `changed`'s third
/// endpoint moved from `old` to `new`.
pub fn nft_one_change(changed: &GenService, old: Ipv4Addr, new: Ipv4Addr) -> String {
    let mut t = String::new();
    let mut eps = changed.endpoints;
    eps[2] = new;
    let c = nft_service_chain(changed);
    // New endpoint chain first, then the service chain rewritten, then the old endpoint chain gone.
    let e = nft_endpoint_chain(changed, new);
    let _ = writeln!(t, "add chain ip kube-proxy {e}");
    let _ = writeln!(t, "flush chain ip kube-proxy {e}");
    let _ = writeln!(
        t,
        "add rule ip kube-proxy {e} ip saddr {new} jump mark-for-masquerade"
    );
    let _ = writeln!(
        t,
        "add rule ip kube-proxy {e} meta l4proto tcp dnat to {new}:8080"
    );
    let _ = writeln!(t, "flush chain ip kube-proxy {c}");
    nft_service_rules(&mut t, changed, &eps);
    let o = nft_endpoint_chain(changed, old);
    let _ = writeln!(t, "flush chain ip kube-proxy {o}");
    let _ = writeln!(t, "delete chain ip kube-proxy {o}");
    t
}
