//! Netlink plumbing: the TLV codec and the blocking socket.

pub mod codec;
pub mod socket;

pub use codec::MessageBuilder;
pub use socket::{ChildRequest, NetlinkSocket, Notifications, Protocol};
