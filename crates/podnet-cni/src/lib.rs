//! podnet's CNI plugin: spec 1.0.0 and 1.1.0 (and the 0.3/0.4 result shapes).
//!
//! - [`env`]: the `CNI_*` variables;
//! - [`config`]: the network configuration on stdin;
//! - [`result`]: the result JSON and chaining of `prevResult`;
//! - [`error`]: every failure mapped to a spec error code;
//! - [`ipam`]: built-in or delegated IPAM;
//! - [`plugin`]: the verbs.

pub mod config;
pub mod env;
pub mod error;
pub mod ipam;
pub mod plugin;
pub mod result;

pub use env::{Command, RuntimeEnv};
pub use error::{CniError, ErrorCode};

/// Runs the plugin for one invocation: returns the stdout text and the exit code.
///
/// This is the single place where an error becomes error JSON and a non-zero exit.
pub fn invoke(
    command: &str,
    get_env: impl Fn(&str) -> Option<String>,
    stdin: &[u8],
) -> (String, i32) {
    let outcome = Command::parse(command)
        .and_then(|cmd| RuntimeEnv::from_vars(cmd, &get_env).map(|env| (cmd, env)))
        .and_then(|(cmd, env)| plugin::run(cmd, &env, stdin));
    match outcome {
        Ok(out) => (out, 0),
        Err(e) => (e.to_json(&plugin::reply_version(stdin)), 1),
    }
}
