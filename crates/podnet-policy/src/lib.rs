//! Kubernetes NetworkPolicy as data: no I/O.
//!
//! - [`selector`]: label selectors (`matchLabels`, `matchExpressions`) and what they match;
//! - [`model`]: [`NetworkPolicy`] with Kubernetes' field names, and the objects
//!   policies select: [`Pod`] (labels, addresses, node, named ports) and
//!   [`Namespace`] (labels);
//! - [`validate`]: the checks a policy must pass before it is stored, each
//!   error naming its field path (`spec.ingress[0].from[1].ipBlock.except[0]`);
//! - [`verdict`]: the API's semantics as a plain function, what the firewall's
//!   plan is checked against.

mod error;
pub mod model;
pub mod selector;
pub mod validate;
pub mod verdict;

pub use error::{FieldError, FieldErrors};
pub use model::{
    ContainerPort, IpBlock, Namespace, NetworkPolicy, ObjectName, Peer, Pod, PolicyPort,
    PolicyRule, PolicySpec, PolicyType, PortRef,
};
pub use selector::{LabelSelector, Operator, Requirement};
pub use verdict::{Direction, Flow, FlowEnd, World};
