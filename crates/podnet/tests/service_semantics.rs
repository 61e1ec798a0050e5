//! kube-proxy's remaining Service semantics, each from Kubernetes manifests
//! in a lab: loadBalancerSourceRanges, health-check node ports,
//! EndpointSlices for services without a selector, and dual-stack services.

mod labkit;

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use labkit::{text, LabGuard};
use podnet_lab::echo::ECHO_PORT;
use podnet_lab::Lab;
use podnet_services::Service;
use podnet_testkit::wait_until;

fn stored(lab: &Lab, name: &str) -> Service {
    let services = lab.services().unwrap();
    services
        .into_iter()
        .find(|(s, _)| s.name == name)
        .unwrap()
        .0
}

/// Who answered `n` TCP connections from `from` to `to`, or the first error.
fn answered_by(
    lab: &Lab,
    from: &str,
    to: SocketAddr,
    n: usize,
) -> Result<BTreeSet<String>, String> {
    lab.probe_service(from, to, false, n)
        .unwrap()
        .into_iter()
        .map(|a| a.map(|a| a.by))
        .collect()
}

/// `GET /` on a node's port from the control namespace: status code and body.
fn http_get(g: &LabGuard, node_addr: IpAddr, port: u32) -> (String, String) {
    let url = format!("http://{node_addr}:{port}/");
    let out = g.exec(
        &g.lab().control_ns(),
        &["curl", "-s", "-m", "5", "-w", "\n%{http_code}", &url],
    );
    let all = text(&out);
    let (body, code) = all.trim_end().rsplit_once('\n').unwrap_or(("", all.trim()));
    (code.to_string(), body.to_string())
}

const LAB: &str = "fabric:\n  segments: [{nodes: 3}]\npodsPerNode: 2\n";

/// Only the allowed sources reach a load-balancer IP with source ranges,
/// and widening the ranges lets the others in.
#[test]
fn load_balancer_source_ranges_let_only_their_sources_in() {
    let g = LabGuard::new();
    g.up_yaml(LAB);
    let lab = g.lab();
    let guarded = |ranges: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: guarded}}\n\
             spec: {{type: LoadBalancer, loadBalancerIP: 192.0.2.10, selector: {{app: echo}},\n\
             loadBalancerSourceRanges: [{ranges}], ports: [{{port: 80, targetPort: echo}}]}}\n"
        )
    };
    g.apply(&guarded("198.18.1.250/32"));
    let node1 = lab
        .state()
        .unwrap()
        .node("node1")
        .unwrap()
        .address
        .to_string();
    let ctl = lab.control_ns();
    let route = g.exec(&ctl, &["ip", "route", "add", "192.0.2.10", "via", &node1]);
    assert!(route.status.success(), "{}", text(&route));
    let vip = SocketAddr::new("192.0.2.10".parse().unwrap(), 80);
    assert!(
        answered_by(&lab, "control", vip, 4).is_ok(),
        "the allowed source is answered"
    );
    // A pod on node3 is not in the ranges: dropped on its node.
    let state = lab.state().unwrap();
    let pod = &state.pods.iter().find(|p| p.node == "node3").unwrap().name;
    let err = answered_by(&lab, pod, vip, 1).expect_err("the pod must be dropped");
    assert!(
        err.contains("timed out") || err.contains("refused"),
        "{err}"
    );
    // The cluster IP is not restricted.
    let cluster_ip = SocketAddr::new(stored(&lab, "guarded").cluster_ip.unwrap(), 80);
    assert!(answered_by(&lab, pod, cluster_ip, 2).is_ok());
    g.apply(&guarded("198.18.1.250/32, 10.244.0.0/16"));
    assert!(
        wait_until(Duration::from_secs(20), || answered_by(&lab, pod, vip, 1)
            .is_ok()),
        "a widened range lets the pod in"
    );
}

/// Every node answers the health-check node port of a LoadBalancer with
/// externalTrafficPolicy Local: 200 and its count where it has ready local
/// endpoints, 503 where not; readiness changes the answer.
#[test]
fn health_check_node_ports_answer_with_local_endpoints() {
    let g = LabGuard::new();
    g.up_yaml(LAB);
    let lab = g.lab();
    g.apply(
        "apiVersion: v1\nkind: Service\nmetadata: {name: hc}\n\
         spec: {type: LoadBalancer, externalTrafficPolicy: Local, selector: {node: node2},\n\
         ports: [{port: 80, targetPort: echo}]}\n",
    );
    let svc = stored(&lab, "hc");
    let port = svc
        .health_check_node_port
        .expect("allocated from the node-port range");
    assert!((30000..=32767).contains(&port), "{port}");
    assert!(
        svc.ports[0].node_port.is_some_and(|p| p != port),
        "a port of its own"
    );
    let state = lab.state().unwrap();
    let addr = |n: &str| state.node(n).unwrap().address;
    let answers = |n: &str| http_get(&g, addr(n), port);
    assert!(
        wait_until(Duration::from_secs(20), || answers("node2").0 == "200"),
        "{:?}",
        answers("node2")
    );
    let (_, body) = answers("node2");
    assert!(
        body.contains("\"localEndpoints\":2") && body.contains("\"name\":\"hc\""),
        "{body}"
    );
    for n in ["node1", "node3"] {
        let (code, body) = answers(n);
        assert_eq!(code, "503", "{n}: {body}");
        assert!(body.contains("\"localEndpoints\":0"), "{n}: {body}");
    }
    for pod in state.pods.iter().filter(|p| p.node == "node2") {
        lab.set_ready(&pod.name, false).unwrap();
    }
    assert!(
        wait_until(Duration::from_secs(20), || answers("node2").0 == "503"),
        "no ready local endpoint: 503, {:?}",
        answers("node2")
    );
    // Policy Cluster: no health-check port any more, and nobody listens on it.
    g.apply(
        "apiVersion: v1\nkind: Service\nmetadata: {name: hc}\n\
         spec: {type: LoadBalancer, selector: {node: node2}, ports: [{port: 80, targetPort: echo}]}\n",
    );
    assert_eq!(stored(&lab, "hc").health_check_node_port, None);
    assert!(
        wait_until(Duration::from_secs(20), || answers("node2").0 == "000"),
        "{:?}",
        answers("node2")
    );
}

/// A service without a selector takes its endpoints from EndpointSlices:
/// ready ones only, slices marked headless ignored, ports by name; a slice
/// for a service with a selector is refused and changes nothing.
#[test]
fn endpoint_slices_give_a_selectorless_service_its_endpoints() {
    let g = LabGuard::new();
    g.up_yaml(LAB);
    let lab = g.lab();
    let state = lab.state().unwrap();
    let pod_on = |n: &str| state.pods.iter().find(|p| p.node == n).unwrap().clone();
    let (p1, p2, p3) = (pod_on("node1"), pod_on("node2"), pod_on("node3"));
    let ip = |p: &podnet_lab::LabPod| p.ips[0].to_string();
    g.apply(&format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: outside}}\n\
         spec: {{ports: [{{name: web, port: 80}}]}}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: outside-1, labels: {{kubernetes.io/service-name: outside}}}}\n\
         addressType: IPv4\nports: [{{name: web, port: {ECHO_PORT}, protocol: TCP}}]\n\
         endpoints:\n\
         - {{addresses: [{}], nodeName: node1}}\n\
         - {{addresses: [{}], nodeName: node3, conditions: {{ready: false}}}}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: outside-2, labels: {{kubernetes.io/service-name: outside, service.kubernetes.io/headless: \"\"}}}}\n\
         addressType: IPv4\nports: [{{name: web, port: {ECHO_PORT}}}]\n\
         endpoints: [{{addresses: [{}], nodeName: node2}}]\n",
        ip(&p1),
        ip(&p3),
        ip(&p2),
    ));
    let vip = SocketAddr::new(stored(&lab, "outside").cluster_ip.unwrap(), 80);
    let by = answered_by(&lab, &p2.name, vip, 12).unwrap();
    assert_eq!(
        by,
        BTreeSet::from([p1.name.clone()]),
        "only the ready endpoint of the slice the proxy reads"
    );

    let dir = podnet_testkit::TempDir::new("slice");
    let file = dir.path().join("slice.yaml");
    g.apply("apiVersion: v1\nkind: Service\nmetadata: {name: picked}\nspec: {selector: {app: echo}, ports: [{port: 80, targetPort: echo}]}\n");
    std::fs::write(
        &file,
        format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {{name: picked-1, labels: {{kubernetes.io/service-name: picked}}}}\n\
             addressType: IPv4\nendpoints: [{{addresses: [{}], nodeName: node1}}]\n",
            ip(&p1)
        ),
    )
    .unwrap();
    let out = g.run(&["apply", "-f", file.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("service default/picked has a selector"),
        "{}",
        text(&out)
    );
    let eps = lab
        .services()
        .unwrap()
        .into_iter()
        .find(|(s, _)| s.name == "picked")
        .unwrap()
        .1
        .unwrap();
    assert_eq!(eps.endpoints.len(), 6, "the selector's endpoints stand");
}

/// Dual-stack: RequireDualStack gets a cluster IP per family with endpoints
/// of that family; PreferDualStack with IPv6 first makes IPv6 primary; a
/// service without a policy stays single-stack.
#[test]
fn dual_stack_services_get_a_cluster_ip_per_family() {
    let g = LabGuard::new();
    g.up_yaml(
        "clusterCIDRs: [10.244.0.0/16, fd00:10:244::/56]\n\
         serviceCIDRs: [10.96.0.0/12, fd00:10:96::/112]\n\
         fabric: {segments: [{nodes: 2}]}\npodsPerNode: 2\n",
    );
    let lab = g.lab();
    g.apply(
        "apiVersion: v1\nkind: Service\nmetadata: {name: dual}\n\
         spec: {ipFamilyPolicy: RequireDualStack, selector: {app: echo}, ports: [{port: 80, targetPort: echo}]}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {name: six-first}\n\
         spec: {ipFamilyPolicy: PreferDualStack, ipFamilies: [IPv6, IPv4], selector: {app: echo}, ports: [{port: 80, targetPort: echo}]}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {name: single}\n\
         spec: {selector: {app: echo}, ports: [{port: 80, targetPort: echo}]}\n",
    );
    let dual = stored(&lab, "dual");
    assert_eq!(dual.cluster_ips.len(), 2, "{dual:?}");
    assert!(dual.cluster_ips[0].is_ipv4() && dual.cluster_ips[1].is_ipv6());
    let six = stored(&lab, "six-first");
    assert!(
        six.cluster_ip.unwrap().is_ipv6() && six.cluster_ips[1].is_ipv4(),
        "{six:?}"
    );
    let single = stored(&lab, "single");
    assert!(single.cluster_ips.is_empty() && single.cluster_ip.unwrap().is_ipv4());

    let client = lab.state().unwrap().pods[0].name.clone();
    for vip in dual.cluster_ips.iter().chain(&six.cluster_ips) {
        let to = SocketAddr::new(*vip, 80);
        let answers = lab.probe_service(&client, to, false, 8).unwrap();
        for a in answers {
            let a = a.unwrap_or_else(|e| panic!("{to}: {e}"));
            assert_eq!(
                a.seen.is_ipv6(),
                vip.is_ipv6(),
                "{to}: served in its own family"
            );
        }
    }
}
