//! Anti-spoofing: pods forge packets with raw sockets (CAP_NET_RAW, which
//! runtimes grant by default) and the node drops them, in both models, on
//! one node and across nodes, over IPv4 and IPv6; in the bridge model a pod
//! cannot claim another pod's address by ARP or neighbour advertisement.
//! Each forged batch is followed by genuine datagrams on the same path: once
//! those arrived, a forged one that got through would have arrived too.

mod labkit;

use std::collections::BTreeSet;
use std::net::{IpAddr, UdpSocket};
use std::time::{Duration, Instant};

use labkit::{text, LabGuard};
use podnet_kernel::{Netns, RouteHandle};
use podnet_lab::LabPod;
use podnet_testkit::packets;

const PORT: u16 = 9999;

fn lab(model: &str, anti_spoofing: bool) -> LabGuard {
    let g = LabGuard::new();
    g.up_yaml(&format!(
        "model: {model}\nantiSpoofing: {anti_spoofing}\nclusterCIDRs: [10.244.0.0/16, fd00:10:244::/56]\n\
         podsPerNode: 2\nfabric: {{segments: [{{nodes: 2}}]}}\n"
    ));
    g
}

fn pod<'a>(pods: &'a [LabPod], name: &str) -> &'a LabPod {
    pods.iter().find(|p| p.pod == name).unwrap()
}

fn addr(p: &LabPod, v6: bool) -> IpAddr {
    p.ips.iter().copied().find(|ip| ip.is_ipv6() == v6).unwrap()
}

fn datagram(src: IpAddr, dst: IpAddr, payload: &str) -> Vec<u8> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => packets::ipv4_udp(s, d, 4242, PORT, payload.as_bytes()),
        (IpAddr::V6(s), IpAddr::V6(d)) => packets::ipv6_udp(s, d, 4242, PORT, payload.as_bytes()),
        _ => panic!("one family"),
    }
}

/// Sends forged datagrams (each source in `forged`) then genuine ones from
/// `sender` to `receiver`; returns the payloads that arrived.
fn forge(sender: &LabPod, receiver: &LabPod, v6: bool, forged: &[IpAddr]) -> BTreeSet<String> {
    let dst = addr(receiver, v6);
    let rx = Netns::open_named(&receiver.name).unwrap();
    let bind = if v6 { "[::]:9999" } else { "0.0.0.0:9999" };
    let sock = rx.run(|| UdpSocket::bind(bind)).unwrap().unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let tx = Netns::open_named(&sender.name).unwrap();
    let own = addr(sender, v6);
    let mut got = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    // Genuine datagrams are resent until one arrives (the first may wait for a neighbour).
    while !got.iter().any(|p: &String| p.starts_with("genuine")) && Instant::now() < deadline {
        tx.run(|| {
            for (i, src) in forged.iter().enumerate() {
                podnet_kernel::raw::send_ip_packet(
                    &datagram(*src, dst, &format!("forged-{i}")),
                    dst,
                )
                .unwrap();
            }
            podnet_kernel::raw::send_ip_packet(&datagram(own, dst, "genuine"), dst).unwrap();
        })
        .unwrap();
        let mut buf = [0u8; 64];
        while let Ok(n) = sock.recv(&mut buf) {
            got.insert(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    got
}

/// Every forgery from node1-pod1, to a pod on the same node and one on the
/// other node, IPv4 and IPv6; returns what arrived, per case.
fn forgeries(g: &LabGuard) -> Vec<(String, BTreeSet<String>)> {
    let pods = g.state().pods;
    let sender = pod(&pods, "node1-pod1");
    let mut out = Vec::new();
    for v6 in [false, true] {
        let outside: IpAddr = if v6 {
            "2001:db8::7".parse().unwrap()
        } else {
            "203.0.113.7".parse().unwrap()
        };
        for receiver in ["node1-pod2", "node2-pod1"] {
            // Every other pod's address (one on the sender's node, two on the
            // other) and an outside one; never the receiver's own, which its
            // kernel would refuse as a martian anyway.
            let mut forged: Vec<IpAddr> = pods
                .iter()
                .filter(|p| p.pod != sender.pod && p.pod != receiver)
                .map(|p| addr(p, v6))
                .collect();
            forged.push(outside);
            let got = forge(sender, pod(&pods, receiver), v6, &forged);
            out.push((format!("IPv{} to {receiver}", if v6 { 6 } else { 4 }), got));
        }
    }
    out
}

fn assert_forgeries_dropped(g: &LabGuard) {
    for (case, got) in forgeries(g) {
        assert!(
            got.contains("genuine"),
            "{case}: the genuine datagram never arrived: {got:?}"
        );
        assert!(
            !got.iter().any(|p| p.starts_with("forged")),
            "{case}: forged datagrams arrived: {got:?}"
        );
    }
}

#[test]
fn forged_sources_are_dropped_in_the_routed_model() {
    assert_forgeries_dropped(&lab("routed", true));
}

#[test]
fn forged_sources_are_dropped_in_the_bridge_model() {
    assert_forgeries_dropped(&lab("bridge", true));
}

#[test]
fn anti_spoofing_can_be_turned_off() {
    // Also the proof that the tests above can fail: without the sets, every forgery arrives.
    for (case, got) in forgeries(&lab("routed", false)) {
        assert_eq!(
            got.len(),
            4,
            "{case}: three forged and the genuine: {got:?}"
        );
    }
}

/// Packets the bridge model's `what` rule dropped (`arp` or `na-target`).
fn drops(g: &LabGuard, what: &str) -> u64 {
    let ns = g.lab().node_ns("node1");
    let chain = if what == "arp" {
        "pod-source"
    } else {
        "na-target"
    };
    let listing = text(&g.exec(
        &ns,
        &["nft", "list", "chain", "bridge", "podnet-antispoof", chain],
    ));
    let line = listing
        .lines()
        .find(|l| l.contains("drop") && (what != "arp" || l.contains("meta protocol arp")))
        .unwrap_or_else(|| panic!("no {what} drop rule:\n{listing}"));
    line.split("packets ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn bridge_pods_cannot_claim_addresses_by_arp_or_neighbour_advertisement() {
    let g = lab("bridge", true);
    let pods = g.state().pods;
    let (me, victim) = (pod(&pods, "node1-pod1"), pod(&pods, "node1-pod2"));
    let ns = Netns::open_named(&me.name).unwrap();
    let link = RouteHandle::in_netns(&ns)
        .unwrap()
        .link_by_name("eth0")
        .unwrap()
        .unwrap();
    let mac: [u8; 6] = link.mac[..6].try_into().unwrap();
    let (IpAddr::V4(victim4), IpAddr::V6(victim6), IpAddr::V4(me4), IpAddr::V6(me6)) = (
        addr(victim, false),
        addr(victim, true),
        addr(me, false),
        addr(me, true),
    ) else {
        panic!("dual stack");
    };
    let link_local: std::net::Ipv6Addr = "fe80::1234".parse().unwrap();
    let send = |frame: Vec<u8>| {
        ns.run(|| podnet_kernel::raw::send_frame(link.index, &frame).unwrap())
            .unwrap()
    };
    let (arp0, na0) = (drops(&g, "arp"), drops(&g, "na"));
    // Claims of one's own addresses pass; claims of the neighbour's are dropped.
    send(packets::gratuitous_arp(mac, me4));
    send(packets::neighbour_advert(mac, link_local, me6));
    assert_eq!(
        (drops(&g, "arp"), drops(&g, "na")),
        (arp0, na0),
        "own addresses are not dropped"
    );
    for _ in 0..3 {
        send(packets::gratuitous_arp(mac, victim4));
        send(packets::neighbour_advert(mac, link_local, victim6));
    }
    assert_eq!((drops(&g, "arp"), drops(&g, "na")), (arp0 + 3, na0 + 3));
    // The node still reaches the victim at its own MAC.
    let node = g.lab().node_ns("node1");
    let neigh = text(&g.exec(&node, &["ip", "neigh", "show", &victim4.to_string()]));
    let mine = link
        .mac
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    assert!(
        !neigh.contains(&mine),
        "the node learned the forger's MAC for {victim4}: {neigh}"
    );
}

#[test]
fn deleted_pods_leave_no_anti_spoofing_elements() {
    let g = LabGuard::new();
    g.up(&["--nodes", "1", "--pods-per-node", "0"]);
    let dir = podnet_testkit::TempDir::new("pod");
    let file = dir.path().join("pod.yaml");
    std::fs::write(&file, "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, ports: [{containerPort: 80}]}]}\n").unwrap();
    let node = g.lab().node_ns("node1");
    let elements = || {
        let out = g.exec(
            &node,
            &[
                "nft",
                "list",
                "set",
                "inet",
                "podnet-antispoof",
                "pod-sources4",
            ],
        );
        text(&out).matches("\" . ").count()
    };
    assert!(g
        .run(&["apply", "-f", file.to_str().unwrap()])
        .status
        .success());
    assert_eq!(elements(), 1, "the pod's interface and address");
    assert!(g
        .run(&["delete", "-f", file.to_str().unwrap()])
        .status
        .success());
    // DEL leaves them (a deleting commit would make the plugin wait out an RCU grace
    // period); the agent sweeps them by its next pass.
    assert!(
        podnet_testkit::wait_until(Duration::from_secs(20), || elements() == 0),
        "the deleted pod's elements stayed"
    );
}
