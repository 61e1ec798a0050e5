//! The kernel's explanations, in real namespaces: route decisions on the
//! input path, nf_tables trace events, probe outcomes, counters, rule text.
//!
//! Topology: `a` (10.61.1.2) -- `r` (10.61.1.1 | 10.61.2.1) -- `b` (10.61.2.2).

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::time::Duration;

use podnet_kernel::nftables::build::{set_nftrace, ChainDef};
use podnet_kernel::nftables::{
    ChainKind, Family, Hook, NftHandle, Rule, TraceKind, TraceWatch, Transaction, Verdict,
};
use podnet_kernel::probe::{self, ProbeOutcome, ProbeProto, ProbeSpec};
use podnet_kernel::rtnl::{RouteKind, RouteQuery};
use podnet_kernel::{counters, Route, RouteHandle, VethSpec};
use podnet_testkit::{require_root, NetnsGuard};

struct Chain3 {
    a: NetnsGuard,
    r: NetnsGuard,
    b: NetnsGuard,
}

fn veth(left: &NetnsGuard, lname: &str, right: &NetnsGuard, rname: &str) {
    let mut h = RouteHandle::in_netns(left.netns()).unwrap();
    h.create_veth(&VethSpec {
        name: lname,
        peer_name: rname,
        peer_netns: right.netns().as_fd(),
        mtu: 1500,
        mac: None,
        master: None,
        group: 0,
    })
    .unwrap();
}

fn address(ns: &NetnsGuard, ifname: &str, net: &str) -> u32 {
    let mut h = RouteHandle::in_netns(ns.netns()).unwrap();
    let l = h.link_by_name(ifname).unwrap().expect("link");
    h.replace_address(l.index, net.parse().unwrap()).unwrap();
    h.set_up(l.index).unwrap();
    l.index
}

fn chain3() -> Chain3 {
    let c = Chain3 {
        a: NetnsGuard::new("xa"),
        r: NetnsGuard::new("xr"),
        b: NetnsGuard::new("xb"),
    };
    veth(&c.a, "eth0", &c.r, "ra");
    veth(&c.b, "eth0", &c.r, "rb");
    let a0 = address(&c.a, "eth0", "10.61.1.2/24");
    address(&c.r, "ra", "10.61.1.1/24");
    address(&c.r, "rb", "10.61.2.1/24");
    let b0 = address(&c.b, "eth0", "10.61.2.2/24");
    let default = "0.0.0.0/0".parse().unwrap();
    RouteHandle::in_netns(c.a.netns())
        .unwrap()
        .replace_route(&Route::via(default, "10.61.1.1".parse().unwrap(), a0, 4))
        .unwrap();
    RouteHandle::in_netns(c.b.netns())
        .unwrap()
        .replace_route(&Route::via(default, "10.61.2.1".parse().unwrap(), b0, 4))
        .unwrap();
    c.r.exec_ok(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    c
}

fn spec(proto: ProbeProto, port: u16, size: usize) -> ProbeSpec {
    ProbeSpec {
        src: None,
        sport: 47001,
        dst: SocketAddr::new("10.61.2.2".parse().unwrap(), port),
        proto,
        size,
        timeout: Duration::from_millis(1500),
    }
}

fn trace_table(ns: &NetnsGuard) {
    let mut tx = Transaction::new(Family::Inet, "trace");
    let set_trace = set_nftrace().to_vec();
    for (name, hook) in [("pre", Hook::Prerouting), ("out", Hook::Output)] {
        let chain = ChainDef {
            name: name.into(),
            kind: ChainKind::Base {
                ty: "filter",
                hook,
                priority: -350,
            },
            rules: vec![Rule {
                exprs: set_trace.clone(),
                comment: "trace".into(),
            }],
        };
        tx.replace_chains(&[chain], &[]);
    }
    NftHandle::in_netns(ns.netns())
        .unwrap()
        .commit(tx, "add trace table")
        .unwrap();
}

#[test]
fn route_decisions_run_the_input_path() {
    require_root();
    let c = chain3();
    let mut h = RouteHandle::in_netns(c.r.netns()).unwrap();
    let ra = h.link_by_name("ra").unwrap().expect("ra").index;
    let rb = h.link_by_name("rb").unwrap().expect("rb").index;
    let q = RouteQuery {
        dst: "10.61.2.2".parse().unwrap(),
        src: Some("10.61.1.2".parse().unwrap()),
        iif: Some(ra),
        proto: Some((6, 47001, 80)),
    };
    let d = h.route_get(&q).expect("forwarded");
    assert_eq!((d.kind, d.oif), (RouteKind::Unicast, Some(rb)));
    assert_eq!(
        d.dst,
        "10.61.2.0/24".parse().unwrap(),
        "fibmatch names the prefix"
    );

    let local = h
        .route_get(&RouteQuery {
            dst: "10.61.1.1".parse().unwrap(),
            ..q.clone()
        })
        .expect("local");
    assert_eq!(local.kind, RouteKind::Local);

    let none = h.route_get(&RouteQuery {
        dst: "10.99.0.1".parse().unwrap(),
        ..q.clone()
    });
    assert_eq!(none.expect_err("no route").errno(), Some(libc::ENETUNREACH));

    // A source that the reverse path would not send back through `rb`.
    c.r.exec_ok(&["sysctl", "-qw", "net.ipv4.conf.all.rp_filter=1"]);
    let spoofed = h.route_get(&RouteQuery {
        iif: Some(rb),
        dst: "10.61.1.2".parse().unwrap(),
        src: Some("10.61.1.9".parse().unwrap()),
        proto: None,
    });
    assert_eq!(spoofed.expect_err("rp_filter").errno(), Some(libc::EINVAL));
}

#[test]
fn probes_report_answers_refusals_and_icmp_errors() {
    require_root();
    let c = chain3();
    let a = c.a.netns();
    // Nothing listens in b: TCP is reset, UDP draws port unreachable.
    let b_ip: IpAddr = "10.61.2.2".parse().unwrap();
    let tcp = probe::send_in(a, &spec(ProbeProto::Tcp, 80, 60)).unwrap();
    assert_eq!(tcp, ProbeOutcome::Refused { from: b_ip });
    let udp = probe::send_in(a, &spec(ProbeProto::Udp, 80, 100)).unwrap();
    assert_eq!(udp, ProbeOutcome::Refused { from: b_ip });
    let ping = probe::send_in(a, &spec(ProbeProto::Icmp, 0, 84)).unwrap();
    assert_eq!(ping, ProbeOutcome::Answered { from: b_ip });

    // The router loses its route to b: ICMP net unreachable, sent by r.
    let r_ip: IpAddr = "10.61.1.1".parse().unwrap();
    c.r.exec_ok(&["ip", "route", "del", "10.61.2.0/24"]);
    let before = counters::read_in(c.r.netns()).unwrap();
    for proto in [ProbeProto::Tcp, ProbeProto::Udp] {
        let o = probe::send_in(a, &spec(proto, 80, 100)).unwrap();
        assert!(
            matches!(o, ProbeOutcome::Icmp { from, icmp_type: 3, code: 0, .. } if from == r_ip),
            "{proto:?}: {o:?}"
        );
    }
    let after = counters::read_in(c.r.netns()).unwrap();
    let grown = counters::grown(&before, &after);
    assert!(
        grown.iter().any(|(k, _)| k == "IpExtInNoRoutes"),
        "{grown:?}"
    );
    c.r.exec_ok(&["ip", "route", "add", "10.61.2.0/24", "dev", "rb"]);

    // A smaller MTU towards b: with DF the router answers "fragmentation needed".
    c.r.exec_ok(&["ip", "link", "set", "rb", "mtu", "1200"]);
    let big = probe::send_in(a, &spec(ProbeProto::Udp, 80, 1400)).unwrap();
    assert_eq!(
        big,
        ProbeOutcome::Icmp {
            from: r_ip,
            icmp_type: 3,
            code: 4,
            mtu: Some(1200)
        }
    );
    // Above the sender's own MTU the kernel refuses to send at all.
    let huge = probe::send_in(a, &spec(ProbeProto::Udp, 80, 1600)).unwrap();
    assert!(
        matches!(
            huge,
            ProbeOutcome::Local {
                errno: libc::EMSGSIZE,
                ..
            }
        ),
        "{huge:?}"
    );
}

#[test]
fn trace_events_name_rules_and_policies_in_each_namespace() {
    require_root();
    let c = chain3();
    for ns in [&c.a, &c.r] {
        trace_table(ns);
    }
    c.r.exec_ok(&[
        "nft",
        "add table inet lockdown; add chain inet lockdown gate { type filter hook forward priority 0; policy drop; }; \
         add rule inet lockdown gate tcp dport 22 counter accept",
    ]);
    let mut watch_a = TraceWatch::open_in(c.a.netns()).unwrap();
    let mut watch_r = TraceWatch::open_in(c.r.netns()).unwrap();
    let o = probe::send_in(c.a.netns(), &spec(ProbeProto::Udp, 80, 100)).unwrap();
    assert_eq!(o, ProbeOutcome::Timeout, "the forward policy drops it");
    let quiet = Duration::from_millis(200);
    let at_a = watch_a.collect(Duration::from_secs(2), quiet).unwrap();
    let at_r = watch_r.collect(Duration::from_secs(2), quiet).unwrap();
    assert!(
        at_a.iter()
            .any(|e| e.chain == "out" && e.kind == TraceKind::Policy),
        "{at_a:?}"
    );
    let drop = at_r
        .iter()
        .find(|e| e.table == "lockdown" && e.kind == TraceKind::Policy)
        .unwrap_or_else(|| panic!("policy event at r: {at_r:?}"));
    assert_eq!(drop.chain, "gate");
    assert_eq!(drop.verdict, Some(Verdict::Drop));
    // Headers come with the first event of each hook, not with every event.
    let header = at_r
        .iter()
        .find(|e| e.id == drop.id && !e.network_header.is_empty())
        .map(|e| e.network_header.clone())
        .unwrap_or_else(|| panic!("a header: {at_r:?}"));
    assert_eq!(&header[16..20], &[10, 61, 2, 2]);

    let mut nft = NftHandle::in_netns(c.r.netns()).unwrap();
    let fwd = nft
        .chains()
        .unwrap()
        .into_iter()
        .find(|ch| ch.table == "lockdown")
        .expect("chain");
    assert_eq!(fwd.hook_name(), Some("forward"));
    assert!(fwd.drops_by_default());
    let rules = nft.rules().unwrap();
    let rule = rules.iter().find(|r| r.table == "lockdown").expect("rule");
    assert_eq!(
        rule.text,
        "meta l4proto tcp th dport 22 counter packets 0 bytes 0 accept"
    );
    assert!(nft.delete_table(Family::Inet, "trace").unwrap());
    assert!(!nft.delete_table(Family::Inet, "trace").unwrap());
}
