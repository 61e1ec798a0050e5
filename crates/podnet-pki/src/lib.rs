//! A private certificate authority for labs and tests: one CA, server
//! certificates for etcd members (by IP address) and client certificates
//! for agents and operators, written as PEM files.
//!
//! Production clusters bring their own PKI; this crate exists so that the
//! lab and the tests run etcd as production does (TLS, client
//! certificates) without an `openssl` recipe.

use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

/// What went wrong making or writing a certificate.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// The certificate library refused the parameters.
    #[error("certificate {name}: {source}")]
    Certificate {
        /// Which certificate.
        name: String,
        /// The library's reason.
        source: rcgen::Error,
    },
    /// A PEM file could not be written.
    #[error("write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// A certificate authority held in memory; what it signs is written out.
pub struct Authority {
    key: KeyPair,
    cert: rcgen::Certificate,
}

/// The PEM files of one issued certificate.
#[derive(Debug, Clone)]
pub struct IssuedFiles {
    /// The certificate.
    pub cert: PathBuf,
    /// Its private key (mode 0600).
    pub key: PathBuf,
}

impl Authority {
    /// A new self-signed CA named `common_name`.
    pub fn new(common_name: &str) -> Result<Self, PkiError> {
        let fail = |source| PkiError::Certificate {
            name: common_name.to_string(),
            source,
        };
        let mut params = CertificateParams::default();
        params.distinguished_name = name(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().map_err(fail)?;
        let cert = params.self_signed(&key).map_err(fail)?;
        Ok(Authority { key, cert })
    }

    /// The CA certificate as PEM.
    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// Writes the CA certificate to `path`.
    pub fn write_cert(&self, path: &Path) -> Result<(), PkiError> {
        write(path, &self.cert_pem(), false)
    }

    /// Issues a certificate for an etcd member reachable at `ips` and writes
    /// `DIR/NAME.pem` and `DIR/NAME-key.pem`. The member's JSON gateway
    /// connects to the member itself with this certificate, so it carries
    /// both uses; the addresses are SANs.
    pub fn issue_server(
        &self,
        dir: &Path,
        name: &str,
        ips: &[IpAddr],
    ) -> Result<IssuedFiles, PkiError> {
        let mut params = self.leaf(name);
        params.subject_alt_names = ips.iter().map(|ip| SanType::IpAddress(*ip)).collect();
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        self.sign_and_write(params, dir, name)
    }

    /// Issues a client certificate and writes `DIR/NAME.pem` and
    /// `DIR/NAME-key.pem`. Its subject is the organisation `name` with no
    /// common name: with client certificates and authentication both on,
    /// etcd's JSON gateway refuses every request whose certificate has one
    /// (a common name would be a user the gateway cannot pass on; its fix
    /// for CVE-2018-16886), so the user comes from the username and password.
    pub fn issue_client(&self, dir: &Path, name: &str) -> Result<IssuedFiles, PkiError> {
        let mut params = self.leaf(name);
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign_and_write(params, dir, name)
    }

    fn leaf(&self, common_name: &str) -> CertificateParams {
        let mut params = CertificateParams::default();
        params.distinguished_name = name(common_name);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params
    }

    fn sign_and_write(
        &self,
        params: CertificateParams,
        dir: &Path,
        name: &str,
    ) -> Result<IssuedFiles, PkiError> {
        let fail = |source| PkiError::Certificate {
            name: name.to_string(),
            source,
        };
        let key = KeyPair::generate().map_err(fail)?;
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .map_err(fail)?;
        let files = IssuedFiles {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}-key.pem")),
        };
        write(&files.cert, &cert.pem(), false)?;
        write(&files.key, &key.serialize_pem(), true)?;
        Ok(files)
    }
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

/// Writes `text` to `path`; a private key is readable by its owner only.
fn write(path: &Path, text: &str, private: bool) -> Result<(), PkiError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let fail = |source| PkiError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mode = if private { 0o600 } else { 0o644 };
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(fail)?;
    file.write_all(text.as_bytes()).map_err(fail)
}
