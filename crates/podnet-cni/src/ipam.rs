//! Where pod addresses come from: the built-in IPAM, or a delegated IPAM plugin.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};

use ipnet::IpNet;
use podnet_dataplane::PodAddress;
use podnet_ipam::{Attachment, Ipam};
use serde_json::Value;

use crate::config::NetConf;
use crate::env::{Command, RuntimeEnv};
use crate::error::{CniError, ErrorCode};
use crate::result::CniResult;

/// Addresses handed out for one attachment.
#[derive(Debug, Clone, Default)]
pub struct Lease {
    /// Addresses with the subnet's prefix and gateway.
    pub addresses: Vec<PodAddress>,
    /// Subnets the addresses come from (forwarded and masqueraded).
    pub subnets: Vec<IpNet>,
    /// Routes and DNS a delegated plugin returned.
    pub delegated: Option<CniResult>,
}

/// The IPAM serving one network.
#[derive(Debug)]
pub enum IpamBackend {
    /// podnet's own IPAM.
    Builtin(Ipam),
    /// An external IPAM plugin (`host-local`, `static`, `whereabouts`, ...).
    Delegated(String),
}

impl IpamBackend {
    /// Chooses the backend for `conf`.
    pub fn for_conf(conf: &NetConf) -> Result<Self, CniError> {
        if conf.builtin_ipam() {
            let ipam = Ipam::new(
                &conf.data_dir(),
                &conf.name,
                conf.ipam.ranges.clone(),
                conf.ipam.reserved.clone(),
            )?;
            Ok(IpamBackend::Builtin(ipam))
        } else {
            Ok(IpamBackend::Delegated(
                conf.ipam.ipam_type.clone().unwrap_or_default(),
            ))
        }
    }

    /// Allocates addresses for the attachment (`ADD`); `netns_id` is its namespace's (device, inode).
    pub fn add(
        &self,
        env: &RuntimeEnv,
        stdin: &[u8],
        netns_id: Option<(u64, u64)>,
    ) -> Result<Lease, CniError> {
        match self {
            IpamBackend::Builtin(ipam) => {
                let who = Attachment {
                    container_id: env.container_id.clone(),
                    ifname: env.ifname.clone(),
                    netns_path: env.netns.clone(),
                    netns_id,
                };
                let allocs = ipam.allocate(&who)?;
                Ok(builtin_lease(
                    ipam,
                    allocs.iter().map(|a| (a.range_set, a.ip)),
                ))
            }
            IpamBackend::Delegated(plugin) => {
                let (_, stdin) = &spoken(plugin, env, stdin)?;
                let out = exec_plugin(plugin, Command::Add, env, stdin)?;
                let result = CniResult::from_value(&out.unwrap_or(Value::Null))?;
                let addresses: Vec<PodAddress> = result
                    .ips
                    .iter()
                    .map(|ip| PodAddress {
                        address: ip.address,
                        gateway: ip.gateway,
                    })
                    .collect();
                let subnets = addresses.iter().map(|a| a.address.trunc()).collect();
                Ok(Lease {
                    addresses,
                    subnets,
                    delegated: Some(result),
                })
            }
        }
    }

    /// Releases the attachment's addresses (`DEL`, and rollback of a failed ADD).
    pub fn del(&self, env: &RuntimeEnv, stdin: &[u8]) -> Result<(), CniError> {
        match self {
            IpamBackend::Builtin(ipam) => ipam
                .release(&env.container_id, &env.ifname)
                .map(|_| ())
                .map_err(Into::into),
            IpamBackend::Delegated(plugin) => {
                let (_, stdin) = &spoken(plugin, env, stdin)?;
                exec_plugin(plugin, Command::Del, env, stdin).map(|_| ())
            }
        }
    }

    /// The addresses the attachment holds (`CHECK`).
    pub fn check(&self, env: &RuntimeEnv, stdin: &[u8]) -> Result<Option<Lease>, CniError> {
        match self {
            IpamBackend::Builtin(ipam) => {
                let allocs = ipam.lookup(&env.container_id, &env.ifname)?;
                if allocs.is_empty() {
                    return Err(CniError::new(
                        ErrorCode::CheckFailed,
                        format!(
                            "no address is allocated to {}/{}",
                            env.container_id, env.ifname
                        ),
                    ));
                }
                Ok(Some(builtin_lease(
                    ipam,
                    allocs.iter().map(|a| (a.range_set, a.ip)),
                )))
            }
            IpamBackend::Delegated(plugin) => {
                let (_, stdin) = &spoken(plugin, env, stdin)?;
                exec_plugin(plugin, Command::Check, env, stdin).map(|_| None)
            }
        }
    }

    /// Releases what belongs to attachments not in `valid` (`GC`). A
    /// delegate older than GC (before CNI 1.1.0) gets a DEL for each of the
    /// `stale` attachments podnet's own GC found instead.
    pub fn gc(
        &self,
        valid: &[(String, String)],
        stale: &[(String, String)],
        env: &RuntimeEnv,
        stdin: &[u8],
    ) -> Result<(), CniError> {
        match self {
            IpamBackend::Builtin(ipam) => {
                ipam.gc(valid)?;
                Ok(())
            }
            IpamBackend::Delegated(plugin) => {
                let (version, stdin) = &spoken(plugin, env, stdin)?;
                if at_least(version, GC_SINCE) {
                    return exec_plugin(plugin, Command::Gc, env, stdin).map(|_| ());
                }
                for (container_id, ifname) in stale {
                    let of = RuntimeEnv {
                        container_id: container_id.clone(),
                        ifname: ifname.clone(),
                        netns: String::new(),
                        ..env.clone()
                    };
                    exec_plugin(plugin, Command::Del, &of, stdin)?;
                }
                Ok(())
            }
        }
    }

    /// Whether an ADD could be served now (`STATUS`).
    pub fn status(&self, env: &RuntimeEnv, stdin: &[u8]) -> Result<(), CniError> {
        match self {
            IpamBackend::Builtin(ipam) => {
                let free = ipam.free_counts().map_err(|e| {
                    CniError::new(
                        ErrorCode::NotAvailable,
                        format!("IPAM store is not usable: {e}"),
                    )
                })?;
                if let Some(set) = free.iter().position(|n| *n == 0) {
                    return Err(CniError::new(
                        ErrorCode::NotAvailable,
                        format!("no free address left in range set {set}"),
                    ));
                }
                Ok(())
            }
            IpamBackend::Delegated(plugin) => {
                let (version, stdin) = &spoken(plugin, env, stdin)?;
                // A delegate older than STATUS has nothing to say: it is ready.
                if !at_least(version, GC_SINCE) {
                    return Ok(());
                }
                exec_plugin(plugin, Command::Status, env, stdin).map(|_| ())
            }
        }
    }
}

fn builtin_lease(ipam: &Ipam, allocs: impl Iterator<Item = (usize, IpAddr)>) -> Lease {
    let mut lease = Lease::default();
    for (set, ip) in allocs {
        let Some(range) = ipam.ranges()[set].iter().find(|r| r.subnet.contains(&ip)) else {
            continue;
        };
        let address = IpNet::new(ip, range.subnet.prefix_len()).expect("prefix of a valid subnet");
        lease.addresses.push(PodAddress {
            address,
            gateway: Some(range.gateway()),
        });
    }
    lease.subnets = ipam.ranges().iter().flatten().map(|r| r.subnet).collect();
    lease
}

/// The CNI version that brought GC and STATUS.
const GC_SINCE: &str = "1.1.0";

/// `a.b.c` as numbers, for ordering versions.
fn version_key(v: &str) -> Vec<u32> {
    v.split('.').map(|p| p.parse().unwrap_or(0)).collect()
}

fn at_least(v: &str, min: &str) -> bool {
    version_key(v) >= version_key(min)
}

/// The highest version both the config (`wanted`) and the delegate
/// (`supported`) speak: `wanted` itself when the delegate speaks it.
pub fn common_version(wanted: &str, supported: &[String]) -> Option<String> {
    if supported.iter().any(|v| v == wanted) {
        return Some(wanted.to_string());
    }
    supported
        .iter()
        .filter(|v| version_key(v) <= version_key(wanted))
        .max_by_key(|v| version_key(v))
        .cloned()
}

/// The version to speak with `plugin` (asked with `VERSION`) and the
/// config rewritten to it: Debian's host-local speaks CNI up to 1.0.0
/// while podnet's config may say 1.1.0.
fn spoken(plugin: &str, env: &RuntimeEnv, stdin: &[u8]) -> Result<(String, Vec<u8>), CniError> {
    let bad = |m: String| CniError::new(ErrorCode::DelegatedIpamFailure, m);
    let mut conf: Value = serde_json::from_slice(stdin)
        .map_err(|e| bad(format!("network config is not JSON: {e}")))?;
    let wanted = conf["cniVersion"].as_str().unwrap_or("1.1.0").to_string();
    let ask = serde_json::to_vec(&serde_json::json!({ "cniVersion": wanted })).unwrap_or_default();
    let answer = exec_plugin(plugin, Command::Version, env, &ask)?.unwrap_or(Value::Null);
    let supported: Vec<String> = answer["supportedVersions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    let version = common_version(&wanted, &supported).ok_or_else(|| {
        bad(format!(
            "IPAM plugin {plugin} speaks CNI {}, none of them at most {wanted}",
            supported.join(", ")
        ))
    })?;
    conf["cniVersion"] = version.clone().into();
    // A delegate that does not know GC must not be handed its fields.
    if !at_least(&version, GC_SINCE) {
        if let Some(m) = conf.as_object_mut() {
            m.remove("cni.dev/valid-attachments");
        }
    }
    let bytes = serde_json::to_vec(&conf).map_err(|e| bad(e.to_string()))?;
    Ok((version, bytes))
}

fn find_plugin(name: &str, env: &RuntimeEnv) -> Result<PathBuf, CniError> {
    if name.contains('/') || name.is_empty() {
        return Err(CniError::new(
            ErrorCode::InvalidNetworkConfig,
            format!("invalid IPAM plugin type {name:?}"),
        ));
    }
    env.path
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            CniError::new(
                ErrorCode::InvalidNetworkConfig,
                format!(
                    "IPAM plugin {name:?} not found in CNI_PATH {:?}",
                    env.path.join(":")
                ),
            )
        })
}

/// Runs a delegated plugin as the spec describes: same environment, `CNI_COMMAND` set, config on stdin.
fn exec_plugin(
    name: &str,
    cmd: Command,
    env: &RuntimeEnv,
    stdin: &[u8],
) -> Result<Option<Value>, CniError> {
    let path = find_plugin(name, env)?;
    let fail = |m: String| CniError::new(ErrorCode::DelegatedIpamFailure, m);
    let mut child = Process::new(&path)
        .env("CNI_COMMAND", cmd.as_str())
        .env("CNI_CONTAINERID", &env.container_id)
        .env("CNI_NETNS", &env.netns)
        .env("CNI_IFNAME", &env.ifname)
        .env("CNI_ARGS", &env.args)
        .env("CNI_PATH", env.path.join(":"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| fail(format!("cannot run IPAM plugin {}: {e}", path.display())))?;
    // The input is dropped (closed) before the wait. A plugin may exit
    // without reading it (VERSION needs none): a broken pipe is then no
    // error, its exit status and output say how it went. The child is
    // reaped whatever happened.
    let written = child.stdin.take().map(|mut input| input.write_all(stdin));
    let out = child
        .wait_with_output()
        .map_err(|e| fail(format!("waiting for IPAM plugin {name}: {e}")))?;
    match written {
        Some(Err(e)) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            return Err(fail(format!("writing to IPAM plugin {name}: {e}")));
        }
        _ => {}
    }
    let parsed: Option<Value> = serde_json::from_slice(&out.stdout).ok();
    if !out.status.success() {
        let mut err = fail(format!(
            "IPAM plugin {name} {} failed: {}",
            cmd.as_str(),
            parsed
                .as_ref()
                .and_then(|v| v.get("msg"))
                .and_then(Value::as_str)
                .unwrap_or("no error message")
        ));
        // Pass the delegate's own code through: the runtime acts on it.
        err.raw_code = parsed
            .as_ref()
            .and_then(|v| v.get("code"))
            .and_then(Value::as_u64)
            .map(|c| c as u32);
        return Err(err);
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_highest_version_both_speak_is_chosen() {
        let debian: Vec<String> = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0"]
            .map(String::from)
            .to_vec();
        assert_eq!(common_version("1.1.0", &debian).as_deref(), Some("1.0.0"));
        assert_eq!(common_version("0.4.0", &debian).as_deref(), Some("0.4.0"));
        assert_eq!(common_version("0.0.9", &debian), None);
        assert!(at_least("1.1.0", GC_SINCE) && !at_least("1.0.0", GC_SINCE));
    }
}
