//! Why a service was refused.

use std::net::IpAddr;

/// A service or endpoint list that cannot be accepted; each names the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// A name that cannot be a store key.
    #[error("service {0:?}: names are lowercase letters, digits and '-', at most 63 characters")]
    BadName(String),
    /// A headless or ExternalName service with what it cannot have.
    #[error("service {service}: {detail}")]
    Kind {
        /// `namespace/name`.
        service: String,
        /// What is wrong.
        detail: String,
    },
    /// No ports at all.
    #[error("service {0}: it has no ports")]
    NoPorts(String),
    /// A port number outside 1-65535.
    #[error("service {service}: {field} {value} is out of range (1-65535)")]
    PortOutOfRange {
        /// The service.
        service: String,
        /// Which field (`port`, `targetPort`, `nodePort`).
        field: &'static str,
        /// The value given.
        value: u32,
    },
    /// Two ports with the same protocol and number, or the same name.
    #[error("service {service}: port {port} is given twice")]
    DuplicatePort {
        /// The service.
        service: String,
        /// The port, as `NAME` or `PROTO/PORT`.
        port: String,
    },
    /// Several ports, one without a name.
    #[error("service {0}: with several ports, every port needs a name")]
    UnnamedPort(String),
    /// A node port outside the configured range.
    #[error("service {service}: nodePort {port} is outside the node port range {min}-{max}")]
    NodePortOutOfRange {
        /// The service.
        service: String,
        /// The node port.
        port: u32,
        /// Range start.
        min: u16,
        /// Range end.
        max: u16,
    },
    /// A node port on a service of type ClusterIP.
    #[error("service {0}: nodePort is only for type NodePort or LoadBalancer")]
    NodePortOnClusterIp(String),
    /// A node port already taken by another service.
    #[error("service {service}: nodePort {protocol}/{port} is already used by service {owner}")]
    DuplicateNodePort {
        /// The service.
        service: String,
        /// Protocol.
        protocol: String,
        /// The port.
        port: u16,
        /// The service that has it.
        owner: String,
    },
    /// No node port left in the range.
    #[error("service {0}: no free node port left in the node port range")]
    NodePortsExhausted(String),
    /// A cluster IP outside every service CIDR.
    #[error("service {service}: cluster IP {ip} is outside the service CIDRs ({cidrs})")]
    ClusterIpOutsideRange {
        /// The service.
        service: String,
        /// The cluster IP given.
        ip: IpAddr,
        /// The service CIDRs, comma-separated.
        cidrs: String,
    },
    /// A cluster IP already taken by another service.
    #[error("service {service}: cluster IP {ip} is already used by service {owner}")]
    DuplicateClusterIp {
        /// The service.
        service: String,
        /// The cluster IP.
        ip: IpAddr,
        /// The service that has it.
        owner: String,
    },
    /// No cluster IP left in the service CIDRs.
    #[error("service {0}: no free cluster IP left in the service CIDRs")]
    ClusterIpsExhausted(String),
    /// External or load-balancer IPs inside the service CIDR, or of another family.
    #[error("service {service}: {field} {ip}: {why}")]
    BadExternalIp {
        /// The service.
        service: String,
        /// `externalIPs` or `loadBalancerIPs`.
        field: &'static str,
        /// The address.
        ip: IpAddr,
        /// What is wrong.
        why: &'static str,
    },
    /// Load-balancer IPs on a service that is not of type LoadBalancer.
    #[error("service {0}: loadBalancerIPs are only for type LoadBalancer")]
    LoadBalancerIpsOnOtherType(String),
    /// A session affinity timeout outside 1-86400 seconds.
    #[error("service {service}: sessionAffinityTimeoutSeconds {value} is out of range (1-86400)")]
    BadAffinityTimeout {
        /// The service.
        service: String,
        /// The value.
        value: u32,
    },
    /// Endpoints that do not fit their service.
    #[error("endpoints of {service}: {why}")]
    BadEndpoints {
        /// The service.
        service: String,
        /// What is wrong.
        why: String,
    },
    /// Address families that do not fit (`ipFamilies`, `ipFamilyPolicy`,
    /// `clusterIPs`) or that the cluster lacks.
    #[error("service {service}: {detail}")]
    Family {
        /// The service.
        service: String,
        /// What is wrong, naming the field.
        detail: String,
    },
    /// A field the service's type or policy does not take, or a bad value in it.
    #[error("service {service}: {field}: {detail}")]
    Field {
        /// The service.
        service: String,
        /// The field, as Kubernetes spells it.
        field: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// A configuration problem (service CIDRs, node port range).
    #[error("service settings: {0}")]
    BadSettings(String),
}
