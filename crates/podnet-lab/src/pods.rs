//! Pods on lab nodes: created and deleted through the real CNI plugin with
//! the config the node's agent wrote, their containers' commands run in the
//! pod's network namespace (a tiny runtime: no image, the host's
//! filesystem), and their record written to the cluster store, where
//! services and policies find them.

use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;
use podnet_kernel::Netns;
use podnet_manifest::PodManifest;
use podnet_policy::model::Protocol;
use podnet_policy::{ContainerPort, Pod};

use crate::echo;
use crate::error::LabError;
use crate::runtime::{run_cni, spawn_daemon, CniCall};
use crate::state::{self, LabPod, LabState};
use crate::{Lab, READY_DEADLINE};

/// The plugin config a runtime derives from the node's conflist: the first
/// plugin, with the list's name and CNI version.
fn plugin_config(lab: &Lab, node: &str) -> Result<String, LabError> {
    let path = lab
        .node_dir(node)
        .join("cni")
        .join(podnet_agent::CNI_CONF_FILE);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| LabError::io(format!("read {}", path.display()), e))?;
    let list: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        LabError::io(
            format!("parse {}", path.display()),
            std::io::Error::other(e),
        )
    })?;
    let mut plugin = list["plugins"][0].clone();
    plugin["name"] = list["name"].clone();
    plugin["cniVersion"] = list["cniVersion"].clone();
    Ok(plugin.to_string())
}

/// The echo ports every built-in lab pod declares.
pub fn echo_ports() -> Vec<ContainerPort> {
    [("echo", Protocol::Tcp), ("echo-udp", Protocol::Udp)]
        .into_iter()
        .map(|(name, protocol)| ContainerPort {
            name: name.into(),
            container_port: u32::from(echo::ECHO_PORT),
            protocol,
        })
        .collect()
}

/// Creates `count` built-in pods on `node` (namespace `default`, an echo server each).
pub(crate) fn create(
    lab: &Lab,
    state: &mut LabState,
    node: &str,
    count: usize,
) -> Result<Vec<LabPod>, LabError> {
    let n = state.node(node)?.clone();
    let first = state
        .pods
        .iter()
        .filter(|p| p.node == node && p.namespace == "default")
        .count()
        + 1;
    let mut made = Vec::new();
    for i in first..first + count {
        let name = format!("{node}-pod{i}");
        let mut labels = state.spec.pod_labels.clone();
        labels.insert("node".into(), node.to_string());
        labels.insert("pod".into(), format!("{}-pod{i}", n.ns));
        let manifest = PodManifest {
            pod: Pod {
                namespace: "default".into(),
                name,
                node: node.to_string(),
                ips: Vec::new(),
                labels,
                ports: echo_ports(),
                ready: true,
            },
            containers: Vec::new(),
        };
        made.push(start(lab, state, &manifest, &format!("{}-pod{i}", n.ns))?);
    }
    Ok(made)
}

/// Creates one pod on `manifest.pod.node`: namespace, CNI ADD, its processes,
/// the lab's record and the store's. On failure nothing of it stays.
pub(crate) fn start(
    lab: &Lab,
    state: &mut LabState,
    manifest: &PodManifest,
    netns: &str,
) -> Result<LabPod, LabError> {
    let node = manifest.pod.node.clone();
    let pod_ns = Netns::create_named(netns)?;
    let mut pod = LabPod {
        name: netns.to_string(),
        namespace: manifest.pod.namespace.clone(),
        pod: manifest.pod.name.clone(),
        node,
        ips: Vec::new(),
        labels: manifest.pod.labels.clone(),
        ready: true,
        ports: manifest.pod.ports.clone(),
        containers: manifest.containers.clone(),
    };
    let started = plumb_and_run(lab, state, &pod_ns, &mut pod).and_then(|()| {
        let record = pod.record();
        lab.with_store(state.spec.store, move |s| Ok(s.put_pod(&record)?))
    });
    if let Err(e) = started {
        if let Err(cleanup) = teardown(lab, state, &pod) {
            tracing::warn!(target: "podnet-lab", pod = %pod.name, "cleaning up {}: {cleanup}", pod.name);
        }
        return Err(e);
    }
    state.pods.push(pod.clone());
    state::write(lab, state)?;
    Ok(pod)
}

/// CNI ADD from the pod's node, then its containers' commands (or echo servers).
fn plumb_and_run(
    lab: &Lab,
    state: &LabState,
    pod_ns: &Netns,
    pod: &mut LabPod,
) -> Result<(), LabError> {
    let n = state.node(&pod.node)?;
    let node_ns = Netns::open_named(&n.ns)?;
    let config = plugin_config(lab, &pod.node)?;
    pod.ips = result_ips(&cni(&node_ns, state, pod, "ADD", &config)?);
    run_containers(lab, pod_ns, &state.plugin, pod)
}

/// Runs each container's command in the pod's namespace; a pod whose
/// containers have none runs the echo server on each declared port.
fn run_containers(lab: &Lab, netns: &Netns, podnet: &Path, pod: &LabPod) -> Result<(), LabError> {
    let with_command: Vec<_> = pod
        .containers
        .iter()
        .filter(|c| !c.command.is_empty())
        .collect();
    if with_command.is_empty() {
        let mut ports: Vec<u16> = pod
            .ports
            .iter()
            .filter_map(|p| u16::try_from(p.container_port).ok())
            .collect();
        ports.sort_unstable();
        ports.dedup();
        if ports.is_empty() {
            return Ok(());
        }
        let mut args = vec![
            "lab".to_string(),
            "echo-server".into(),
            "--id".into(),
            pod.name.clone(),
        ];
        for p in &ports {
            args.extend(["--port".to_string(), p.to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        spawn_daemon(netns, podnet, &args, None)?;
        for p in ports {
            echo::wait_listening(netns, p, READY_DEADLINE)?;
        }
        return Ok(());
    }
    let dir = lab.state_dir().join("pods").join(&pod.name);
    std::fs::create_dir_all(&dir)
        .map_err(|e| LabError::io(format!("create {}", dir.display()), e))?;
    for c in with_command {
        let args: Vec<&str> = c.command[1..]
            .iter()
            .chain(&c.args)
            .map(String::as_str)
            .collect();
        let log = dir.join(format!("{}.log", c.name));
        spawn_daemon(netns, Path::new(&c.command[0]), &args, Some(&log))?;
    }
    Ok(())
}

/// Runs the plugin for `pod` (interface `eth0`) from its node, as a runtime would.
fn cni(
    node: &Netns,
    state: &LabState,
    pod: &LabPod,
    command: &str,
    config: &str,
) -> Result<String, LabError> {
    let netns_path = pod.netns_path();
    let call = CniCall {
        plugin: &state.plugin,
        command,
        container_id: &pod.name,
        netns_path: &netns_path,
        ifname: "eth0",
        config,
    };
    run_cni(node, &call)
}

/// Removes one pod: CNI DEL, its processes, its namespace, its records.
pub(crate) fn stop(lab: &Lab, state: &mut LabState, name: &str) -> Result<(), LabError> {
    let Some(pod) = state.pods.iter().find(|p| p.name == name).cloned() else {
        return Ok(());
    };
    teardown(lab, state, &pod)?;
    let key = pod.key();
    lab.with_store(state.spec.store, move |s| {
        Ok(s.delete_pod(&key).map(|_| ())?)
    })?;
    state.pods.retain(|p| p.name != name);
    state::write(lab, state)
}

/// CNI DEL (when the node is still there), processes killed, namespace removed.
fn teardown(lab: &Lab, state: &LabState, pod: &LabPod) -> Result<(), LabError> {
    let ctx = state
        .node(&pod.node)
        .ok()
        .and_then(|n| Netns::open_named(&n.ns).ok())
        .zip(plugin_config(lab, &pod.node).ok());
    if let Some((node_ns, config)) = &ctx {
        if let Err(e) = cni(node_ns, state, pod, "DEL", config) {
            tracing::warn!(target: "podnet-lab", "{e}");
        }
    }
    if let Ok(ns) = Netns::open_named(&pod.name) {
        podnet_kernel::netns::kill_processes_in(&ns);
    }
    Netns::remove_named(&pod.name)?;
    Ok(())
}

/// Deletes every pod of `node`.
pub(crate) fn delete_on(lab: &Lab, state: &mut LabState, node: &str) -> Result<(), LabError> {
    let names: Vec<String> = state
        .pods
        .iter()
        .filter(|p| p.node == node)
        .map(|p| p.name.clone())
        .collect();
    for name in names {
        stop(lab, state, &name)?;
    }
    Ok(())
}

fn result_ips(result_json: &str) -> Vec<IpAddr> {
    let v: serde_json::Value = serde_json::from_str(result_json).unwrap_or_default();
    v["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|ip| {
            ip["address"]
                .as_str()?
                .parse::<IpNet>()
                .ok()
                .map(|n| n.addr())
        })
        .collect()
}
