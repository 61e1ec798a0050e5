//! `podnet doctor`: in the lab when one is running, else on this node.

use std::path::PathBuf;

use podnet_agent::doctor::{doctor, DoctorConfig, DoctorReport};
use podnet_kernel::Netns;
use podnet_lab::Lab;

/// `podnet doctor` arguments.
#[derive(clap::Args)]
pub struct DoctorArgs {
    /// The node to check (in a lab: every node when absent; on a node: the host name).
    node: Option<String>,
    /// Print the reports as JSON.
    #[arg(long)]
    json: bool,
    /// The lab whose nodes to check.
    #[arg(long, default_value = podnet_lab::DEFAULT_NAME)]
    lab: String,
    /// On a node: the store, as given to the agent.
    #[command(flatten)]
    store: crate::store_args::StoreArgs,
    /// On a node: the agent's CNI config directory.
    #[arg(long, default_value = "/etc/cni/net.d")]
    cni_conf_dir: PathBuf,
    /// The agent runs without the service proxy: do not check services.
    #[arg(long)]
    no_services: bool,
    /// The agent runs without NetworkPolicy: do not check policies.
    #[arg(long)]
    no_policies: bool,
    /// Also write the datapath planner's recorded state (the agent's
    /// `tests/plans` format) to this file; one node only.
    #[arg(long)]
    record: Option<PathBuf>,
}

/// Checks the nodes and prints what is wrong; fails when anything is.
pub fn run(args: DoctorArgs) -> Result<(), Box<dyn std::error::Error>> {
    let lab = Lab::new(&args.lab)?;
    let reports = match lab.state() {
        Ok(state) => {
            let mut reports = Vec::new();
            for n in &state.nodes {
                if args.node.as_ref().is_some_and(|want| *want != n.name) {
                    continue;
                }
                let cfg = DoctorConfig {
                    node: n.name.clone(),
                    store: lab.store_config(state.spec.store)?,
                    cni_conf_dir: lab.node_dir(&n.name).join("cni"),
                    services: !args.no_services,
                    policies: !args.no_policies,
                };
                let ns = Netns::open_named(&n.ns)?;
                reports.push(doctor(Some(&ns), &cfg).map_err(|e| format!("{}: {e}", n.name))?);
            }
            if let (Some(want), true) = (&args.node, reports.is_empty()) {
                return Err(format!("lab {} has no node {want}", args.lab).into());
            }
            reports
        }
        Err(_) => vec![on_this_node(&args)?],
    };
    if let Some(path) = &args.record {
        let [one] = reports.as_slice() else {
            return Err("--record takes one node: name it".into());
        };
        let text = serde_json::to_string_pretty(&one.recorded_state())?;
        std::fs::write(path, text + "\n").map_err(|e| format!("write {}: {e}", path.display()))?;
    }
    print(&reports, args.json)?;
    if reports.iter().any(|r| r.problems() > 0) {
        std::process::exit(1);
    }
    Ok(())
}

fn on_this_node(args: &DoctorArgs) -> Result<DoctorReport, Box<dyn std::error::Error>> {
    let node = match &args.node {
        Some(n) => n.clone(),
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map_err(|e| format!("read the host name (name the node instead): {e}"))?
            .trim()
            .to_string(),
    };
    let cfg = DoctorConfig {
        node,
        store: args.store.config()?,
        cni_conf_dir: args.cni_conf_dir.clone(),
        services: !args.no_services,
        policies: !args.no_policies,
    };
    Ok(doctor(None, &cfg)?)
}

fn print(reports: &[DoctorReport], json: bool) -> Result<(), Box<dyn std::error::Error>> {
    if json {
        println!("{}", serde_json::to_string_pretty(reports)?);
        return Ok(());
    }
    for (i, r) in reports.iter().enumerate() {
        if i > 0 {
            println!();
        }
        print!("{r}");
    }
    Ok(())
}
