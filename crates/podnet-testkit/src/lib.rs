//! Test kit: namespaces removed on Drop, waiting with a deadline, a root check.
//!
//! Every test makes its namespaces through [`NetnsGuard`] with a name from
//! [`unique_name`], so parallel tests never collide and nothing outlives a
//! test, even one that panics.

use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use podnet_kernel::Netns;

mod etcd;
pub mod packets;
pub use etcd::{EtcdMember, EtcdServer, EtcdTls, TempDir, ETCD_PORT};

/// Prefix of every namespace a podnet test creates.
pub const TEST_PREFIX: &str = "pnt";

/// A name unique to this process and call: `pnt-PID-N-TAG`.
pub fn unique_name(tag: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{TEST_PREFIX}{}-{n}-{tag}", std::process::id())
}

/// Runs a command inside `netns`, like `ip netns exec NAME ...`; panics if it cannot start.
pub fn exec_in(netns: &Netns, args: &[&str]) -> Output {
    let (program, rest) = args.split_first().expect("a command to run");
    let mut cmd = Command::new(program);
    cmd.args(rest);
    podnet_kernel::netns::enter_before_exec(&mut cmd, netns);
    cmd.output().unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// A named network namespace that is removed when the guard drops.
#[derive(Debug)]
pub struct NetnsGuard {
    name: String,
    netns: Netns,
}

impl NetnsGuard {
    /// Creates `/run/netns/<unique name for tag>` with `lo` up.
    pub fn new(tag: &str) -> Self {
        let name = unique_name(tag);
        let netns =
            Netns::create_named(&name).unwrap_or_else(|e| panic!("create netns {name}: {e}"));
        NetnsGuard { name, netns }
    }

    /// The namespace's name in `/run/netns`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The path `/run/netns/NAME`.
    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// The open namespace.
    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    /// Runs a command inside the namespace, like `ip netns exec NAME ...`.
    pub fn exec(&self, args: &[&str]) -> Output {
        exec_in(&self.netns, args)
    }

    /// Runs a command inside the namespace and returns its stdout; panics on failure.
    pub fn exec_ok(&self, args: &[&str]) -> String {
        let out = self.exec(args);
        assert!(
            out.status.success(),
            "{args:?} in {} failed: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// True when one ping to `ip` from this namespace is answered.
    pub fn ping(&self, ip: &str) -> bool {
        self.exec(&["ping", "-c", "1", "-W", "2", ip])
            .status
            .success()
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        podnet_kernel::netns::kill_processes_in(&self.netns);
        let _ = Netns::remove_named(&self.name);
    }
}

/// Deletes, inside `netns`, the first rule of `inet TABLE CHAIN` whose
/// `nft -a list` line contains `needle` (someone tampering with a table);
/// panics when there is none or `nft` fails.
pub fn delete_nft_rule(netns: &Netns, table: &str, chain: &str, needle: &str) {
    let out = exec_in(netns, &["nft", "-a", "list", "chain", "inet", table, chain]);
    let listing = String::from_utf8_lossy(&out.stdout);
    let handle = listing
        .lines()
        .find(|l| l.contains(needle))
        .and_then(|l| l.rsplit("handle ").next())
        .unwrap_or_else(|| panic!("no rule with {needle:?} in {table} {chain}:\n{listing}"))
        .trim()
        .to_string();
    let del = exec_in(
        netns,
        &[
            "nft", "delete", "rule", "inet", table, chain, "handle", &handle,
        ],
    );
    assert!(
        del.status.success(),
        "nft delete rule: {}",
        String::from_utf8_lossy(&del.stderr)
    );
}

/// Polls `condition` until it holds or `deadline` passes; returns whether it held.
pub fn wait_until(deadline: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    let mut pause = Duration::from_millis(1);
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::park_timeout(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Panics unless running as root: root tests fail, they never skip silently.
pub fn require_root() {
    assert!(
        podnet_kernel::process::is_root(),
        "podnet's kernel tests need root (CI runs them as root)"
    );
}

/// Runs `run` on every recorded case (`*.json`) in `dir`, in name order, and
/// fails with every failure at once; fewer than `at_least` cases is a
/// failure too (a test that finds no case cannot fail).
pub fn check_recorded_cases(
    dir: &std::path::Path,
    at_least: usize,
    run: impl Fn(&std::path::Path) -> Result<(), String>,
) {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(
        files.len() >= at_least,
        "recorded cases in {}",
        dir.display()
    );
    let failures: Vec<String> = files.iter().filter_map(|p| run(p).err()).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
