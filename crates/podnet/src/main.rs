//! The `podnet` binary: the CNI plugin when `CNI_COMMAND` is set, the command line otherwise.

use std::io::{Read, Write};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use podnet_lab::{Lab, LabOptions, Model};

/// podnet: a Kubernetes pod network.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Top,
}

#[derive(Subcommand)]
enum Top {
    /// A whole node with pods, built from network namespaces on this machine.
    Lab {
        /// Name of the lab; prefixes its namespaces (`podnet-NAME-node`, `podnet-NAME-pod1`, ...).
        #[arg(long, global = true, default_value = podnet_lab::DEFAULT_NAME)]
        name: String,
        #[command(subcommand)]
        action: LabAction,
    },
}

#[derive(Subcommand)]
enum LabAction {
    /// Build the lab: a node namespace, N pods plumbed by the real CNI plugin, a connectivity matrix.
    Up {
        /// Same-node model.
        #[arg(long, value_enum, default_value = "routed")]
        model: ModelArg,
        /// Number of pods.
        #[arg(long, default_value_t = 4)]
        pods: usize,
    },
    /// Print the lab's pods and its connectivity matrix.
    Status,
    /// Remove everything the lab made (also after a crashed `lab up`).
    Down,
    /// Serve TCP echo in the current namespace (started inside each lab pod).
    #[command(hide = true)]
    EchoServer {
        /// Port to listen on.
        #[arg(long)]
        port: u16,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ModelArg {
    Routed,
    Bridge,
}

fn main() -> ExitCode {
    if let Ok(command) = std::env::var("CNI_COMMAND") {
        return run_plugin(&command);
    }
    let cli = Cli::parse();
    let outcome = match cli.command {
        Top::Lab { name, action } => run_lab(&name, action),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("podnet: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_lab(name: &str, action: LabAction) -> Result<(), podnet_lab::LabError> {
    match action {
        LabAction::Up { model, pods } => {
            let model = match model {
                ModelArg::Routed => Model::Routed,
                ModelArg::Bridge => Model::Bridge,
            };
            Lab::new(name)?.up(&LabOptions {
                model,
                pods,
                plugin: plugin_path(),
            })
        }
        LabAction::Status => Lab::new(name)?.status(),
        LabAction::Down => Lab::new(name)?.down(),
        LabAction::EchoServer { port } => podnet_lab::echo::serve(port),
    }
}

fn plugin_path() -> std::path::PathBuf {
    std::env::current_exe().unwrap_or_else(|_| "podnet".into())
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
