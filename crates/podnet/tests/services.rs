//! Services in multi-node labs: cluster IPs, node ports, external and
//! load-balancer IPs, traffic policies, hairpin, affinity, readiness, UDP
//! flows, restarts, drift and bad input. Every client is a lab namespace.

mod labkit;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use labkit::{text, LabGuard};
use podnet_lab::echo::{self, Answer};
use podnet_lab::Lab;
use podnet_services::Service;
use podnet_testkit::wait_until;

/// Three nodes over two segments (host-gw on one, VXLAN across), two pods each.
const LAB: &str = "
fabric:
  segments: [{nodes: 2}, {nodes: 1}]
podsPerNode: 2
";

fn service(v: serde_json::Value) -> Service {
    serde_json::from_value(v).unwrap()
}

fn first_pod(lab: &Lab, node: &str) -> String {
    let state = lab.state().unwrap();
    state
        .pods
        .iter()
        .find(|p| p.node == node)
        .unwrap()
        .name
        .clone()
}

fn answers(lab: &Lab, from: &str, to: SocketAddr, n: usize) -> Vec<Answer> {
    lab.probe_service(from, to, false, n)
        .unwrap()
        .into_iter()
        .map(|a| a.unwrap_or_else(|e| panic!("{from} -> {to}: {e}")))
        .collect()
}

/// The error of one TCP connection from `from` to `to`, which must fail.
fn refusal(lab: &Lab, from: &str, to: SocketAddr) -> String {
    lab.probe_service(from, to, false, 1)
        .unwrap()
        .remove(0)
        .expect_err("the connection was answered")
}

fn by_endpoint(answers: &[Answer]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for a in answers {
        *m.entry(a.by.clone()).or_insert(0) += 1;
    }
    m
}

fn port80(ip: IpAddr) -> SocketAddr {
    SocketAddr::new(ip, 80)
}

#[test]
fn cluster_ips_balance_evenly_reject_without_endpoints_and_follow_readiness() {
    let guard = LabGuard::new();
    guard.up_yaml(LAB);
    let lab = guard.lab();
    let pods: Vec<String> = lab
        .state()
        .unwrap()
        .pods
        .iter()
        .map(|p| p.name.clone())
        .collect();
    assert_eq!(pods.len(), 6);
    let web = lab
        .apply_service(service(serde_json::json!({
            "name": "web", "selector": {"app": "echo"},
            "ports": [{"port": 80, "targetPort": "echo"}]
        })))
        .unwrap();
    let vip = port80(web.cluster_ip.unwrap());

    // 100 connections from a pod on each node: every node reaches all six
    // endpoints, and the 300 together are spread evenly (chi-square).
    let mut total = BTreeMap::new();
    for node in ["node1", "node2", "node3"] {
        let got = by_endpoint(&answers(&lab, &first_pod(&lab, node), vip, 100));
        assert_eq!(got.len(), 6, "from {node}: {got:?}");
        for (k, v) in got {
            *total.entry(k).or_insert(0) += v;
        }
    }
    let expected = 300.0 / 6.0;
    let chi2: f64 = total
        .values()
        .map(|&o| (o as f64 - expected).powi(2) / expected)
        .sum();
    // 5 degrees of freedom: P(chi2 > 20.52) = 0.001 for an even spread.
    assert!(chi2 < 20.52, "uneven spread, chi2 = {chi2:.1}: {total:?}");

    // The nodes themselves reach the cluster IP too (the agent routes the service CIDR).
    for node in ["node1", "node3"] {
        let got = by_endpoint(&answers(&lab, node, vip, 30));
        assert!(got.len() > 1, "from {node}: {got:?}");
    }

    // No endpoints: refused at once (a TCP reset), not a silent drop.
    let empty = lab
        .apply_service(service(serde_json::json!({
            "name": "empty", "selector": {"app": "none"}, "ports": [{"port": 80}]
        })))
        .unwrap();
    for node in ["node1", "node3"] {
        let err = refusal(
            &lab,
            &first_pod(&lab, node),
            port80(empty.cluster_ip.unwrap()),
        );
        assert!(err.contains("refused"), "from {node}: {err}");
    }

    // An endpoint that is no longer ready never gets a new connection.
    let gone = pods[3].clone();
    lab.set_ready(&gone, false).unwrap();
    for node in ["node1", "node2", "node3"] {
        let got = by_endpoint(&answers(&lab, &first_pod(&lab, node), vip, 60));
        assert!(!got.contains_key(&gone), "from {node}: {got:?}");
        assert_eq!(got.len(), 5, "from {node}: {got:?}");
    }
    // That change reached the agents through the store's change log, not a full read.
    let log = std::fs::read_to_string(lab.node_dir("node2").join("agent.log")).unwrap();
    assert!(log.contains("(store change log)"), "{log}");
    lab.set_ready(&gone, true).unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || {
            by_endpoint(&answers(&lab, &first_pod(&lab, "node1"), vip, 30)).contains_key(&gone)
        }),
        "{gone} is back"
    );
}

#[test]
fn hairpin_affinity_and_stale_udp_flows() {
    let guard = LabGuard::new();
    guard.up_yaml(LAB);
    let lab = guard.lab();
    let me = first_pod(&lab, "node1");
    let my_ip = lab.state().unwrap().pods[0].ips[0];

    // Hairpin: a pod reaches itself through its own service (masqueraded,
    // since a packet from its own address would be dropped as martian).
    let own = lab
        .apply_service(service(serde_json::json!({
            "name": "own", "selector": {"pod": me}, "ports": [{"port": 80, "targetPort": 7777}]
        })))
        .unwrap();
    let a = answers(&lab, &me, port80(own.cluster_ip.unwrap()), 3);
    assert!(a.iter().all(|a| a.by == me && a.seen != my_ip), "{a:?}");

    // ClientIP affinity: one client sticks to one endpoint.
    let sticky = lab
        .apply_service(service(serde_json::json!({
            "name": "sticky", "selector": {"app": "echo"}, "sessionAffinity": "ClientIP",
            "ports": [{"port": 80, "targetPort": "echo"}]
        })))
        .unwrap();
    let vip = port80(sticky.cluster_ip.unwrap());
    for node in ["node1", "node3"] {
        let got = by_endpoint(&answers(&lab, &first_pod(&lab, node), vip, 30));
        assert_eq!(got.len(), 1, "from {node}: {got:?}");
    }
    // When the pinned endpoint goes, the client moves (to one other endpoint).
    let pinned = answers(&lab, &me, vip, 1).remove(0).by;
    lab.set_ready(&pinned, false).unwrap();
    let got = by_endpoint(&answers(&lab, &me, vip, 20));
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(!got.contains_key(&pinned), "{got:?}");
    lab.set_ready(&pinned, true).unwrap();

    // UDP: a client keeps one source port, so conntrack pins it to the
    // endpoint of its first datagram. When that endpoint goes, its flows are
    // deleted and the next datagram is balanced anew (the endpoint itself
    // still runs and would answer).
    let node3_pods: Vec<String> = lab
        .state()
        .unwrap()
        .pods
        .iter()
        .filter(|p| p.node == "node3")
        .map(|p| p.name.clone())
        .collect();
    let dns = lab
        .apply_service(service(serde_json::json!({
            "name": "dns", "selector": {"node": "node3"},
            "ports": [{"port": 53, "protocol": "UDP", "targetPort": "echo-udp"}]
        })))
        .unwrap();
    let to = SocketAddr::new(dns.cluster_ip.unwrap(), 53);
    let ns = podnet_kernel::Netns::open_named(&me).unwrap();
    let sock = echo::udp_client(&ns, false).unwrap();
    let first = echo::ask_udp(&sock, to, Duration::from_secs(3)).unwrap().by;
    for _ in 0..5 {
        assert_eq!(
            echo::ask_udp(&sock, to, Duration::from_secs(3)).unwrap().by,
            first
        );
    }
    lab.set_ready(&first, false).unwrap();
    let other = node3_pods.iter().find(|p| **p != first).unwrap().clone();
    let mut last = String::new();
    let moved = wait_until(Duration::from_secs(5), || {
        last = echo::ask_udp(&sock, to, Duration::from_secs(1))
            .map(|a| a.by)
            .unwrap_or_default();
        last == other
    });
    assert!(
        moved,
        "UDP flow still answered by {last:?}, not {other}\n{}",
        guard.logs()
    );
    for _ in 0..5 {
        assert_eq!(
            echo::ask_udp(&sock, to, Duration::from_secs(3)).unwrap().by,
            other
        );
    }
}

#[test]
fn node_ports_external_ips_and_traffic_policy_local() {
    let guard = LabGuard::new();
    guard.up_yaml(LAB);
    let lab = guard.lab();
    let state = lab.state().unwrap();
    let node_addr = |n: &str| state.node(n).unwrap().address;
    let outside = lab.control_address();

    // Policy Cluster: every node answers on the node port, masqueraded.
    let np = lab
        .apply_service(service(serde_json::json!({
            "name": "np", "type": "NodePort", "selector": {"app": "echo"},
            "ports": [{"port": 80, "targetPort": "echo", "nodePort": 30080}]
        })))
        .unwrap();
    assert_eq!(np.ports[0].node_port, Some(30080));
    for n in ["node1", "node2", "node3"] {
        let got = answers(&lab, "control", SocketAddr::new(node_addr(n), 30080), 12);
        assert!(got.iter().all(|a| a.seen != outside), "{n}: {got:?}");
        assert!(by_endpoint(&got).len() > 1, "{n} balances: {got:?}");
    }

    // Policy Local: only node2 has endpoints; it answers with the client's
    // own address, and the other nodes refuse.
    let local = lab
        .apply_service(service(serde_json::json!({
            "name": "local", "type": "NodePort", "selector": {"node": "node2"},
            "externalTrafficPolicy": "Local",
            "ports": [{"port": 80, "targetPort": "echo"}]
        })))
        .unwrap();
    let port = local.ports[0].node_port.unwrap() as u16;
    let got = answers(
        &lab,
        "control",
        SocketAddr::new(node_addr("node2"), port),
        10,
    );
    assert!(
        got.iter()
            .all(|a| a.seen == outside && a.by.contains("node2")),
        "{got:?}"
    );
    for n in ["node1", "node3"] {
        let err = refusal(&lab, "control", SocketAddr::new(node_addr(n), port));
        assert!(err.contains("refused"), "{n}: {err}");
    }

    // ClientIP affinity on a node port with policy Cluster: pinned and masqueraded.
    let sticky = lab
        .apply_service(service(serde_json::json!({
            "name": "sticky-np", "type": "NodePort", "selector": {"app": "echo"},
            "sessionAffinity": "ClientIP", "ports": [{"port": 80, "targetPort": "echo"}]
        })))
        .unwrap();
    let port = sticky.ports[0].node_port.unwrap() as u16;
    let got = answers(
        &lab,
        "control",
        SocketAddr::new(node_addr("node3"), port),
        20,
    );
    assert_eq!(by_endpoint(&got).len(), 1, "{got:?}");
    assert!(got.iter().all(|a| a.seen != outside), "{got:?}");

    // Load-balancer and external IPs, routed to node1 by the outside client.
    let lb = lab
        .apply_service(service(serde_json::json!({
            "name": "lb", "type": "LoadBalancer", "selector": {"app": "echo"},
            "loadBalancerIPs": ["192.0.2.10"], "externalIPs": ["192.0.2.20"],
            "ports": [{"port": 80, "targetPort": "echo"}]
        })))
        .unwrap();
    assert!(
        lb.ports[0].node_port.is_some(),
        "LoadBalancer gets a node port"
    );
    let ctl = lab.resolve_ns("control").unwrap();
    for ip in ["192.0.2.10", "192.0.2.20"] {
        let out = guard.exec(
            &ctl,
            &[
                "ip",
                "route",
                "add",
                ip,
                "via",
                &node_addr("node1").to_string(),
            ],
        );
        assert!(out.status.success(), "{}", text(&out));
        let got = answers(&lab, "control", SocketAddr::new(ip.parse().unwrap(), 80), 6);
        assert!(got.iter().all(|a| a.seen != outside), "{ip}: {got:?}");
    }
}

#[test]
fn bad_services_are_refused_with_nothing_applied_and_drift_is_repaired() {
    let guard = LabGuard::new();
    guard.up_yaml(&format!(
        "{LAB}services:\n  - {{name: web, type: NodePort, selector: {{app: echo}}, ports: [{{port: 80, targetPort: echo, nodePort: 30080}}]}}\n"
    ));
    let lab = guard.lab();
    let node1 = lab.node_ns("node1");
    let ruleset = || guard.exec(&node1, &["nft", "list", "table", "inet", "podnet-services"]);
    let before = text(&ruleset());
    let services_before = lab.services().unwrap();
    let bad = [
        (
            serde_json::json!({"name": "a", "ports": [{"port": 70000}]}),
            "port 70000 is out of range (1-65535)",
        ),
        (
            serde_json::json!({"name": "b", "type": "NodePort",
                "ports": [{"port": 80, "nodePort": 30080}]}),
            "nodePort TCP/30080 is already used by service default/web",
        ),
        (
            serde_json::json!({"name": "c", "clusterIP": "192.168.0.1", "ports": [{"port": 80}]}),
            "cluster IP 192.168.0.1 is outside the service CIDRs (10.96.0.0/12)",
        ),
    ];
    for (svc, message) in bad {
        let err = lab.apply_service(service(svc)).unwrap_err().to_string();
        assert!(err.contains(message), "{err}");
    }
    // The command line says the same.
    let dir = podnet_testkit::TempDir::new("svc");
    let file = dir.path().join("bad.yaml");
    std::fs::write(&file, "name: d\nports: [{port: 0}]\n").unwrap();
    let out = guard.run(&["service", "apply", "-f", file.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("port 0 is out of range"),
        "{}",
        text(&out)
    );
    assert_eq!(lab.services().unwrap(), services_before);
    assert_eq!(text(&ruleset()), before, "the kernel was changed");

    // Drift: someone deletes podnet's DNAT rule; the agent's periodic full
    // sync puts it back.
    podnet_testkit::delete_nft_rule(
        &podnet_kernel::Netns::open_named(&node1).unwrap(),
        "podnet-services",
        "services",
        "dnat",
    );
    assert_ne!(text(&ruleset()), before, "control: the rule is gone");
    assert!(
        wait_until(Duration::from_secs(20), || text(&ruleset()) == before),
        "the agent did not restore the rule\n{}",
        guard.logs()
    );
    let web_vip = lab.services().unwrap()[0].0.cluster_ip.unwrap();
    answers(&lab, &first_pod(&lab, "node1"), port80(web_vip), 3);

    // A restarted agent adopts its table without changing it.
    let handles = || {
        text(&guard.exec(
            &node1,
            &["nft", "-a", "list", "table", "inet", "podnet-services"],
        ))
    };
    let kept = handles();
    let log = lab.node_dir("node1").join("agent.log");
    let syncs = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches("services: full sync")
            .count()
    };
    let before_restart = syncs();
    lab.restart_agent("node1").unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || syncs() > before_restart),
        "{}",
        guard.logs()
    );
    let last_sync = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .rfind(|l| l.contains("services: full sync"))
        .unwrap()
        .to_string();
    assert!(last_sync.ends_with("kernel unchanged"), "{last_sync}");
    assert_eq!(handles(), kept);
}

/// The lab's etcd as production runs it (TLS, client certificates, a user
/// allowed podnet's keys only): services work; an agent whose watch falls
/// behind a compaction (frozen while services change and etcd compacts,
/// its connections cut) relists and programs what it missed.
#[test]
fn services_work_on_a_tls_etcd_and_survive_a_compaction_while_watched() {
    let guard = LabGuard::new();
    guard.up_yaml(&format!(
        "store: etcd\netcdTLS: true\n{LAB}services:\n  - {{name: web, selector: {{app: echo}}, ports: [{{port: 80, targetPort: echo}}]}}\n"
    ));
    let lab = guard.lab();
    let (web, eps) = lab.services().unwrap().remove(0);
    assert_eq!(eps.unwrap().endpoints.len(), 6);
    let vip = port80(web.cluster_ip.unwrap());
    let gone = first_pod(&lab, "node2");
    lab.set_ready(&gone, false).unwrap();
    let got = by_endpoint(&answers(&lab, &first_pod(&lab, "node3"), vip, 60));
    assert_eq!(got.len(), 5, "{got:?}");
    assert!(!got.contains_key(&gone));
    // A second service cannot take the first one's cluster IP, on etcd as on files.
    let err = lab
        .apply_service(service(serde_json::json!({
            "name": "copy", "clusterIP": web.cluster_ip.unwrap().to_string(), "ports": [{"port": 80}]
        })))
        .unwrap_err()
        .to_string();
    assert!(err.contains("already used by service default/web"), "{err}");

    let node1 = lab.state().unwrap().node("node1").unwrap().ns.clone();
    let failures = |what: &str| {
        labkit::agent_metric(
            &node1,
            &format!("podnet_sync_failures_total{{loop=\"{what}\"}}"),
        )
    };
    let failed_before = [
        failures("services"),
        failures("datapath"),
        failures("policies"),
    ];
    let agent = labkit::Frozen::processes_in(&node1);
    let api = labkit::LabEtcd::new(&lab);
    let before = api.revision();
    // Straight into the store: the lab's own apply would wait for node1.
    let late = service(serde_json::json!({
        "name": "late", "selector": {"app": "echo"}, "ports": [{"port": 80, "targetPort": "echo"}]
    }));
    let late = lab
        .with_store(podnet_lab::StoreKind::Etcd, move |s| {
            let stored = s.put_service(late)?;
            s.sync_endpoints()?;
            Ok(stored)
        })
        .unwrap();
    let compacted = api.compact();
    assert!(compacted > before, "the compaction covers the change");
    labkit::cut_connections(&node1, &api.address(), podnet_lab::ETCD_PORT);
    drop(agent);
    let late_vip = port80(late.cluster_ip.unwrap());
    let from = first_pod(&lab, "node1");
    assert!(
        wait_until(Duration::from_secs(30), || lab
            .probe_service(&from, late_vip, false, 1)
            .unwrap()
            .remove(0)
            .is_ok()),
        "node1's agent relisted after the compaction and programmed the service it missed"
    );
    let failed_after = [
        failures("services"),
        failures("datapath"),
        failures("policies"),
    ];
    assert_eq!(
        failed_after, failed_before,
        "a compacted history is a relist, not a failure"
    );
}

/// Headless and ExternalName services, and one labelled for another proxy,
/// are stored (and listed as kubectl shows them) but never proxied: no
/// element of theirs is in any node's table, and doctor agrees; a plain
/// service beside them works.
#[test]
fn headless_external_name_and_other_proxies_services_are_stored_not_proxied() {
    let g = LabGuard::new();
    g.up(&["--nodes", "2", "--pods-per-node", "1"]);
    g.apply(
        "apiVersion: v1\nkind: Service\nmetadata: {name: db}\n\
         spec: {clusterIP: None, selector: {node: node2}, ports: [{port: 7777}]}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {name: search}\n\
         spec: {type: ExternalName, externalName: search.example.com}\n---\n\
         apiVersion: v1\nkind: Service\n\
         metadata: {name: theirs, labels: {service.kubernetes.io/service-proxy-name: other-proxy}}\n\
         spec: {clusterIP: 10.96.0.77, selector: {node: node2}, ports: [{port: 80, targetPort: 7777}]}\n---\n\
         apiVersion: v1\nkind: Service\n\
         metadata: {name: marked, labels: {service.kubernetes.io/headless: \"\"}}\n\
         spec: {clusterIP: 10.96.0.79, selector: {node: node2}, ports: [{port: 80, targetPort: 7777}]}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {name: ours}\n\
         spec: {clusterIP: 10.96.0.78, selector: {node: node2}, ports: [{port: 80, targetPort: 7777}]}\n",
    );
    let out = g.run(&["get", "services"]);
    let listing = text(&out);
    let row = |name: &str| {
        listing
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .unwrap_or_else(|| panic!("{name} listed:\n{listing}"))
            .to_string()
    };
    assert!(row("db").contains(" None "), "{listing}");
    assert!(row("search").contains("search.example.com"), "{listing}");
    assert!(row("theirs").contains("10.96.0.77"), "{listing}");

    // The agents program `ours` and nothing of the others.
    let lab = g.lab();
    let pod = first_pod(&lab, "node1");
    let ok = wait_until(Duration::from_secs(20), || {
        !answers(&lab, &pod, port80("10.96.0.78".parse().unwrap()), 1).is_empty()
    });
    assert!(ok, "the plain service answers");
    for node in ["node1", "node2"] {
        let table = g.exec(
            &format!("podnet-{}-{node}", g.name),
            &["nft", "list", "table", "inet", "podnet-services"],
        );
        let t = text(&table);
        assert!(t.contains("10.96.0.78"), "{node}: {t}");
        assert!(
            !t.contains("10.96.0.77"),
            "{node} proxies another proxy's service: {t}"
        );
        assert!(
            !t.contains("10.96.0.79"),
            "{node} proxies a service labelled headless: {t}"
        );
    }
    let doctor = std::process::Command::new(labkit::podnet())
        .args(["doctor", "--lab", &g.name])
        .output()
        .unwrap();
    assert!(doctor.status.success(), "{}", text(&doctor));
}

/// `trafficDistribution: PreferClose`: a client on a node with a ready
/// endpoint is served by it alone; a node without one spreads over all.
#[test]
fn prefer_close_serves_from_the_clients_node_and_falls_back_to_all() {
    let g = LabGuard::new();
    g.up(&["--nodes", "2", "--pods-per-node", "1"]);
    let out = g.run(&["add-node"]);
    assert!(out.status.success(), "{}", text(&out));
    g.apply(
        "apiVersion: v1\nkind: Service\nmetadata: {name: near}\n\
         spec: {clusterIP: 10.96.0.90, trafficDistribution: PreferClose, selector: {app: echo},\n\
         ports: [{port: 80, targetPort: 7777}]}\n",
    );
    let lab = g.lab();
    let vip = port80("10.96.0.90".parse().unwrap());
    let local = first_pod(&lab, "node1");
    // The agents program the service on their own time.
    assert!(wait_until(Duration::from_secs(20), || {
        !answers(&lab, &local, vip, 1).is_empty()
    }));
    let from_pod = by_endpoint(&answers(&lab, &local, vip, 30));
    assert_eq!(from_pod.len(), 1, "{from_pod:?}");
    assert!(from_pod.keys().all(|k| k.contains("node1")), "{from_pod:?}");
    let state = lab.state().unwrap();
    let bare = state
        .nodes
        .iter()
        .find(|n| !state.pods.iter().any(|p| p.node == n.name))
        .expect("the added node has no pods")
        .name
        .clone();
    assert!(wait_until(Duration::from_secs(20), || {
        !answers(&lab, &bare, vip, 1).is_empty()
    }));
    let from_bare = by_endpoint(&answers(&lab, &bare, vip, 40));
    assert_eq!(
        from_bare.len(),
        2,
        "no local endpoint: every endpoint serves: {from_bare:?}"
    );
}
