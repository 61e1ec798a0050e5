//! NetworkPolicy in the lab beyond the truth tables: bad manifests refused
//! with nothing applied, an agent restart under a held allowed connection,
//! and changes applied as element updates only.

mod labkit;

use std::time::Duration;

use labkit::{connect, text, transfer, LabGuard};
use podnet_kernel::Netns;
use podnet_testkit::{wait_until, TempDir};

/// `podnet lab apply -f` of `yaml`; returns (success, output).
fn apply(g: &LabGuard, yaml: &str) -> (bool, String) {
    let dir = TempDir::new("manifest");
    let file = dir.path().join("m.yaml");
    std::fs::write(&file, yaml).unwrap();
    let out = g.run(&["apply", "-f", file.to_str().unwrap()]);
    (out.status.success(), text(&out))
}

fn policy(spec: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: fresh}}\n---\n\
         apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: p, namespace: default}}\nspec:\n{spec}"
    )
}

/// What the lab holds that a refused manifest must not have changed.
fn snapshot(g: &LabGuard) -> String {
    let ns = g.lab().node_ns("node1");
    let nft = text(&g.exec(&ns, &["nft", "list", "ruleset"]));
    let get = |what: &str| text(&g.run(&["get", what, "-A"]));
    format!(
        "{nft}\n{}\n{}\n{}",
        get("namespaces"),
        get("networkpolicies"),
        get("pods")
    )
}

#[test]
fn bad_manifests_are_refused_by_field_with_nothing_applied() {
    let g = LabGuard::new();
    g.up(&["--nodes", "1", "--pods-per-node", "1"]);
    let before = snapshot(&g);
    let cases = [
        (policy("  podSelector: {matchExpressions: [{key: a, operator: Equals, values: [b]}]}"), "spec.podSelector.matchExpressions[0].operator: unsupported value \"Equals\""),
        (policy("  podSelector: {matchExpressions: [{key: a, operator: Exists, values: [b]}]}"), "spec.podSelector.matchExpressions[0].values: may not be specified"),
        (policy("  podSelector: {}\n  ingress: [{from: [{ipBlock: {cidr: 10.1.2.3/16}}]}]"), "spec.ingress[0].from[0].ipBlock.cidr: 10.1.2.3/16 has host bits set"),
        (policy("  podSelector: {}\n  ingress: [{from: [{podSelector: {}}, {ipBlock: {cidr: 192.168.0.0/16, except: [10.0.0.0/8]}}]}]"), "spec.ingress[0].from[1].ipBlock.except[0]: 10.0.0.0/8 is not inside cidr 192.168.0.0/16"),
        (policy("  podSelector: {}\n  egress: [{ports: [{protocol: ICMP}]}]"), "spec.egress[0].ports[0].protocol: unsupported value \"ICMP\""),
        (policy("  podSelector: {}\n  egress: [{ports: [{port: 65536}]}]"), "spec.egress[0].ports[0].port: 65536 is out of range"),
        (policy("  podSelector: {}\n  egress: [{ports: [{port: http_port}]}]"), "spec.egress[0].ports[0].port: \"http_port\" is not a valid port name"),
        (policy("  podSelector: {}\n  egress: [{ports: [{endPort: 90}]}]"), "spec.egress[0].ports[0].endPort: may not be specified without a numeric port"),
        (policy("  podSelector: {}\n  egress: [{ports: [{port: 100, endPort: 90}]}]"), "spec.egress[0].ports[0].endPort: 90 must be greater than or equal to port 100"),
        ("apiVersion: v1\nkind: Namespace\nmetadata: {name: fresh}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n".to_string(), "unknown kind \"Deployment\" of apiVersion \"apps/v1\""),
        ("apiVersion: v1\nkind: Namespace\nmetadata: {name: fresh}\n---\napiVersion: networking.k8s.io/v2\nkind: NetworkPolicy\nmetadata: {name: d}\n".to_string(), "unknown kind \"NetworkPolicy\" of apiVersion \"networking.k8s.io/v2\""),
        ("apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: nowhere}\nspec: {containers: [{name: c}]}\n".to_string(), "namespace \"nowhere\" not found"),
        ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {hostNetwork: true, containers: [{name: c, volumeDevices: []}]}\n".to_string(), "spec.containers[0].volumeDevices: field not supported by podnet"),
    ];
    for (yaml, want) in &cases {
        let (ok, out) = apply(&g, yaml);
        assert!(!ok, "accepted:\n{yaml}\n{out}");
        assert!(out.contains(want), "want {want:?} in:\n{out}");
        assert_eq!(snapshot(&g), before, "something was applied by:\n{yaml}");
    }
}

#[test]
fn a_running_pod_changes_only_its_labels() {
    let g = LabGuard::new();
    g.up(&["--nodes", "1", "--pods-per-node", "0"]);
    let pod = |port: u16, label: &str| {
        format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: p, labels: {{v: {label}}}}}\nspec: {{containers: [{{name: c, ports: [{{containerPort: {port}}}]}}]}}\n")
    };
    assert!(apply(&g, &pod(80, "one"))
        .1
        .contains("pod/default/p created"));
    let netns = g.state().pods[0].name.clone();
    assert!(apply(&g, &pod(80, "two"))
        .1
        .contains("pod/default/p configured"));
    assert_eq!(g.state().pods[0].name, netns, "relabelled in place");
    assert!(g.state().pods[0].labels["v"] == "two");
    let (ok, out) = apply(&g, &pod(81, "two"));
    assert!(!ok && out.contains("may only change its labels"), "{out}");
}

/// Node `node`'s agent log.
fn agent_log(g: &LabGuard, node: &str) -> String {
    std::fs::read_to_string(format!("/run/podnet-lab/{}/nodes/{node}/agent.log", g.name))
        .unwrap_or_default()
}

/// `nft -a list table inet podnet-policy` on node1: rules with their handles.
fn rules(g: &LabGuard) -> String {
    text(&g.exec(
        &g.lab().node_ns("node1"),
        &["nft", "-a", "list", "table", "inet", "podnet-policy"],
    ))
    .lines()
    .filter(|l| l.contains("# handle") && !l.contains("elements"))
    .map(|l| {
        // Counters move with traffic; the rule and its handle must not.
        let w: Vec<&str> = l.split_whitespace().collect();
        let kept: Vec<&str> = w
            .iter()
            .enumerate()
            .filter(|(i, _)| !(*i > 0 && matches!(w[i - 1], "packets" | "bytes")))
            .map(|(_, x)| *x)
            .collect();
        format!("{}\n", kept.join(" "))
    })
    .collect()
}

#[test]
fn agent_restart_keeps_allowed_connections_and_changes_touch_only_elements() {
    let g = LabGuard::new();
    g.up(&["--nodes", "2", "--pods-per-node", "0"]);
    let manifest = "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n---\n\
        apiVersion: v1\nkind: Pod\nmetadata: {name: server, namespace: x, labels: {app: server}}\nspec: {nodeName: node1, containers: [{name: c, ports: [{containerPort: 80}]}]}\n---\n\
        apiVersion: v1\nkind: Pod\nmetadata: {name: client, namespace: x, labels: {app: client}}\nspec: {nodeName: node2, containers: [{name: c, ports: [{containerPort: 80}]}]}\n---\n\
        apiVersion: v1\nkind: Pod\nmetadata: {name: other, namespace: x, labels: {app: other}}\nspec: {nodeName: node2, containers: [{name: c, ports: [{containerPort: 80}]}]}\n---\n\
        apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: server, namespace: x}\n\
        spec: {podSelector: {matchLabels: {app: server}}, ingress: [{from: [{podSelector: {matchLabels: {app: client}}}], ports: [{port: 8080}]}]}\n";
    let (ok, out) = apply(&g, manifest);
    assert!(ok, "{out}");
    let state = g.state();
    let find = |n: &str| state.pods.iter().find(|p| p.pod == n).unwrap().clone();
    let (server, client, other) = (find("server"), find("client"), find("other"));
    let server_ns = Netns::open_named(&server.name).unwrap();
    let (mut c, mut s) = connect(
        &Netns::open_named(&client.name).unwrap(),
        &server_ns,
        server.ips[0],
        8080,
    );
    transfer(&mut c, &mut s, 64 * 1024);
    let before = rules(&g);
    assert!(before.contains("ingress4"), "{before}");

    let run = g.run(&["restart-agent", "node1"]);
    assert!(run.status.success(), "{}", text(&run));
    let adopted = wait_until(Duration::from_secs(10), || {
        agent_log(&g, "node1")
            .lines()
            .rfind(|l| l.contains("policies: revision"))
            .is_some_and(|l| l.contains("synced") && l.contains("kernel unchanged"))
    });
    assert!(
        adopted,
        "the new agent changed the firewall:\n{}",
        agent_log(&g, "node1")
    );
    transfer(&mut c, &mut s, 64 * 1024);
    assert_eq!(rules(&g), before, "rules rewritten by the restart");

    // A label change: elements only, no rule touched, in force once applied.
    serve(&server_ns, std::net::SocketAddr::new(server.ips[0], 8080));
    assert!(
        !reaches(&other.name, server.ips[0]),
        "x/other is not allowed yet"
    );
    assert!(reaches(&client.name, server.ips[0]), "x/client is");
    let out = g.run(&["label", "pod", "other", "-n", "x", "app=client"]);
    assert!(out.status.success(), "{}", text(&out));
    let log = agent_log(&g, "node1");
    let last = log
        .lines()
        .rfind(|l| l.contains("policies: revision"))
        .unwrap();
    assert!(
        last.contains("elements +") && !last.contains("chains") && !last.contains("sets"),
        "{last}"
    );
    assert_eq!(rules(&g), before, "a label change rewrote rules");
    assert!(
        reaches(&other.name, server.ips[0]),
        "x/other is allowed once relabelled"
    );
    transfer(&mut c, &mut s, 1024);
}

/// A listener on `addr` inside `ns` that greets every connection (a thread for the test's life).
fn serve(ns: &Netns, addr: std::net::SocketAddr) {
    let l = ns
        .run(move || std::net::TcpListener::bind(addr))
        .unwrap()
        .unwrap();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut conn) = conn else { continue };
            if let Err(e) = std::io::Write::write_all(&mut conn, b"hi\n") {
                eprintln!("greeting: {e}");
            }
        }
    });
}

/// Whether a connection from the pod namespace `from` to `ip:8080` is greeted (1 s).
fn reaches(from: &str, ip: std::net::IpAddr) -> bool {
    let ns = Netns::open_named(from).unwrap();
    let addr = std::net::SocketAddr::new(ip, 8080);
    ns.run(move || {
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut buf = [0u8; 3];
        std::io::Read::read_exact(&mut s, &mut buf)
    })
    .unwrap()
    .is_ok()
}

#[test]
fn lab_check_expects_what_the_policies_deny_and_catches_leaks() {
    let g = LabGuard::new();
    g.up(&["--nodes", "2", "--pods-per-node", "1"]);
    let deny = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny-node1, namespace: default}\n\
                spec: {podSelector: {matchLabels: {node: node1}}}\n";
    let (ok, out) = apply(&g, deny);
    assert!(ok, "{out}");
    let check = g.run(&["check"]);
    let out = text(&check);
    assert!(check.status.success(), "{out}");
    assert!(out.contains("deny"), "{out}");
    // Without the agent and with the table gone, the denied pairs get through: a leak.
    g.lab().stop_agent("node1").unwrap();
    let ns = g.lab().node_ns("node1");
    let flush = g.exec(&ns, &["nft", "delete", "table", "inet", "podnet-policy"]);
    assert!(flush.status.success(), "{}", text(&flush));
    let check = g.run(&["check"]);
    let out = text(&check);
    assert!(!check.status.success() && out.contains("LEAK"), "{out}");
}

#[test]
fn policies_work_on_the_etcd_store_too() {
    let g = LabGuard::new();
    g.up(&["--nodes", "2", "--pods-per-node", "1", "--store", "etcd"]);
    let connect = |from: &str| g.run(&["connect", from, "node1-pod1"]).status.success();
    assert!(connect("node2-pod1"));
    let deny = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny, namespace: default}\n\
                spec: {podSelector: {matchLabels: {node: node1}}}\n";
    let (ok, out) = apply(&g, deny);
    assert!(ok, "{out}");
    assert!(!connect("node2-pod1"), "denied through the etcd store");
    let out = g.run(&["get", "networkpolicies"]);
    assert!(text(&out).contains("deny"), "{}", text(&out));
}

#[test]
fn the_policy_demo_of_the_readme_works() {
    let g = LabGuard::new();
    g.up(&["--nodes", "2", "--pods-per-node", "0"]);
    let example = |f: &str| {
        format!(
            "{}/../../examples/policy-demo/{f}",
            env!("CARGO_MANIFEST_DIR")
        )
    };
    let run = |args: &[&str]| {
        let out = g.run(args);
        (out.status.success(), text(&out))
    };
    let connect = |from: &str| run(&["connect", from, "shop/web", "--port", "8080"]);
    assert!(run(&["apply", "-f", &example("app.yaml")]).0);
    assert!(connect("shop/intruder").0, "no policy yet");
    assert!(run(&["apply", "-f", &example("deny-all.yaml")]).0);
    let (ok, out) = connect("shop/frontend");
    assert!(!ok && out.contains("no answer"), "{out}");
    assert!(run(&["apply", "-f", &example("allow-frontend.yaml")]).0);
    let (ok, out) = connect("shop/frontend");
    assert!(
        ok && out.contains("answered by") && out.contains("shop.web"),
        "{out}"
    );
    assert!(!connect("shop/intruder").0, "still denied");
    let (_, list) = run(&["get", "networkpolicies", "-n", "shop"]);
    assert!(
        list.contains("web-from-frontend") && list.contains("default-deny"),
        "{list}"
    );
}
