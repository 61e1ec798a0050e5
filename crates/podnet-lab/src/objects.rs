//! Kubernetes objects in the lab: `lab apply -f`, `lab delete -f`, `lab label`.
//!
//! Namespaces, services and policies go to the cluster store as they are;
//! a pod is also made: placed on a node (its `spec.nodeName`, else the node
//! with the fewest pods), plumbed by the real CNI plugin, its containers'
//! commands started. Like the API server, a running pod may only change its
//! labels; a relabelled pod keeps running. Every change waits until every
//! node's kernel holds it (services programmed, policies in force).

use std::collections::BTreeMap;

use podnet_firewall::{inspect, plan};
use podnet_kernel::nftables::NftHandle;
use podnet_kernel::Netns;
use podnet_manifest::{Document, Object, PodManifest};
use podnet_store::Outcome;

use crate::control::wait_for;
use crate::error::LabError;
use crate::pods;
use crate::services::PROGRAM_DEADLINE;
use crate::state::{self, LabState};
use crate::Lab;

/// A label change: `key=value` sets, `key-` removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelChange {
    /// Sets `key` to `value`.
    Set(String, String),
    /// Removes `key`.
    Remove(String),
}

impl LabelChange {
    /// Parses `key=value` or `key-`.
    pub fn parse(text: &str) -> Result<Self, LabError> {
        if let Some((k, v)) = text.split_once('=') {
            return Ok(LabelChange::Set(k.into(), v.into()));
        }
        match text.strip_suffix('-') {
            Some(k) if !k.is_empty() => Ok(LabelChange::Remove(k.into())),
            _ => Err(LabError::Spec(format!(
                "{text:?}: give key=value to set a label or key- to remove it"
            ))),
        }
    }

    fn apply(changes: &[LabelChange], labels: &mut BTreeMap<String, String>) {
        for c in changes {
            match c {
                LabelChange::Set(k, v) => {
                    labels.insert(k.clone(), v.clone());
                }
                LabelChange::Remove(k) => {
                    labels.remove(k);
                }
            }
        }
    }
}

impl Lab {
    /// Applies every object of a manifest, in order; returns kubectl's lines
    /// (`pod/x/a created`). The whole manifest is checked first.
    pub fn apply(&self, docs: &[Document]) -> Result<Vec<String>, LabError> {
        let mut state = state::read(self)?;
        self.check_apply(&state, docs)?;
        let mut lines = Vec::new();
        for doc in docs {
            let outcome = match &doc.object {
                Object::Pod(m) => self.apply_pod(&mut state, m)?,
                other => {
                    let o = other.clone();
                    self.with_store(state.spec.store, move |s| Ok(s.apply_object(&o)?))?
                }
            };
            let ignored = if doc.ignored.is_empty() {
                String::new()
            } else {
                format!(" (ignored: {})", doc.ignored.join(", "))
            };
            lines.push(format!("{} {outcome}{ignored}", doc.object.describe()));
        }
        self.settle()?;
        Ok(lines)
    }

    /// Everything a manifest needs, checked before anything of it is applied.
    fn check_apply(&self, state: &LabState, docs: &[Document]) -> Result<(), LabError> {
        let objects: Vec<Object> = docs.iter().map(|d| d.object.clone()).collect();
        for obj in &objects {
            let Object::Pod(m) = obj else { continue };
            if !m.pod.node.is_empty() {
                state.node(&m.pod.node)?;
            }
            if let Some(running) = state.pods.iter().find(|p| p.key() == m.pod.key()) {
                let mut want = running.manifest();
                want.pod.labels = m.pod.labels.clone();
                let node_ok = m.pod.node.is_empty() || m.pod.node == running.node;
                if want.containers != m.containers || want.pod.ports != m.pod.ports || !node_ok {
                    return Err(LabError::Spec(format!(
                        "pod {}: a running pod may only change its labels (delete it first to change its spec)",
                        m.pod.key()
                    )));
                }
            }
        }
        self.with_store(state.spec.store, move |s| {
            Ok(s.check_objects(&objects.iter().collect::<Vec<_>>(), true)?)
        })
    }

    fn apply_pod(&self, state: &mut LabState, m: &PodManifest) -> Result<Outcome, LabError> {
        if let Some(i) = state.pods.iter().position(|p| p.key() == m.pod.key()) {
            if state.pods[i].labels == m.pod.labels {
                return Ok(Outcome::Unchanged);
            }
            state.pods[i].labels = m.pod.labels.clone();
            let record = state.pods[i].record();
            state::write(self, state)?;
            self.with_store(state.spec.store, move |s| Ok(s.put_pod(&record)?))?;
            return Ok(Outcome::Configured);
        }
        let mut m = m.clone();
        if m.pod.node.is_empty() {
            m.pod.node = least_loaded(state)?;
        }
        let netns = format!("{}{}.{}", self.prefix(), m.pod.namespace, m.pod.name);
        pods::start(self, state, &m, &netns)?;
        Ok(Outcome::Created)
    }

    /// Deletes every object a manifest names (last first); returns kubectl's lines.
    pub fn delete(&self, docs: &[Document]) -> Result<Vec<String>, LabError> {
        let mut state = state::read(self)?;
        let mut lines = Vec::new();
        for doc in docs.iter().rev() {
            let found = match &doc.object {
                Object::Pod(m) => {
                    let name = state
                        .pods
                        .iter()
                        .find(|p| p.key() == m.pod.key())
                        .map(|p| p.name.clone());
                    if let Some(n) = &name {
                        pods::stop(self, &mut state, n)?;
                    }
                    name.is_some()
                }
                Object::Namespace(ns) => {
                    let names: Vec<String> = state
                        .pods
                        .iter()
                        .filter(|p| p.namespace == ns.name)
                        .map(|p| p.name.clone())
                        .collect();
                    for n in names {
                        pods::stop(self, &mut state, &n)?;
                    }
                    let o = doc.object.clone();
                    self.with_store(state.spec.store, move |s| Ok(s.delete_object(&o)?))?
                }
                other => {
                    let o = other.clone();
                    self.with_store(state.spec.store, move |s| Ok(s.delete_object(&o)?))?
                }
            };
            let what = if found { "deleted" } else { "not found" };
            lines.push(format!("{} {what}", doc.object.describe()));
        }
        self.settle()?;
        Ok(lines)
    }

    /// Changes the labels of a pod or namespace in place.
    pub fn label(
        &self,
        kind: &str,
        name: &str,
        namespace: &str,
        changes: &[LabelChange],
    ) -> Result<String, LabError> {
        let mut state = state::read(self)?;
        match kind {
            "pod" | "pods" | "po" => {
                let key = state.pod(namespace, name)?.key();
                let pod = state
                    .pods
                    .iter_mut()
                    .find(|p| p.key() == key)
                    .ok_or_else(|| LabError::Spec(format!("the lab has no pod {key}")))?;
                LabelChange::apply(changes, &mut pod.labels);
                let record = pod.record();
                state::write(self, &state)?;
                self.with_store(state.spec.store, move |s| Ok(s.put_pod(&record)?))?;
                self.settle()?;
                Ok(format!("pod/{key} labeled"))
            }
            "namespace" | "namespaces" | "ns" => {
                let n = name.to_string();
                let changes = changes.to_vec();
                self.with_store(state.spec.store, move |s| {
                    let mut ns = s
                        .namespace(&n)?
                        .ok_or_else(|| LabError::Spec(format!("the lab has no namespace {n}")))?;
                    LabelChange::apply(&changes, &mut ns.labels);
                    Ok(s.put_namespace(&ns)?)
                })?;
                self.settle()?;
                Ok(format!("namespace/{name} labeled"))
            }
            other => Err(LabError::Spec(format!(
                "cannot label {other:?}: pod or namespace"
            ))),
        }
    }

    /// After a change: endpoints follow the pods, and every node's kernel
    /// holds the services and policies.
    fn settle(&self) -> Result<(), LabError> {
        self.sync_endpoints()?;
        self.wait_policies()
    }

    /// Waits until every node's firewall holds what the store's policies ask of it.
    pub fn wait_policies(&self) -> Result<(), LabError> {
        let state = state::read(self)?;
        let world = self.with_store(state.spec.store, |s| Ok(s.policy_snapshot()?.world))?;
        for n in &state.nodes {
            let want = plan(&world, &n.name);
            let mut nft = NftHandle::in_netns(&Netns::open_named(&n.ns)?)?;
            wait_for(
                PROGRAM_DEADLINE,
                &format!("{} to enforce the policies", n.name),
                || inspect::holds(&mut nft, &want).unwrap_or(false),
            )?;
        }
        Ok(())
    }
}

/// The node with the fewest pods (the first of them).
fn least_loaded(state: &LabState) -> Result<String, LabError> {
    state
        .nodes
        .iter()
        .min_by_key(|n| state.pods.iter().filter(|p| p.node == n.name).count())
        .map(|n| n.name.clone())
        .ok_or_else(|| LabError::Spec("the lab has no node to place the pod on".into()))
}
