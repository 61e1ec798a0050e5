//! Services and endpoints as stored and as written in cluster.yaml.
//!
//! Field names follow Kubernetes (`clusterIP`, `targetPort`, `nodePort`,
//! `externalTrafficPolicy`, ...), so a Kubernetes user reads them as usual.
//! Port numbers are read as `u32` so that `70000` is reported as out of range
//! by [`crate::validate`] instead of as a parse error.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// `namespace/name` of a namespaced object: a service (and its endpoints),
/// and, as `podnet_policy::ObjectName`, a pod or a policy.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ServiceName {
    /// Namespace (default `default`).
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ServiceName {
    /// `namespace/name` from its parts.
    pub fn new(namespace: &str, name: &str) -> Self {
        ServiceName {
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    /// Parses `namespace/name`, the form [`fmt::Display`] writes.
    pub fn parse(text: &str) -> Option<ServiceName> {
        let (namespace, name) = text.split_once('/')?;
        Some(ServiceName {
            namespace: namespace.to_string(),
            name: name.to_string(),
        })
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Transport protocol of a service port.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
pub enum Protocol {
    /// TCP (the default).
    #[default]
    #[serde(rename = "TCP")]
    Tcp,
    /// UDP.
    #[serde(rename = "UDP")]
    Udp,
    /// SCTP.
    #[serde(rename = "SCTP")]
    Sctp,
}

impl Protocol {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
        }
    }

    /// `TCP`, `UDP` or `SCTP`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }
}

/// Service type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ServiceType {
    /// A virtual IP inside the cluster (the default).
    #[default]
    ClusterIP,
    /// ClusterIP plus a port on every node.
    NodePort,
    /// NodePort plus given load-balancer IPs.
    LoadBalancer,
    /// A DNS alias (`externalName`): stored, never proxied.
    ExternalName,
}

/// How cluster IP traffic is spread over endpoints (`trafficDistribution`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TrafficDistribution {
    /// Endpoints on the client's node first; all endpoints when it has none ready.
    PreferClose,
}

/// An address family of a service (`ipFamilies`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum IpFamily {
    /// IPv4.
    IPv4,
    /// IPv6.
    IPv6,
}

impl IpFamily {
    /// The family of an address.
    pub fn of(ip: &IpAddr) -> Self {
        if ip.is_ipv6() {
            IpFamily::IPv6
        } else {
            IpFamily::IPv4
        }
    }
}

/// How many address families a service gets (`ipFamilyPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum IpFamilyPolicy {
    /// One family (the default).
    #[default]
    SingleStack,
    /// Both families when the cluster has both service CIDRs, else one.
    PreferDualStack,
    /// Both families; refused where the cluster lacks one.
    RequireDualStack,
}

/// External or internal traffic policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum TrafficPolicy {
    /// Any ready endpoint in the cluster (the default).
    #[default]
    Cluster,
    /// Only endpoints on the node the traffic arrives at.
    Local,
}

/// Session affinity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum SessionAffinity {
    /// Every connection is balanced anew (the default).
    #[default]
    None,
    /// A client address sticks to one endpoint for the timeout.
    ClientIP,
}

/// The port a service port forwards to: a number, or a port name looked up per endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TargetPort {
    /// A port number.
    Number(u32),
    /// A named port of the endpoint.
    Name(String),
}

/// One port of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePort {
    /// Port name (required when the service has several ports).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Protocol (default TCP).
    #[serde(default)]
    pub protocol: Protocol,
    /// The service port.
    pub port: u32,
    /// Where traffic goes on the endpoint (default: the same number as `port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<TargetPort>,
    /// The node port (NodePort and LoadBalancer; allocated when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_port: Option<u32>,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// A service: a stable virtual address and ports, balanced to its endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Service {
    /// Name.
    pub name: String,
    /// Namespace (default `default`).
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Type (default ClusterIP).
    #[serde(default, rename = "type", skip_serializing_if = "is_default")]
    pub service_type: ServiceType,
    /// The cluster IP (allocated from the service CIDR when absent).
    #[serde(default, rename = "clusterIP", skip_serializing_if = "Option::is_none")]
    pub cluster_ip: Option<IpAddr>,
    /// Ports.
    pub ports: Vec<ServicePort>,
    /// Pods whose labels hold all of these are the endpoints (used by the lab).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: BTreeMap<String, String>,
    /// Further addresses the service answers on, on every node.
    #[serde(default, rename = "externalIPs", skip_serializing_if = "Vec::is_empty")]
    pub external_ips: Vec<IpAddr>,
    /// Load-balancer addresses (type LoadBalancer), given rather than provisioned.
    #[serde(
        default,
        rename = "loadBalancerIPs",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub load_balancer_ips: Vec<IpAddr>,
    /// Sources allowed to reach the load-balancer IPs (any when empty);
    /// new connections from others are dropped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub load_balancer_source_ranges: Vec<IpNet>,
    /// Where every node answers load balancers' health checks with its
    /// local endpoint count (type LoadBalancer with externalTrafficPolicy
    /// Local; allocated from the node-port range when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check_node_port: Option<u32>,
    /// One cluster IP per family, the first equal to `clusterIP`; stored for
    /// dual-stack services (a single-stack one has just `clusterIP`).
    #[serde(default, rename = "clusterIPs", skip_serializing_if = "Vec::is_empty")]
    pub cluster_ips: Vec<IpAddr>,
    /// The families asked for, primary first (stored for dual-stack services).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_families: Vec<IpFamily>,
    /// How many families (default SingleStack).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_family_policy: Option<IpFamilyPolicy>,
    /// Session affinity (default None).
    #[serde(default, skip_serializing_if = "is_default")]
    pub session_affinity: SessionAffinity,
    /// ClientIP affinity timeout in seconds (default 10800).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_affinity_timeout_seconds: Option<u32>,
    /// Policy for NodePort, external and load-balancer traffic (default Cluster).
    #[serde(default, skip_serializing_if = "is_default")]
    pub external_traffic_policy: TrafficPolicy,
    /// Policy for cluster IP traffic (default Cluster).
    #[serde(default, skip_serializing_if = "is_default")]
    pub internal_traffic_policy: TrafficPolicy,
    /// Prefer endpoints close to the client (cluster IP traffic only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_distribution: Option<TrafficDistribution>,
    /// Headless (`clusterIP: None`): no cluster IP, never proxied (DNS
    /// answers with the endpoints themselves).
    #[serde(default, skip_serializing_if = "is_default")]
    pub headless: bool,
    /// For type ExternalName: the DNS name the service aliases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_name: Option<String>,
    /// Labels (`metadata.labels`); `service.kubernetes.io/service-proxy-name`
    /// leaves the service to another proxy.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// The label that hands a service to another proxy (kube-proxy's contract).
pub const SERVICE_PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";
/// The label of headless services' endpoint slices: kube-proxy ignores
/// services and slices that carry it, and so does podnet.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";

fn default_namespace() -> String {
    "default".to_string()
}

/// Kubernetes' default ClientIP affinity timeout: three hours.
pub const DEFAULT_AFFINITY_TIMEOUT: u32 = 10800;

impl Service {
    /// `namespace/name`.
    pub fn key(&self) -> ServiceName {
        ServiceName {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }

    /// The ClientIP affinity timeout in seconds, when affinity is on.
    pub fn affinity_timeout(&self) -> Option<u32> {
        match self.session_affinity {
            SessionAffinity::None => None,
            SessionAffinity::ClientIP => Some(
                self.session_affinity_timeout_seconds
                    .unwrap_or(DEFAULT_AFFINITY_TIMEOUT),
            ),
        }
    }

    /// Whether a service proxy programs it: not headless, not ExternalName,
    /// and not left to another proxy by the service-proxy-name label (as
    /// kube-proxy decides).
    pub fn proxied(&self) -> bool {
        !self.headless
            && self.service_type != ServiceType::ExternalName
            && !self.labels.contains_key(SERVICE_PROXY_NAME_LABEL)
            && !self.labels.contains_key(HEADLESS_LABEL)
    }

    /// Every cluster IP, the primary first (two for a dual-stack service).
    pub fn all_cluster_ips(&self) -> Vec<IpAddr> {
        if self.cluster_ips.is_empty() {
            self.cluster_ip.into_iter().collect()
        } else {
            self.cluster_ips.clone()
        }
    }

    /// Whether load balancers health-check it per node (type LoadBalancer
    /// with externalTrafficPolicy Local, as in Kubernetes).
    pub fn wants_health_check(&self) -> bool {
        self.service_type == ServiceType::LoadBalancer
            && self.external_traffic_policy == TrafficPolicy::Local
    }

    /// Whether it holds a cluster IP: everything but headless and ExternalName.
    pub fn has_cluster_ip(&self) -> bool {
        !self.headless && self.service_type != ServiceType::ExternalName
    }

    /// Whether the service has node ports (NodePort and LoadBalancer).
    pub fn has_node_ports(&self) -> bool {
        matches!(
            self.service_type,
            ServiceType::NodePort | ServiceType::LoadBalancer
        )
    }
}

/// A named port of an endpoint (a container port).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointPort {
    /// The port's name.
    pub name: String,
    /// Protocol (default TCP).
    #[serde(default)]
    pub protocol: Protocol,
    /// Number.
    pub port: u32,
}

fn default_true() -> bool {
    true
}

/// One endpoint: a pod address on a node, with its conditions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Endpoint {
    /// The pod's address.
    pub address: IpAddr,
    /// The node the pod runs on.
    pub node: String,
    /// Ready for traffic (default true).
    #[serde(default = "default_true")]
    pub ready: bool,
    /// Serving (default true); a terminating endpoint may still serve.
    #[serde(default = "default_true")]
    pub serving: bool,
    /// Terminating (default false).
    #[serde(default)]
    pub terminating: bool,
    /// Named ports, for target ports given by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<EndpointPort>,
}

/// The endpoints of one service.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Endpoints {
    /// The service's name.
    pub name: String,
    /// The service's namespace.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// The endpoints.
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    /// Ports are matched to the service's ports by name, as EndpointSlices
    /// are (a service without a selector); otherwise by its `targetPort`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub by_port_name: bool,
}

/// `discovery.k8s.io/v1 EndpointSlice`: endpoints of a service given by
/// hand, for a service without a selector. Several slices of one service
/// add up to its endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointSlice {
    /// The slice's name.
    pub name: String,
    /// Namespace (its service's).
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// The service it belongs to (label `kubernetes.io/service-name`).
    pub service: String,
    /// The family of its addresses.
    pub address_type: IpFamily,
    /// The endpoints, each with the slice's ports.
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    /// Labels (`service.kubernetes.io/headless` makes proxies ignore it).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// The label naming an EndpointSlice's service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

impl EndpointSlice {
    /// `namespace/name` of its service.
    pub fn service_key(&self) -> ServiceName {
        ServiceName::new(&self.namespace, &self.service)
    }

    /// `namespace/name` of the slice.
    pub fn key(&self) -> ServiceName {
        ServiceName::new(&self.namespace, &self.name)
    }
}

/// The endpoints of `service` as its slices give them (those a proxy
/// reads: not the headless ones), in slice order.
pub fn endpoints_of_slices<'a>(
    service: &ServiceName,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
) -> Endpoints {
    let endpoints = slices
        .into_iter()
        .filter(|s| s.service_key() == *service && !s.labels.contains_key(HEADLESS_LABEL))
        .flat_map(|s| s.endpoints.iter().cloned())
        .collect();
    Endpoints {
        name: service.name.clone(),
        namespace: service.namespace.clone(),
        endpoints,
        by_port_name: true,
    }
}

impl Endpoints {
    /// Its endpoints on `node` that take new connections (ready, not
    /// terminating): what a node's health check counts, and what lets a
    /// node attract a `Local` service's traffic.
    pub fn ready_on<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a Endpoint> + 'a {
        self.endpoints
            .iter()
            .filter(move |e| e.node == node && e.ready && !e.terminating)
    }

    /// `namespace/name` of the service these belong to.
    pub fn key(&self) -> ServiceName {
        ServiceName {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }
}

/// Cluster-wide service settings: where cluster IPs and node ports come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSettings {
    /// Service CIDRs: one IPv4, optionally one IPv6.
    pub service_cidrs: Vec<IpNet>,
    /// First node port.
    pub node_port_min: u16,
    /// Last node port.
    pub node_port_max: u16,
}

impl Default for ServiceSettings {
    fn default() -> Self {
        ServiceSettings {
            service_cidrs: vec!["10.96.0.0/12".parse().expect("static prefix")],
            node_port_min: 30000,
            node_port_max: 32767,
        }
    }
}
