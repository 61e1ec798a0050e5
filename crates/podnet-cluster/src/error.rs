//! Why a cluster spec or a node's block is not acceptable.

use ipnet::IpNet;

/// A cluster or node definition that cannot be used, with what is wrong in it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ClusterError {
    /// A node port range that is not `MIN-MAX` with 0 < MIN <= MAX.
    #[error("node port range {0:?} is not MIN-MAX with 1 <= MIN <= MAX <= 65535")]
    BadNodePortRange(String),
    /// No cluster CIDR at all.
    #[error("the cluster has no pod CIDR")]
    NoClusterCidr,
    /// Two cluster CIDRs of the same family.
    #[error("cluster CIDRs {0} and {1} are of one address family; give at most one IPv4 and one IPv6 CIDR")]
    SameFamily(IpNet, IpNet),
    /// Cluster CIDRs overlap each other.
    #[error("cluster CIDRs {0} and {1} overlap")]
    Overlap(IpNet, IpNet),
    /// The per-node block is larger than the cluster CIDR or longer than a host.
    #[error("node block size /{block} does not fit cluster CIDR {cidr}")]
    BadBlockSize {
        /// The cluster CIDR.
        cidr: IpNet,
        /// The configured block prefix length.
        block: u8,
    },
    /// A node block outside every cluster CIDR of its family.
    #[error("node {node}: pod CIDR {cidr} is outside the cluster CIDRs")]
    OutsideCluster {
        /// The node.
        node: String,
        /// Its requested block.
        cidr: IpNet,
    },
    /// A requested block that is not the configured block size.
    #[error("node {node}: pod CIDR {cidr} is not a /{block} block")]
    WrongBlockSize {
        /// The node.
        node: String,
        /// Its requested block.
        cidr: IpNet,
        /// The configured block prefix length of that family.
        block: u8,
    },
    /// A requested block that another node owns.
    #[error("node {node}: pod CIDR {cidr} overlaps {owner}'s {owned}")]
    Taken {
        /// The node asking.
        node: String,
        /// The block it asked for.
        cidr: IpNet,
        /// The node that owns an overlapping block.
        owner: String,
        /// That node's block.
        owned: IpNet,
    },
    /// Every block of a cluster CIDR is in use.
    #[error("cluster CIDR {0} has no free node block left")]
    Exhausted(IpNet),
    /// A node name that cannot be used as a store key or interface alias.
    #[error("node name {0:?} must be 1-63 characters of a-z, 0-9, '-' or '.'")]
    BadNodeName(String),
    /// A VXLAN setting out of range.
    #[error("VXLAN VNI {0} is out of range (1-16777215)")]
    BadVni(u32),
    /// A BGP setting or peer that cannot be used.
    #[error("{field}: {message}")]
    BadBgp {
        /// The field, as a path (`bgp.peers[0].asNumber`).
        field: String,
        /// What is wrong with it.
        message: String,
    },
}
