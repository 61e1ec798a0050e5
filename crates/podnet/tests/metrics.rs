//! The agent's metrics endpoint, scraped after known changes: syncs are
//! timed and stamped per loop, objects counted, a service change counted
//! and its programming time observed, a denial counted under its policy,
//! the store's reachability followed, `/healthz` and `/livez` answered.

mod labkit;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use labkit::LabGuard;
use podnet_kernel::Netns;
use podnet_testkit::{packets, wait_until};

/// `GET path` on node `node`'s agent metrics endpoint: status line and body.
fn get(g: &LabGuard, node: &str, path: &str) -> (String, String) {
    let port = podnet_lab::METRICS_ADDR.rsplit(':').next().unwrap();
    get_on(g, node, port, path)
}

/// `GET path` on port `port` of node `node`: status line and body.
fn get_on(g: &LabGuard, node: &str, port: &str, path: &str) -> (String, String) {
    let ns = g.node_ns(node);
    let addr = format!("127.0.0.1:{port}");
    let response = ns
        .run(|| -> std::io::Result<String> {
            let mut s = TcpStream::connect(&addr)?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n")?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        })
        .unwrap()
        .unwrap_or_default();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or(("", ""));
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

/// The value of the sample `name{labels}` (labels as written, or none).
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn scrape(g: &LabGuard, node: &str) -> String {
    get(g, node, "/metrics").1
}

fn service(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\n\
         spec: {{selector: {{node: node2}}, ports: [{{port: 80, targetPort: 7777}}]}}\n"
    )
}

#[test]
fn metrics_follow_known_changes_and_health_follows_the_store() {
    let g = LabGuard::new();
    g.up(&["--nodes", "2", "--pods-per-node", "1", "--store", "etcd"]);
    let wait = |what: &str, cond: &dyn Fn(&str) -> bool| {
        let ok = wait_until(Duration::from_secs(30), || cond(&scrape(&g, "node2")));
        assert!(ok, "{what}:\n{}", scrape(&g, "node2"));
    };

    // Every loop has synced: durations observed, timestamps set, healthy.
    wait("first syncs", &|m| {
        ["datapath", "services", "policies"].iter().all(|l| {
            sample(
                m,
                &format!("podnet_sync_last_timestamp_seconds{{loop=\"{l}\"}}"),
            )
            .is_some_and(|t| t > 1e9)
        })
    });
    let m = scrape(&g, "node2");
    assert!(sample(&m, "podnet_sync_duration_seconds_count{loop=\"datapath\"}").unwrap() >= 1.0);
    assert_eq!(
        sample(&m, "podnet_programmed_objects{kind=\"routes\"}"),
        Some(2.0),
        "{m}"
    );
    assert_eq!(sample(&m, "podnet_store_up"), Some(1.0));
    assert_eq!(
        sample(&m, "podnet_ipam_allocated_addresses"),
        Some(1.0),
        "{m}"
    );
    // A /24 less its network, gateway and broadcast addresses.
    assert_eq!(
        sample(&m, "podnet_ipam_capacity_addresses"),
        Some(253.0),
        "{m}"
    );
    assert_eq!(get(&g, "node2", "/healthz").0, "HTTP/1.1 200 OK");
    assert_eq!(get(&g, "node2", "/livez").0, "HTTP/1.1 200 OK");
    assert!(get(&g, "node2", "/nothing").0.contains("404"));
    // kube-proxy's health contract on port 10256: JSON with the last sync.
    let (status, body) = get_on(&g, "node2", "10256", "/healthz");
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        health["lastUpdated"].as_str().unwrap().starts_with("20"),
        "{health}"
    );
    assert!(
        health["currentTime"].as_str().unwrap().ends_with('Z'),
        "{health}"
    );
    assert_eq!(get_on(&g, "node2", "10256", "/livez").0, "HTTP/1.1 200 OK");

    // A service change: counted, programmed, its programming time observed.
    let changes =
        |m: &str| sample(m, "podnet_proxy_sync_proxy_rules_service_changes_total").unwrap_or(0.0);
    let before = changes(&m);
    g.apply(&service("web"));
    wait("a service programmed", &|m| {
        sample(m, "podnet_programmed_objects{kind=\"services\"}") == Some(1.0)
            && changes(m) >= before + 1.0
            && sample(m, "podnet_proxy_network_programming_duration_seconds_count").unwrap_or(0.0)
                >= 1.0
    });
    let m = scrape(&g, "node2");
    assert!(sample(&m, "podnet_proxy_sync_proxy_rules_last_timestamp_seconds").unwrap() > 1e9);
    assert_eq!(
        sample(&m, "podnet_proxy_sync_proxy_rules_service_changes_pending"),
        Some(0.0)
    );

    // A denial: counted in the kernel under the policy isolating the pod.
    let deny = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny-in}\n\
                spec: {podSelector: {matchLabels: {node: node2}}, policyTypes: [Ingress]}\n";
    g.apply(deny);
    let state = g.state();
    let (from, to) = (&state.pods[0], &state.pods[1]);
    let (std::net::IpAddr::V4(s), std::net::IpAddr::V4(d)) = (from.ips[0], to.ips[0]) else {
        panic!("IPv4 lab")
    };
    let tx = Netns::open_named(&from.name).unwrap();
    let denied =
        "podnet_policy_denied_packets_total{policy=\"default/deny-in\",direction=\"ingress\"}";
    let ok = wait_until(Duration::from_secs(30), || {
        let p = packets::ipv4_udp(s, d, 4242, 9999, b"x");
        tx.run(|| podnet_kernel::raw::send_ip_packet(&p, to.ips[0]).unwrap())
            .unwrap();
        sample(&scrape(&g, "node2"), denied).unwrap_or(0.0) >= 1.0
    });
    assert!(ok, "{}", scrape(&g, "node2"));
    wait("the denial logged", &|m| {
        sample(m, "podnet_drops_logged_total{reason=\"policy\"}").unwrap_or(0.0) >= 1.0
    });
    let m = scrape(&g, "node2");
    assert_eq!(
        sample(&m, "podnet_programmed_objects{kind=\"policies\"}"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        sample(&m, "podnet_programmed_objects{kind=\"pods\"}"),
        Some(1.0),
        "{m}"
    );
    assert!(sample(&m, "podnet_programmed_objects{kind=\"policy_elements\"}").unwrap() >= 1.0);
    assert!(sample(&m, "podnet_programmed_objects{kind=\"service_elements\"}").unwrap() >= 1.0);

    // The store goes away: the heartbeat says so; it comes back: so does the metric.
    let l = g.lab();
    l.stop_etcd().unwrap();
    wait("store down", &|m| sample(m, "podnet_store_up") == Some(0.0));
    l.start_etcd().unwrap();
    wait("store up", &|m| sample(m, "podnet_store_up") == Some(1.0));
}
