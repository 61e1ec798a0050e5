//! Kernel-layer tests in real namespaces, cross-checked with `ip` and `nft`.

use podnet_kernel::nftables::{NetworkRuleset, NftHandle};
use podnet_kernel::{Route, RouteHandle, VethSpec};
use podnet_testkit::{require_root, NetnsGuard};
use std::os::fd::AsFd;

#[test]
fn veth_with_peer_in_other_namespace_carries_ping() {
    require_root();
    let a = NetnsGuard::new("a");
    let b = NetnsGuard::new("b");
    let mut ha = RouteHandle::in_netns(a.netns()).unwrap();
    let mut hb = RouteHandle::in_netns(b.netns()).unwrap();
    ha.create_veth(&VethSpec {
        name: "va",
        peer_name: "eth0",
        peer_netns: b.netns().as_fd(),
        mtu: 1400,
        mac: Some([0xee; 6]),
        master: None,
        group: 77,
    })
    .unwrap();
    let va = ha.link_by_name("va").unwrap().expect("va exists");
    ha.set_alias(va.index, "podnet test").unwrap();
    let va = ha.link_by_name("va").unwrap().expect("va exists");
    let eth0 = hb.link_by_name("eth0").unwrap().expect("peer in b");
    assert!(va.up && !eth0.up);
    hb.set_up(eth0.index).unwrap();
    assert_eq!((va.mtu, eth0.mtu), (1400, 1400));
    assert_eq!(va.mac, vec![0xee; 6]);
    assert_eq!(va.group, 77);
    assert_eq!(
        va.alias.as_deref(),
        Some("podnet test"),
        "{}",
        a.exec_ok(&["ip", "link", "show", "va"])
    );

    ha.replace_address(va.index, "10.9.0.1/24".parse().unwrap())
        .unwrap();
    hb.replace_address(eth0.index, "10.9.0.2/24".parse().unwrap())
        .unwrap();
    hb.replace_address(eth0.index, "10.9.0.2/24".parse().unwrap())
        .expect("replace is idempotent");
    hb.replace_route(&Route::via(
        "0.0.0.0/0".parse().unwrap(),
        "10.9.0.1".parse().unwrap(),
        eth0.index,
        112,
    ))
    .unwrap();
    assert!(b
        .exec_ok(&["ip", "route"])
        .contains("default via 10.9.0.1 dev eth0 proto 112"));
    assert!(b.ping("10.9.0.1"), "b reaches a over the veth");
    let routes = hb.routes().unwrap();
    assert!(routes
        .iter()
        .any(|r| r.dst.prefix_len() == 0 && r.protocol == 112));
    assert!(hb
        .delete_route(&Route::via(
            "0.0.0.0/0".parse().unwrap(),
            "10.9.0.1".parse().unwrap(),
            eth0.index,
            112
        ))
        .unwrap());
    assert!(!hb
        .delete_route(&Route::via(
            "0.0.0.0/0".parse().unwrap(),
            "10.9.0.1".parse().unwrap(),
            eth0.index,
            112
        ))
        .unwrap());

    assert!(ha.delete_link("va").unwrap());
    assert!(
        !ha.delete_link("va").unwrap(),
        "second delete reports absence"
    );
    assert!(
        hb.link_by_name("eth0").unwrap().is_none(),
        "peer went with it"
    );
}

#[test]
fn bridge_is_created_once_and_rejects_other_kinds() {
    require_root();
    let a = NetnsGuard::new("br");
    let mut h = RouteHandle::in_netns(a.netns()).unwrap();
    let first = h.ensure_bridge("podnet0", 1500).unwrap();
    let second = h.ensure_bridge("podnet0", 1500).unwrap();
    assert_eq!(first.index, second.index);
    let err = h.ensure_bridge("lo", 1500).unwrap_err();
    assert!(err.to_string().contains("not a bridge"), "{err}");
}

#[test]
fn nft_network_chains_apply_atomically_and_idempotently() {
    require_root();
    let a = NetnsGuard::new("nft");
    let mut nft = NftHandle::in_netns(a.netns()).unwrap();
    let rs = NetworkRuleset::for_pods(
        "testnet",
        &[
            "10.244.1.0/24".parse().unwrap(),
            "fd00:1::/64".parse().unwrap(),
        ],
        &["10.244.0.0/16".parse().unwrap()],
        true,
    );
    assert!(nft.apply_network(&rs).unwrap(), "first apply writes");
    assert!(
        !nft.apply_network(&rs).unwrap(),
        "second apply finds the chains current"
    );
    let listing = a.exec_ok(&["nft", "list", "table", "inet", "podnet"]);
    assert_eq!(listing.matches("masquerade").count(), 2, "{listing}");
    assert!(
        listing
            .contains("ip saddr 10.244.1.0/24 ip daddr != 10.244.0.0/16 ip daddr != 224.0.0.0/4"),
        "{listing}"
    );
    assert!(
        !listing.contains("hook forward"),
        "no forward hook of our own: {listing}"
    );

    // Without masquerade, no nat chain at all (an empty one would still turn
    // on connection tracking); an earlier version's forward chain goes too.
    a.exec_ok(&[
        "nft",
        "add",
        "chain",
        "inet",
        "podnet",
        "forward-testnet",
        "{ type filter hook forward priority 0; policy accept; }",
    ]);
    a.exec_ok(&[
        "nft",
        "add",
        "rule",
        "inet",
        "podnet",
        "forward-testnet",
        "ip saddr 10.244.1.0/24 accept",
    ]);
    let plain =
        NetworkRuleset::for_pods("testnet", &["10.244.1.0/24".parse().unwrap()], &[], false);
    assert!(nft.apply_network(&plain).unwrap());
    assert!(!nft.apply_network(&plain).unwrap(), "then current");
    let listing = a.exec_ok(&["nft", "list", "table", "inet", "podnet"]);
    assert!(!listing.contains("chain"), "{listing}");
    // And back: masquerade again.
    assert!(nft.apply_network(&rs).unwrap());
    let listing = a.exec_ok(&["nft", "list", "table", "inet", "podnet"]);
    assert_eq!(listing.matches("masquerade").count(), 2, "{listing}");
}

#[test]
fn foreign_drop_policy_gets_one_tagged_accept() {
    require_root();
    let a = NetnsGuard::new("drop");
    a.exec_ok(&["iptables", "-P", "FORWARD", "DROP"]);
    let mut nft = NftHandle::in_netns(a.netns()).unwrap();
    let subnets = ["10.244.1.0/24".parse().unwrap()];
    let changed = nft.accept_in_foreign_drop_chains("n1", &subnets).unwrap();
    assert_eq!(changed, vec!["ipv4 filter FORWARD".to_string()]);
    assert!(
        nft.accept_in_foreign_drop_chains("n1", &subnets)
            .unwrap()
            .is_empty(),
        "second call changes nothing"
    );
    let rules = a.exec_ok(&["iptables", "-S", "FORWARD"]);
    assert!(rules.contains("-A FORWARD -d 10.244.1.0/24"), "{rules}");
    assert_eq!(rules.matches("podnet:n1").count(), 2, "{rules}");
}

#[test]
fn delete_returning_on_unregister_removes_both_ends() {
    require_root();
    let a = NetnsGuard::new("dela");
    let b = NetnsGuard::new("delb");
    let mut ha = RouteHandle::in_netns(a.netns()).unwrap();
    let mut hb = RouteHandle::in_netns(b.netns()).unwrap();
    let spec = |name| VethSpec {
        name,
        peer_name: "eth0",
        peer_netns: b.netns().as_fd(),
        mtu: 1500,
        mac: None,
        master: None,
        group: 0,
    };
    ha.create_veth(&spec("vd")).unwrap();
    let idx = ha.link_by_name("vd").unwrap().unwrap().index;
    ha.replace_route(&Route::direct("10.9.9.9/32".parse().unwrap(), idx, 112))
        .unwrap();
    assert!(podnet_kernel::rtnl::delete_link_unregistered(a.netns(), "vd").unwrap());
    assert!(
        ha.link_by_name("vd").unwrap().is_none(),
        "host end gone when the call returns"
    );
    assert!(hb.link_by_name("eth0").unwrap().is_none(), "peer gone too");
    assert!(
        !ha.routes().unwrap().iter().any(|r| r.protocol == 112),
        "its route went with it"
    );
    assert!(
        !podnet_kernel::rtnl::delete_link_unregistered(a.netns(), "vd").unwrap(),
        "absent link reports false"
    );
    // The forked child that sat out the kernel's wait is reaped: no zombie stays.
    let zombies = || {
        let me = std::process::id().to_string();
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
            .filter(|stat| {
                // pid (comm) state ppid ...
                let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
                let mut f = rest.split_whitespace();
                f.next() == Some("Z") && f.next() == Some(me.as_str())
            })
            .count()
    };
    assert!(
        podnet_testkit::wait_until(std::time::Duration::from_secs(5), || zombies() == 0),
        "{} zombie children",
        zombies()
    );
}
