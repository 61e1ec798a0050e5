//! The service proxy's plans as nft text, against golden files (no root).
//!
//! - Chains: each case is a set of services a node serves; the planned
//!   chains (`Layout::chains` of the table those services need) are rendered
//!   as `nft list` prints them and compared with `tests/golden/CASE.nft`.
//! - Updates: each case is what a node has programmed and a batch of
//!   changes; the planned delta (`Programmed::plan_update`) is rendered as
//!   nft commands with decoded elements, against `tests/golden/updates/CASE.nft`.
//!
//! After a deliberate change, `PODNET_BLESS=1 cargo test -p podnet-proxy
//! --test golden` rewrites the files; review their diff like code.

use std::path::Path;

use std::collections::HashMap;

use podnet_proxy::table::desired_table;
use podnet_proxy::update::Programmed;
use podnet_proxy::Change;
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

/// Compares `text` with the golden file `name` under `tests/golden`, or
/// rewrites it under `PODNET_BLESS`; a difference is pushed to `wrong`.
fn golden(name: &str, text: &str, wrong: &mut Vec<String>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("PODNET_BLESS").is_some() {
        std::fs::write(&path, text).expect("write golden file");
        return;
    }
    if std::fs::read_to_string(&path).unwrap_or_default() != text {
        wrong.push(format!("{}:\n{text}", path.display()));
    }
}

/// The last change per service, as the proxy batches them.
fn batch(changes: Vec<Change>) -> HashMap<podnet_services::ServiceName, Change> {
    changes.into_iter().map(|c| (c.name(), c)).collect()
}

fn upsert((svc, eps): Served) -> Change {
    Change::Upsert(Box::new(svc), eps)
}

/// A node that has programmed `before`, then gets `changes`.
fn planned(before: Vec<Served>, changes: Vec<Change>) -> String {
    let mut state = Programmed::new("n1");
    let first = batch(before.into_iter().map(upsert).collect());
    let plan = state.plan_update(&first);
    state.commit(plan, first);
    state.plan_update(&batch(changes)).render()
}

#[test]
fn update_plans_match_the_golden_files() {
    let web = |eps: &[(&str, &str)]| {
        served(
            json!({"name": "web", "clusterIP": "10.96.0.10", "ports": [{"port": 80, "targetPort": 8080}]}),
            endpoints("web", eps),
        )
    };
    let lb = |ranges: serde_json::Value| {
        served(
            json!({"name": "lb", "type": "LoadBalancer", "clusterIP": "10.96.0.20",
                   "loadBalancerIPs": ["192.0.2.100"], "loadBalancerSourceRanges": ranges,
                   "externalTrafficPolicy": "Local", "healthCheckNodePort": 32000,
                   "ports": [{"port": 443, "nodePort": 30443}]}),
            endpoints("lb", &[("10.244.1.7", "n1")]),
        )
    };
    let dual = served(
        json!({"name": "dual", "clusterIP": "10.96.0.30", "clusterIPs": ["10.96.0.30", "fd00:96::30"],
               "ipFamilies": ["IPv4", "IPv6"], "ipFamilyPolicy": "RequireDualStack",
               "ports": [{"port": 80}]}),
        endpoints(
            "dual",
            &[
                ("10.244.1.8", "n1"),
                ("fd00:244:1::8", "n1"),
                ("10.244.2.8", "n2"),
            ],
        ),
    );
    let one = [("10.244.1.2", "n1")];
    let two = [("10.244.1.2", "n1"), ("10.244.2.2", "n2")];
    let cases = vec![
        (
            "endpoint-added",
            planned(vec![web(&one)], vec![upsert(web(&two))]),
        ),
        (
            "source-ranges-set",
            planned(
                vec![lb(json!([]))],
                vec![upsert(lb(json!(["198.51.100.0/24", "203.0.113.7/32"])))],
            ),
        ),
        (
            "dual-stack-added",
            planned(vec![web(&one)], vec![upsert(dual)]),
        ),
        (
            "last-service-goes",
            planned(vec![web(&one)], vec![Change::Delete(web(&one).0.key())]),
        ),
    ];
    let mut wrong = Vec::new();
    for (name, text) in cases {
        golden(&format!("updates/{name}.nft"), &text, &mut wrong);
    }
    assert!(
        wrong.is_empty(),
        "planned updates differ (PODNET_BLESS=1 rewrites them):\n{}",
        wrong.join("\n")
    );
}
