//! `v1 Pod`: labels, node, containers with their command and named ports.

use podnet_policy::{ContainerPort, Pod};
use serde_json::Value;

use crate::policy::protocol;
use crate::reader::{Findings, Obj};

/// One container: what the lab runs in the pod's network namespace.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Container {
    /// Name.
    pub name: String,
    /// `command` (the entrypoint); empty: the lab's echo server.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// `args`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Its ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ContainerPort>,
}

/// A Pod manifest: the pod as policies see it (no node or addresses until
/// placed and plumbed) and its containers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PodManifest {
    /// The pod (`node` empty when `spec.nodeName` is absent; `ips` empty).
    pub pod: Pod,
    /// Its containers.
    pub containers: Vec<Container>,
}

/// Container fields accepted and ignored: the lab has no images, resources or probes.
const IGNORED_CONTAINER_FIELDS: [&str; 16] = [
    "image",
    "imagePullPolicy",
    "resources",
    "env",
    "envFrom",
    "volumeMounts",
    "workingDir",
    "securityContext",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "lifecycle",
    "terminationMessagePath",
    "terminationMessagePolicy",
    "stdin",
    "tty",
];

/// Pod spec fields accepted and ignored: scheduling, storage, identity.
const IGNORED_POD_FIELDS: [&str; 18] = [
    "restartPolicy",
    "terminationGracePeriodSeconds",
    "dnsPolicy",
    "dnsConfig",
    "serviceAccountName",
    "serviceAccount",
    "automountServiceAccountToken",
    "securityContext",
    "volumes",
    "nodeSelector",
    "tolerations",
    "affinity",
    "priorityClassName",
    "priority",
    "schedulerName",
    "enableServiceLinks",
    "imagePullSecrets",
    "hostname",
];

/// Reads a Pod's `spec`.
pub fn spec(path: &str, v: Option<&Value>, pod: Pod, f: &mut Findings) -> PodManifest {
    let mut o = Obj::new(path, v, f);
    let mut pod = pod;
    pod.node = o.string("nodeName", f).unwrap_or_default();
    let host_network_at = o.at("hostNetwork");
    if o.take("hostNetwork").and_then(Value::as_bool) == Some(true) {
        f.error(
            host_network_at,
            "host-network pods are not supported by podnet",
        );
    }
    o.ignore(&IGNORED_POD_FIELDS, f);
    o.ignore(&["subdomain", "preemptionPolicy", "readinessGates"], f);
    let containers_at = o.at("containers");
    let containers: Vec<Container> = o
        .list("containers", f)
        .into_iter()
        .map(|(p, v)| container(&p, v, f))
        .collect();
    o.finish(f);
    if containers.is_empty() {
        f.error(containers_at, "required: at least one container");
    }
    pod.ports = containers.iter().flat_map(|c| c.ports.clone()).collect();
    PodManifest { pod, containers }
}

fn container(path: &str, v: &Value, f: &mut Findings) -> Container {
    let mut o = Obj::new(path, Some(v), f);
    let name_at = o.at("name");
    let name = o.string("name", f).unwrap_or_default();
    if name.is_empty() {
        f.error(name_at, "required");
    }
    let command = o.strings("command", f);
    let args = o.strings("args", f);
    o.ignore(&IGNORED_CONTAINER_FIELDS, f);
    let ports = o
        .list("ports", f)
        .into_iter()
        .map(|(p, v)| {
            let mut po = Obj::new(&p, Some(v), f);
            let name = po.string("name", f).unwrap_or_default();
            let port_at = po.at("containerPort");
            let container_port = po.number("containerPort", f).unwrap_or_else(|| {
                f.error(port_at, "required");
                0
            });
            let protocol = protocol(&po.at("protocol"), po.take("protocol"), f);
            po.finish(f);
            ContainerPort {
                name,
                container_port,
                protocol,
            }
        })
        .collect();
    o.finish(f);
    Container {
        name,
        command,
        args,
        ports,
    }
}

/// `status.podIPs[].ip` (or `status.podIP`): the pod's addresses, when the
/// manifest comes from a cluster that plumbed it (`kubectl get pod -o yaml`).
pub fn status_ips(status: Option<&Value>, f: &mut Findings) -> Vec<std::net::IpAddr> {
    let Some(status) = status else {
        return Vec::new();
    };
    let mut texts: Vec<(String, &str)> = status
        .get("podIPs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, v)| Some((format!("status.podIPs[{i}].ip"), v.get("ip")?.as_str()?)))
        .collect();
    if texts.is_empty() {
        if let Some(ip) = status.get("podIP").and_then(Value::as_str) {
            texts.push(("status.podIP".into(), ip));
        }
    }
    texts
        .into_iter()
        .filter_map(|(path, t)| {
            t.parse()
                .map_err(|_| f.error(path, format!("{t:?} is not an IP address")))
                .ok()
        })
        .collect()
}

/// The manifest of a pod (`kubectl get -o yaml`), with its node and addresses as status.
pub fn render(p: &PodManifest) -> Value {
    let containers: Vec<Value> = p
        .containers
        .iter()
        .map(|c| serde_json::to_value(c).unwrap_or_default())
        .collect();
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": p.pod.name, "namespace": p.pod.namespace, "labels": p.pod.labels},
        "spec": {"nodeName": p.pod.node, "containers": containers},
        "status": {
            "podIPs": p.pod.ips.iter().map(|ip| serde_json::json!({"ip": ip})).collect::<Vec<_>>(),
            "conditions": [{"type": "Ready", "status": if p.pod.ready { "True" } else { "False" }}],
        },
    })
}
