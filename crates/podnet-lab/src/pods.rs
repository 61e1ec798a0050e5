//! Pods on lab nodes, created and deleted through the real CNI plugin with
//! the config the node's agent wrote.

use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;
use podnet_kernel::Netns;

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

/// Creates `count` pods on `node`, each with an echo server.
pub(crate) fn create(
    lab: &Lab,
    state: &mut LabState,
    node: &str,
    count: usize,
) -> Result<Vec<LabPod>, LabError> {
    let n = state.node(node)?.clone();
    let node_ns = Netns::open_named(&n.ns)?;
    let config = plugin_config(lab, node)?;
    let first = state.pods.iter().filter(|p| p.node == node).count() + 1;
    let mut made = Vec::new();
    for i in first..first + count {
        let name = format!("{}-pod{i}", n.ns);
        let pod_ns = Netns::create_named(&name)?;
        let netns_path = format!("/run/netns/{name}");
        let call = CniCall {
            plugin: &state.plugin,
            command: "ADD",
            container_id: &name,
            netns_path: &netns_path,
            ifname: "eth0",
            config: &config,
        };
        let ips = result_ips(&run_cni(&node_ns, &call)?);
        start_echo(&pod_ns, &state.plugin, &name)?;
        let mut labels = state.spec.pod_labels.clone();
        labels.insert("node".into(), node.to_string());
        labels.insert("pod".into(), name.clone());
        let pod = LabPod {
            name,
            node: node.to_string(),
            ips,
            labels,
            ready: true,
        };
        state.pods.push(pod.clone());
        state::write(lab, state)?;
        made.push(pod);
    }
    Ok(made)
}

/// Deletes every pod of `node` (CNI DEL, then its namespace).
pub(crate) fn delete_on(lab: &Lab, state: &mut LabState, node: &str) -> Result<(), LabError> {
    let n = state.node(node)?.clone();
    let pods: Vec<LabPod> = state
        .pods
        .iter()
        .filter(|p| p.node == node)
        .cloned()
        .collect();
    let ctx = Netns::open_named(&n.ns)
        .ok()
        .zip(plugin_config(lab, node).ok());
    for pod in &pods {
        if let Some((node_ns, config)) = &ctx {
            let netns_path = format!("/run/netns/{}", pod.name);
            let call = CniCall {
                plugin: &state.plugin,
                command: "DEL",
                container_id: &pod.name,
                netns_path: &netns_path,
                ifname: "eth0",
                config,
            };
            if let Err(e) = run_cni(node_ns, &call) {
                eprintln!("warning: {e}");
            }
        }
        if let Ok(ns) = Netns::open_named(&pod.name) {
            podnet_kernel::netns::kill_processes_in(&ns);
        }
        Netns::remove_named(&pod.name)?;
    }
    state.pods.retain(|p| p.node != node);
    state::write(lab, state)
}

/// Starts the echo server inside `netns` and waits until it listens.
fn start_echo(netns: &Netns, podnet: &Path, name: &str) -> Result<(), LabError> {
    let port = echo::ECHO_PORT.to_string();
    spawn_daemon(
        netns,
        podnet,
        &["lab", "echo-server", "--port", &port, "--id", name],
        None,
    )?;
    echo::wait_listening(netns, echo::ECHO_PORT, READY_DEADLINE)
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
