//! Per-node pod CIDR blocks: each node owns one block per cluster family.

use ipnet::IpNet;

use crate::error::ClusterError;
use crate::spec::ClusterSpec;

/// The blocks for node `node`: the `requested` ones (checked) or the first
/// free block of each cluster CIDR, given the blocks other nodes own (`taken`,
/// as owner and block). Pure: the store makes the result stick atomically.
pub fn allocate_blocks(
    spec: &ClusterSpec,
    node: &str,
    requested: &[IpNet],
    taken: &[(String, IpNet)],
) -> Result<Vec<IpNet>, ClusterError> {
    for cidr in requested {
        if !spec.cluster_cidrs.iter().any(|c| c.contains(cidr)) {
            return Err(ClusterError::OutsideCluster {
                node: node.to_string(),
                cidr: *cidr,
            });
        }
    }
    let mut out = Vec::new();
    for cluster in &spec.cluster_cidrs {
        let block = spec.block_len(cluster);
        let wanted = requested.iter().find(|r| cluster.contains(*r));
        let chosen = match wanted {
            Some(cidr) => {
                if cidr.prefix_len() != block {
                    return Err(ClusterError::WrongBlockSize {
                        node: node.to_string(),
                        cidr: *cidr,
                        block,
                    });
                }
                if let Some((owner, owned)) = overlapping(taken, node, cidr) {
                    return Err(ClusterError::Taken {
                        node: node.to_string(),
                        cidr: *cidr,
                        owner: owner.clone(),
                        owned: *owned,
                    });
                }
                *cidr
            }
            None => first_free(cluster, block, node, taken)?,
        };
        out.push(chosen);
    }
    Ok(out)
}

fn overlapping<'a>(
    taken: &'a [(String, IpNet)],
    node: &str,
    cidr: &IpNet,
) -> Option<&'a (String, IpNet)> {
    taken
        .iter()
        .find(|(owner, owned)| owner != node && (owned.contains(cidr) || cidr.contains(owned)))
}

fn first_free(
    cluster: &IpNet,
    block: u8,
    node: &str,
    taken: &[(String, IpNet)],
) -> Result<IpNet, ClusterError> {
    let blocks = cluster
        .subnets(block)
        .map_err(|_| ClusterError::BadBlockSize {
            cidr: *cluster,
            block,
        })?;
    for candidate in blocks {
        if overlapping(taken, node, &candidate).is_none() {
            return Ok(candidate);
        }
    }
    Err(ClusterError::Exhausted(*cluster))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Backend;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn dual() -> ClusterSpec {
        ClusterSpec::new(
            vec![net("10.244.0.0/22"), net("fd00:10:244::/62")],
            Backend::Auto,
        )
    }

    #[test]
    fn first_free_block_per_family() {
        let taken = vec![("a".to_string(), net("10.244.0.0/24"))];
        let got = allocate_blocks(&dual(), "b", &[], &taken).unwrap();
        assert_eq!(got, vec![net("10.244.1.0/24"), net("fd00:10:244::/64")]);
    }

    #[test]
    fn a_node_keeps_its_own_block() {
        let taken = vec![("b".to_string(), net("10.244.0.0/24"))];
        let got = allocate_blocks(&dual(), "b", &[net("10.244.0.0/24")], &taken).unwrap();
        assert_eq!(got[0], net("10.244.0.0/24"));
    }

    #[test]
    fn requested_blocks_are_checked() {
        let taken = vec![("a".to_string(), net("10.244.2.0/24"))];
        let spec = dual();
        assert!(matches!(
            allocate_blocks(&spec, "b", &[net("10.9.0.0/24")], &taken),
            Err(ClusterError::OutsideCluster { .. })
        ));
        assert!(matches!(
            allocate_blocks(&spec, "b", &[net("10.244.2.0/24")], &taken),
            Err(ClusterError::Taken { .. })
        ));
        assert!(matches!(
            allocate_blocks(&spec, "b", &[net("10.244.2.0/25")], &[]),
            Err(ClusterError::WrongBlockSize { .. })
        ));
    }

    #[test]
    fn exhaustion_is_an_error() {
        let spec = ClusterSpec::new(vec![net("10.244.0.0/23")], Backend::Auto);
        let taken = vec![
            ("a".to_string(), net("10.244.0.0/24")),
            ("b".to_string(), net("10.244.1.0/24")),
        ];
        assert_eq!(
            allocate_blocks(&spec, "c", &[], &taken),
            Err(ClusterError::Exhausted(net("10.244.0.0/23")))
        );
    }
}
