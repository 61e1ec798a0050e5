//! Unit tests of allocation logic on a real (temporary) state directory.

use super::*;

struct TempDir(PathBuf);
impl TempDir {
    fn new() -> Self {
        let p = std::env::temp_dir().join(podnet_testkit::unique_name("ipam"));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn set(subnet: &str) -> RangeSet {
    vec![Range {
        subnet: subnet.parse().unwrap(),
        range_start: None,
        range_end: None,
        gateway: None,
    }]
}

fn who(id: &str) -> Attachment {
    // A live namespace path everyone has: our own.
    let path = "/proc/self/ns/net".to_string();
    Attachment {
        container_id: id.into(),
        ifname: "eth0".into(),
        netns_id: namespace_id(Path::new(&path)),
        netns_path: path,
    }
}

fn dead(id: &str) -> Attachment {
    Attachment {
        container_id: id.into(),
        ifname: "eth0".into(),
        netns_path: "/run/netns/podnet-test-does-not-exist".into(),
        netns_id: Some((1, 1)),
    }
}

#[test]
fn allocates_distinct_addresses_and_is_idempotent_per_attachment() {
    let d = TempDir::new();
    let ipam = Ipam::new(
        &d.0,
        "n",
        vec![set("10.1.0.0/24"), set("fd00:1::/120")],
        vec![],
    )
    .unwrap();
    let a = ipam.allocate(&who("a")).unwrap();
    let b = ipam.allocate(&who("b")).unwrap();
    assert_eq!(a.len(), 2, "dual stack: one address per range set");
    assert_eq!(a[0].ip, "10.1.0.2".parse::<IpAddr>().unwrap());
    assert_eq!(a[1].ip, "fd00:1::2".parse::<IpAddr>().unwrap());
    assert_eq!(b[0].ip, "10.1.0.3".parse::<IpAddr>().unwrap());
    assert_eq!(
        ipam.allocate(&who("a")).unwrap(),
        a,
        "same attachment, same addresses"
    );
}

#[test]
fn released_addresses_are_reused_only_after_the_range_wraps() {
    let d = TempDir::new();
    let ipam = Ipam::new(&d.0, "n", vec![set("10.1.0.0/29")], vec![]).unwrap();
    let first = ipam.allocate(&who("a")).unwrap()[0].ip;
    ipam.release("a", "eth0").unwrap();
    assert!(
        ipam.release("a", "eth0").unwrap().is_empty(),
        "second release is a no-op"
    );
    let next = ipam.allocate(&who("b")).unwrap()[0].ip;
    assert_ne!(first, next, "round robin avoids immediate reuse");
    let ips: Vec<_> = ["c", "d", "e", "f"]
        .iter()
        .map(|c| ipam.allocate(&who(c)).unwrap()[0].ip)
        .collect();
    assert!(
        ips.contains(&first),
        "wrapped around to the freed address: {ips:?}"
    );
}

#[test]
fn exhaustion_reclaims_only_dead_namespaces() {
    let d = TempDir::new();
    // /30: network, gateway .1, hosts .2, broadcast .3: one usable address.
    let ipam = Ipam::new(&d.0, "n", vec![set("10.1.0.0/30")], vec![]).unwrap();
    ipam.allocate(&who("live")).unwrap();
    let err = ipam.allocate(&who("other")).unwrap_err();
    assert!(matches!(err, IpamError::Exhausted(_)), "{err}");
    assert!(err
        .to_string()
        .contains("no IP addresses available in range set 10.1.0.0/30"));

    ipam.release("live", "eth0").unwrap();
    ipam.allocate(&dead("ghost")).unwrap();
    let got = ipam.allocate(&who("new")).unwrap();
    assert_eq!(
        got[0].ip,
        "10.1.0.2".parse::<IpAddr>().unwrap(),
        "ghost's address reclaimed"
    );
    assert!(ipam.lookup("ghost", "eth0").unwrap().is_empty());
}

#[test]
fn gc_keeps_only_valid_attachments() {
    let d = TempDir::new();
    let ipam = Ipam::new(&d.0, "n", vec![set("10.1.0.0/24")], vec![]).unwrap();
    for c in ["a", "b", "c"] {
        ipam.allocate(&who(c)).unwrap();
    }
    let gone = ipam.gc(&[("b".into(), "eth0".into())]).unwrap();
    assert_eq!(gone.len(), 2);
    let left: Vec<_> = ipam
        .allocations()
        .unwrap()
        .into_iter()
        .map(|a| a.container_id)
        .collect();
    assert_eq!(left, vec!["b".to_string()]);
}

#[test]
fn reserved_and_narrowed_ranges_are_respected() {
    let d = TempDir::new();
    let mut r = set("10.1.0.0/24");
    r[0].range_start = Some("10.1.0.10".parse().unwrap());
    r[0].range_end = Some("10.1.0.11".parse().unwrap());
    let ipam = Ipam::new(&d.0, "n", vec![r], vec!["10.1.0.10".parse().unwrap()]).unwrap();
    assert_eq!(
        ipam.allocate(&who("a")).unwrap()[0].ip,
        "10.1.0.11".parse::<IpAddr>().unwrap()
    );
    assert!(matches!(
        ipam.allocate(&who("b")),
        Err(IpamError::Exhausted(_))
    ));
}

#[test]
fn concurrent_allocations_never_share_an_address() {
    let d = TempDir::new();
    let ipam = Ipam::new(&d.0, "n", vec![set("10.1.0.0/24")], vec![]).unwrap();
    let ips: Vec<IpAddr> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..64)
            .map(|i| {
                let ipam = ipam.clone();
                s.spawn(move || ipam.allocate(&who(&format!("c{i}"))).unwrap()[0].ip)
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let unique: HashSet<_> = ips.iter().collect();
    assert_eq!(unique.len(), 64);
}

#[test]
fn corrupt_state_is_reported_not_reset() {
    let d = TempDir::new();
    let ipam = Ipam::new(&d.0, "n", vec![set("10.1.0.0/24")], vec![]).unwrap();
    ipam.allocate(&who("a")).unwrap();
    std::fs::write(d.0.join("n/allocations.json"), b"{not json").unwrap();
    let err = ipam.allocate(&who("b")).unwrap_err();
    assert!(err.to_string().contains("is corrupt"), "{err}");
}

#[test]
fn allocations_of_an_earlier_boot_are_void() {
    let d = TempDir::new();
    let ipam = Ipam::new(&d.0, "n", vec![set("10.1.0.0/30")], vec![]).unwrap();
    ipam.allocate(&who("before-reboot")).unwrap();
    // Pretend the file was written under another boot.
    let path = d.0.join("n/allocations.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["bootId"] = "00000000-0000-0000-0000-000000000000".into();
    std::fs::write(&path, v.to_string()).unwrap();
    assert!(
        ipam.allocations().unwrap().is_empty(),
        "pods of an earlier boot are gone"
    );
    ipam.allocate(&who("after-reboot"))
        .expect("the only address is free again");
}

#[test]
fn a_torn_file_from_an_earlier_boot_is_discarded() {
    let d = TempDir::new();
    let ipam = Ipam::new(&d.0, "n", vec![set("10.1.0.0/24")], vec![]).unwrap();
    ipam.allocate(&who("a")).unwrap();
    let path = d.0.join("n/allocations.json");
    std::fs::write(&path, b"{\"vers").unwrap();
    let f = std::fs::File::options().write(true).open(&path).unwrap();
    f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(86_400))
        .unwrap();
    drop(f);
    assert!(
        ipam.allocate(&who("b")).is_ok(),
        "torn file of an earlier boot is void"
    );
}
