//! The policy firewall against the real kernel: a node namespace forwarding
//! between a pod namespace and a client namespace, with IPv4 and IPv6.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use podnet_firewall::{plan, Firewall, TABLE};
use podnet_kernel::nftables::{NetworkRuleset, NftHandle};
use podnet_policy::model::Protocol;
use podnet_policy::{
    ContainerPort, IpBlock, LabelSelector, NetworkPolicy, Peer, Pod, PolicyPort, PolicyRule,
    PolicySpec, PortRef, World,
};
use podnet_testkit::{require_root, wait_until, NetnsGuard};

/// node (forwarding) with `pod` (10.0.1.2, fd00:1::2) and `client`
/// (10.0.2.2, fd00:2::2) behind it, each on its own veth.
struct Net {
    node: NetnsGuard,
    pod: NetnsGuard,
    client: NetnsGuard,
}

fn net() -> Net {
    let n = Net {
        node: NetnsGuard::new("fw-node"),
        pod: NetnsGuard::new("fw-pod"),
        client: NetnsGuard::new("fw-cli"),
    };
    for (i, end) in [(1, &n.pod), (2, &n.client)] {
        let host = format!("fwv{i}");
        n.node.exec_ok(&[
            "ip",
            "link",
            "add",
            &host,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            end.name(),
        ]);
        n.node
            .exec_ok(&["ip", "addr", "add", &format!("10.0.{i}.1/24"), "dev", &host]);
        n.node.exec_ok(&[
            "ip",
            "addr",
            "add",
            &format!("fd00:{i}::1/64"),
            "dev",
            &host,
            "nodad",
        ]);
        n.node.exec_ok(&["ip", "link", "set", &host, "up"]);
        end.exec_ok(&[
            "ip",
            "addr",
            "add",
            &format!("10.0.{i}.2/24"),
            "dev",
            "eth0",
        ]);
        end.exec_ok(&[
            "ip",
            "addr",
            "add",
            &format!("fd00:{i}::2/64"),
            "dev",
            "eth0",
            "nodad",
        ]);
        end.exec_ok(&["ip", "link", "set", "eth0", "up"]);
        end.exec_ok(&[
            "ip",
            "route",
            "add",
            "default",
            "via",
            &format!("10.0.{i}.1"),
        ]);
        end.exec_ok(&[
            "ip",
            "-6",
            "route",
            "add",
            "default",
            "via",
            &format!("fd00:{i}::1"),
        ]);
    }
    n.node.exec_ok(&[
        "sysctl",
        "-qw",
        "net.ipv4.ip_forward=1",
        "net.ipv6.conf.all.forwarding=1",
    ]);
    // IPv6 neighbours and link-local addresses take a moment to settle.
    for ip in ["10.0.1.2", "fd00:1::2"] {
        assert!(
            wait_until(Duration::from_secs(10), || n.client.ping(ip)),
            "{ip} unreachable"
        );
    }
    // What every podnet node has: the plugin's masquerade chain, hence connection
    // tracking from the first packet of every flow.
    let cluster: ipnet::IpNet = "10.0.0.0/16".parse().unwrap();
    let masq = NetworkRuleset::for_pods("podnet", &[cluster], &[cluster], true);
    NftHandle::in_netns(n.node.netns())
        .unwrap()
        .apply_network(&masq)
        .unwrap();
    for port in [80, 81] {
        for ip in ["10.0.1.2", "fd00:1::2"] {
            serve(&n.pod, SocketAddr::new(ip.parse().unwrap(), port));
        }
    }
    n
}

fn serve(ns: &NetnsGuard, addr: SocketAddr) {
    let l = ns
        .netns()
        .run(move || TcpListener::bind(addr))
        .unwrap()
        .unwrap();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(c) = c else { continue };
            // A greeting, then every line echoed back, for as long as the client stays.
            std::thread::spawn(move || {
                let mut w = &c;
                if let Err(e) = writeln!(w, "hello") {
                    eprintln!("echo: {e}");
                }
                for line in BufReader::new(&c).lines().map_while(Result::ok) {
                    if writeln!(w, "{line}").is_err() {
                        break;
                    }
                }
            });
        }
    });
}

/// A connection and its greeting; `Err` when refused or dropped (1 s).
fn ask(ns: &NetnsGuard, to: &str, port: u16) -> Result<TcpStream, String> {
    let addr = SocketAddr::new(to.parse::<IpAddr>().unwrap(), port);
    let s = ns
        .netns()
        .run(move || TcpStream::connect_timeout(&addr, Duration::from_secs(1)))
        .unwrap()
        .map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut line = String::new();
    BufReader::new(s.try_clone().unwrap())
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    Ok(s)
}

/// The pod on node `n1`, with a named port `web` = 80, and a policy letting
/// the client's /24 (both families) reach it on port `web` only.
fn world(allow_v6: bool) -> World {
    let pod = Pod {
        namespace: "x".into(),
        name: "a".into(),
        node: "n1".into(),
        ips: vec!["10.0.1.2".parse().unwrap(), "fd00:1::2".parse().unwrap()],
        labels: [("app".to_string(), "web".to_string())].into(),
        ports: vec![ContainerPort {
            name: "web".into(),
            container_port: 80,
            protocol: Protocol::Tcp,
        }],
        ready: true,
    };
    let block = |cidr: &str| Peer {
        ip_block: Some(IpBlock {
            cidr: cidr.parse().unwrap(),
            except: vec![],
        }),
        ..Peer::default()
    };
    let mut peers = vec![block("10.0.2.0/24")];
    if allow_v6 {
        peers.push(block("fd00:2::/64"));
    }
    let policy = NetworkPolicy {
        namespace: "x".into(),
        name: "web".into(),
        spec: PolicySpec {
            pod_selector: LabelSelector::default(),
            ingress: vec![PolicyRule {
                peers,
                ports: vec![PolicyPort {
                    protocol: Protocol::Tcp,
                    port: Some(PortRef::Name("web".into())),
                    end_port: None,
                }],
            }],
            ..PolicySpec::default()
        }
        .defaulted(),
    };
    World {
        pods: vec![pod],
        policies: vec![policy],
        ..World::default()
    }
}

#[test]
fn policy_allows_what_it_says_and_adopts_the_table() {
    require_root();
    let n = net();
    for (ip, port) in [("10.0.1.2", 81), ("fd00:1::2", 81)] {
        assert!(
            ask(&n.client, ip, port).is_ok(),
            "no policy yet: {ip}:{port} answers"
        );
    }
    let held = ask(&n.client, "10.0.1.2", 81).unwrap();
    let mut fw = Firewall::new(Some(n.node.netns())).unwrap();
    let report = fw.sync(plan(&world(false), "n1")).unwrap();
    assert!(report.chains_written, "{report}");
    let listing = n.node.exec_ok(&["nft", "list", "table", "inet", TABLE]);
    assert!(listing.contains("chain ingress4-any"), "{listing}");
    assert!(
        ask(&n.client, "10.0.1.2", 80).is_ok(),
        "allowed by the ipBlock on port web\n{listing}"
    );
    assert!(
        ask(&n.client, "10.0.1.2", 81).is_err(),
        "port 81 is not allowed\n{listing}"
    );
    assert!(
        ask(&n.client, "fd00:1::2", 80).is_err(),
        "no IPv6 block yet\n{listing}"
    );
    // An established connection outlives the policy that would not allow it now.
    let mut line = String::new();
    (&held).write_all(b"still here\n").unwrap();
    BufReader::new(&held).read_line(&mut line).unwrap();
    assert_eq!(
        line, "still here\n",
        "the established connection carries on"
    );
    // Egress is not isolated: the pod reaches the client.
    serve(&n.client, "10.0.2.2:90".parse().unwrap());
    assert!(ask(&n.pod, "10.0.2.2", 90).is_ok());

    let report = fw.update(plan(&world(true), "n1")).unwrap();
    assert!(
        report.sets_created == 2 && report.chains_written,
        "IPv6 sets: {report}"
    );
    assert!(ask(&n.client, "fd00:1::2", 80).is_ok(), "IPv6 block added");
    assert!(ask(&n.client, "fd00:1::2", 81).is_err());
    // One more block of a family in use: elements only, chains untouched.
    let mut wider = world(true);
    let extra = Peer {
        ip_block: Some(IpBlock {
            cidr: "10.0.3.0/24".parse().unwrap(),
            except: vec![],
        }),
        ..Peer::default()
    };
    wider.policies[0].spec.ingress[0].peers.push(extra);
    let report = fw.update(plan(&wider, "n1")).unwrap();
    assert!(
        !report.chains_written && report.sets_created == 0 && report.added > 0,
        "{report}"
    );
    let report = fw.update(plan(&world(true), "n1")).unwrap();
    assert!(!report.chains_written && report.deleted > 0, "{report}");

    // A new firewall (an agent restart) finds everything in place.
    let mut again = Firewall::new(Some(n.node.netns())).unwrap();
    let report = again.sync(plan(&world(true), "n1")).unwrap();
    assert!(report.unchanged(), "{report}");

    // The last policy goes: the table goes.
    let mut empty = world(true);
    empty.policies.clear();
    let report = again.update(plan(&empty, "n1")).unwrap();
    assert!(report.table_removed, "{report}");
    assert!(
        !n.node
            .exec(&["nft", "list", "table", "inet", TABLE])
            .status
            .success(),
        "the table is gone"
    );
    assert!(ask(&n.client, "10.0.1.2", 81).is_ok());
}

#[test]
fn port_ranges_and_drift_repair() {
    require_root();
    let n = net();
    let mut w = world(true);
    w.policies[0].spec.ingress[0].ports = vec![PolicyPort {
        protocol: Protocol::Tcp,
        port: Some(PortRef::Number(81)),
        end_port: Some(85),
    }];
    let mut fw = Firewall::new(Some(n.node.netns())).unwrap();
    fw.sync(plan(&w, "n1")).unwrap();
    let listing = n.node.exec_ok(&["nft", "list", "table", "inet", TABLE]);
    assert!(listing.contains("81-85"), "{listing}");
    assert!(ask(&n.client, "10.0.1.2", 81).is_ok(), "{listing}");
    assert!(ask(&n.client, "fd00:1::2", 81).is_ok(), "{listing}");
    assert!(ask(&n.client, "10.0.1.2", 80).is_err());
    // Someone deletes the range element: a sync puts it back.
    n.node
        .exec_ok(&["nft", "flush", "map", "inet", TABLE, "net-class4"]);
    assert!(ask(&n.client, "10.0.1.2", 81).is_err(), "the class is gone");
    let report = fw.sync(plan(&w, "n1")).unwrap();
    assert_eq!(report.added, 1, "{report}");
    assert!(ask(&n.client, "10.0.1.2", 81).is_ok());
}

#[test]
fn sctp_rules_are_programmed() {
    // This kernel cannot send SCTP; the rules are checked as nft prints them.
    require_root();
    let n = net();
    let mut w = world(false);
    w.policies[0].spec.ingress[0].ports = vec![PolicyPort {
        protocol: Protocol::Sctp,
        port: Some(PortRef::Number(9000)),
        end_port: None,
    }];
    let mut fw = Firewall::new(Some(n.node.netns())).unwrap();
    fw.sync(plan(&w, "n1")).unwrap();
    let listing = n.node.exec_ok(&["nft", "list", "table", "inet", TABLE]);
    assert!(
        listing.contains("10.0.1.2 . ") && listing.contains(" . sctp . 9000"),
        "{listing}"
    );
    assert!(
        ask(&n.client, "10.0.1.2", 80).is_err(),
        "TCP is not allowed"
    );
}
