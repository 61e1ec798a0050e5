//! Same-node pod networking: a veth pair per pod and one of two models.
//!
//! - [`BridgePodNetwork`] (L2): host-side veths are ports of a bridge that holds the gateway.
//! - [`RoutedPodNetwork`] (L3): the pod has a /32 and /128, its default route is
//!   `169.254.1.1` on-link, the host-side veth answers ARP by proxy, and the node
//!   holds one host route per pod.
//!
//! Both share [`attach::attach`], [`attach::detach`] and [`attach::check`]; a
//! model only says how the host side and the pod's addresses and routes look.

pub mod antispoof;
pub mod attach;
pub mod bridge;
pub mod error;
pub mod names;
pub mod routed;
pub mod spec;

pub use attach::{attach, check, detach, remove_stale, Attached};
pub use bridge::BridgePodNetwork;
pub use error::DataplaneError;
pub use routed::RoutedPodNetwork;
pub use spec::{ExtraRoute, Model, NetworkSpec, PodAddress, PodAttachment};
