//! The node's CNI network config, written where the container runtime looks for it.

use std::path::{Path, PathBuf};

use ipnet::IpNet;
use podnet_cluster::ClusterSpec;
use podnet_dataplane::Model;
use serde::Deserialize;
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

/// What a conflist written by [`render_conflist`] says, read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenConf {
    /// Same-node model.
    pub model: Model,
    /// Pod MTU.
    pub mtu: u32,
    /// Masquerade traffic leaving the cluster.
    pub ip_masq: bool,
    /// Anti-spoofing on.
    pub anti_spoofing: bool,
    /// The cluster's pod CIDRs.
    pub cluster_cidrs: Vec<IpNet>,
    /// The node's blocks (the IPAM ranges).
    pub blocks: Vec<IpNet>,
    /// IPAM state directory, when not the plugin's default.
    pub data_dir: Option<PathBuf>,
}

/// The plugin entry of a conflist, as [`render_conflist`] writes it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PluginEntry {
    model: Model,
    mtu: u32,
    ip_masq: bool,
    anti_spoofing: bool,
    #[serde(rename = "clusterCIDRs")]
    cluster_cidrs: Vec<IpNet>,
    ipam: IpamEntry,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct IpamEntry {
    ranges: Vec<Vec<RangeEntry>>,
    data_dir: Option<PathBuf>,
}

#[derive(Deserialize)]
struct RangeEntry {
    subnet: IpNet,
}

#[derive(Deserialize)]
struct ConfList {
    plugins: Vec<PluginEntry>,
}

/// Reads back `dir/10-podnet.conflist`.
pub fn read_conflist(dir: &Path) -> Result<WrittenConf, AgentError> {
    let path = dir.join(CNI_CONF_FILE);
    let what = || format!("read CNI config {}", path.display());
    let text = std::fs::read_to_string(&path).map_err(|e| AgentError::inspect(what(), e))?;
    let list: ConfList = serde_json::from_str(&text).map_err(|e| AgentError::inspect(what(), e))?;
    let plugin = list
        .plugins
        .into_iter()
        .next()
        .ok_or_else(|| AgentError::inspect(what(), "no plugin in \"plugins\""))?;
    Ok(WrittenConf {
        model: plugin.model,
        mtu: plugin.mtu,
        ip_masq: plugin.ip_masq,
        anti_spoofing: plugin.anti_spoofing,
        cluster_cidrs: plugin.cluster_cidrs,
        blocks: plugin
            .ipam
            .ranges
            .iter()
            .flatten()
            .map(|r| r.subnet)
            .collect(),
        data_dir: plugin.ipam.data_dir,
    })
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

    #[test]
    fn a_written_conflist_reads_back() {
        let cluster: ClusterSpec =
            serde_json::from_str(r#"{"clusterCIDRs":["10.244.0.0/16"]}"#).unwrap();
        let blocks: Vec<IpNet> = vec!["10.244.3.0/24".parse().unwrap()];
        let dir = std::env::temp_dir().join(format!("podnet-conf-{}", std::process::id()));
        let text = render_conflist(&cluster, &blocks, Model::Routed, 1450, Some(&dir));
        write_if_changed(&dir, &text).unwrap();
        let conf = read_conflist(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(conf.blocks, blocks);
        assert_eq!(
            (conf.model, conf.mtu, conf.ip_masq),
            (Model::Routed, 1450, true)
        );
        assert_eq!(conf.data_dir.as_deref(), Some(dir.as_path()));
    }
}
