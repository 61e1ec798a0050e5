//! `lab get`: the lab's objects as kubectl lists them, or as manifests.

use podnet_manifest::Object;
use podnet_policy::{NetworkPolicy, PolicyType};
use podnet_services::{Endpoints, Service};

use crate::state::LabPod;

use crate::echo;
use crate::error::LabError;
use crate::state;
use crate::Lab;

/// What `lab get` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// Pods.
    Pods,
    /// Services.
    Services,
    /// NetworkPolicies.
    NetworkPolicies,
    /// Namespaces.
    Namespaces,
    /// The lab's nodes.
    Nodes,
    /// Hosts outside the cluster.
    ExternalHosts,
}

impl Resource {
    /// Parses a resource name as kubectl takes it (plural, singular, short name).
    pub fn parse(text: &str) -> Result<Resource, LabError> {
        Ok(match text {
            "pods" | "pod" | "po" => Resource::Pods,
            "services" | "service" | "svc" => Resource::Services,
            "networkpolicies" | "networkpolicy" | "netpol" => Resource::NetworkPolicies,
            "namespaces" | "namespace" | "ns" => Resource::Namespaces,
            "nodes" | "node" | "no" => Resource::Nodes,
            "externalhosts" | "externalhost" | "hosts" | "host" => Resource::ExternalHosts,
            other => {
                return Err(LabError::Spec(format!(
                    "unknown resource {other:?}: pods, services, networkpolicies, namespaces, nodes or externalhosts"
                )))
            }
        })
    }
}

/// A table: header and rows, printed with aligned columns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    /// Column titles.
    pub header: Vec<String>,
    /// Rows, as many cells as the header.
    pub rows: Vec<Vec<String>>,
}

impl std::fmt::Display for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut widths: Vec<usize> = self.header.iter().map(String::len).collect();
        for r in &self.rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.len());
            }
        }
        for r in std::iter::once(&self.header).chain(&self.rows) {
            let cells: Vec<String> = r
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            writeln!(f, "{}", cells.join("   ").trim_end())?;
        }
        Ok(())
    }
}

fn table(header: &[&str], rows: Vec<Vec<String>>) -> Table {
    Table {
        header: header.iter().map(|h| h.to_string()).collect(),
        rows,
    }
}

fn labels(l: &std::collections::BTreeMap<String, String>) -> String {
    if l.is_empty() {
        return "<none>".into();
    }
    l.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

impl Lab {
    /// The objects of a kind, in `namespace` (all namespaces when `None`), as manifests.
    pub fn objects(
        &self,
        what: Resource,
        namespace: Option<&str>,
    ) -> Result<Vec<Object>, LabError> {
        let state = state::read(self)?;
        let in_ns = |ns: &str| namespace.is_none_or(|n| n == ns);
        Ok(match what {
            Resource::Pods => state
                .pods
                .iter()
                .filter(|p| in_ns(&p.namespace))
                .map(|p| Object::Pod(p.manifest()))
                .collect(),
            Resource::Services => self
                .services()?
                .into_iter()
                .map(|(s, _)| s)
                .filter(|s| in_ns(&s.namespace))
                .map(Object::Service)
                .collect(),
            Resource::NetworkPolicies | Resource::Namespaces => {
                let world =
                    self.with_store(state.spec.store, |s| Ok(s.policy_snapshot()?.world))?;
                if what == Resource::Namespaces {
                    world
                        .namespaces
                        .into_values()
                        .map(Object::Namespace)
                        .collect()
                } else {
                    world
                        .policies
                        .into_iter()
                        .filter(|p| in_ns(&p.namespace))
                        .map(Object::NetworkPolicy)
                        .collect()
                }
            }
            Resource::Nodes | Resource::ExternalHosts => Vec::new(),
        })
    }

    /// The table `lab get` prints (`wide` adds columns).
    pub fn get(
        &self,
        what: Resource,
        namespace: Option<&str>,
        wide: bool,
    ) -> Result<Table, LabError> {
        let state = state::read(self)?;
        let in_ns = |ns: &str| namespace.is_none_or(|n| n == ns);
        let (header, rows): (&[&str], Vec<Vec<String>>) = match what {
            Resource::Pods => {
                let header: &[&str] = if wide {
                    &POD_COLUMNS_WIDE
                } else {
                    &POD_COLUMNS_WIDE[..7]
                };
                (
                    header,
                    state
                        .pods
                        .iter()
                        .filter(|p| in_ns(&p.namespace))
                        .map(|p| pod_row(p, wide))
                        .collect(),
                )
            }
            Resource::Services => {
                let services = self.services()?;
                let rows = services
                    .iter()
                    .filter(|(s, _)| in_ns(&s.namespace))
                    .map(|(s, e)| service_row(s, e.as_ref()))
                    .collect();
                (&SERVICE_COLUMNS, rows)
            }
            Resource::NetworkPolicies | Resource::Namespaces => {
                let objects = self.objects(what, namespace)?;
                let rows = objects
                    .iter()
                    .filter_map(|o| match o {
                        Object::NetworkPolicy(p) => Some(policy_row(p)),
                        Object::Namespace(n) => {
                            Some(vec![n.name.clone(), labels(&n.effective_labels())])
                        }
                        _ => None,
                    })
                    .collect();
                let header: &[&str] = if what == Resource::Namespaces {
                    &["NAME", "LABELS"]
                } else {
                    &POLICY_COLUMNS
                };
                (header, rows)
            }
            Resource::Nodes => (
                &NODE_COLUMNS,
                state.nodes.iter().map(|n| node_row(&state, n)).collect(),
            ),
            Resource::ExternalHosts => {
                let rows = state
                    .hosts
                    .iter()
                    .map(|h| {
                        vec![
                            h.name.clone(),
                            h.address.to_string(),
                            format!("/run/netns/{}", h.ns),
                        ]
                    })
                    .collect();
                (&["NAME", "ADDRESS", "NETNS"], rows)
            }
        };
        Ok(table(header, rows))
    }

    /// Runs `command` in the network namespace [`Lab::exec_target`] names,
    /// with this process's standard streams; returns its exit status.
    pub fn exec(
        &self,
        target: &str,
        namespace: &str,
        command: &[String],
    ) -> Result<std::process::ExitStatus, LabError> {
        let ns = podnet_kernel::Netns::open_named(&self.exec_target(target, namespace)?)?;
        let (program, args) = command
            .split_first()
            .ok_or_else(|| LabError::Spec("a command to run, after --".into()))?;
        let mut cmd = std::process::Command::new(program);
        cmd.args(args);
        podnet_kernel::netns::enter_before_exec(&mut cmd, &ns);
        cmd.status()
            .map_err(|e| LabError::io(format!("run {program}"), e))
    }

    /// One TCP connection (or UDP datagram) from `from` to `to` on `port`,
    /// where each is a pod (`ns/name`, or `name` in namespace `default`), an
    /// external host, or a node, and `to` may also be an address; returns the
    /// echo server's answer, or why there was none.
    pub fn connect(
        &self,
        from: &str,
        to: &str,
        port: u16,
        udp: bool,
    ) -> Result<Result<echo::Answer, String>, LabError> {
        let split = |t: &str| match t.split_once('/') {
            Some((ns, name)) => (ns.to_string(), name.to_string()),
            None => ("default".to_string(), t.to_string()),
        };
        let (ns, name) = split(from);
        let client = podnet_kernel::Netns::open_named(&self.exec_target(&name, &ns)?)?;
        let addr = match to.parse::<std::net::IpAddr>() {
            Ok(ip) => ip,
            Err(_) => self.address_of(&split(to))?,
        };
        let target = std::net::SocketAddr::new(addr, port);
        let wait = std::time::Duration::from_secs(2);
        Ok(if udp {
            echo::udp_client(&client, addr.is_ipv6()).and_then(|s| echo::ask_udp(&s, target, wait))
        } else {
            echo::ask(&client, target, wait)
        })
    }

    /// The first address of a pod, external host or node.
    fn address_of(&self, (ns, name): &(String, String)) -> Result<std::net::IpAddr, LabError> {
        let state = state::read(self)?;
        if let Ok(p) = state.pod(ns, name) {
            return p
                .ips
                .first()
                .copied()
                .ok_or_else(|| LabError::Spec(format!("pod {ns}/{name} has no address")));
        }
        if let Some(h) = state.hosts.iter().find(|h| &h.name == name) {
            return Ok(h.address);
        }
        Ok(state.node(name)?.address)
    }

    /// The network namespace of a pod (`-n` namespace, or its netns name), an
    /// external host, a node, or `control`: what `lab exec` enters.
    pub fn exec_target(&self, name: &str, namespace: &str) -> Result<String, LabError> {
        let state = state::read(self)?;
        if let Ok(p) = state.pod(namespace, name) {
            return Ok(p.name.clone());
        }
        if let Some(h) = state.hosts.iter().find(|h| h.name == name) {
            return Ok(h.ns.clone());
        }
        self.resolve_ns(name)
    }
}

const POD_COLUMNS_WIDE: [&str; 9] = [
    "NAMESPACE",
    "NAME",
    "READY",
    "NODE",
    "IPS",
    "LABELS",
    "NETNS",
    "PORTS",
    "COMMAND",
];
const SERVICE_COLUMNS: [&str; 8] = [
    "NAMESPACE",
    "NAME",
    "TYPE",
    "CLUSTER-IP",
    "EXTERNAL-IP",
    "PORT(S)",
    "SELECTOR",
    "READY-ENDPOINTS",
];
const POLICY_COLUMNS: [&str; 5] = ["NAMESPACE", "NAME", "POD-SELECTOR", "POLICY-TYPES", "RULES"];
const NODE_COLUMNS: [&str; 5] = ["NAME", "ADDRESS", "SEGMENT", "PODS", "NETNS"];

/// A node's row: name, fabric address, segment, pods, netns.
fn node_row(state: &crate::state::LabState, n: &crate::state::LabNode) -> Vec<String> {
    let pods = state.pods.iter().filter(|p| p.node == n.name).count();
    vec![
        n.name.clone(),
        n.address.to_string(),
        n.segment.to_string(),
        pods.to_string(),
        format!("/run/netns/{}", n.ns),
    ]
}

/// A pod's row: namespace, name, readiness, node, addresses, labels, netns (and, wide, ports and commands).
fn pod_row(p: &LabPod, wide: bool) -> Vec<String> {
    let ips: Vec<String> = p.ips.iter().map(ToString::to_string).collect();
    let ready = if p.ready { "1/1" } else { "0/1" };
    let mut row = vec![
        p.namespace.clone(),
        p.pod.clone(),
        ready.into(),
        p.node.clone(),
        ips.join(","),
        labels(&p.labels),
        p.netns_path(),
    ];
    if wide {
        let ports: Vec<String> = p
            .ports
            .iter()
            .map(|c| format!("{}:{}/{}", c.name, c.container_port, c.protocol.as_str()))
            .collect();
        let commands: Vec<String> = p
            .containers
            .iter()
            .filter(|c| !c.command.is_empty())
            .map(|c| {
                c.command
                    .iter()
                    .chain(&c.args)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        row.push(ports.join(","));
        row.push(if commands.is_empty() {
            "(echo server)".into()
        } else {
            commands.join("; ")
        });
    }
    row
}

/// A service's row, kubectl's columns plus its selector and ready endpoints.
fn service_row(s: &Service, eps: Option<&Endpoints>) -> Vec<String> {
    let ports: Vec<String> = s
        .ports
        .iter()
        .map(|p| match p.node_port {
            Some(np) => format!("{}:{np}/{}", p.port, p.protocol.as_str()),
            None => format!("{}/{}", p.port, p.protocol.as_str()),
        })
        .collect();
    // As kubectl shows them: an ExternalName's DNS name as its external address.
    let external: Vec<String> = s
        .external_ips
        .iter()
        .chain(&s.load_balancer_ips)
        .map(ToString::to_string)
        .chain(s.external_name.clone())
        .collect();
    let ready = eps
        .map(|e| e.endpoints.iter().filter(|x| x.ready).count())
        .unwrap_or(0);
    let none = || "<none>".to_string();
    vec![
        s.namespace.clone(),
        s.name.clone(),
        format!("{:?}", s.service_type),
        match s.cluster_ip {
            Some(ip) => ip.to_string(),
            None if s.headless => "None".into(),
            None => none(),
        },
        if external.is_empty() {
            none()
        } else {
            external.join(",")
        },
        ports.join(","),
        labels(&s.selector),
        ready.to_string(),
    ]
}

/// A policy's row: what it selects, which directions it isolates, how many rules.
fn policy_row(p: &NetworkPolicy) -> Vec<String> {
    let types: Vec<&str> = p
        .spec
        .policy_types
        .iter()
        .map(|t| match t {
            PolicyType::Ingress => "Ingress",
            PolicyType::Egress => "Egress",
        })
        .collect();
    let rules = format!(
        "{} ingress, {} egress",
        p.spec.ingress.len(),
        p.spec.egress.len()
    );
    vec![
        p.namespace.clone(),
        p.name.clone(),
        p.spec.pod_selector.describe(),
        types.join(","),
        rules,
    ]
}
