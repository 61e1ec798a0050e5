//! The `podnet` binary: the CNI plugin when `CNI_COMMAND` is set, the command line otherwise.

mod cli;
mod doctor_cmd;
mod drops_cmd;
mod lab_cmd;
mod manifests;
mod store_args;
mod trace_cmd;

use std::io::{Read, Write};
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    if let Ok(command) = std::env::var("CNI_COMMAND") {
        return run_plugin(&command);
    }
    match cli::run(cli::Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("podnet: {e}");
            ExitCode::FAILURE
        }
    }
}

/// CNI mode: config on stdin, JSON on stdout, nothing else on stdout.
fn run_plugin(command: &str) -> ExitCode {
    let mut stdin = Vec::new();
    // A config that cannot be read is an empty one: the plugin answers
    // with a config error naming it; the read error goes to stderr.
    if let Err(e) = std::io::stdin().read_to_end(&mut stdin) {
        eprintln!("podnet: reading the network config from stdin: {e}");
    }
    let (out, code) = podnet_cni::invoke(command, |k| std::env::var(k).ok(), &stdin);
    let mut stdout = std::io::stdout().lock();
    // The runtime reads stdout; if it cannot be written, stderr is all that is left.
    if let Err(e) = stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
    {
        eprintln!("podnet: writing the result to stdout: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::from(code as u8)
}
