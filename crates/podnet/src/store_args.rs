//! The store flags every command that reads or writes the cluster store
//! takes: the URL and, for etcd, TLS and authentication (flannel's names).

use std::path::PathBuf;

use podnet_store::{EtcdSecurity, StoreConfig};

/// The environment variable that may hold the etcd password.
pub const PASSWORD_ENV: &str = "PODNET_ETCD_PASSWORD";

/// Where the cluster store is and how to reach it.
#[derive(clap::Args, Clone, Debug)]
pub struct StoreArgs {
    /// Store URL: `file:DIR` (embedded) or `etcd:http(s)://HOST:PORT[,...]` (etcd members).
    #[arg(long, default_value = "file:/var/lib/podnet/store")]
    pub store: String,
    /// etcd: the CA that signs the members' certificates (with an `https://` store).
    #[arg(long)]
    pub etcd_cafile: Option<PathBuf>,
    /// etcd: a client certificate to present (with `--etcd-keyfile`).
    #[arg(long)]
    pub etcd_certfile: Option<PathBuf>,
    /// etcd: the client certificate's private key.
    #[arg(long)]
    pub etcd_keyfile: Option<PathBuf>,
    /// etcd: the user to authenticate as; the password comes from
    /// `PODNET_ETCD_PASSWORD` or `--etcd-password-file`.
    #[arg(long)]
    pub etcd_username: Option<String>,
    /// etcd: a file holding the password (its first line).
    #[arg(long)]
    pub etcd_password_file: Option<PathBuf>,
}

impl StoreArgs {
    /// The store configuration these flags describe; the password file is
    /// read here (it wins over the environment).
    pub fn config(&self) -> Result<StoreConfig, String> {
        let password = match &self.etcd_password_file {
            Some(path) => Some(read_password(path)?),
            None => std::env::var(PASSWORD_ENV).ok().filter(|p| !p.is_empty()),
        };
        Ok(StoreConfig {
            url: self.store.clone(),
            etcd: EtcdSecurity {
                ca_file: self.etcd_cafile.clone(),
                cert_file: self.etcd_certfile.clone(),
                key_file: self.etcd_keyfile.clone(),
                username: self.etcd_username.clone(),
                password,
            },
        })
    }
}

/// The first line of a password file.
fn read_password(path: &PathBuf) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("--etcd-password-file {}: {e}", path.display()))?;
    let line = text.lines().next().unwrap_or_default().to_string();
    if line.is_empty() {
        return Err(format!("--etcd-password-file {}: empty", path.display()));
    }
    Ok(line)
}
