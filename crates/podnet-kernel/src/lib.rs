//! The kernel layer of podnet: the only code that touches the kernel.
//!
//! - [`netns`]: open, create and enter network namespaces;
//! - [`rtnl`]: links, addresses, routes and neighbours over rtnetlink;
//! - [`nftables`]: podnet's own nf_tables table over nfnetlink;
//! - [`conntrack`]: tracked flows over ctnetlink (listed and deleted);
//! - [`raw`]: whole IP packets and Ethernet frames sent as written;
//! - [`probe`]: one probe packet and the answer or ICMP error it drew;
//! - [`counters`]: a namespace's protocol counters (`nstat`);
//! - [`sysctl`]: per-namespace `/proc/sys` settings;
//! - [`tracefs`]: the kernel's drop reasons, from a private tracing instance;
//! - [`nflog`]: packets logged by nf_tables rules;
//! - [`filewatch`]: waiting for a directory's files to change (inotify);
//! - [`process`]: the process itself: locks, signals, CPU pinning, detaching daemons.
//!
//! Everything is blocking: a one-shot CNI invocation does not need an async runtime.
//!
//! This is the one crate allowed `unsafe` (the workspace denies it
//! elsewhere): every block says why it is sound in a `SAFETY` comment.
#![allow(unsafe_code)]

pub mod conntrack;
pub mod counters;
pub mod error;
pub mod filewatch;
pub mod hash;
pub mod netlink;
pub mod netns;
pub mod nflog;
pub mod nftables;
pub mod probe;
pub mod process;
pub mod raw;
pub mod rtnl;
pub mod sysctl;
pub mod tracefs;

pub use error::{KernelError, Result};
pub use netns::{Netns, NetnsId};
pub use rtnl::{
    Address, FdbEntry, Link, Neighbour, Route, RouteHandle, RouteScope, VethSpec, VxlanInfo,
    VxlanSpec,
};
