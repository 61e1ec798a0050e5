//! Kubernetes manifests to podnet's objects, as `kubectl apply -f` takes them.
//!
//! A file holds several documents (YAML separated by `---`, or JSON; a
//! `v1 List` holds more). Each document is one object, identified as
//! `kubectl apply` identifies it: kind, namespace (`default` when absent) and
//! name. Kinds: `v1 Namespace`, `v1 Pod`, `v1 Service`,
//! `networking.k8s.io/v1 NetworkPolicy`, `discovery.k8s.io/v1 EndpointSlice`,
//! and podnet's own `podnet.io/v1 BGPPeer`.
//!
//! Every field is read strictly: a field podnet implements is read, a field
//! it ignores on purpose (a container's `image`, resources, probes, ...) is
//! accepted and reported in [`Document::ignored`], and anything else is
//! refused with its path named. NetworkPolicies, pods and namespaces are
//! also checked as the API server checks them ([`podnet_policy::validate`]).
//! One refused document refuses the whole file: nothing is half-applied.

pub mod bgp;
pub mod pod;
pub mod policy;
mod reader;
pub mod service;
pub mod slice;

use std::collections::BTreeMap;

use podnet_policy::validate::{
    check_dns_label, check_dns_subdomain, check_labels, check_namespace, check_pod, check_policy,
};
use podnet_policy::{FieldError, FieldErrors, Namespace, NetworkPolicy, Pod};
use podnet_services::{EndpointSlice, Service};
use serde::Deserialize;
use serde_json::Value;

pub use pod::{Container, PodManifest};
use reader::{Findings, Obj};

/// One object of a manifest.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    /// `v1 Namespace`.
    Namespace(Namespace),
    /// `v1 Pod`.
    Pod(PodManifest),
    /// `v1 Service`.
    Service(Service),
    /// `networking.k8s.io/v1 NetworkPolicy`.
    NetworkPolicy(NetworkPolicy),
    /// `discovery.k8s.io/v1 EndpointSlice`.
    EndpointSlice(EndpointSlice),
    /// `podnet.io/v1 BGPPeer` (cluster-scoped).
    BgpPeer(podnet_cluster::BgpPeer),
}

impl Object {
    /// `Pod`, `Service`, ...
    pub fn kind(&self) -> &'static str {
        match self {
            Object::Namespace(_) => "Namespace",
            Object::Pod(_) => "Pod",
            Object::Service(_) => "Service",
            Object::NetworkPolicy(_) => "NetworkPolicy",
            Object::EndpointSlice(_) => "EndpointSlice",
            Object::BgpPeer(_) => "BGPPeer",
        }
    }

    /// `namespace/name` (just the name for a namespace).
    pub fn name(&self) -> String {
        match self {
            Object::Namespace(n) => n.name.clone(),
            Object::Pod(p) => p.pod.key().to_string(),
            Object::Service(s) => s.key().to_string(),
            Object::NetworkPolicy(p) => p.key().to_string(),
            Object::EndpointSlice(s) => s.key().to_string(),
            Object::BgpPeer(p) => p.name.clone(),
        }
    }

    /// `pod/x/a`, as kubectl names objects in its output (lowercase kind).
    pub fn describe(&self) -> String {
        format!("{}/{}", self.kind().to_lowercase(), self.name())
    }

    /// The object as a Kubernetes manifest (for `get -o yaml|json`).
    pub fn render(&self) -> Value {
        match self {
            Object::Namespace(n) => serde_json::json!({
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": n.name, "labels": n.effective_labels()},
            }),
            Object::Pod(p) => pod::render(p),
            Object::Service(s) => service::render(s),
            Object::NetworkPolicy(p) => policy::render(p),
            Object::EndpointSlice(s) => slice::render(s),
            Object::BgpPeer(p) => bgp::render(p),
        }
    }
}

/// One object read from a manifest, and the fields it had that podnet ignores.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// The object.
    pub object: Object,
    /// Paths of fields accepted but ignored (`spec.containers[0].image`).
    pub ignored: Vec<String>,
}

/// Why a manifest was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The text is not YAML or JSON.
    #[error("document {document}: {message}")]
    Syntax {
        /// 1-based document number.
        document: usize,
        /// The parser's message.
        message: String,
    },
    /// An object has refused fields.
    #[error("document {document}: {errors}")]
    Invalid {
        /// 1-based document number.
        document: usize,
        /// The object and its refused fields.
        errors: FieldErrors,
    },
}

/// Reads every document of a manifest; refuses the whole file if any document is refused.
pub fn parse(text: &str) -> Result<Vec<Document>, ManifestError> {
    let mut out = Vec::new();
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let value = Value::deserialize(doc).map_err(|e| ManifestError::Syntax {
            document: i + 1,
            message: e.to_string(),
        })?;
        if value.is_null() {
            continue; // an empty document (a trailing `---`)
        }
        read_value(&value, i + 1, &mut out)?;
    }
    Ok(out)
}

fn read_value(
    value: &Value,
    document: usize,
    out: &mut Vec<Document>,
) -> Result<(), ManifestError> {
    if value.get("kind").and_then(Value::as_str) == Some("List") {
        for item in value
            .get("items")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            read_value(item, document, out)?;
        }
        return Ok(());
    }
    let mut f = Findings::default();
    let object = read_object(value, &mut f);
    match object {
        Some(object) if f.errors.is_empty() => {
            out.push(Document {
                object,
                ignored: f.ignored,
            });
            Ok(())
        }
        _ => Err(ManifestError::Invalid {
            document,
            errors: FieldErrors {
                object: object_label(value),
                errors: f.errors,
            },
        }),
    }
}

/// `Pod x/a` for messages, from whatever the document says.
fn object_label(v: &Value) -> String {
    let kind = v.get("kind").and_then(Value::as_str).unwrap_or("object");
    let meta = v.get("metadata");
    let name = meta
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("(no name)");
    match meta
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
    {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}

fn read_object(v: &Value, f: &mut Findings) -> Option<Object> {
    let mut o = Obj::new("", Some(v), f);
    let api = o.string("apiVersion", f).unwrap_or_default();
    let kind = o.string("kind", f).unwrap_or_default();
    let namespaced = kind != "Namespace" && kind != "BGPPeer";
    let meta = metadata(o.take("metadata"), namespaced, f);
    let spec = o.take("spec");
    let status = o.take("status");
    let object = match (api.as_str(), kind.as_str()) {
        ("v1", "Namespace") => {
            let mut s = Obj::new("spec", spec, f);
            s.ignore(&["finalizers"], f);
            s.finish(f);
            let ns = Namespace {
                name: meta.name,
                labels: meta.labels,
            };
            absorb(check_namespace(&ns), f);
            Object::Namespace(ns)
        }
        ("v1", "Pod") => {
            let base = Pod {
                namespace: meta.namespace,
                name: meta.name,
                node: String::new(),
                ips: Vec::new(),
                labels: meta.labels,
                ports: Vec::new(),
                ready: true,
            };
            let mut m = pod::spec("spec", spec, base, f);
            m.pod.ips = pod::status_ips(status, f);
            absorb(check_pod(&m.pod), f);
            Object::Pod(m)
        }
        ("v1", "Service") => {
            let mut svc = service::spec("spec", spec, status, &meta.name, &meta.namespace, f);
            svc.labels = meta.labels;
            Object::Service(svc)
        }
        ("networking.k8s.io/v1", "NetworkPolicy") => {
            let p = NetworkPolicy {
                namespace: meta.namespace,
                name: meta.name,
                spec: policy::spec("spec", spec, f),
            };
            absorb(check_policy(&p), f);
            Object::NetworkPolicy(p)
        }
        ("discovery.k8s.io/v1", "EndpointSlice") => {
            let s = slice::read(&mut o, meta.name, meta.namespace, meta.labels, f);
            Object::EndpointSlice(s)
        }
        ("podnet.io/v1", "BGPPeer") => Object::BgpPeer(bgp::spec("spec", spec, meta.name, f)),
        _ => {
            f.error("kind", format!("unknown kind {kind:?} of apiVersion {api:?}: podnet takes v1 Namespace, Pod, Service, networking.k8s.io/v1 NetworkPolicy, discovery.k8s.io/v1 EndpointSlice and podnet.io/v1 BGPPeer"));
            return None;
        }
    };
    if status.is_some()
        && matches!(
            object,
            Object::Namespace(_) | Object::NetworkPolicy(_) | Object::BgpPeer(_)
        )
    {
        f.ignored.push("status".into());
    }
    o.finish(f);
    Some(object)
}

/// Adds a checker's errors (whose paths are already the object's) to `f`, once each.
fn absorb(result: Result<(), FieldErrors>, f: &mut Findings) {
    if let Err(e) = result {
        for err in e.errors {
            if !f.errors.contains(&err) {
                f.errors.push(err);
            }
        }
    }
}

struct Meta {
    name: String,
    namespace: String,
    labels: BTreeMap<String, String>,
}

fn metadata(v: Option<&Value>, namespaced: bool, f: &mut Findings) -> Meta {
    let mut o = Obj::new("metadata", v, f);
    let name = o.string("name", f).unwrap_or_default();
    let namespace = if namespaced {
        o.string("namespace", f).unwrap_or_else(|| "default".into())
    } else {
        String::new()
    };
    let labels = o.string_map("labels", f);
    o.ignore(
        &[
            "annotations",
            "uid",
            "resourceVersion",
            "generation",
            "creationTimestamp",
            "managedFields",
            "finalizers",
            "ownerReferences",
        ],
        f,
    );
    o.finish(f);
    let mut errs = Vec::new();
    if name.is_empty() {
        errs.push(FieldError::new("metadata.name", "required"));
    } else if namespaced {
        check_dns_subdomain("metadata.name", &name, &mut errs);
    } else {
        check_dns_label("metadata.name", &name, &mut errs);
    }
    check_labels("metadata.labels", &labels, &mut errs);
    f.errors.extend(errs);
    Meta {
        name,
        namespace,
        labels,
    }
}

#[cfg(test)]
mod tests;
