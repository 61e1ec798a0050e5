//! The service table's chains as nft text, against golden files (no root).
//!
//! Each case is a set of services a node serves; the planned chains
//! (`Layout::chains` of the table those services need) are rendered as `nft
//! list` prints them and compared with `tests/golden/CASE.nft`. After a
//! deliberate change to the rules, `PODNET_BLESS=1 cargo test -p podnet-proxy
//! --test golden` rewrites the files; review their diff like code.

use std::path::Path;

use podnet_proxy::table::desired_table;
use podnet_services::{Endpoints, Service};
use serde_json::json;

/// A service with its endpoints, as a node serves it.
type Served = (Service, Option<Endpoints>);

/// A service and its endpoints from JSON.
fn served(svc: serde_json::Value, eps: serde_json::Value) -> Served {
    (
        serde_json::from_value(svc).expect("service"),
        Some(serde_json::from_value(eps).expect("endpoints")),
    )
}

fn endpoints(name: &str, addrs: &[(&str, &str)]) -> serde_json::Value {
    let eps: Vec<_> = addrs
        .iter()
        .map(|(a, node)| json!({"address": a, "node": node}))
        .collect();
    json!({"name": name, "endpoints": eps})
}

/// The cases: what each one's services exercise.
fn cases() -> Vec<(&'static str, Vec<Served>)> {
    let web = served(
        json!({"name": "web", "clusterIP": "10.96.0.10", "ports": [{"port": 80}]}),
        endpoints("web", &[("10.244.1.2", "n1")]),
    );
    let api = served(
        json!({"name": "api", "type": "LoadBalancer", "clusterIP": "10.96.0.11",
               "loadBalancerIPs": ["192.0.2.100"], "externalIPs": ["192.0.2.50"],
               "sessionAffinity": "ClientIP",
               "ports": [{"port": 443, "nodePort": 30443}]}),
        endpoints(
            "api",
            &[
                ("10.244.1.3", "n1"),
                ("10.244.2.3", "n2"),
                ("10.244.3.3", "n3"),
            ],
        ),
    );
    let local = served(
        json!({"name": "local", "type": "NodePort", "clusterIP": "10.96.0.12",
               "externalTrafficPolicy": "Local",
               "ports": [{"port": 53, "protocol": "UDP", "nodePort": 30053}]}),
        endpoints("local", &[("10.244.1.4", "n1"), ("10.244.1.5", "n1")]),
    );
    let v6 = served(
        json!({"name": "web6", "clusterIP": "fd00:96::10", "ports": [{"port": 80}]}),
        endpoints("web6", &[("fd00:244:1::2", "n1"), ("fd00:244:2::2", "n2")]),
    );
    vec![
        ("one-service", vec![web.clone()]),
        ("load-balancer-affinity-local", vec![web, api, local]),
        ("ipv6", vec![v6]),
    ]
}

#[test]
fn planned_chains_match_the_golden_files() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let bless = std::env::var_os("PODNET_BLESS").is_some();
    let mut wrong = Vec::new();
    for (name, services) in cases() {
        let layout = desired_table(&services, "n1").layout();
        let text: String = layout.chains().iter().map(|c| c.render()).collect();
        let path = dir.join(format!("{name}.nft"));
        if bless {
            std::fs::write(&path, &text).expect("write golden file");
            continue;
        }
        let want = std::fs::read_to_string(&path).unwrap_or_default();
        if want != text {
            wrong.push(format!("{}:\n{text}", path.display()));
        }
    }
    assert!(
        wrong.is_empty(),
        "planned chains differ from the golden files (PODNET_BLESS=1 rewrites them):\n{}",
        wrong.join("\n")
    );
}
