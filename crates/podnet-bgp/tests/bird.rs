//! The control socket against a real BIRD (Debian's bird2), run in a test
//! namespace: protocols listed, a configuration checked and applied, a bad
//! one refused with BIRD's reason, a missing BIRD named.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use podnet_bgp::{BgpError, BirdControl};
use podnet_testkit::{require_root, wait_until, NetnsGuard, TempDir};

/// A BIRD in the foreground, killed on drop.
struct Bird(Child);

impl Drop for Bird {
    fn drop(&mut self) {
        if let Err(e) = self.0.kill().and_then(|()| self.0.wait().map(drop)) {
            eprintln!("stopping the test's BIRD: {e}");
        }
    }
}

fn start(ns: &NetnsGuard, dir: &Path) -> Bird {
    let mut cmd = Command::new("bird");
    cmd.arg("-f")
        .arg("-c")
        .arg(dir.join("bird.conf"))
        .arg("-s")
        .arg(dir.join("bird.ctl"))
        .arg("-P")
        .arg(dir.join("bird.pid"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    podnet_kernel::netns::enter_before_exec(&mut cmd, ns.netns());
    Bird(cmd.spawn().expect("start bird (is bird2 installed?)"))
}

const BASE: &str = "router id 10.0.0.1;\nprotocol device {}\n";

#[test]
fn bird_is_checked_configured_and_listed_over_its_socket() {
    require_root();
    let ns = NetnsGuard::new("bird");
    let dir = TempDir::new("bird");
    let socket = dir.path().join("bird.ctl");
    let err = BirdControl::connect(&socket).err().expect("no BIRD yet");
    assert!(matches!(err, BgpError::Unreachable { .. }), "{err}");
    assert!(err.to_string().contains("bird.ctl"), "{err}");

    std::fs::write(dir.path().join("bird.conf"), BASE).unwrap();
    let _bird = start(&ns, dir.path());
    assert!(wait_until(Duration::from_secs(10), || {
        BirdControl::connect(&socket).is_ok()
    }));
    let mut bird = BirdControl::connect(&socket).unwrap();
    let protocols = bird.show_protocols().unwrap();
    assert!(
        protocols
            .iter()
            .any(|p| p.proto == "Device" && p.state == "up"),
        "{protocols:?}"
    );

    let bad = dir.path().join("bad.conf");
    std::fs::write(&bad, "router id 10.0.0.1;\nprotocol nonsense {}\n").unwrap();
    let err = bird.configure_check(&bad).unwrap_err();
    assert!(matches!(err, BgpError::Refused { .. }), "{err}");
    assert!(
        err.to_string().contains("bad.conf:2"),
        "BIRD's reason names the line: {err}"
    );

    let next = dir.path().join("next.conf");
    std::fs::write(
        &next,
        format!("{BASE}protocol static extra {{ ipv4; route 192.0.2.0/24 blackhole; }}\n"),
    )
    .unwrap();
    bird.configure_check(&next).unwrap();
    bird.configure(&next).unwrap();
    let protocols = bird.show_protocols().unwrap();
    assert!(
        protocols
            .iter()
            .any(|p| p.name == "extra" && p.proto == "Static"),
        "{protocols:?}"
    );
}

/// A node of a mesh with a reflector role and an external peer: the sample
/// the golden file and BIRD's own check both read.
fn sample() -> podnet_bgp::NodeBgp {
    use podnet_bgp::{NodeBgp, Peer, PeerKind};
    let peer = |name: &str, address: &str, asn, passive, kind| Peer {
        name: name.into(),
        description: name.into(),
        address: address.parse().unwrap(),
        asn,
        passive,
        kind,
        multihop: false,
    };
    NodeBgp {
        node: "node1".into(),
        router_id: "198.18.1.1".parse().unwrap(),
        asn: 64512,
        blocks: vec![
            "10.244.1.0/24".parse().unwrap(),
            "fd00:10:244:1::/64".parse().unwrap(),
        ],
        reflector_cluster: Some("198.18.1.1".parse().unwrap()),
        next_hop_v6: Some("fd00:198:18:1::1".parse().unwrap()),
        peers: vec![
            peer(
                "node2",
                "198.18.1.2",
                64512,
                false,
                PeerKind::ReflectorClient,
            ),
            peer(
                "node3",
                "198.18.1.3",
                64512,
                true,
                PeerKind::ReflectorClient,
            ),
            peer("tor", "198.18.1.254", 64500, false, PeerKind::External),
        ],
        services: podnet_bgp::ServiceRoutes {
            advertised: ["10.96.0.0/12", "203.0.113.10/32", "2001:db8::10/128"]
                .into_iter()
                .map(|n| n.parse().unwrap())
                .collect(),
            reserved: [
                "10.96.0.0/12",
                "203.0.113.10/32",
                "203.0.113.11/32",
                "2001:db8::10/128",
            ]
            .into_iter()
            .map(|n| n.parse().unwrap())
            .collect(),
        },
    }
}

/// The rendered configuration is what the golden file holds
/// (`PODNET_BLESS=1` rewrites it), and BIRD accepts it.
#[test]
fn rendered_configuration_matches_its_golden_file_and_bird_accepts_it() {
    require_root();
    let text = podnet_bgp::render(&sample());
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/node1.conf");
    if std::env::var_os("PODNET_BLESS").is_some() {
        std::fs::write(&golden, &text).unwrap();
    }
    assert_eq!(
        text,
        std::fs::read_to_string(&golden).unwrap_or_default(),
        "PODNET_BLESS=1 rewrites it"
    );

    let ns = NetnsGuard::new("birdcf");
    let dir = TempDir::new("birdcf");
    std::fs::write(dir.path().join("bird.conf"), BASE).unwrap();
    let _bird = start(&ns, dir.path());
    let socket = dir.path().join("bird.ctl");
    assert!(wait_until(Duration::from_secs(10), || {
        BirdControl::connect(&socket).is_ok()
    }));
    let mut bird = BirdControl::connect(&socket).unwrap();
    let file = dir.path().join("node1.conf");
    std::fs::write(&file, &text).unwrap();
    bird.configure_check(&file)
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    bird.configure(&file).unwrap();
    let protocols = bird.show_protocols().unwrap();
    let bgp: Vec<_> = protocols
        .iter()
        .filter(|p| p.proto == "BGP")
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(bgp, ["node2", "node3", "tor"], "{protocols:?}");
}
