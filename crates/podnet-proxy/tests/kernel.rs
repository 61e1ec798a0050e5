//! The service proxy against the real kernel, in a namespace of its own.
//!
//! The namespace is both client and endpoints: endpoint addresses sit on `lo`,
//! the service CIDR is routed locally, and a client connecting to a cluster IP
//! goes through the nat output hook, where the proxy's rules divert it.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use podnet_kernel::nftables::{Family, NftHandle};
use podnet_proxy::{Change, ServiceProxy, TABLE};
use podnet_services::{Endpoints, Service};
use podnet_testkit::{require_root, NetnsGuard};

fn svc(v: serde_json::Value) -> Service {
    serde_json::from_value(v).unwrap()
}

fn eps(name: &str, addrs: &[&str]) -> Endpoints {
    let list: Vec<serde_json::Value> = addrs
        .iter()
        .map(|a| serde_json::json!({"address": a, "node": "n1"}))
        .collect();
    serde_json::from_value(serde_json::json!({"name": name, "endpoints": list})).unwrap()
}

/// A namespace with `lo` holding the endpoint addresses and the service CIDR routed locally.
fn node(backends: &[&str]) -> NetnsGuard {
    let ns = NetnsGuard::new("proxy");
    for b in backends {
        ns.exec_ok(&["ip", "addr", "add", &format!("{b}/32"), "dev", "lo"]);
    }
    ns.exec_ok(&["ip", "route", "add", "local", "10.96.0.0/12", "dev", "lo"]);
    ns
}

/// Echo servers on `addr:port` in `ns` answering their own address (threads end with the test process).
fn serve_tcp(ns: &NetnsGuard, addrs: &[&str], port: u16) {
    for a in addrs {
        let ip: std::net::IpAddr = a.parse().unwrap();
        let addr = SocketAddr::new(ip, port);
        let l = ns
            .netns()
            .run(move || TcpListener::bind(addr))
            .unwrap()
            .unwrap();
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(mut c) = c else { continue };
                let local = c.local_addr().unwrap().ip();
                let _ = writeln!(c, "{local}");
            }
        });
    }
}

fn ask_tcp(ns: &NetnsGuard, to: &str) -> Result<String, String> {
    let addr: SocketAddr = to.parse().unwrap();
    let s = ns
        .netns()
        .run(move || TcpStream::connect_timeout(&addr, Duration::from_secs(2)))
        .unwrap()
        .map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut line = String::new();
    BufReader::new(s)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    Ok(line.trim().to_string())
}

/// How many of `n` connections to `to` each endpoint answered.
fn spread(ns: &NetnsGuard, to: &str, n: usize) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        *seen.entry(ask_tcp(ns, to).unwrap()).or_insert(0) += 1;
    }
    seen
}

#[test]
fn cluster_ip_balances_rejects_without_endpoints_and_follows_changes() {
    require_root();
    let backends = ["10.244.0.2", "10.244.0.3", "10.244.0.4"];
    let ns = node(&backends);
    serve_tcp(&ns, &backends, 8080);
    let mut proxy = ServiceProxy::new("n1", Some(ns.netns())).unwrap();
    let web = svc(serde_json::json!({
        "name": "web", "clusterIP": "10.96.0.10", "ports": [{"port": 80, "targetPort": 8080}]
    }));
    let empty = svc(serde_json::json!({
        "name": "empty", "clusterIP": "10.96.0.11", "ports": [{"port": 80}]
    }));
    let r = proxy
        .sync(vec![
            (web.clone(), Some(eps("web", &backends))),
            (empty.clone(), None),
        ])
        .unwrap();
    assert!(r.chains_written, "{r:?}");
    let listing = ns.exec_ok(&["nft", "list", "table", "inet", TABLE]);
    println!("{listing}");
    assert!(
        listing.contains("numgen random mod 3") && listing.contains("map lb4-3"),
        "{listing}"
    );
    let seen = spread(&ns, "10.96.0.10:80", 60);
    assert_eq!(seen.len(), 3, "all three endpoints answer: {seen:?}");
    let err = ask_tcp(&ns, "10.96.0.11:80").unwrap_err();
    assert!(err.contains("refused"), "no endpoints: {err}");

    // One endpoint removed: new connections never reach it.
    let r = proxy
        .update(vec![Change::Upsert(
            Box::new(web.clone()),
            Some(eps("web", &backends[..2])),
        )])
        .unwrap();
    assert!(
        r.chains_written,
        "size 3 to size 2 changes the layout: {r:?}"
    );
    for _ in 0..30 {
        assert_ne!(ask_tcp(&ns, "10.96.0.10:80").unwrap(), "10.244.0.4");
    }
    // A sync of the same state changes nothing.
    let r = proxy
        .sync(vec![
            (web.clone(), Some(eps("web", &backends[..2]))),
            (empty.clone(), None),
        ])
        .unwrap();
    assert!(r.unchanged(), "{r:?}");
    proxy.remove_all().unwrap();
    let mut nft = NftHandle::in_netns(ns.netns()).unwrap();
    assert!(nft.chain_names(Family::Inet, TABLE).unwrap().is_empty());
}

/// Every element of every set of the table, as `set: key => data` lines, sorted.
/// Every element of the table, listed until two listings agree: a dump of a
/// hash set the kernel is still growing (it resizes in the background after
/// a bulk insert) can show an element twice and miss another.
fn table_elements(nft: &mut NftHandle) -> Vec<String> {
    let mut last = list_elements(nft);
    for _ in 0..50 {
        let again = list_elements(nft);
        if again == last {
            return again;
        }
        last = again;
    }
    panic!("the table's listing never settled");
}

fn list_elements(nft: &mut NftHandle) -> Vec<String> {
    let mut out = Vec::new();
    for set in nft.set_names(Family::Inet, TABLE).unwrap() {
        for e in nft.set_elements(Family::Inet, TABLE, &set).unwrap() {
            out.push(format!("{set}: {:?} => {:?}", e.key, e.data));
        }
    }
    out.sort();
    out
}

fn rules(ns: &NetnsGuard) -> String {
    let text = ns.exec_ok(&["nft", "-a", "list", "table", "inet", TABLE]);
    text.lines()
        .filter(|l| l.contains("comment"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn one_change_among_10000_services_touches_only_that_service() {
    require_root();
    let ns = NetnsGuard::new("proxy10k");
    let mut proxy = ServiceProxy::new("n1", Some(ns.netns())).unwrap();
    let service = |i: u32| {
        svc(serde_json::json!({
            "name": format!("s{i}"),
            "clusterIP": format!("10.96.{}.{}", i / 250, i % 250 + 1),
            "ports": [{"port": 80, "targetPort": 8080}]
        }))
    };
    let endpoints = |i: u32, n: u32| {
        let addrs: Vec<String> = (0..n)
            .map(|k| format!("10.244.{}.{}", k, i % 250 + 1))
            .collect();
        let refs: Vec<&str> = addrs.iter().map(String::as_str).collect();
        let mut e = eps(&format!("s{i}"), &refs);
        e.endpoints.iter_mut().for_each(|e| e.node = "n2".into());
        e
    };
    let all: Vec<_> = (0..10_000)
        .map(|i| (service(i), Some(endpoints(i, 3))))
        .collect();
    let r = proxy.sync(all).unwrap();
    assert_eq!(r.added, 30_000, "{r:?}");
    let mut nft = NftHandle::in_netns(ns.netns()).unwrap();
    let before = table_elements(&mut nft);
    let rules_before = rules(&ns);
    assert_eq!(before.len(), 30_000);

    // Service 4242 loses one of its three endpoints' addresses to a new one.
    let mut changed = endpoints(4242, 3);
    changed.endpoints[2].address = "10.244.9.9".parse().unwrap();
    let r = proxy
        .update(vec![Change::Upsert(Box::new(service(4242)), Some(changed))])
        .unwrap();
    assert_eq!(
        (r.added, r.deleted, r.chains_written),
        (1, 1, false),
        "{r:?}"
    );
    let after = table_elements(&mut nft);
    let gone: Vec<&String> = before.iter().filter(|l| !after.contains(l)).collect();
    let new: Vec<&String> = after.iter().filter(|l| !before.contains(l)).collect();
    // 10.96.16.243 is service 4242's cluster IP.
    let own_key = "[10, 96, 16, 243, 6, 0, 0, 0, 0, 80, 0, 0, 2, 0, 0, 0]";
    assert_eq!(gone.len(), 1, "{gone:?}");
    assert_eq!(new.len(), 1, "{new:?}");
    assert!(
        gone[0].contains(own_key) && new[0].contains(own_key),
        "{gone:?} {new:?}"
    );
    assert!(new[0].contains("[10, 244, 9, 9, 31, 144, 0, 0]"), "{new:?}");
    // Rules and their handles are untouched.
    assert_eq!(rules(&ns), rules_before);
    proxy.remove_all().unwrap();
}

#[test]
fn sync_repairs_drift_and_adopts_an_existing_table() {
    require_root();
    let backends = ["10.244.0.2", "10.244.0.3"];
    let ns = node(&backends);
    serve_tcp(&ns, &backends, 8080);
    let web = svc(serde_json::json!({
        "name": "web", "clusterIP": "10.96.0.10", "ports": [{"port": 80, "targetPort": 8080}]
    }));
    let state = vec![(web.clone(), Some(eps("web", &backends)))];
    let mut first = ServiceProxy::new("n1", Some(ns.netns())).unwrap();
    first.sync(state.clone()).unwrap();
    // An established connection through the service, kept open.
    let addr: SocketAddr = "10.96.0.10:80".parse().unwrap();
    let held = ns
        .netns()
        .run(move || TcpStream::connect_timeout(&addr, Duration::from_secs(2)))
        .unwrap()
        .unwrap();
    drop(first);

    // A new proxy (a restarted agent) adopts the table without changing it.
    let mut second = ServiceProxy::new("n1", Some(ns.netns())).unwrap();
    let r = second.sync(state.clone()).unwrap();
    assert!(r.unchanged(), "adoption changed the kernel: {r:?}");
    let mut line = String::new();
    held.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    BufReader::new(&held).read_line(&mut line).unwrap();
    assert!(
        line.starts_with("10.244.0."),
        "held connection answered {line:?}"
    );

    // Someone deletes the DNAT rule and an element; the next sync puts them back.
    podnet_testkit::delete_nft_rule(ns.netns(), TABLE, "services", "dnat");
    ns.exec_ok(&[
        "nft",
        "delete",
        "element",
        "inet",
        TABLE,
        "hairpin4",
        "{ 10.244.0.2 . 10.244.0.2 }",
    ]);
    assert!(
        ask_tcp(&ns, "10.96.0.10:80").is_err(),
        "control: the service is broken"
    );
    let r = second.sync(state).unwrap();
    assert!(r.chains_written && r.added == 1, "{r:?}");
    assert!(ask_tcp(&ns, "10.96.0.10:80")
        .unwrap()
        .starts_with("10.244.0."));
}

#[test]
fn ipv6_cluster_ip_balances_and_rejects() {
    require_root();
    let ns = NetnsGuard::new("proxy6");
    let backends = ["fd00:244::2", "fd00:244::3"];
    for b in backends {
        ns.exec_ok(&[
            "ip",
            "-6",
            "addr",
            "add",
            &format!("{b}/128"),
            "dev",
            "lo",
            "nodad",
        ]);
    }
    ns.exec_ok(&[
        "ip",
        "-6",
        "route",
        "add",
        "local",
        "fd00:96::/108",
        "dev",
        "lo",
    ]);
    serve_tcp(&ns, &backends, 8080);
    let mut proxy = ServiceProxy::new("n1", Some(ns.netns())).unwrap();
    let web = svc(serde_json::json!({
        "name": "web6", "clusterIP": "fd00:96::10", "ports": [{"port": 80, "targetPort": 8080}]
    }));
    let empty = svc(serde_json::json!({
        "name": "empty6", "clusterIP": "fd00:96::11", "ports": [{"port": 80}]
    }));
    proxy
        .sync(vec![(web, Some(eps("web6", &backends))), (empty, None)])
        .unwrap();
    let seen = spread(&ns, "[fd00:96::10]:80", 40);
    assert_eq!(seen.len(), 2, "{seen:?}");
    let err = ask_tcp(&ns, "[fd00:96::11]:80").unwrap_err();
    assert!(err.contains("refused"), "{err}");
}

#[test]
fn no_services_means_no_table_and_the_last_service_takes_it_away() {
    require_root();
    let ns = NetnsGuard::new("proxy0");
    let mut nft = NftHandle::in_netns(ns.netns()).unwrap();
    let mut proxy = ServiceProxy::new("n1", Some(ns.netns())).unwrap();
    proxy.sync(Vec::new()).unwrap();
    assert!(nft.chain_names(Family::Inet, TABLE).unwrap().is_empty());
    let web = svc(serde_json::json!({
        "name": "web", "clusterIP": "10.96.0.10", "ports": [{"port": 80}]
    }));
    proxy
        .update(vec![Change::Upsert(
            Box::new(web.clone()),
            Some(eps("web", &["10.244.0.2"])),
        )])
        .unwrap();
    assert!(nft
        .chain_names(Family::Inet, TABLE)
        .unwrap()
        .contains(&"services".to_string()));
    assert_eq!(
        proxy.programmed(&web.key()),
        Some((web.clone(), Some(eps("web", &["10.244.0.2"]))))
    );
    proxy.update(vec![Change::Delete(web.key())]).unwrap();
    assert!(nft.chain_names(Family::Inet, TABLE).unwrap().is_empty());
    assert!(nft.set_names(Family::Inet, TABLE).unwrap().is_empty());
}
