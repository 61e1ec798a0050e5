//! The configurations under test: podnet's two models and the reference plugins.

use std::path::{Path, PathBuf};
use std::sync::LazyLock;

/// One plugin configuration.
pub struct Setup {
    /// Row label in the report.
    pub label: &'static str,
    /// The plugin binary.
    pub binary: PathBuf,
    /// The network config, given the IPAM data directory.
    pub config: fn(&Path) -> String,
}

/// Where Debian's `containernetworking-plugins` installs the reference plugins.
const REFERENCE_DIR: &str = "/usr/lib/cni";

/// The podnet binary built next to this benchmark.
pub fn podnet_binary() -> PathBuf {
    // Built next to this benchmark by `cargo build --release`.
    std::env::current_exe()
        .ok()
        .and_then(|p| Some(p.parent()?.join("podnet")))
        .unwrap_or_else(|| "podnet".into())
}

fn podnet_config(model: &str, masq: bool, dir: &Path) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0", "name": "bench", "type": "podnet", "model": model, "mtu": 1500,
        "ipMasq": masq, "clusterCIDRs": ["10.244.0.0/16"],
        "ipam": {"ranges": [[{"subnet": "10.244.1.0/24"}]], "dataDir": dir}
    })
    .to_string()
}

fn reference_bridge(masq: bool, dir: &Path) -> String {
    serde_json::json!({"cniVersion": "1.0.0", "name": "bench", "type": "bridge", "bridge": "cni0",
        "isGateway": true, "ipMasq": masq, "mtu": 1500, "ipam": host_local(dir)})
    .to_string()
}

fn host_local(dir: &Path) -> serde_json::Value {
    serde_json::json!({"type": "host-local", "ranges": [[{"subnet": "10.244.1.0/24"}]], "dataDir": dir})
}

/// All configurations, podnet first; the report compares each podnet row with the references.
pub static SETUPS: LazyLock<Vec<Setup>> = LazyLock::new(|| {
    vec![
        Setup {
            label: "podnet routed",
            binary: podnet_binary(),
            config: |d| podnet_config("routed", true, d),
        },
        Setup {
            label: "podnet bridge",
            binary: podnet_binary(),
            config: |d| podnet_config("bridge", true, d),
        },
        Setup {
            label: "ref bridge+host-local",
            binary: Path::new(REFERENCE_DIR).join("bridge"),
            config: |d| reference_bridge(true, d),
        },
        Setup {
            label: "ref ptp+host-local",
            binary: Path::new(REFERENCE_DIR).join("ptp"),
            config: |d| {
                serde_json::json!({"cniVersion": "1.0.0", "name": "bench", "type": "ptp",
                    "ipMasq": true, "mtu": 1500, "ipam": host_local(d)})
                .to_string()
            },
        },
        Setup {
            label: "podnet routed, no ipMasq",
            binary: podnet_binary(),
            config: |d| podnet_config("routed", false, d),
        },
        Setup {
            label: "ref bridge+host-local, no ipMasq",
            binary: Path::new(REFERENCE_DIR).join("bridge"),
            config: |d| reference_bridge(false, d),
        },
    ]
});
