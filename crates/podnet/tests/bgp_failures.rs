//! BGP in the lab when things change or fail: nodes joining and leaving,
//! a peer that never answers, the agent and BIRD killed and restarted.

mod bgpkit;
mod labkit;

use std::time::Duration;

use bgpkit::*;
use labkit::{connect, text, transfer, LabGuard};
use podnet_kernel::rtnl::{Removal, RemovalWatch, RTPROT_BIRD};
use podnet_testkit::wait_until;

/// Another node joins: its block reaches every node and the router; the
/// sessions that were up stay up (no reset), and a peer that never comes
/// up holds nothing back. A node that leaves is
/// withdrawn everywhere well before any timer (hold 9 s, restart 60 s) could.
#[test]
fn nodes_join_and_leave_without_resetting_other_sessions() {
    let lab = LabGuard::new();
    up_bgp(
        &lab,
        "--bgp-topology tor --nodes 2 --segments 2 --pods-per-node 1",
    );
    // A peer that never answers (nothing has its address) blocks nothing.
    lab.apply(
        "apiVersion: podnet.io/v1\nkind: BGPPeer\nmetadata: {name: nobody}\n\
         spec: {peerIP: 198.18.1.99, asNumber: 65099, node: node1}\n",
    );
    assert!(
        wait_until(Duration::from_secs(10), || sessions(&lab_bgp(
            &lab,
            Some("node1")
        ))
        .contains(&"peer_nobody")),
        "node1 never configured the dead peer"
    );
    let before = lab_bgp(&lab, Some("node1"));
    let since = |report: &str| {
        report
            .lines()
            .find(|l| l.contains("peer_tor_s1"))
            .map(|l| l.split_whitespace().nth(4).unwrap_or("").to_string())
            .unwrap()
    };
    let out = lab.run(&["add-node", "--segment", "2"]);
    assert!(out.status.success(), "{}", text(&out));
    let new = block(&lab, "node3");
    assert!(
        wait_until(Duration::from_secs(20), || bird_route(&lab, "node1", new)
            .is_some()),
        "node1 never learned node3's {new}\n{}",
        lab.logs()
    );
    assert_eq!(
        since(&before),
        since(&lab_bgp(&lab, Some("node1"))),
        "node1's session was reset"
    );
    // The new node's agent watches its session come up (and, by asking,
    // wakes BIRD to send its first routes at once).
    let log = lab.lab().node_dir("node3").join("agent.log");
    assert!(
        wait_until(Duration::from_secs(10), || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .lines()
                .any(|l| l.contains("BGP session peer_tor_s2: ") && l.ends_with("-> Established"))
        }),
        "node3's agent logged no session coming up:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let report = lab_bgp(&lab, Some("node1"));
    let dead = report
        .lines()
        .find(|l| l.contains("peer_nobody"))
        .unwrap_or("");
    assert!(!dead.contains("Established"), "{report}");
    lab.check_ok();

    let gone = block(&lab, "node2");
    let out = lab.run(&["remove-node", "node2"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        wait_until(Duration::from_secs(5), || {
            bird_route(&lab, "node1", gone).is_none() && bird_route(&lab, "node3", gone).is_none()
        }),
        "node2's {gone} still routed 5 s after it left: {:?}",
        routes(&lab, "node1")
    );
    lab.check_ok();
}

/// Route deletions BIRD made in `node` (kernel protocol 12) while `f` ran.
fn bird_deletions_during(lab: &LabGuard, nodes: &[&str], f: impl FnOnce()) -> usize {
    let mut watches: Vec<RemovalWatch> = nodes
        .iter()
        .map(|n| lab.node_ns(n).run(RemovalWatch::open).unwrap().unwrap())
        .collect();
    f();
    let mut deleted = 0;
    for w in &mut watches {
        for removal in w.wait(Duration::from_millis(200)).unwrap() {
            if matches!(removal, Removal::Route { protocol } if protocol == RTPROT_BIRD) {
                deleted += 1;
            }
        }
    }
    deleted
}

/// Graceful restart: the agent killed and restarted (no route flaps
/// anywhere), then BIRD killed and started again (with -R) by the new
/// agent (no route flaps on its peers). A TCP connection across segments
/// carries data before, between and after.
#[test]
fn agent_and_bird_restarts_keep_routes_and_connections() {
    let lab = LabGuard::new();
    up_bgp(
        &lab,
        "--bgp-topology tor --nodes 2 --segments 2 --pods-per-node 1",
    );
    let (a, b) = (lab.pods_of("node1"), lab.pods_of("node2"));
    let (mut client, mut server) = connect(&a[0].0, &b[0].0, b[0].1, 7100);
    transfer(&mut client, &mut server, 64 * 1024);

    let deleted = bird_deletions_during(&lab, &["node1", "node2"], || {
        let out = lab.run(&["restart-agent", "node1"]);
        assert!(out.status.success(), "{}", text(&out));
    });
    assert_eq!(deleted, 0, "an agent restart flapped BIRD's routes");
    transfer(&mut client, &mut server, 64 * 1024);

    // The peer keeps node1's routes (FRR as a graceful-restart helper, and
    // node2 behind it). node1 itself is not checked here: a bgpd started
    // less than 120 s ago says it is restarting too (its startup timer runs
    // with FRR's default restart time, whatever the configuration says),
    // and RFC 4724 then lets BIRD wait for nothing: it prunes before FRR's
    // routes are back, which takes FRR's coalesce time (50 ms). A BIRD
    // peer does not: see the mesh restart test.
    let deleted = bird_deletions_during(&lab, &["node2"], || {
        kill_bird_and_restart_agent(&lab, "node1");
        let report = || lab_bgp(&lab, Some("node1"));
        assert!(
            wait_until(Duration::from_secs(30), || report().contains("Established")),
            "BIRD's session never came back: {}",
            report()
        );
    });
    let log =
        std::fs::read_to_string(lab.lab().bird_dir("node1").join("bird.log")).unwrap_or_default();
    assert_eq!(
        deleted, 0,
        "a BIRD restart flapped the kernel's routes; BIRD's log:\n{log}"
    );
    transfer(&mut client, &mut server, 64 * 1024);
    let back = block(&lab, "node2");
    assert!(wait_until(Duration::from_secs(10), || bird_route(
        &lab, "node1", back
    )
    .is_some()));
    assert_routed(&lab);
}

/// Kills `node`'s BIRD (SIGKILL) with its agent stopped, then starts the
/// agent again, which starts BIRD again (with `-R`: its routes are in the kernel).
fn kill_bird_and_restart_agent(lab: &LabGuard, node: &str) {
    lab.lab().stop_agent(node).unwrap();
    let pid = std::fs::read_to_string(lab.lab().bird_dir(node).join("bird.pid")).unwrap();
    let killed = std::process::Command::new("kill")
        .args(["-KILL", pid.trim()])
        .status()
        .unwrap();
    assert!(killed.success());
    lab.lab().start_agent(node).unwrap();
}

/// How many times `node`'s BIRD has logged the end of a graceful restart.
fn recoveries(lab: &LabGuard, node: &str) -> usize {
    std::fs::read_to_string(lab.lab().bird_dir(node).join("bird.log"))
        .unwrap_or_default()
        .matches("Graceful restart done")
        .count()
}

/// BIRD killed on node1 of a mesh and started again by its agent (with
/// `-R`): no route is deleted from any kernel, node1's included, from the
/// kill until node1's BIRD has ended its recovery (its peer, a BIRD that is
/// not restarting itself, holds its routes and sends them again before
/// End-of-RIB). A TCP connection between the nodes' pods carries on.
#[test]
fn a_bird_restart_in_a_mesh_deletes_no_route() {
    let lab = LabGuard::new();
    up_bgp(&lab, "--bgp-topology mesh --nodes 2 --pods-per-node 1");
    let (a, b) = (lab.pods_of("node1"), lab.pods_of("node2"));
    let (mut client, mut server) = connect(&a[0].0, &b[0].0, b[0].1, 7101);
    transfer(&mut client, &mut server, 64 * 1024);
    let before = recoveries(&lab, "node1");
    let deleted = bird_deletions_during(&lab, &["node1", "node2"], || {
        kill_bird_and_restart_agent(&lab, "node1");
        assert!(
            wait_until(Duration::from_secs(30), || recoveries(&lab, "node1")
                > before),
            "node1's BIRD never ended its recovery:\n{}",
            lab_bgp(&lab, Some("node1"))
        );
    });
    let log =
        std::fs::read_to_string(lab.lab().bird_dir("node1").join("bird.log")).unwrap_or_default();
    assert!(
        log.contains("Graceful restart started"),
        "BIRD was not started with -R:\n{log}"
    );
    assert_eq!(
        deleted, 0,
        "a BIRD restart flapped kernel routes; BIRD's log:\n{log}"
    );
    transfer(&mut client, &mut server, 64 * 1024);
    assert_routed(&lab);
}
