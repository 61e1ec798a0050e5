use super::*;

fn errors_of(text: &str) -> Vec<String> {
    match parse(text) {
        Ok(docs) => panic!("accepted: {docs:?}"),
        Err(ManifestError::Invalid { errors, .. }) => {
            errors.errors.iter().map(ToString::to_string).collect()
        }
        Err(e) => vec![e.to_string()],
    }
}

fn policy(spec: &str) -> String {
    format!("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: p, namespace: x}}\nspec:\n{spec}")
}

#[test]
fn a_file_of_every_kind_reads_and_reports_what_it_ignores() {
    let text = r#"
apiVersion: v1
kind: Namespace
metadata: {name: x, labels: {team: a}}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x, labels: {pod: a}}
spec:
  nodeName: node1
  containers:
  - name: c80
    image: registry.k8s.io/e2e-test-images/agnhost:2.43
    command: ["/bin/sleep", "3600"]
    ports:
    - {name: serve-80-tcp, containerPort: 80}
    - {name: serve-80-udp, containerPort: 80, protocol: UDP}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: x}
spec:
  selector: {pod: a}
  ports: [{name: http, port: 80, targetPort: serve-80-tcp}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: x}
spec:
  podSelector: {}
  egress: [{to: [{namespaceSelector: {matchLabels: {team: a}}}], ports: [{port: 53, protocol: UDP}]}]
---
"#;
    let docs = parse(text).unwrap();
    let names: Vec<String> = docs.iter().map(|d| d.object.describe()).collect();
    assert_eq!(
        names,
        [
            "namespace/x",
            "pod/x/a",
            "service/x/web",
            "networkpolicy/x/deny"
        ]
    );
    assert_eq!(docs[1].ignored, ["spec.containers[0].image"]);
    let Object::Pod(p) = &docs[1].object else {
        panic!()
    };
    assert_eq!(p.pod.node, "node1");
    assert_eq!(
        p.pod
            .named_port("serve-80-udp", podnet_services::Protocol::Udp),
        Some(80)
    );
    assert_eq!(p.containers[0].command, ["/bin/sleep", "3600"]);
    let Object::NetworkPolicy(np) = &docs[3].object else {
        panic!()
    };
    assert_eq!(
        np.spec.policy_types,
        [
            podnet_policy::PolicyType::Ingress,
            podnet_policy::PolicyType::Egress
        ],
        "defaulted"
    );
}

#[test]
fn json_and_lists_read_too() {
    let text = r#"{"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "y"}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "z"}}]}"#;
    assert_eq!(parse(text).unwrap().len(), 2);
}

#[test]
fn unknown_fields_kinds_and_versions_are_named() {
    assert_eq!(
        errors_of("apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: [{name: c, hostPort: 80, ports: [{containerPort: 80, hostPort: 8080}]}]}"),
        ["spec.containers[0].ports[0].hostPort: field not supported by podnet", "spec.containers[0].hostPort: field not supported by podnet"]
    );
    assert!(
        errors_of("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: a}")[0]
            .starts_with("kind: unknown kind \"Deployment\"")
    );
    assert!(errors_of(
        "apiVersion: networking.k8s.io/v1beta1\nkind: NetworkPolicy\nmetadata: {name: a}"
    )[0]
    .contains("unknown kind"));
    assert!(parse("apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n---\nkind: [").is_err());
}

#[test]
fn bad_policies_name_their_field() {
    let cases = [
        (
            "  podSelector: {matchExpressions: [{key: a, operator: Foo}]}",
            "spec.podSelector.matchExpressions[0].operator: unsupported value \"Foo\"",
        ),
        (
            "  podSelector: {matchExpressions: [{key: a, operator: Exists, values: [b]}]}",
            "spec.podSelector.matchExpressions[0].values: may not be specified",
        ),
        (
            "  podSelector: {}\n  ingress: [{from: [{ipBlock: {cidr: 10.0.0.1/8}}]}]",
            "spec.ingress[0].from[0].ipBlock.cidr: 10.0.0.1/8 has host bits set",
        ),
        (
            "  podSelector: {}\n  ingress: [{from: [{podSelector: {}}, {ipBlock: {cidr: 192.168.0.0/16, except: [10.0.0.0/8]}}]}]",
            "spec.ingress[0].from[1].ipBlock.except[0]: 10.0.0.0/8 is not inside cidr 192.168.0.0/16",
        ),
        (
            "  podSelector: {}\n  ingress: [{ports: [{protocol: ICMP, port: 1}]}]",
            "spec.ingress[0].ports[0].protocol: unsupported value \"ICMP\"",
        ),
        ("  podSelector: {}\n  egress: [{ports: [{port: 70000}]}]", "spec.egress[0].ports[0].port: 70000 is out of range"),
        ("  podSelector: {}\n  egress: [{ports: [{port: Web_Port}]}]", "spec.egress[0].ports[0].port: \"Web_Port\" is not a valid port name"),
        ("  podSelector: {}\n  egress: [{ports: [{endPort: 90}]}]", "spec.egress[0].ports[0].endPort: may not be specified without a numeric port"),
        ("  podSelector: {}\n  egress: [{ports: [{port: 100, endPort: 90}]}]", "spec.egress[0].ports[0].endPort: 90 must be greater than or equal to port 100"),
        ("  ingress: []", "spec.podSelector: required"),
        ("  podSelector: {}\n  policyTypes: [Both]", "spec.policyTypes[0]: unsupported value \"Both\""),
    ];
    for (spec, want) in cases {
        let got = errors_of(&policy(spec));
        assert!(
            got.iter().any(|e| e.starts_with(want)),
            "{spec}\nwant {want}\ngot {got:#?}"
        );
    }
}

#[test]
fn the_error_message_names_document_object_and_field() {
    let text = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: x}}\n---\n{}",
        policy("  podSelector: {}\n  egress: [{ports: [{port: 0}]}]")
    );
    let e = parse(&text).unwrap_err().to_string();
    assert_eq!(e, "document 2: NetworkPolicy x/p is invalid: spec.egress[0].ports[0].port: 0 is out of range (1-65535)");
}

#[test]
fn headless_and_external_name_services_read_as_kubernetes_writes_them() {
    let text = r#"
apiVersion: v1
kind: Service
metadata: {name: db, labels: {app: db}}
spec: {clusterIP: None, selector: {app: db}, ports: [{port: 5432}]}
---
apiVersion: v1
kind: Service
metadata: {name: search}
spec: {type: ExternalName, externalName: search.example.com}
---
apiVersion: v1
kind: Service
metadata: {name: other, labels: {service.kubernetes.io/service-proxy-name: someone-else}}
spec: {ports: [{port: 80}]}
"#;
    let docs = parse(text).unwrap();
    let svc = |i: usize| match &docs[i].object {
        Object::Service(s) => s.clone(),
        o => panic!("{o:?}"),
    };
    let (db, search, other) = (svc(0), svc(1), svc(2));
    assert!(db.headless && db.cluster_ip.is_none() && !db.proxied());
    assert_eq!(db.labels["app"], "db");
    assert_eq!(
        search.service_type,
        podnet_services::ServiceType::ExternalName
    );
    assert_eq!(search.external_name.as_deref(), Some("search.example.com"));
    assert!(!search.proxied());
    assert!(!other.proxied() && other.has_cluster_ip());
    // Rendered back as Kubernetes shows a headless service.
    let back = service::render(&db);
    assert_eq!(back["spec"]["clusterIP"], "None");
    assert_eq!(back["metadata"]["labels"]["app"], "db");
}
