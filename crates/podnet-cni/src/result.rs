//! The CNI result: interfaces, IPs, routes, DNS, in the caller's spec version.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{CniError, ErrorCode};

/// An interface in the result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceResult {
    /// Interface name.
    pub name: String,
    /// Hardware address.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    /// The namespace path, for interfaces inside the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

/// An address in the result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpResult {
    /// `"4"` or `"6"`: only in results before 1.0.0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Address with prefix length.
    pub address: IpNet,
    /// Gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

/// A route in the result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteResult {
    /// Destination.
    pub dst: IpNet,
    /// Next hop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
}

/// A complete CNI result.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniResult {
    /// Spec version of the result.
    pub cni_version: String,
    /// Interfaces created.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<InterfaceResult>,
    /// Addresses assigned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpResult>,
    /// Routes installed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteResult>,
    /// DNS settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Value>,
}

fn pre_1_0(version: &str) -> bool {
    version.starts_with("0.")
}

impl CniResult {
    /// Reads a result (a `prevResult` or a delegated plugin's output).
    pub fn from_value(v: &Value) -> Result<Self, CniError> {
        serde_json::from_value(v.clone()).map_err(|e| {
            CniError::new(
                ErrorCode::DecodeFailure,
                format!("cannot decode CNI result: {e}"),
            )
        })
    }

    /// Appends `mine` after this (previous) result, renumbering interface indices.
    pub fn chain(mut self, mine: CniResult) -> CniResult {
        let offset = self.interfaces.len();
        self.interfaces.extend(mine.interfaces);
        self.ips.extend(mine.ips.into_iter().map(|mut ip| {
            ip.interface = ip.interface.map(|i| i + offset);
            ip
        }));
        self.routes.extend(mine.routes);
        if mine.dns.is_some() {
            self.dns = mine.dns;
        }
        self
    }

    /// Serialises in `version`'s shape (IP `version` fields before 1.0.0).
    pub fn to_json(&self, version: &str) -> String {
        let mut r = self.clone();
        r.cni_version = version.to_string();
        for ip in &mut r.ips {
            ip.version = pre_1_0(version).then(|| {
                if ip.address.addr().is_ipv4() {
                    "4"
                } else {
                    "6"
                }
                .to_string()
            });
        }
        serde_json::to_string(&r).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ours() -> CniResult {
        CniResult {
            cni_version: "1.1.0".into(),
            interfaces: vec![InterfaceResult {
                name: "eth0".into(),
                mac: "ee:ee:ee:ee:ee:ee".into(),
                sandbox: Some("/x".into()),
            }],
            ips: vec![IpResult {
                version: None,
                address: "10.0.0.2/32".parse().unwrap(),
                gateway: None,
                interface: Some(0),
            }],
            routes: vec![RouteResult {
                dst: "0.0.0.0/0".parse().unwrap(),
                gw: Some("169.254.1.1".parse().unwrap()),
            }],
            dns: None,
        }
    }

    #[test]
    fn versions_shape_the_ip_entries() {
        let new: Value = serde_json::from_str(&ours().to_json("1.0.0")).unwrap();
        assert!(new["ips"][0].get("version").is_none());
        let old: Value = serde_json::from_str(&ours().to_json("0.4.0")).unwrap();
        assert_eq!(old["ips"][0]["version"], "4");
        assert_eq!(old["cniVersion"], "0.4.0");
    }

    #[test]
    fn chaining_renumbers_interfaces() {
        let prev = CniResult::from_value(&serde_json::json!({
            "cniVersion": "1.1.0",
            "interfaces": [{"name": "lo"}],
            "dns": {"nameservers": ["10.96.0.10"]}
        }))
        .unwrap();
        let merged = prev.chain(ours());
        assert_eq!(merged.interfaces.len(), 2);
        assert_eq!(merged.ips[0].interface, Some(1));
        assert!(merged.dns.is_some(), "previous DNS kept");
    }
}
