//! Sysctls under `/proc/sys`, written inside the right namespace.
//!
//! `/proc/sys/net` shows the network namespace of the thread that opens it,
//! so a write for another namespace happens on a thread inside that namespace.

use std::path::PathBuf;

use crate::error::{KernelError, Result};
use crate::netns::Netns;

/// `sysctl -w KEY=VALUE` in the caller's namespace.
///
/// `key` uses dots or slashes (`net.ipv4.ip_forward`). Interface names in keys
/// must use slashes where they contain dots.
///
/// No read first: writing the value a key already has changes nothing in the
/// kernel (forwarding handlers act only on a change), and on a fresh interface
/// the read would be wasted.
pub fn write(key: &str, value: &str) -> Result<()> {
    let path = key_path(key);
    std::fs::write(&path, value).map_err(|e| KernelError::io(format!("sysctl -w {key}={value}"), e))
}

/// `sysctl KEY` in the caller's namespace.
pub fn read(key: &str) -> Result<String> {
    std::fs::read_to_string(key_path(key))
        .map(|s| s.trim().to_string())
        .map_err(|e| KernelError::io(format!("sysctl {key}"), e))
}

/// Writes several sysctls inside `netns` (`ip netns exec NS sysctl -w ...`).
pub fn write_in(netns: &Netns, settings: &[(String, String)]) -> Result<()> {
    netns.run(|| settings.iter().try_for_each(|(k, v)| write(k, v)))?
}

fn key_path(key: &str) -> PathBuf {
    let rel = if key.contains('/') {
        key.to_string()
    } else {
        key.replace('.', "/")
    };
    PathBuf::from("/proc/sys").join(rel)
}
