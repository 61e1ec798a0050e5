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
        let _ = self.0.kill();
        let _ = self.0.wait();
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
