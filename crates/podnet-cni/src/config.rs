//! The network configuration on stdin, with the reference plugins' key names.
//!
//! ```json
//! {"cniVersion":"1.1.0","name":"podnet","type":"podnet","model":"routed","mtu":1500,
//!  "ipMasq":true,"clusterCIDRs":["10.244.0.0/16"],
//!  "ipam":{"ranges":[[{"subnet":"10.244.1.0/24"}]]}}
//! ```

use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use podnet_dataplane::{ExtraRoute, Model, NetworkSpec};
use podnet_ipam::RangeSet;
use serde::Deserialize;
use serde_json::Value;

use crate::error::{CniError, ErrorCode};

/// CNI versions podnet speaks; results use the caller's version.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
/// Default bridge name of the bridge model.
pub const DEFAULT_BRIDGE: &str = "podnet0";
/// Default MTU of pod interfaces.
pub const DEFAULT_MTU: u32 = 1500;
/// Default directory of the built-in IPAM's state.
pub use podnet_ipam::DEFAULT_DATA_DIR;

/// The `ipam` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpamConf {
    /// `podnet` or absent: built-in; anything else is a plugin to delegate to.
    #[serde(rename = "type", default)]
    pub ipam_type: Option<String>,
    /// Range sets (host-local syntax).
    #[serde(default)]
    pub ranges: Vec<RangeSet>,
    /// Extra routes for the pod.
    #[serde(default)]
    pub routes: Vec<ExtraRoute>,
    /// Where allocations are kept.
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// Addresses never handed out.
    #[serde(default)]
    pub reserved: Vec<IpAddr>,
}

/// One attachment named in `cni.dev/valid-attachments` (GC).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ValidAttachment {
    /// Container ID.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// Interface name.
    pub ifname: String,
}

/// The parsed network configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    /// Spec version of this config.
    pub cni_version: String,
    /// Network name.
    pub name: String,
    /// Plugin type (`podnet`).
    #[serde(rename = "type")]
    pub plugin_type: String,
    /// Same-node model.
    #[serde(default)]
    pub model: Model,
    /// Pod interface MTU.
    #[serde(default)]
    pub mtu: Option<u32>,
    /// Masquerade pod traffic leaving the cluster CIDRs.
    #[serde(default = "default_true")]
    pub ip_masq: bool,
    /// Drop packets from pods whose source is not the pod's own address
    /// (and, bridge model, ARP/NA claiming another's address).
    #[serde(default = "default_true")]
    pub anti_spoofing: bool,
    /// Bridge name (bridge model).
    #[serde(default)]
    pub bridge: Option<String>,
    /// Pod CIDRs of the cluster (never masqueraded).
    #[serde(default, rename = "clusterCIDRs")]
    pub cluster_cidrs: Vec<IpNet>,
    /// IPAM section.
    #[serde(default)]
    pub ipam: IpamConf,
    /// DNS settings passed through to the result.
    #[serde(default)]
    pub dns: Option<Value>,
    /// Result of the previous plugin in the chain.
    #[serde(default)]
    pub prev_result: Option<Value>,
    /// Attachments that remain valid (GC).
    #[serde(default, rename = "cni.dev/valid-attachments")]
    pub valid_attachments: Option<Vec<ValidAttachment>>,
}

fn default_true() -> bool {
    true
}

impl NetConf {
    /// Parses and validates stdin; every problem gets its spec error code.
    pub fn parse(bytes: &[u8]) -> Result<Self, CniError> {
        let raw: Value = serde_json::from_slice(bytes).map_err(|e| {
            CniError::new(
                ErrorCode::DecodeFailure,
                format!("network config is not valid JSON: {e}"),
            )
        })?;
        if !raw.is_object() {
            return Err(CniError::new(
                ErrorCode::DecodeFailure,
                "network config must be a JSON object",
            ));
        }
        let version = raw
            .get("cniVersion")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                CniError::new(
                    ErrorCode::InvalidNetworkConfig,
                    "network config has no cniVersion",
                )
            })?;
        check_version(version)?;
        let conf: NetConf = serde_json::from_value(raw).map_err(|e| {
            CniError::new(
                ErrorCode::InvalidNetworkConfig,
                format!("invalid network config: {e}"),
            )
        })?;
        conf.validate()?;
        Ok(conf)
    }

    fn validate(&self) -> Result<(), CniError> {
        let bad = |m: String| Err(CniError::new(ErrorCode::InvalidNetworkConfig, m));
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        {
            return bad(format!(
                "network name {:?} must be alphanumeric plus _.-",
                self.name
            ));
        }
        if let Some(mtu) = self.mtu {
            if !(68..=65535).contains(&mtu) {
                return bad(format!("mtu {mtu} is outside 68..65535"));
            }
        }
        if let Some(b) = &self.bridge {
            if b.is_empty() || b.len() > 15 || b.contains('/') || b.contains(char::is_whitespace) {
                return bad(format!("bridge name {b:?} is not a valid interface name"));
            }
        }
        for (i, a) in self.cluster_cidrs.iter().enumerate() {
            if *a != a.trunc() {
                return bad(format!("clusterCIDRs[{i}] {a} has host bits set"));
            }
            if let Some(b) = self.cluster_cidrs[..i]
                .iter()
                .find(|b| b.contains(a) || a.contains(*b))
            {
                return bad(format!("clusterCIDRs {a} and {b} overlap"));
            }
        }
        if self.builtin_ipam() {
            podnet_ipam::validate_range_sets(&self.ipam.ranges).map_err(CniError::from)?;
        }
        Ok(())
    }

    /// True when the built-in IPAM serves this network.
    pub fn builtin_ipam(&self) -> bool {
        matches!(
            self.ipam.ipam_type.as_deref(),
            None | Some("podnet") | Some("")
        )
    }

    /// The IPAM data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.ipam
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR))
    }

    /// The dataplane's view of this network; `pod_subnets` come from IPAM.
    pub fn network_spec(&self, pod_subnets: Vec<IpNet>) -> NetworkSpec {
        let mut cluster = self.cluster_cidrs.clone();
        if cluster.is_empty() {
            // Without clusterCIDRs, at least never masquerade between this node's pods.
            cluster = pod_subnets.clone();
        }
        NetworkSpec {
            name: self.name.clone(),
            model: self.model,
            bridge: self
                .bridge
                .clone()
                .unwrap_or_else(|| DEFAULT_BRIDGE.to_string()),
            mtu: self.mtu.unwrap_or(DEFAULT_MTU),
            ip_masq: self.ip_masq,
            anti_spoofing: self.anti_spoofing,
            cluster_cidrs: cluster,
            pod_subnets,
        }
    }
}

/// Accepts only versions podnet speaks (error code 1 otherwise).
pub fn check_version(version: &str) -> Result<(), CniError> {
    if SUPPORTED_VERSIONS.contains(&version) {
        Ok(())
    } else {
        Err(CniError::new(
            ErrorCode::IncompatibleVersion,
            format!(
                "incompatible CNI version {version:?}; podnet supports {}",
                SUPPORTED_VERSIONS.join(", ")
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"{"cniVersion":"1.1.0","name":"podnet","type":"podnet","model":"routed","mtu":1500,"ipMasq":true,"clusterCIDRs":["10.244.0.0/16"],"ipam":{"ranges":[[{"subnet":"10.244.1.0/24"}]]}}"#;

    #[test]
    fn the_issue_example_parses() {
        let c = NetConf::parse(EXAMPLE.as_bytes()).unwrap();
        assert_eq!(c.model, Model::Routed);
        assert!(c.builtin_ipam());
        let spec = c.network_spec(vec!["10.244.1.0/24".parse().unwrap()]);
        assert_eq!(spec.bridge, "podnet0");
        assert_eq!(spec.mtu, 1500);
    }

    #[test]
    fn defaults_follow_the_reference_plugins() {
        let c = NetConf::parse(br#"{"cniVersion":"1.0.0","name":"n","type":"podnet","ipam":{"ranges":[[{"subnet":"10.1.0.0/24"}]]}}"#).unwrap();
        assert!(c.ip_masq);
        assert_eq!(c.model, Model::Routed);
        assert_eq!(c.data_dir(), PathBuf::from(DEFAULT_DATA_DIR));
    }

    #[test]
    fn each_bad_input_gets_its_code() {
        let cases: &[(&str, ErrorCode, &str)] = &[
            ("{", ErrorCode::DecodeFailure, "not valid JSON"),
            (
                r#"{"cniVersion":"9.9.9","name":"n","type":"podnet"}"#,
                ErrorCode::IncompatibleVersion,
                "9.9.9",
            ),
            (
                r#"{"cniVersion":"1.1.0","name":"n","type":"podnet","mtu":10,"ipam":{"ranges":[[{"subnet":"10.1.0.0/24"}]]}}"#,
                ErrorCode::InvalidNetworkConfig,
                "mtu 10",
            ),
            (
                r#"{"cniVersion":"1.1.0","name":"n","type":"podnet","model":"vlan"}"#,
                ErrorCode::InvalidNetworkConfig,
                "vlan",
            ),
            (
                r#"{"cniVersion":"1.1.0","name":"n","type":"podnet","ipam":{}}"#,
                ErrorCode::InvalidNetworkConfig,
                "ranges is empty",
            ),
            (
                r#"{"cniVersion":"1.1.0","name":"n","type":"podnet","clusterCIDRs":["10.0.0.0/8","10.1.0.0/16"],"ipam":{"ranges":[[{"subnet":"10.1.0.0/24"}]]}}"#,
                ErrorCode::InvalidNetworkConfig,
                "overlap",
            ),
            (
                r#"{"cniVersion":"1.1.0","name":"a/b","type":"podnet","ipam":{"ranges":[[{"subnet":"10.1.0.0/24"}]]}}"#,
                ErrorCode::InvalidNetworkConfig,
                "network name",
            ),
        ];
        for (input, code, needle) in cases {
            let e = NetConf::parse(input.as_bytes()).unwrap_err();
            assert_eq!(e.code, *code, "{input}: {e}");
            assert!(e.msg.contains(needle), "{input}: {e}");
        }
    }

    #[test]
    fn the_example_conflist_parses_as_a_runtime_passes_it() {
        let list: Value =
            serde_json::from_str(include_str!("../../../examples/10-podnet.conflist")).unwrap();
        // A runtime hands each plugin its entry plus the list's name and cniVersion.
        let mut entry = list["plugins"][0].clone();
        entry["name"] = list["name"].clone();
        entry["cniVersion"] = list["cniVersion"].clone();
        let c = NetConf::parse(entry.to_string().as_bytes()).unwrap();
        assert_eq!(c.ipam.ranges.len(), 2);
        assert_eq!(c.ipam.routes.len(), 2);
    }

    #[test]
    fn delegated_ipam_skips_range_validation() {
        let c = NetConf::parse(br#"{"cniVersion":"1.1.0","name":"n","type":"podnet","ipam":{"type":"host-local","subnet":"10.1.0.0/24"}}"#).unwrap();
        assert!(!c.builtin_ipam());
    }
}
