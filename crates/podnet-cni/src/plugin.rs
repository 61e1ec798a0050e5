//! The CNI verbs: one function each, called by [`run`].

use podnet_dataplane::{attach, check, detach, remove_stale, Attached, PodAttachment};
use podnet_kernel::Netns;
use serde_json::Value;

use crate::config::{check_version, NetConf, SUPPORTED_VERSIONS};
use crate::env::{Command, RuntimeEnv};
use crate::error::{CniError, ErrorCode};
use crate::ipam::{IpamBackend, Lease};
use crate::result::{CniResult, InterfaceResult, IpResult, RouteResult};

/// Runs one CNI verb; returns what goes to stdout (empty for DEL, GC, STATUS).
pub fn run(cmd: Command, env: &RuntimeEnv, stdin: &[u8]) -> Result<String, CniError> {
    match cmd {
        Command::Version => version(stdin),
        Command::Add => add(env, stdin),
        Command::Del => del(env, stdin).map(|_| String::new()),
        Command::Check => check_cmd(env, stdin).map(|_| String::new()),
        Command::Gc => gc(env, stdin).map(|_| String::new()),
        Command::Status => status(env, stdin).map(|_| String::new()),
    }
}

/// The `cniVersion` to answer errors in: the caller's, when it is readable and supported.
pub fn reply_version(stdin: &[u8]) -> String {
    serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| {
            v.get("cniVersion")
                .and_then(Value::as_str)
                .map(String::from)
        })
        .filter(|v| SUPPORTED_VERSIONS.contains(&v.as_str()))
        .unwrap_or_else(|| "1.1.0".to_string())
}

fn version(stdin: &[u8]) -> Result<String, CniError> {
    if let Ok(v) = serde_json::from_slice::<Value>(stdin) {
        if let Some(asked) = v.get("cniVersion").and_then(Value::as_str) {
            check_version(asked)?;
        }
    }
    Ok(serde_json::json!({"cniVersion": reply_version(stdin), "supportedVersions": SUPPORTED_VERSIONS}).to_string())
}

fn host_netns() -> Result<Netns, CniError> {
    Netns::current().map_err(|e| {
        CniError::new(
            ErrorCode::IoFailure,
            format!("cannot open the node's namespace: {e}"),
        )
    })
}

fn add(env: &RuntimeEnv, stdin: &[u8]) -> Result<String, CniError> {
    let conf = NetConf::parse(stdin)?;
    // Refuse a missing namespace before anything is allocated.
    let pod_ns = Netns::open(&env.netns).map_err(|e| {
        let msg = match e {
            podnet_kernel::KernelError::NotANamespace(_) => e.to_string(),
            _ => format!("network namespace {} does not exist", env.netns),
        };
        CniError::new(ErrorCode::UnknownContainer, msg).with_details(e.to_string())
    })?;
    let prev = conf
        .prev_result
        .as_ref()
        .map(CniResult::from_value)
        .transpose()?;
    let host = host_netns()?;
    let ipam = IpamBackend::for_conf(&conf)?;
    let netns_id = pod_ns.id().ok().map(|id| (id.dev, id.ino));
    let lease = ipam.add(env, stdin, netns_id)?;
    let pod = pod_attachment(env, &conf, &lease);
    let spec = conf.network_spec(lease.subnets.clone());
    let attached = match attach(&host, &pod_ns, &spec, &pod) {
        Ok(a) => a,
        Err(e) => {
            // Give the addresses back: a failed ADD leaves nothing behind,
            // and when it cannot, the error's details say what stayed.
            let mut err: CniError = e.into();
            if let Err(release) = ipam.del(env, stdin) {
                let left = format!("releasing the addresses failed: {}", release.msg);
                err.details = if err.details.is_empty() {
                    left
                } else {
                    format!("{}; {left}", err.details)
                };
            }
            return Err(err);
        }
    };
    let mine = result_of(&conf, env, &attached, &lease);
    let result = match prev {
        Some(p) => p.chain(mine),
        None => mine,
    };
    Ok(result.to_json(&conf.cni_version))
}

/// The dataplane's view of this invocation's pod interface.
fn pod_attachment(env: &RuntimeEnv, conf: &NetConf, lease: &Lease) -> PodAttachment {
    PodAttachment {
        container_id: env.container_id.clone(),
        netns_path: env.netns.clone(),
        ifname: env.ifname.clone(),
        addresses: lease.addresses.clone(),
        routes: conf.ipam.routes.clone(),
    }
}

fn result_of(conf: &NetConf, env: &RuntimeEnv, a: &Attached, lease: &Lease) -> CniResult {
    let mut interfaces = Vec::new();
    if let Some(b) = &a.bridge {
        interfaces.push(InterfaceResult {
            name: b.name.clone(),
            mac: b.mac.clone(),
            sandbox: None,
        });
    }
    interfaces.push(InterfaceResult {
        name: a.host.name.clone(),
        mac: a.host.mac.clone(),
        sandbox: None,
    });
    interfaces.push(InterfaceResult {
        name: a.pod.name.clone(),
        mac: a.pod.mac.clone(),
        sandbox: Some(env.netns.clone()),
    });
    let pod_index = interfaces.len() - 1;
    CniResult {
        cni_version: conf.cni_version.clone(),
        interfaces,
        ips: a
            .addresses
            .iter()
            .map(|(addr, gw)| IpResult {
                version: None,
                address: *addr,
                gateway: *gw,
                interface: Some(pod_index),
            })
            .collect(),
        routes: a
            .routes
            .iter()
            .map(|r| RouteResult {
                dst: r.dst,
                gw: Some(r.gw),
            })
            .collect(),
        dns: conf
            .dns
            .clone()
            .or_else(|| lease.delegated.as_ref().and_then(|d| d.dns.clone())),
    }
}

fn del(env: &RuntimeEnv, stdin: &[u8]) -> Result<(), CniError> {
    let conf = NetConf::parse(stdin)?;
    let host = host_netns()?;
    let spec = conf.network_spec(Vec::new());
    // Teardown collects: go on past a failure, report everything at the end.
    let mut failures: Vec<CniError> = Vec::new();
    if let Err(e) = detach(&host, &spec, &env.container_id, &env.ifname) {
        failures.push(e.into());
    }
    match IpamBackend::for_conf(&conf) {
        Ok(ipam) => {
            if let Err(e) = ipam.del(env, stdin) {
                failures.push(e);
            }
        }
        Err(e) => failures.push(e),
    }
    match failures.len() {
        0 => Ok(()),
        1 => Err(failures.remove(0)),
        _ => {
            let details = failures
                .iter()
                .map(|e| e.msg.clone())
                .collect::<Vec<_>>()
                .join("; ");
            Err(failures.remove(0).with_details(details))
        }
    }
}

fn check_cmd(env: &RuntimeEnv, stdin: &[u8]) -> Result<(), CniError> {
    let conf = NetConf::parse(stdin)?;
    let prev = conf.prev_result.as_ref().ok_or_else(|| {
        CniError::new(
            ErrorCode::InvalidNetworkConfig,
            "CHECK needs prevResult (the result of ADD)",
        )
    })?;
    let prev = CniResult::from_value(prev)?;
    let ipam = IpamBackend::for_conf(&conf)?;
    let lease = match ipam.check(env, stdin)? {
        Some(l) => l,
        None => {
            // Delegated IPAM: the addresses are those ADD reported for our interface.
            let ours = prev
                .interfaces
                .iter()
                .position(|i| i.name == env.ifname && i.sandbox.is_some());
            let addresses = prev
                .ips
                .iter()
                .filter(|ip| ip.interface.is_none() || ip.interface == ours)
                .map(|ip| podnet_dataplane::PodAddress {
                    address: ip.address,
                    gateway: ip.gateway,
                })
                .collect::<Vec<_>>();
            let subnets = addresses.iter().map(|a| a.address.trunc()).collect();
            Lease {
                addresses,
                subnets,
                delegated: None,
            }
        }
    };
    let pod = pod_attachment(env, &conf, &lease);
    let host = host_netns()?;
    check(&host, &conf.network_spec(lease.subnets), &pod)?;
    Ok(())
}

fn gc(env: &RuntimeEnv, stdin: &[u8]) -> Result<(), CniError> {
    let conf = NetConf::parse(stdin)?;
    let valid: Vec<(String, String)> = conf
        .valid_attachments
        .iter()
        .flatten()
        .map(|a| (a.container_id.clone(), a.ifname.clone()))
        .collect();
    // Interfaces first, then addresses: an address is never free while an interface still holds it.
    let stale = remove_stale(&host_netns()?, &conf.network_spec(Vec::new()), &valid)?;
    IpamBackend::for_conf(&conf)?.gc(&valid, &stale, env, stdin)
}

fn status(env: &RuntimeEnv, stdin: &[u8]) -> Result<(), CniError> {
    let conf = NetConf::parse(stdin)?;
    IpamBackend::for_conf(&conf)?.status(env, stdin)
}
