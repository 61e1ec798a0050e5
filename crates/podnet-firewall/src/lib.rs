//! NetworkPolicy enforcement on nf_tables, with a per-packet cost that does
//! not grow with the number of policies or pods.
//!
//! - [`classes`]: peers reduced to classes of addresses the policies treat alike (pure);
//! - [`layout`]: the table `inet podnet-policy`: sets, chains, rules (pure);
//! - [`plan`]: one node's policies as the elements every set must hold (pure);
//! - [`simulate`]: the rules replayed over a plan, for tests and explanations;
//! - [`inspect`]: whether the kernel holds a plan;
//! - [`firewall`]: [`Firewall`], which keeps the kernel equal to the plan:
//!   one atomic batch per change holding only the changed elements, and a
//!   full sync that adopts what an earlier agent left.

pub mod classes;
mod error;
pub mod firewall;
pub mod inspect;
pub mod layout;
pub mod plan;
pub mod simulate;

pub use error::FirewallError;
pub use firewall::{ApplyReport, Firewall};
pub use layout::{Layout, SetId, TABLE};
pub use plan::{plan, Plan};
