//! The store contract on both backends: the embedded file store and a real etcd server.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use podnet_cluster::{Backend, ClusterSpec};
use podnet_store::{ClusterStore, EtcdKv, FileKv, StoreError};
use podnet_testkit::{require_root, EtcdServer, NetnsGuard, TempDir};

fn spec() -> ClusterSpec {
    ClusterSpec::new(
        vec![
            "10.244.0.0/20".parse().unwrap(),
            "fd00:10:244::/56".parse().unwrap(),
        ],
        Backend::Auto,
    )
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// What both backends must do; `open` gives a fresh client of one shared store.
fn contract(open: &(dyn Fn() -> ClusterStore + Sync)) {
    let store = open();
    assert!(matches!(
        store.register_node("a", ip("198.18.1.1"), None, &[]),
        Err(StoreError::NoCluster)
    ));
    assert_eq!(store.init_cluster(&spec()).unwrap(), spec());
    // The same spec again is fine; a different one is refused and changes nothing.
    store.init_cluster(&spec()).unwrap();
    let other = ClusterSpec::new(vec!["10.9.0.0/16".parse().unwrap()], Backend::Vxlan);
    assert!(matches!(
        store.init_cluster(&other),
        Err(StoreError::ClusterMismatch { .. })
    ));
    assert_eq!(store.cluster().unwrap(), Some(spec()));

    // 12 nodes registering at once from separate clients: 12 distinct blocks.
    let nodes: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..12)
            .map(|i| {
                s.spawn(move || {
                    open()
                        .register_node(
                            &format!("n{i}"),
                            ip(&format!("198.18.1.{}", i + 1)),
                            None,
                            &[],
                        )
                        .unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut blocks: Vec<IpNet> = nodes.iter().flat_map(|n| n.pod_cidrs.clone()).collect();
    blocks.sort();
    blocks.dedup();
    assert_eq!(blocks.len(), 24, "every node owns its own v4 and v6 block");

    // Re-registering returns the same record; another address is refused.
    let again = store
        .register_node("n3", ip("198.18.1.4"), None, &[])
        .unwrap();
    assert_eq!(&again, nodes.iter().find(|n| n.name == "n3").unwrap());
    // A registered node cannot switch blocks.
    assert!(matches!(
        store.register_node(
            "n3",
            ip("198.18.1.4"),
            None,
            &["10.244.15.0/24".parse().unwrap()]
        ),
        Err(StoreError::BlockMismatch { .. })
    ));
    // A new link-local address (the underlay was re-created) updates the record, nothing else.
    let ll: std::net::Ipv6Addr = "fe80::1".parse().unwrap();
    let relinked = store
        .register_node("n3", ip("198.18.1.4"), Some(ll), &[])
        .unwrap();
    assert_eq!(relinked.link_local, Some(ll));
    assert_eq!(relinked.pod_cidrs, again.pod_cidrs);
    assert!(matches!(
        store.register_node("n3", ip("198.18.9.9"), None, &[]),
        Err(StoreError::AddressMismatch { .. })
    ));
    // A block outside the cluster CIDR, or taken, is refused and nothing is written.
    let before = store.snapshot().unwrap();
    assert!(store
        .register_node(
            "x",
            ip("198.18.2.1"),
            None,
            &["10.9.0.0/24".parse().unwrap()]
        )
        .is_err());
    assert!(store
        .register_node("y", ip("198.18.2.2"), None, &[again.pod_cidrs[0]])
        .is_err());
    let after = store.snapshot().unwrap();
    assert_eq!(before.nodes, after.nodes);
    assert_eq!(before.revision, after.revision);

    // A waiter sees a node leave; its block becomes free again.
    let rev = after.revision;
    let waiter = std::thread::spawn({
        let store = open();
        move || store.wait_for_change(rev, Duration::from_secs(20)).unwrap()
    });
    assert!(store.remove_node("n3").unwrap());
    assert!(!store.remove_node("n3").unwrap());
    assert!(waiter.join().unwrap().is_some_and(|r| r > rev));
    let back = store
        .register_node("n99", ip("198.18.1.99"), None, &[again.pod_cidrs[0]])
        .unwrap();
    assert_eq!(back.pod_cidrs[0], again.pod_cidrs[0]);

    // Nothing changes: the wait times out.
    let rev = store.snapshot().unwrap().revision;
    assert_eq!(
        store
            .wait_for_change(rev, Duration::from_millis(300))
            .unwrap(),
        None
    );

    // Liveness: a heartbeat shows, and does not count as a node change.
    store.heartbeat("n1", Duration::from_secs(30)).unwrap();
    store.heartbeat("n1", Duration::from_secs(30)).unwrap();
    let view = store.snapshot().unwrap();
    assert!(view.alive.contains("n1"));
    assert!(!view.alive.contains("n2"));
}

#[test]
fn file_store_contract() {
    let dir = Arc::new(TempDir::new("store"));
    let path = dir.path().to_path_buf();
    contract(&move || ClusterStore::new(Box::new(FileKv::open(&path).unwrap())));
}

#[test]
fn file_store_tells_what_changed_until_its_log_is_outgrown() {
    use podnet_store::{KvBackend, Txn};
    let dir = TempDir::new("changes");
    let kv = FileKv::open(dir.path()).unwrap();
    let put = |k: &str, v: &str| {
        assert!(kv
            .transact(&Txn {
                puts: vec![(k.into(), v.into())],
                ..Txn::default()
            })
            .unwrap());
    };
    put("/a/x", "1");
    put("/b/y", "2");
    put("/a/x", "3");
    assert!(kv
        .transact(&Txn {
            deletes: vec!["/a/x".into()],
            ..Txn::default()
        })
        .unwrap());
    let c = kv
        .changes_since("/a/", 1)
        .unwrap()
        .expect("the log covers revision 1");
    assert_eq!(c.revision, 4);
    assert_eq!(
        c.entries,
        vec![
            ("/a/x".to_string(), Some("3".to_string())),
            ("/a/x".to_string(), None)
        ]
    );
    assert!(kv
        .changes_since("/a/", 4)
        .unwrap()
        .unwrap()
        .entries
        .is_empty());
    // One big write outgrows the log: older readers must list instead.
    let big = "v".repeat(5 << 20);
    put("/a/big", &big);
    assert!(kv.changes_since("/a/", 4).unwrap().is_none());
    put("/a/z", "4");
    let c = kv.changes_since("/a/", 5).unwrap().unwrap();
    assert_eq!(c.entries, vec![("/a/z".to_string(), Some("4".to_string()))]);
}

#[test]
fn file_store_lease_expires() {
    let dir = TempDir::new("lease");
    let store = ClusterStore::new(Box::new(FileKv::open(dir.path()).unwrap()));
    store.heartbeat("n1", Duration::from_millis(1)).unwrap();
    assert!(podnet_testkit::wait_until(Duration::from_secs(5), || {
        !store.snapshot().unwrap().alive.contains("n1")
    }));
}

#[test]
fn etcd_store_contract() {
    require_root();
    let ns = NetnsGuard::new("etcd");
    let etcd = EtcdServer::start(&ns, "127.0.0.1");
    let url = etcd.url();
    ns.netns()
        .run(|| contract(&|| ClusterStore::new(Box::new(EtcdKv::new(&url).unwrap()))))
        .unwrap();
}

#[test]
fn etcd_client_fails_over_to_the_next_member() {
    require_root();
    let ns = NetnsGuard::new("etcdfo");
    let etcd = EtcdServer::start(&ns, "127.0.0.1");
    // The first member is down (nothing listens on port 1); calls move on.
    let endpoints = format!("http://127.0.0.1:1,{}", etcd.url());
    ns.netns()
        .run(|| {
            let s = ClusterStore::new(Box::new(EtcdKv::new(&endpoints).unwrap()));
            s.init_cluster(&spec()).unwrap();
            s.register_node("a", ip("198.18.1.1"), None, &[]).unwrap();
            assert_eq!(s.snapshot().unwrap().nodes.len(), 1);
        })
        .unwrap();
    assert!(
        EtcdKv::new("http://a:1,https://b:2").is_err(),
        "one scheme for every member"
    );
}

#[test]
fn etcd_restart_and_outage() {
    require_root();
    let ns = NetnsGuard::new("etcdre");
    let mut etcd = EtcdServer::start(&ns, "127.0.0.1");
    let url = etcd.url();
    let store = || ClusterStore::new(Box::new(EtcdKv::new(&url).unwrap()));
    let rev = ns
        .netns()
        .run(|| {
            let s = store();
            s.init_cluster(&spec()).unwrap();
            s.register_node("a", ip("198.18.1.1"), None, &[]).unwrap();
            s.snapshot().unwrap().revision
        })
        .unwrap();
    etcd.kill();
    // Unreachable: a clear error naming the endpoint, not a hang.
    let err = ns.netns().run(|| store().snapshot().unwrap_err()).unwrap();
    assert!(matches!(err, StoreError::Unreachable { .. }), "{err}");
    assert!(err.to_string().contains(&url), "{err}");
    etcd.resume(&ns);
    ns.netns()
        .run(|| {
            let s = store();
            // Data survived the restart; a change made after it is seen by a
            // waiter that resumes from the revision it had before the outage.
            assert_eq!(s.snapshot().unwrap().nodes.len(), 1);
            s.register_node("b", ip("198.18.1.2"), None, &[]).unwrap();
            let seen = s.wait_for_change(rev, Duration::from_secs(10)).unwrap();
            assert!(seen.is_some_and(|r| r > rev));
            assert_eq!(s.snapshot().unwrap().nodes.len(), 2);
        })
        .unwrap();
}

/// etcd: a listing larger than a page comes whole and in order; changes
/// come from a watch with their values (puts and deletes, in order); a
/// history compacted away says so (`None`: list instead).
#[test]
fn etcd_pages_listings_and_reads_changes_from_a_watch() {
    use podnet_store::{KvBackend, Txn};
    require_root();
    let ns = NetnsGuard::new("etcdpg");
    let etcd = EtcdServer::start(&ns, "127.0.0.1");
    let url = etcd.url();
    ns.netns()
        .run(|| {
            let kv = EtcdKv::new(&url).unwrap();
            // More keys than a page (etcd takes at most 128 operations per transaction).
            let keys: Vec<String> = (0..4500).map(|i| format!("/p/k{i:05}")).collect();
            for chunk in keys.chunks(120) {
                let puts = chunk
                    .iter()
                    .map(|k| (k.clone(), format!("v-{k}")))
                    .collect();
                assert!(kv
                    .transact(&Txn {
                        puts,
                        ..Txn::default()
                    })
                    .unwrap());
            }
            let l = kv.list("/p/").unwrap();
            assert_eq!(l.entries.len(), keys.len());
            assert!(l.entries.iter().map(|(k, _)| k).eq(keys.iter()));
            assert_eq!(l.entries[4499].1, "v-/p/k04499");

            let after = l.revision;
            assert!(kv
                .changes_since("/p/", after)
                .unwrap()
                .unwrap()
                .entries
                .is_empty());
            let put = |k: &str, v: &str| {
                let puts = vec![(k.to_string(), v.to_string())];
                assert!(kv
                    .transact(&Txn {
                        puts,
                        ..Txn::default()
                    })
                    .unwrap());
            };
            put("/p/k00001", "changed");
            put("/q/other", "elsewhere");
            let deletes = vec!["/p/k00002".to_string()];
            assert!(kv
                .transact(&Txn {
                    deletes,
                    ..Txn::default()
                })
                .unwrap());
            let c = kv
                .changes_since("/p/", after)
                .unwrap()
                .expect("history is there");
            assert_eq!(
                c.entries,
                vec![
                    ("/p/k00001".to_string(), Some("changed".to_string())),
                    ("/p/k00002".to_string(), None)
                ]
            );
            assert!(c.revision >= after + 3, "{} after {after}", c.revision);

            // Compact past `after`: the history is gone, the caller must list.
            let compact = format!("{{\"revision\":\"{}\",\"physical\":true}}", c.revision);
            let out = std::process::Command::new("curl")
                .args([
                    "-s",
                    "-X",
                    "POST",
                    &format!("{url}/v3/kv/compaction"),
                    "-d",
                    &compact,
                ])
                .output()
                .unwrap();
            assert!(out.status.success());
            assert!(kv.changes_since("/p/", after).unwrap().is_none());
            // A watcher that fell behind the compaction is told to relist.
            match kv
                .wait_changes("/p/", after, Duration::from_secs(5))
                .unwrap()
            {
                podnet_store::Waited::Changed(rev, None) => assert!(rev > after),
                other => panic!("a compacted history must ask for a relist: {other:?}"),
            }
            assert_eq!(kv.list("/p/").unwrap().entries.len(), keys.len() - 1);
        })
        .unwrap();
}

/// Many services at once, as `podnet cluster apply` writes them: allocated
/// together, written in batches, outcomes per service; a refused one writes
/// nothing; a service named twice is stored as its last version.
fn many_services(store: &ClusterStore) {
    use podnet_services::Service;
    let svc = |name: &str, port: u32| -> Service {
        serde_json::from_value(serde_json::json!({"name": name, "ports": [{"port": port}]}))
            .unwrap()
    };
    let services: Vec<Service> = (0..300).map(|i| svc(&format!("s{i}"), 80)).collect();
    let out = store.put_services(services).unwrap();
    assert_eq!(out.len(), 300);
    assert!(out.iter().all(|(_, before)| before.is_none()));
    let ips: std::collections::BTreeMap<String, _> = out
        .iter()
        .map(|(s, _)| (s.name.clone(), s.cluster_ip))
        .collect();
    let distinct: std::collections::BTreeSet<_> = ips.values().collect();
    assert_eq!(distinct.len(), 300, "every service got its own address");
    assert_eq!(store.services().unwrap().len(), 300);
    // Again, one changed and one named twice (its last version wins).
    let again = vec![svc("s1", 81), svc("s2", 82), svc("s2", 83)];
    let out = store.put_services(again).unwrap();
    assert_eq!(out.len(), 2);
    assert!(out.iter().all(|(_, before)| before.is_some()));
    let stored = store.services().unwrap();
    let port = |n: &str| stored.iter().find(|s| s.name == n).unwrap().ports[0].port;
    assert_eq!((port("s1"), port("s2")), (81, 83));
    let kept = stored.iter().find(|s| s.name == "s1").unwrap().cluster_ip;
    assert_eq!(kept, ips["s1"], "an update keeps its address");
    // A refused one (port out of range) writes nothing, not even the good ones.
    let bad = vec![svc("new1", 80), svc("new2", 70000)];
    assert!(store.put_services(bad).is_err());
    assert_eq!(store.services().unwrap().len(), 300);
}

#[test]
fn many_services_on_both_stores() {
    require_root();
    let dir = TempDir::new("many");
    let file = ClusterStore::new(Box::new(FileKv::open(dir.path()).unwrap()));
    file.init_cluster(&spec()).unwrap();
    many_services(&file);
    let ns = NetnsGuard::new("etcdmany");
    let etcd = EtcdServer::start(&ns, "127.0.0.1");
    let url = etcd.url();
    ns.netns()
        .run(|| {
            let s = ClusterStore::new(Box::new(EtcdKv::new(&url).unwrap()));
            s.init_cluster(&spec()).unwrap();
            many_services(&s);
        })
        .unwrap();
}
