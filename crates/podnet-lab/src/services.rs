//! Services in the lab: created in the cluster store, endpoints derived from
//! pod labels (a selector), and probed from pods and from the fabric.
//!
//! Every lab pod runs the echo server on TCP and UDP port 7777 under the port
//! names `echo` and `echo-udp`, so a service port with `targetPort: echo`
//! reaches it by name. The agents do the rest: they see the service in the
//! store and program it on their node.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use podnet_kernel::nftables::NftHandle;
use podnet_kernel::Netns;
use podnet_services::{Endpoints, Protocol, Service, ServiceName, TrafficPolicy};

use crate::echo::{self, Answer};
use crate::error::LabError;
use crate::state::{self, LabState};
use crate::{control, Lab};

/// How long a service change may take to reach every node's kernel.
pub const PROGRAM_DEADLINE: Duration = Duration::from_secs(10);

/// How long one service probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// One TCP connection or one UDP datagram from `ns` to `to`.
fn ask_once(ns: &Netns, to: SocketAddr, udp: bool, timeout: Duration) -> Result<Answer, String> {
    if udp {
        echo::udp_client(ns, to.is_ipv6()).and_then(|s| echo::ask_udp(&s, to, timeout))
    } else {
        echo::ask(ns, to, timeout)
    }
}

/// Whether a cluster IP probe from `node` should be answered: some endpoint
/// is ready (on `node`, under internal traffic policy Local).
fn serves_node(svc: &Service, eps: Option<&Endpoints>, node: &str) -> bool {
    eps.is_some_and(|e| {
        e.endpoints.iter().any(|x| {
            x.ready && (svc.internal_traffic_policy == TrafficPolicy::Cluster || x.node == node)
        })
    })
}

/// A probe's outcome as printed, and whether it was the expected one.
fn judge(got: &Result<Answer, String>, should_answer: bool) -> (String, bool) {
    match (got, should_answer) {
        (Ok(a), true) => (format!("answered by {}", a.by), true),
        (Err(e), false) if e.contains("refused") => ("refused (no endpoints)".into(), true),
        (Ok(a), false) => (format!("answered by {} but has no endpoints", a.by), false),
        (Err(e), _) => (format!("FAILED: {e}"), false),
    }
}

impl Lab {
    /// Creates or updates a service (cluster IP and node ports allocated when
    /// absent), sets its endpoints from its selector, and waits until every
    /// node has programmed it. Returns the service as stored.
    pub fn apply_service(&self, svc: Service) -> Result<Service, LabError> {
        let state = state::read(self)?;
        let stored = self.with_store(state.spec.store, move |s| Ok(s.put_service(svc)?))?;
        self.sync_endpoints()?;
        Ok(stored)
    }

    /// Deletes a service; false when there was none.
    pub fn delete_service(&self, name: &ServiceName) -> Result<bool, LabError> {
        let state = state::read(self)?;
        let n = name.clone();
        self.with_store(state.spec.store, move |s| Ok(s.delete_service(&n)?))
    }

    /// Every service with its endpoints.
    pub fn services(&self) -> Result<Vec<(Service, Option<Endpoints>)>, LabError> {
        let state = state::read(self)?;
        self.with_store(state.spec.store, |s| {
            let snap = s.service_snapshot()?;
            let eps: BTreeMap<&ServiceName, &String> =
                snap.endpoints.iter().map(|(n, r)| (n, r)).collect();
            let mut out = Vec::new();
            for (n, raw) in &snap.services {
                let svc = podnet_store::parse_service(n, raw)?;
                let e = match eps.get(n) {
                    Some(r) => Some(podnet_store::parse_endpoints(n, r)?),
                    None => None,
                };
                out.push((svc, e));
            }
            Ok(out)
        })
    }

    /// Marks a pod ready or not (its endpoints follow) and waits until every
    /// node has programmed the services it belongs to.
    pub fn set_ready(&self, pod: &str, ready: bool) -> Result<(), LabError> {
        let mut state = state::read(self)?;
        let p = state
            .pods
            .iter_mut()
            .find(|p| p.name == pod || p.pod == pod)
            .ok_or_else(|| LabError::Spec(format!("the lab has no pod {pod}")))?;
        p.ready = ready;
        let record = p.record();
        state::write(self, &state)?;
        self.with_store(state.spec.store, move |s| Ok(s.put_pod(&record)?))?;
        self.sync_endpoints()
    }

    /// Rewrites the endpoints of every service with a selector from the
    /// pods in the store, and waits until every node has programmed them.
    pub fn sync_endpoints(&self) -> Result<(), LabError> {
        let state = state::read(self)?;
        self.with_store(state.spec.store, |s| Ok(s.sync_endpoints()?))?;
        for (svc, eps) in self.services()? {
            self.wait_programmed(&state, &svc, eps.as_ref())?;
        }
        Ok(())
    }

    /// Waits until every node's kernel holds exactly `svc` with `eps`.
    fn wait_programmed(
        &self,
        state: &LabState,
        svc: &Service,
        eps: Option<&Endpoints>,
    ) -> Result<(), LabError> {
        for n in &state.nodes {
            let ns = Netns::open_named(&n.ns)?;
            let mut nft = NftHandle::in_netns(&ns)?;
            control::wait_for(
                PROGRAM_DEADLINE,
                &format!("{} to program service {}", n.name, svc.key()),
                || {
                    podnet_proxy::inspect::is_programmed(&mut nft, svc, eps, &n.name)
                        .unwrap_or(false)
                },
            )?;
        }
        Ok(())
    }

    /// Prints every service and probes each TCP port from one pod per node;
    /// returns how many probes gave an unexpected result.
    pub fn print_services(&self) -> Result<usize, LabError> {
        let state = state::read(self)?;
        let services = self.services()?;
        if services.is_empty() {
            return Ok(0);
        }
        println!("services:");
        let mut failures = 0;
        for (svc, eps) in &services {
            let ready = eps
                .as_ref()
                .map(|e| e.endpoints.iter().filter(|x| x.ready).count())
                .unwrap_or(0);
            let ports: Vec<String> = svc
                .ports
                .iter()
                .map(|p| match p.node_port {
                    Some(np) => format!("{}/{} (node port {np})", p.port, p.protocol.as_str()),
                    None => format!("{}/{}", p.port, p.protocol.as_str()),
                })
                .collect();
            println!(
                "  {} {:?} {} ports {}: {ready} ready endpoints",
                svc.key(),
                svc.service_type,
                svc.cluster_ip.map(|i| i.to_string()).unwrap_or_default(),
                ports.join(", ")
            );
            let Some(cluster_ip) = svc.cluster_ip else {
                continue;
            };
            for node in &state.nodes {
                let Some(client) = state.pods.iter().find(|p| p.node == node.name) else {
                    continue;
                };
                let client_ns = Netns::open_named(&client.name)?;
                // SCTP rules are programmed, but this kernel cannot send SCTP probes.
                for p in svc.ports.iter().filter(|p| p.protocol != Protocol::Sctp) {
                    let Ok(port) = u16::try_from(p.port) else {
                        continue;
                    };
                    let to = SocketAddr::new(cluster_ip, port);
                    let udp = p.protocol == Protocol::Udp;
                    let got = ask_once(&client_ns, to, udp, PROBE_TIMEOUT);
                    let (text, ok) = judge(&got, serves_node(svc, eps.as_ref(), &node.name));
                    failures += usize::from(!ok);
                    println!("    from {} to {to}: {text}", client.name);
                }
            }
        }
        Ok(failures)
    }

    /// Connects `count` times over TCP (or sends `count` datagrams over UDP,
    /// from one source port) from the namespace `from` (a pod, node or the
    /// control-plane namespace) to `to`; returns each answer or error.
    pub fn probe_service(
        &self,
        from: &str,
        to: SocketAddr,
        udp: bool,
        count: usize,
    ) -> Result<Vec<Result<Answer, String>>, LabError> {
        let ns = Netns::open_named(&self.resolve_ns(from)?)?;
        if udp {
            // One socket, so every datagram leaves from the same source port.
            let sock = echo::udp_client(&ns, to.is_ipv6())
                .map_err(|e| LabError::io("udp socket", std::io::Error::other(e)))?;
            return Ok((0..count)
                .map(|_| echo::ask_udp(&sock, to, PROBE_TIMEOUT))
                .collect());
        }
        Ok((0..count)
            .map(|_| ask_once(&ns, to, false, PROBE_TIMEOUT))
            .collect())
    }

    /// The namespace of a pod, node (`node1`), external host or `control` by name.
    pub fn resolve_ns(&self, name: &str) -> Result<String, LabError> {
        let state = state::read(self)?;
        if name == "control" {
            return Ok(self.control_ns());
        }
        if let Ok(n) = state.node(name) {
            return Ok(n.ns.clone());
        }
        if let Some(h) = state.hosts.iter().find(|h| h.name == name) {
            return Ok(h.ns.clone());
        }
        state
            .pods
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.name.clone())
            .ok_or_else(|| LabError::Spec(format!("the lab has no pod, node or host {name}")))
    }

    /// The control-plane namespace's fabric address (an outside client for node ports).
    pub fn control_address(&self) -> IpAddr {
        crate::fabric::control_address()
    }
}
