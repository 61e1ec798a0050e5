//! The service proxy: Kubernetes Services on nf_tables, with a lookup cost
//! that does not grow with the number of services.
//!
//! - [`layout`]: the table `inet podnet-services`: its sets, maps, chains and
//!   rules, and how a service becomes map elements (pure);
//! - [`plan`]: one service plus its endpoints, seen from one node, as the
//!   elements it owns (pure);
//! - [`table`]: the whole table as data for the full sync: desired,
//!   observed and their difference (pure);
//! - [`inspect`]: whether the kernel holds exactly one service's elements;
//! - [`update`]: an incremental update as a plan: what is programmed and the
//!   changes in, the kernel delta out (pure);
//! - [`proxy`]: [`ServiceProxy`], which keeps the kernel in step: one atomic
//!   batch per update holding only the changed services' elements, a full
//!   sync that adopts what is there and repairs drift, and cleanup of stale
//!   UDP flows and affinity entries.

mod cleanup;
mod error;
pub mod inspect;
pub mod layout;
pub mod packed;
pub mod plan;
pub mod proxy;
pub mod table;
pub mod update;

pub use error::ProxyError;
pub use layout::{Layout, SetId, TABLE};
pub use plan::{Fragment, Frontend, HealthCheck};
pub use proxy::{ApplyReport, Change, ServiceProxy};
