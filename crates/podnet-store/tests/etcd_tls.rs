//! etcd as production runs it: TLS with client certificates and etcd's
//! authentication, against a real etcd with certificates the test makes.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use podnet_cluster::{Backend, ClusterSpec};
use podnet_pki::Authority;
use podnet_store::{ClusterStore, EtcdKv, EtcdSecurity, KvBackend, StoreError};
use podnet_testkit::{require_root, EtcdMember, EtcdServer, EtcdTls, NetnsGuard, TempDir};

const PASSWORD: &str = "s3cret-for-podnet";

fn spec() -> ClusterSpec {
    ClusterSpec::new(vec!["10.244.0.0/20".parse().unwrap()], Backend::Auto)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The test's PKI: the cluster's CA with a member and a client certificate,
/// and a stranger CA with a client certificate of its own.
struct Pki {
    dir: TempDir,
    tls: EtcdTls,
}

impl Pki {
    fn new() -> Self {
        let dir = TempDir::new("pki");
        let d = dir.path();
        let ca = Authority::new("podnet-test-ca").unwrap();
        ca.write_cert(&d.join("ca.pem")).unwrap();
        let member = ca.issue_server(d, "etcd", &[ip("127.0.0.1")]).unwrap();
        let client = ca.issue_client(d, "podnet").unwrap();
        let stranger = Authority::new("stranger-ca").unwrap();
        stranger.write_cert(&d.join("stranger-ca.pem")).unwrap();
        stranger.issue_client(d, "stranger").unwrap();
        let tls = EtcdTls {
            ca: d.join("ca.pem"),
            cert: member.cert,
            key: member.key,
            client: (client.cert, client.key),
        };
        Pki { dir, tls }
    }

    fn path(&self, file: &str) -> std::path::PathBuf {
        self.dir.path().join(file)
    }

    /// What an agent of this cluster is given; `user` with the password when set.
    fn security(&self, user: Option<&str>) -> EtcdSecurity {
        EtcdSecurity {
            ca_file: Some(self.tls.ca.clone()),
            cert_file: Some(self.tls.client.0.clone()),
            key_file: Some(self.tls.client.1.clone()),
            username: user.map(String::from),
            password: user.map(|_| PASSWORD.to_string()),
        }
    }
}

/// Turns etcd's authentication on: `root`, and the user `podnet` with
/// [`PASSWORD`], allowed podnet's keys.
fn enable_auth(urls: &str, pki: &Pki) {
    EtcdKv::with_security(urls, &pki.security(None))
        .unwrap()
        .enable_auth(
            "root-password",
            "podnet",
            PASSWORD,
            podnet_store::KEY_PREFIX,
        )
        .unwrap();
}

fn member(name: &str, port: u16, cluster: Option<String>, pki: &Pki) -> EtcdMember {
    EtcdMember {
        name: name.into(),
        port,
        initial_cluster: cluster,
        tls: Some(pki.tls.clone()),
    }
}

fn store(url: &str, security: &EtcdSecurity) -> Result<ClusterStore, StoreError> {
    Ok(ClusterStore::new(Box::new(EtcdKv::with_security(
        url, security,
    )?)))
}

/// A wrong CA, a foreign client certificate, a wrong password and missing
/// credentials each fail with the endpoint and the cause named, and write
/// nothing; bad options are refused before anything is contacted.
#[test]
fn etcd_with_tls_and_auth_names_each_wrong_credential_and_changes_nothing() {
    require_root();
    let ns = NetnsGuard::new("etcdtls");
    let pki = Pki::new();
    let etcd = EtcdServer::start_member(&ns, "127.0.0.1", member("test", 2379, None, &pki));
    let url = etcd.url();
    ns.netns()
        .run(|| {
            // TLS with a client certificate, before authentication is on.
            let good = store(&url, &pki.security(None)).unwrap();
            good.init_cluster(&spec()).unwrap();
            enable_auth(&url, &pki);
            let good = store(&url, &pki.security(Some("podnet"))).unwrap();
            good.register_node("a", ip("198.18.1.1"), None, &[])
                .unwrap();

            let mut wrong_ca = pki.security(Some("podnet"));
            wrong_ca.ca_file = Some(pki.path("stranger-ca.pem"));
            let mut foreign_cert = pki.security(Some("podnet"));
            foreign_cert.cert_file = Some(pki.path("stranger.pem"));
            foreign_cert.key_file = Some(pki.path("stranger-key.pem"));
            let mut wrong_password = pki.security(Some("podnet"));
            wrong_password.password = Some("guess".into());
            let cases = [
                (wrong_ca, "not signed by the CA in --etcd-cafile"),
                (foreign_cert, "refused our client certificate"),
                (
                    wrong_password,
                    "authentication as podnet: etcdserver: authentication failed",
                ),
                (pki.security(None), "give --etcd-username and a password"),
            ];
            for (security, cause) in cases {
                let s = store(&url, &security).unwrap();
                let err = s
                    .register_node("b", ip("198.18.1.2"), None, &[])
                    .unwrap_err();
                let text = err.to_string();
                assert!(
                    matches!(err, StoreError::Tls { .. } | StoreError::Auth { .. }),
                    "{text}"
                );
                assert!(text.contains(&url) && text.contains(cause), "{text}");
                assert!(s.snapshot().is_err(), "reads are refused as well");
            }
            let nodes = good.snapshot().unwrap().nodes;
            assert_eq!(
                nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(),
                ["a"],
                "nothing was written"
            );

            // The user may use podnet's keys only.
            let kv = EtcdKv::with_security(&url, &pki.security(Some("podnet"))).unwrap();
            let err = kv.list("/elsewhere/").unwrap_err().to_string();
            assert!(err.contains("permission denied"), "{err}");

            // A watch over TLS with a token sees a change with its value.
            let rev = good.snapshot().unwrap().revision;
            good.register_node("c", ip("198.18.1.3"), None, &[])
                .unwrap();
            match kv
                .wait_changes("/podnet/", rev, Duration::from_secs(5))
                .unwrap()
            {
                podnet_store::Waited::Changed(_, Some(c)) => {
                    assert!(
                        c.entries.iter().any(|(k, _)| k.contains("/nodes/c")),
                        "{c:?}"
                    )
                }
                other => panic!("the watch must carry the change: {other:?}"),
            }
        })
        .unwrap();
}

/// Options that cannot work are refused before anything is contacted, naming the flag.
#[test]
fn etcd_security_options_are_checked_before_use() {
    let pki = Pki::new();
    let refused = |url: &str, s: EtcdSecurity, flag: &str| {
        let err = EtcdKv::with_security(url, &s)
            .err()
            .expect("refused")
            .to_string();
        assert!(err.starts_with(&format!("--{flag}:")), "{err}");
    };
    let url = "https://127.0.0.1:2379";
    let mut s = pki.security(None);
    s.ca_file = Some(pki.path("missing.pem"));
    refused(url, s, "etcd-cafile");
    let mut s = pki.security(None);
    s.ca_file = Some(pki.tls.client.1.clone());
    refused(url, s, "etcd-cafile");
    let mut s = pki.security(None);
    s.key_file = None;
    refused(url, s, "etcd-keyfile");
    let mut s = pki.security(Some("podnet"));
    s.password = None;
    refused(url, s, "etcd-username");
    refused("http://127.0.0.1:2379", pki.security(None), "etcd-cafile");
    refused(url, EtcdSecurity::default(), "etcd-cafile");
    let debug = format!("{:?}", pki.security(Some("podnet")));
    assert!(
        !debug.contains(PASSWORD),
        "the password is never printed: {debug}"
    );
    assert!(Path::new(&pki.tls.client.1).exists());
}

/// Three members with TLS and auth: the member calls go to is killed,
/// calls and watches move on to the others, and nothing is lost.
#[test]
fn etcd_members_fail_over_under_tls() {
    require_root();
    let ns = NetnsGuard::new("etcdtfo");
    let pki = Pki::new();
    let ports = [2379u16, 2381, 2383];
    let cluster = ports
        .iter()
        .enumerate()
        .map(|(i, p)| format!("m{i}=http://127.0.0.1:{}", p + 1))
        .collect::<Vec<_>>()
        .join(",");
    let mut members: Vec<EtcdServer> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| {
            EtcdServer::spawn_member(
                &ns,
                "127.0.0.1",
                member(&format!("m{i}"), *p, Some(cluster.clone()), &pki),
            )
        })
        .collect();
    for m in &members {
        m.wait_healthy(&ns);
    }
    let urls = members
        .iter()
        .map(EtcdServer::url)
        .collect::<Vec<_>>()
        .join(",");
    ns.netns()
        .run(|| {
            enable_auth(&urls, &pki);
            let s = store(&urls, &pki.security(Some("podnet"))).unwrap();
            s.init_cluster(&spec()).unwrap();
            s.register_node("a", ip("198.18.1.1"), None, &[]).unwrap();
            let rev = s.snapshot().unwrap().revision;
            members[0].kill();
            s.register_node("b", ip("198.18.1.2"), None, &[]).unwrap();
            assert_eq!(s.snapshot().unwrap().nodes.len(), 2);
            let seen = s.wait_for_change(rev, Duration::from_secs(10)).unwrap();
            assert!(
                seen.is_some_and(|r| r > rev),
                "the watch resumed on another member"
            );
        })
        .unwrap();
}
