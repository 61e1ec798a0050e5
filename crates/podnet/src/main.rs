//! The `podnet` binary: the CNI plugin when `CNI_COMMAND` is set, the command line otherwise.

mod cli;
mod doctor_cmd;
mod drops_cmd;
mod lab_cmd;
mod manifests;
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
    let _ = std::io::stdin().read_to_end(&mut stdin);
    let (out, code) = podnet_cni::invoke(command, |k| std::env::var(k).ok(), &stdin);
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(out.as_bytes());
    let _ = stdout.flush();
    ExitCode::from(code as u8)
}
