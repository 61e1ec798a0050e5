//! The service proxy against the real kernel, in a namespace of its own.
//!
//! The namespace is both client and endpoints: endpoint addresses sit on `lo`,
//! the service CIDR is routed locally, and a client connecting to a cluster IP
//! goes through the nat output hook, where the proxy's rules divert it.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
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
        let addr: SocketAddr = format!("{a}:{port}").parse().unwrap();
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
    let mut seen = BTreeMap::new();
    for _ in 0..60 {
        let who = ask_tcp(&ns, "10.96.0.10:80").unwrap();
        *seen.entry(who).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 3, "all three endpoints answer: {seen:?}");
    let err = ask_tcp(&ns, "10.96.0.11:80").unwrap_err();
    assert!(err.contains("refused"), "no endpoints: {err}");

    // One endpoint removed: new connections never reach it.
    let r = proxy
        .update(vec![Change::Upsert(
            web.clone(),
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
    let _ = UdpSocket::bind("127.0.0.1:0");
}
