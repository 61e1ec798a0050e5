//! How a client proves itself to etcd and checks etcd in return: TLS with a
//! CA and an optional client certificate, and etcd's username/password
//! authentication. The options carry the names flannel users know
//! (`--etcd-cafile`, `--etcd-certfile`, `--etcd-keyfile`, `--etcd-username`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::StoreError;

/// TLS files and credentials for etcd; all optional (plain HTTP, no auth).
#[derive(Clone, Default)]
pub struct EtcdSecurity {
    /// CA bundle that signs the members' certificates (`--etcd-cafile`).
    pub ca_file: Option<PathBuf>,
    /// Client certificate (`--etcd-certfile`), with `key_file`.
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key (`--etcd-keyfile`).
    pub key_file: Option<PathBuf>,
    /// etcd user (`--etcd-username`), with `password`.
    pub username: Option<String>,
    /// The user's password (from `PODNET_ETCD_PASSWORD` or `--etcd-password-file`).
    pub password: Option<String>,
}

impl std::fmt::Debug for EtcdSecurity {
    /// Everything but the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdSecurity")
            .field("ca_file", &self.ca_file)
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A username and password to authenticate with.
#[derive(Clone)]
pub(crate) struct Credentials {
    pub(crate) user: String,
    pub(crate) password: String,
}

impl EtcdSecurity {
    /// True when any TLS file is given.
    pub fn uses_tls(&self) -> bool {
        self.ca_file.is_some() || self.cert_file.is_some() || self.key_file.is_some()
    }

    /// The credentials, when a user is given; a user without a password
    /// (or the reverse) is refused, naming what is missing.
    pub(crate) fn credentials(&self) -> Result<Option<Credentials>, StoreError> {
        match (&self.username, &self.password) {
            (None, None) => Ok(None),
            (Some(user), Some(password)) => Ok(Some(Credentials {
                user: user.clone(),
                password: password.clone(),
            })),
            (Some(_), None) => Err(config(
                "etcd-username",
                "needs a password: set PODNET_ETCD_PASSWORD or --etcd-password-file",
            )),
            (None, Some(_)) => Err(config(
                "etcd-password",
                "a password without --etcd-username",
            )),
        }
    }

    /// The rustls client configuration: the CA file as the only roots, and
    /// the client certificate when given. Every file is read and checked
    /// here, so a wrong path or a file that is not PEM is named at start.
    pub(crate) fn tls_config(&self) -> Result<Arc<rustls::ClientConfig>, StoreError> {
        let ca = self.ca_file.as_deref().ok_or_else(|| {
            config(
                "etcd-cafile",
                "TLS needs the CA that signs the etcd members",
            )
        })?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in read_certs("etcd-cafile", ca)? {
            roots
                .add(cert)
                .map_err(|e| config("etcd-cafile", &format!("{}: {e}", ca.display())))?;
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| config("etcd-cafile", &e.to_string()))?
        .with_root_certificates(roots);
        let tls = match (&self.cert_file, &self.key_file) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), Some(key)) => {
                let chain = read_certs("etcd-certfile", cert)?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| config("etcd-keyfile", &format!("{}: {e}", key.display())))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| config("etcd-certfile", &e.to_string()))?
            }
            (Some(_), None) => return Err(config("etcd-keyfile", "--etcd-certfile needs its key")),
            (None, Some(_)) => {
                return Err(config(
                    "etcd-certfile",
                    "--etcd-keyfile without a certificate",
                ))
            }
        };
        Ok(Arc::new(tls))
    }
}

/// Every certificate in a PEM file (at least one).
fn read_certs(
    field: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, StoreError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| config(field, &format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(config(
            field,
            &format!("{}: no certificate in it", path.display()),
        ));
    }
    Ok(certs)
}

fn config(field: &'static str, reason: &str) -> StoreError {
    StoreError::Config {
        field,
        reason: reason.to_string(),
    }
}

/// What a TLS failure means for an operator, when the transport error came
/// from the handshake; `None` for any other transport failure.
pub(crate) fn tls_failure(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let tls = find_rustls_error(error)?;
    let hint = match tls {
        rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer) => {
            "the member's certificate is not signed by the CA in --etcd-cafile"
        }
        rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName) => {
            "the member's certificate does not name the address in the endpoint"
        }
        rustls::Error::InvalidCertificate(_) => "the member's certificate was refused",
        rustls::Error::AlertReceived(
            rustls::AlertDescription::BadCertificate
            | rustls::AlertDescription::UnknownCA
            | rustls::AlertDescription::CertificateRequired
            | rustls::AlertDescription::CertificateUnknown,
        ) => "the member refused our client certificate (--etcd-certfile, --etcd-keyfile)",
        _ => "the TLS handshake failed",
    };
    Some(format!("{hint} ({tls})"))
}

/// The rustls error somewhere in a chain of sources (I/O errors wrap it:
/// their `source` skips the wrapped error, `get_ref` does not).
fn find_rustls_error<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a rustls::Error> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            if let Some(tls) = find_rustls_error(inner) {
                return Some(tls);
            }
        }
        next = e.source();
    }
    None
}

/// Why a member dropped a TLS connection, found by a handshake of our own.
///
/// Under TLS 1.3 a member checks our client certificate after the client
/// considers the handshake done, so a refused certificate often shows up as
/// a broken pipe while the request is written, the member's alert unread.
/// This connects again, completes a handshake and reads, for at most
/// `timeout`: the alert, if the member sends one, says what is wrong.
pub(crate) fn probe_handshake(
    tls: &Arc<rustls::ClientConfig>,
    endpoint: &str,
    timeout: std::time::Duration,
) -> Option<String> {
    use std::io::Read;
    let authority = endpoint.strip_prefix("https://")?;
    let host = match authority.rsplit_once(':') {
        Some((host, _)) => host.trim_start_matches('[').trim_end_matches(']'),
        None => authority,
    };
    let name = rustls::pki_types::ServerName::try_from(host.to_string()).ok()?;
    let address = std::net::ToSocketAddrs::to_socket_addrs(authority)
        .ok()?
        .next()?;
    let socket = std::net::TcpStream::connect_timeout(&address, timeout).ok()?;
    socket.set_read_timeout(Some(timeout)).ok()?;
    socket.set_write_timeout(Some(timeout)).ok()?;
    let connection = rustls::ClientConnection::new(tls.clone(), name).ok()?;
    let mut stream = rustls::StreamOwned::new(connection, socket);
    // Whatever the member sends first: its alert, or (certificate
    // accepted) a session ticket, or nothing before the timeout.
    let mut byte = [0u8; 1];
    stream
        .read_exact(&mut byte)
        .err()
        .and_then(|e| tls_failure(&e))
}
