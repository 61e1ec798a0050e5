//! The node's CNI network config, written where the container runtime looks for it.

use std::path::Path;

use ipnet::IpNet;
use podnet_cluster::ClusterSpec;
use podnet_dataplane::Model;
use serde_json::json;

use crate::error::AgentError;

/// File name of the config the agent writes (runtimes load the first file by name).
pub const CNI_CONF_FILE: &str = "10-podnet.conflist";
/// The CNI network name.
pub const NETWORK_NAME: &str = "podnet";

/// The conflist for a node with `blocks`, in `cluster`, with pod `mtu`.
pub fn render_conflist(
    cluster: &ClusterSpec,
    blocks: &[IpNet],
    model: Model,
    mtu: u32,
    ipam_dir: Option<&Path>,
) -> String {
    let ranges: Vec<_> = blocks.iter().map(|b| json!([{ "subnet": b }])).collect();
    let mut ipam = json!({ "type": "podnet", "ranges": ranges });
    if let Some(dir) = ipam_dir {
        ipam["dataDir"] = json!(dir);
    }
    let conf = json!({
        "cniVersion": "1.1.0",
        "name": NETWORK_NAME,
        "plugins": [{
            "type": "podnet",
            "model": model,
            "mtu": mtu,
            "ipMasq": cluster.masquerade,
            "antiSpoofing": cluster.anti_spoofing,
            "clusterCIDRs": cluster.cluster_cidrs,
            "ipam": ipam,
        }],
    });
    serde_json::to_string_pretty(&conf).unwrap_or_default()
}

/// Writes `content` to `dir/10-podnet.conflist` by atomic rename, only if it changed.
pub(crate) fn write_if_changed(dir: &Path, content: &str) -> Result<bool, AgentError> {
    let path = dir.join(CNI_CONF_FILE);
    let err = |source| AgentError::CniConfig {
        path: path.display().to_string(),
        source,
    };
    if std::fs::read_to_string(&path).is_ok_and(|old| old == content) {
        return Ok(false);
    }
    std::fs::create_dir_all(dir).map_err(err)?;
    let tmp = dir.join(format!(".{CNI_CONF_FILE}.tmp"));
    std::fs::write(&tmp, content).map_err(err)?;
    std::fs::rename(&tmp, &path).map_err(err)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use podnet_cluster::Backend;

    #[test]
    fn conflist_carries_blocks_mtu_and_cluster_cidrs() {
        let cluster = ClusterSpec::new(vec!["10.244.0.0/16".parse().unwrap()], Backend::Vxlan);
        let text = render_conflist(
            &cluster,
            &["10.244.3.0/24".parse().unwrap()],
            Model::Routed,
            1450,
            None,
        );
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let p = &v["plugins"][0];
        assert_eq!(p["mtu"], 1450);
        assert_eq!(p["model"], "routed");
        assert_eq!(p["clusterCIDRs"][0], "10.244.0.0/16");
        assert_eq!(p["ipam"]["ranges"][0][0]["subnet"], "10.244.3.0/24");
    }
}
