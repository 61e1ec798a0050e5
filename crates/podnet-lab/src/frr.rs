//! The lab router as a real BGP router: FRR (Debian's `frr`), zebra and
//! bgpd started in the router namespace, driven by their configuration
//! files. It accepts sessions from any node of the fabric (`bgp listen
//! range`), so nodes come and go without touching its configuration, and
//! spreads traffic over every node that advertises one address (ECMP).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use podnet_kernel::Netns;

use crate::control::wait_for;
use crate::error::LabError;
use crate::fabric::router_address;
use crate::runtime::spawn_daemon;
use crate::spec::{RouterBgp, REFLECTOR_CLUSTER_ID, TOR_AS};
use crate::Lab;

/// Where Debian installs FRR's daemons.
const FRR_LIB: &str = "/usr/lib/frr";
/// FRR's graceful-restart time: how long nodes keep the router's routes
/// when it restarts, and how long after its start it tells peers that it is
/// restarting (the R bit), which ends a restarting BIRD's recovery before
/// it has relearned its routes. FRR's default is 120 s.
pub const RESTART_TIME: u32 = 5;
/// How long bgpd waits before sending its table to a peer that just came
/// up (so that peers coming up together share one update group). FRR's
/// default (1 s, stretched to 1.3 s with a few peers) would delay every
/// joining node's routes to the rest of the cluster by that much.
const COALESCE_MS: u32 = 50;
/// How long zebra and bgpd may take to come up.
const START_DEADLINE: Duration = Duration::from_secs(20);

impl Lab {
    /// FRR's directory: configuration, pid files, zebra's socket, vty sockets.
    pub fn frr_dir(&self) -> PathBuf {
        self.state_dir().join("frr")
    }
}

/// The AS the router speaks in.
pub fn router_as(role: RouterBgp) -> u32 {
    match role {
        RouterBgp::Tor => TOR_AS,
        RouterBgp::Member | RouterBgp::Reflector => podnet_cluster::bgp::DEFAULT_AS,
    }
}

/// bgpd's configuration for `role`: one peer group for every node.
pub fn bgpd_conf(role: RouterBgp, segments: usize, log: &Path) -> String {
    let asn = router_as(role);
    let remote = match role {
        RouterBgp::Tor => "external",
        RouterBgp::Member | RouterBgp::Reflector => "internal",
    };
    let mut out = format!(
        "! bgpd of the podnet lab router, written by `podnet lab up`.\n\
         frr defaults datacenter\n\
         log file {}\n\
         !\n\
         router bgp {asn}\n \
         bgp router-id {}\n \
         no bgp ebgp-requires-policy\n \
         no bgp default ipv4-unicast\n \
         bgp graceful-restart\n \
         bgp graceful-restart restart-time {RESTART_TIME}\n \
         bgp graceful-restart preserve-fw-state\n \
         bgp bestpath as-path multipath-relax\n \
         coalesce-time {COALESCE_MS}\n",
        log.display(),
        router_address(1)
    );
    if role == RouterBgp::Reflector {
        let _ = writeln!(out, " bgp cluster-id {REFLECTOR_CLUSTER_ID}");
    }
    let _ = write!(
        out,
        " neighbor NODES peer-group\n \
         neighbor NODES remote-as {remote}\n \
         neighbor NODES timers 3 9\n \
         neighbor NODES timers connect 1\n"
    );
    for s in 1..=segments {
        let _ = writeln!(out, " bgp listen range 198.18.{s}.0/24 peer-group NODES");
    }
    for family in ["ipv4", "ipv6"] {
        let _ = write!(
            out,
            " address-family {family} unicast\n  neighbor NODES activate\n  maximum-paths 16\n  maximum-paths ibgp 16\n"
        );
        if role == RouterBgp::Reflector {
            out += "  neighbor NODES route-reflector-client\n";
        }
        out += " exit-address-family\n";
    }
    out += "!\n";
    out
}

/// Starts zebra and bgpd in the router namespace and waits for bgpd's pid file.
pub(crate) fn start(lab: &Lab, role: RouterBgp, segments: usize) -> Result<(), LabError> {
    let dir = lab.frr_dir();
    std::fs::create_dir_all(&dir)
        .map_err(|e| LabError::io(format!("create {}", dir.display()), e))?;
    let (uid, gid) = frr_user()?;
    std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
        .map_err(|e| LabError::io(format!("chown {} to frr", dir.display()), e))?;
    let zebra_conf = format!(
        "hostname {}router\nlog file {}\n",
        lab.prefix(),
        dir.join("zebra.log").display()
    );
    write(&dir.join("zebra.conf"), &zebra_conf)?;
    write(
        &dir.join("bgpd.conf"),
        &bgpd_conf(role, segments, &dir.join("bgpd.log")),
    )?;
    let router = Netns::open_named(&lab.router_ns())?;
    for daemon in ["zebra", "bgpd"] {
        let (conf, pid) = (
            dir.join(format!("{daemon}.conf")),
            dir.join(format!("{daemon}.pid")),
        );
        let (zserv, vty) = (dir.join("zserv.api"), dir.display().to_string());
        let args = [
            "-f",
            &conf.display().to_string(),
            "-i",
            &pid.display().to_string(),
            "-z",
            &zserv.display().to_string(),
            "--vty_socket",
            &vty,
            "-u",
            "frr",
            "-g",
            "frr",
        ]
        .map(String::from);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let program = Path::new(FRR_LIB).join(daemon);
        if !program.is_file() {
            return Err(LabError::Spec(format!(
                "{} not found: install frr (scripts/install-deps.sh)",
                program.display()
            )));
        }
        let log = dir.join(format!("{daemon}.out"));
        spawn_daemon(&router, &program, &args, Some(&log))?;
        let socket = dir.join(format!("{daemon}.vty"));
        wait_for(START_DEADLINE, &format!("FRR's {daemon} to start"), || {
            socket.exists()
        })?;
    }
    Ok(())
}

/// Runs `vtysh -c COMMAND` against the lab router's FRR (for people: `lab bgp`).
pub fn vtysh(lab: &Lab, command: &str) -> Result<String, LabError> {
    let out = std::process::Command::new("vtysh")
        .arg("--vty_socket")
        .arg(lab.frr_dir())
        .arg("-c")
        .arg(command)
        .output()
        .map_err(|e| LabError::io("run vtysh", e))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(LabError::Spec(format!(
            "vtysh -c {command:?}: {}{}",
            text,
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(text)
}

fn write(path: &Path, text: &str) -> Result<(), LabError> {
    std::fs::write(path, text).map_err(|e| LabError::io(format!("write {}", path.display()), e))
}

/// The uid and gid of user `frr` (Debian's package makes it).
fn frr_user() -> Result<(u32, u32), LabError> {
    let passwd =
        std::fs::read_to_string("/etc/passwd").map_err(|e| LabError::io("read /etc/passwd", e))?;
    passwd
        .lines()
        .find_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            (f.first() == Some(&"frr") && f.len() > 3)
                .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
                .flatten()
        })
        .ok_or_else(|| LabError::Spec("no user frr: install frr (scripts/install-deps.sh)".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tor_accepts_any_node_over_ebgp_and_spreads_over_them() {
        let conf = bgpd_conf(RouterBgp::Tor, 2, Path::new("/tmp/bgpd.log"));
        assert!(conf.contains("router bgp 65000\n"), "{conf}");
        assert!(conf.contains(" neighbor NODES remote-as external\n"));
        assert!(conf.contains(" bgp listen range 198.18.2.0/24 peer-group NODES\n"));
        assert!(conf.contains("  maximum-paths 16\n"));
        assert!(!conf.contains("route-reflector-client"));
    }

    #[test]
    fn a_reflector_makes_every_node_its_client() {
        let conf = bgpd_conf(RouterBgp::Reflector, 1, Path::new("/tmp/bgpd.log"));
        assert!(conf.contains("router bgp 64512\n"), "{conf}");
        assert!(conf.contains(" bgp cluster-id 244.0.0.1\n"));
        assert_eq!(conf.matches("route-reflector-client").count(), 2);
    }
}
