//! Namespaces, pods and NetworkPolicies in the store: what the agents'
//! firewalls are computed from.
//!
//! Keys live under their own root, `/podnet-policy/`, so that node and
//! service watchers do not wake for them:
//! - `namespaces/NAME`: a namespace and its labels;
//! - `pods/NS/NAME`: a pod: node, addresses, labels, named ports, readiness;
//! - `policies/NS/NAME`: a NetworkPolicy, `policyTypes` defaulted.
//!
//! Every write is checked first (each refused field named), and pods and
//! policies need their namespace; refused input writes nothing. The
//! namespaces `default` and `kube-system` always exist, as in Kubernetes.

use std::time::Duration;

use podnet_policy::validate::{check_namespace, check_pod, check_policy};
use podnet_policy::{Namespace, NetworkPolicy, ObjectName, Pod, World};

use crate::cluster::{from_json, to_json, ClusterStore};
use crate::error::StoreError;
use crate::kv::Txn;

/// Root of every policy key.
pub const POLICY_ROOT: &str = "/podnet-policy/";
const NAMESPACES: &str = "/podnet-policy/namespaces/";
const PODS: &str = "/podnet-policy/pods/";
const POLICIES: &str = "/podnet-policy/policies/";

/// Namespaces that exist without being created.
pub const BUILTIN_NAMESPACES: [&str; 2] = ["default", "kube-system"];

/// Everything policies are evaluated over, at one store revision.
#[derive(Debug, Clone, Default)]
pub struct PolicySnapshot {
    /// Store revision.
    pub revision: u64,
    /// Namespaces, pods and policies.
    pub world: World,
}

fn object_key(root: &str, name: &ObjectName) -> String {
    format!("{root}{}/{}", name.namespace, name.name)
}

impl ClusterStore {
    /// Namespaces, pods and policies at one revision.
    pub fn policy_snapshot(&self) -> Result<PolicySnapshot, StoreError> {
        let listing = self.kv().list(POLICY_ROOT)?;
        let mut world = World::default();
        for ns in BUILTIN_NAMESPACES {
            world.namespaces.insert(
                ns.into(),
                Namespace {
                    name: ns.into(),
                    labels: Default::default(),
                },
            );
        }
        for (key, value) in &listing.entries {
            if key.starts_with(NAMESPACES) {
                let ns: Namespace = from_json(key, value)?;
                world.namespaces.insert(ns.name.clone(), ns);
            } else if key.starts_with(PODS) {
                world.pods.push(from_json(key, value)?);
            } else if key.starts_with(POLICIES) {
                world.policies.push(from_json(key, value)?);
            }
        }
        Ok(PolicySnapshot {
            revision: listing.revision,
            world,
        })
    }

    /// Waits up to `timeout` for a change to namespaces, pods or policies after `revision`.
    pub fn wait_for_policy_change(
        &self,
        revision: u64,
        timeout: Duration,
    ) -> Result<Option<u64>, StoreError> {
        self.kv().wait(POLICY_ROOT, revision, timeout)
    }

    /// Creates or replaces a namespace (labels included).
    pub fn put_namespace(&self, ns: &Namespace) -> Result<(), StoreError> {
        check_namespace(ns)?;
        self.put(format!("{NAMESPACES}{}", ns.name), to_json(ns))
    }

    /// Deletes a namespace record; false when there was none. Its pods and
    /// policies are the caller's to delete first.
    pub fn delete_namespace(&self, name: &str) -> Result<bool, StoreError> {
        self.delete(format!("{NAMESPACES}{name}"))
    }

    /// Creates or replaces a pod; its namespace must exist.
    pub fn put_pod(&self, pod: &Pod) -> Result<(), StoreError> {
        check_pod(pod)?;
        self.require_namespace("Pod", &pod.key())?;
        self.put(object_key(PODS, &pod.key()), to_json(pod))
    }

    /// Deletes a pod; false when there was none.
    pub fn delete_pod(&self, name: &ObjectName) -> Result<bool, StoreError> {
        self.delete(object_key(PODS, name))
    }

    /// Creates or replaces a NetworkPolicy (`policyTypes` defaulted); its namespace must exist.
    pub fn put_policy(&self, policy: &NetworkPolicy) -> Result<NetworkPolicy, StoreError> {
        let mut p = policy.clone();
        p.spec = p.spec.defaulted();
        check_policy(&p)?;
        self.require_namespace("NetworkPolicy", &p.key())?;
        self.put(object_key(POLICIES, &p.key()), to_json(&p))?;
        Ok(p)
    }

    /// Deletes a NetworkPolicy; false when there was none.
    pub fn delete_policy(&self, name: &ObjectName) -> Result<bool, StoreError> {
        self.delete(object_key(POLICIES, name))
    }

    /// Stores many namespaces, pods and policies at once (initial loads,
    /// benchmarks): all are checked first, then written in transactions of
    /// at most `chunk` keys; nothing is written if one is refused.
    pub fn put_world_bulk(&self, world: &World, chunk: usize) -> Result<usize, StoreError> {
        let mut puts = Vec::new();
        for ns in world.namespaces.values() {
            check_namespace(ns)?;
            puts.push((format!("{NAMESPACES}{}", ns.name), to_json(ns)));
        }
        for pod in &world.pods {
            check_pod(pod)?;
            puts.push((object_key(PODS, &pod.key()), to_json(pod)));
        }
        for p in &world.policies {
            let mut p = p.clone();
            p.spec = p.spec.defaulted();
            check_policy(&p)?;
            puts.push((object_key(POLICIES, &p.key()), to_json(&p)));
        }
        let n = puts.len();
        for part in puts.chunks(chunk.max(1)) {
            let txn = Txn {
                puts: part.to_vec(),
                ..Txn::default()
            };
            self.kv().transact(&txn)?;
        }
        Ok(n)
    }

    /// The stored namespace `name` (the built-in ones exist without a record).
    pub fn namespace(&self, name: &str) -> Result<Option<Namespace>, StoreError> {
        let key = format!("{NAMESPACES}{name}");
        match self.stored(&key)? {
            Some(raw) => Ok(Some(from_json(&key, &raw)?)),
            None if BUILTIN_NAMESPACES.contains(&name) => Ok(Some(Namespace {
                name: name.into(),
                labels: Default::default(),
            })),
            None => Ok(None),
        }
    }

    /// The stored pod `name`.
    pub fn pod(&self, name: &ObjectName) -> Result<Option<Pod>, StoreError> {
        let key = object_key(PODS, name);
        self.stored(&key)?
            .map(|raw| from_json(&key, &raw))
            .transpose()
    }

    /// The stored policy `name`.
    pub fn policy(&self, name: &ObjectName) -> Result<Option<NetworkPolicy>, StoreError> {
        let key = object_key(POLICIES, name);
        self.stored(&key)?
            .map(|raw| from_json(&key, &raw))
            .transpose()
    }

    /// The value of exactly `key` (a listing of that prefix, other keys left out).
    pub(crate) fn stored(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .kv()
            .list(key)?
            .entries
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v))
    }

    fn require_namespace(&self, kind: &'static str, name: &ObjectName) -> Result<(), StoreError> {
        if self.namespace(&name.namespace)?.is_some() {
            return Ok(());
        }
        Err(StoreError::NoNamespace {
            kind,
            name: name.to_string(),
            namespace: name.namespace.clone(),
        })
    }

    /// Writes one key.
    pub(crate) fn put(&self, key: String, value: String) -> Result<(), StoreError> {
        let txn = Txn {
            puts: vec![(key, value)],
            ..Txn::default()
        };
        self.kv().transact(&txn)?;
        Ok(())
    }

    /// Deletes one key; false when it was not there.
    pub(crate) fn delete(&self, key: String) -> Result<bool, StoreError> {
        if self.stored(&key)?.is_none() {
            return Ok(false);
        }
        let txn = Txn {
            deletes: vec![key],
            ..Txn::default()
        };
        self.kv().transact(&txn)?;
        Ok(true)
    }
}
