//! Services with Kubernetes semantics, as data: no I/O.
//!
//! - [`model`]: [`Service`], [`ServicePort`], [`Endpoints`] as stored and as
//!   written in cluster.yaml (Kubernetes field names);
//! - [`validate`]: the checks a service must pass before anything is stored
//!   or programmed (ports, node ports, cluster IP inside the service CIDRs);
//! - [`select`]: which endpoints serve a port for cluster traffic and for
//!   external traffic on one node (readiness, terminating fallback, traffic
//!   policies, named target ports).

mod allocate;
mod error;
pub mod model;
pub mod select;
pub mod validate;

pub use error::ServiceError;
pub use model::{
    endpoints_of_slices, Endpoint, EndpointPort, EndpointSlice, Endpoints, IpFamily,
    IpFamilyPolicy, Protocol, Service, ServiceName, ServicePort, ServiceSettings, ServiceType,
    SessionAffinity, TargetPort, TrafficDistribution, TrafficPolicy, HEADLESS_LABEL,
    SERVICE_NAME_LABEL, SERVICE_PROXY_NAME_LABEL,
};
pub use select::{Backend, PortView};
