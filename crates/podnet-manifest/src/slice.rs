//! `discovery.k8s.io/v1 EndpointSlice`: endpoints given by hand for a
//! service without a selector (kube-proxy reads slices, not Endpoints).

use std::collections::BTreeMap;
use std::net::IpAddr;

use podnet_services::{
    Endpoint, EndpointPort, EndpointSlice, IpFamily, Protocol, SERVICE_NAME_LABEL,
};
use serde_json::Value;

use crate::policy::protocol;
use crate::reader::{Findings, Obj};

/// Reads a slice's top-level fields (`addressType`, `endpoints`, `ports`)
/// from `o`; its service comes from the label `kubernetes.io/service-name`.
pub fn read(
    o: &mut Obj<'_>,
    name: String,
    namespace: String,
    labels: BTreeMap<String, String>,
    f: &mut Findings,
) -> EndpointSlice {
    let service = labels.get(SERVICE_NAME_LABEL).cloned().unwrap_or_else(|| {
        f.error(
            format!("metadata.labels[{SERVICE_NAME_LABEL}]"),
            "required: the service the slice belongs to",
        );
        String::new()
    });
    let types = [
        ("IPv4", Some(IpFamily::IPv4)),
        ("IPv6", Some(IpFamily::IPv6)),
        ("FQDN", None),
    ];
    let at = o.at("addressType");
    let address_type = match o.choice("addressType", &types, None, f) {
        Some(t) => t,
        None => {
            f.error(at, "IPv4 or IPv6 (podnet proxies addresses, not FQDN)");
            IpFamily::IPv4
        }
    };
    let ports: Vec<EndpointPort> = o
        .list("ports", f)
        .into_iter()
        .map(|(p, v)| port(&p, v, f))
        .collect();
    let endpoints = o
        .list("endpoints", f)
        .into_iter()
        .filter_map(|(p, v)| endpoint(&p, v, address_type, &ports, f))
        .collect();
    EndpointSlice {
        name,
        namespace,
        service,
        address_type,
        endpoints,
        labels,
    }
}

fn port(path: &str, v: &Value, f: &mut Findings) -> EndpointPort {
    let mut o = Obj::new(path, Some(v), f);
    let name = o.string("name", f).unwrap_or_default();
    let protocol: Protocol = protocol(&o.at("protocol"), o.take("protocol"), f);
    let at = o.at("port");
    let port = o.number("port", f).unwrap_or_else(|| {
        f.error(at, "required");
        0
    });
    o.ignore(&["appProtocol"], f);
    o.finish(f);
    EndpointPort {
        name,
        protocol,
        port,
    }
}

/// One endpoint: its first address (of the slice's family), conditions
/// (`ready` and `serving` true when absent, as Kubernetes reads them) and node.
fn endpoint(
    path: &str,
    v: &Value,
    family: IpFamily,
    ports: &[EndpointPort],
    f: &mut Findings,
) -> Option<Endpoint> {
    let mut o = Obj::new(path, Some(v), f);
    let at = o.at("addresses");
    let addresses = o.strings("addresses", f);
    let address = match addresses.first().map(|a| a.parse::<IpAddr>()) {
        None => {
            f.error(&at, "required: one address");
            None
        }
        Some(Err(_)) => {
            f.error(
                format!("{at}[0]"),
                format!("{:?} is not an IP address", addresses[0]),
            );
            None
        }
        Some(Ok(ip)) if IpFamily::of(&ip) != family => {
            f.error(
                format!("{at}[0]"),
                format!("{ip} is not of addressType {family:?}"),
            );
            None
        }
        Some(Ok(ip)) => Some(ip),
    };
    let cond_at = o.at("conditions");
    let mut c = Obj::new(&cond_at, o.take("conditions"), f);
    let ready = boolean(&mut c, "ready", f).unwrap_or(true);
    let serving = boolean(&mut c, "serving", f).unwrap_or(ready);
    let terminating = boolean(&mut c, "terminating", f).unwrap_or(false);
    c.finish(f);
    let node = o.string("nodeName", f).unwrap_or_default();
    o.ignore(
        &[
            "targetRef",
            "zone",
            "hints",
            "hostname",
            "deprecatedTopology",
        ],
        f,
    );
    o.finish(f);
    Some(Endpoint {
        address: address?,
        node,
        ready,
        serving,
        terminating,
        ports: ports.to_vec(),
    })
}

/// A boolean field; anything else is named.
fn boolean<'a>(o: &mut Obj<'a>, field: &'a str, f: &mut Findings) -> Option<bool> {
    let at = o.at(field);
    let v = o.take(field)?;
    if v.is_null() {
        return None;
    }
    v.as_bool().or_else(|| {
        f.error(at, "true or false");
        None
    })
}

/// The manifest of a stored slice (`kubectl get -o yaml`).
pub fn render(s: &EndpointSlice) -> Value {
    let ports = s
        .endpoints
        .first()
        .map(|e| e.ports.clone())
        .unwrap_or_default();
    let endpoints: Vec<Value> = s
        .endpoints
        .iter()
        .map(|e| {
            serde_json::json!({
                "addresses": [e.address.to_string()],
                "conditions": {"ready": e.ready, "serving": e.serving, "terminating": e.terminating},
                "nodeName": e.node,
            })
        })
        .collect();
    serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": s.name, "namespace": s.namespace, "labels": s.labels},
        "addressType": s.address_type,
        "endpoints": endpoints,
        "ports": ports,
    })
}
