//! `podnet trace`: in the lab when one is running, else on this node.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use podnet_kernel::probe::ProbeProto;
use podnet_lab::trace::TraceOptions;
use podnet_lab::Lab;
use podnet_trace::{Cluster, Place, PlaceKind, Request, Trace};

/// `podnet trace` arguments.
#[derive(clap::Args)]
pub struct TraceArgs {
    /// From: a pod (`ns/name`), node, external host, `router`, or an address.
    from: String,
    /// To: a pod, node, external host, service (`svc/NAME`, `svc/NS/NAME`) or address, with `:PORT`.
    to: String,
    /// Send a UDP datagram (default: a TCP SYN).
    #[arg(long, conflicts_with = "icmp")]
    udp: bool,
    /// Send an ICMP echo request.
    #[arg(long)]
    icmp: bool,
    /// Size of the IP packet in bytes (UDP and ICMP), DF set.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Print the trace as JSON.
    #[arg(long)]
    json: bool,
    /// The lab to trace in.
    #[arg(long, default_value = podnet_lab::DEFAULT_NAME)]
    lab: String,
    /// How long to wait for an answer, in milliseconds.
    #[arg(long, default_value_t = 1500)]
    timeout_ms: u64,
    /// Do not read the kernel's drop reasons from tracefs.
    #[arg(long)]
    no_drop_reasons: bool,
}

/// Runs a trace and prints it; fails when the probe was not delivered.
pub fn run(args: TraceArgs) -> Result<(), Box<dyn std::error::Error>> {
    let proto = if args.udp {
        ProbeProto::Udp
    } else if args.icmp {
        ProbeProto::Icmp
    } else {
        ProbeProto::Tcp
    };
    let opts = TraceOptions {
        proto,
        size: args.size,
        timeout: Duration::from_millis(args.timeout_ms),
        drop_reasons: !args.no_drop_reasons,
    };
    let lab = Lab::new(&args.lab)?;
    let trace = if lab.state().is_ok() {
        lab.trace(&args.from, &args.to, &opts)?
    } else {
        on_this_node(&args.from, &args.to, &opts)?
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&trace)?);
    } else {
        print!("{trace}");
    }
    if !trace.verdict.delivered {
        std::process::exit(1);
    }
    Ok(())
}

/// On a node: this namespace and every named one (`/run/netns`, where
/// runtimes keep pods' namespaces); addresses only, no cluster store.
fn on_this_node(
    from: &str,
    to: &str,
    opts: &TraceOptions,
) -> Result<Trace, Box<dyn std::error::Error>> {
    let mut places = vec![Place {
        name: "this node".into(),
        kind: PlaceKind::Node,
        netns: "/proc/self/ns/net".into(),
        node: Some("this node".into()),
    }];
    for ns in podnet_kernel::Netns::list_named() {
        places.push(Place {
            name: format!("netns {ns}"),
            kind: PlaceKind::Pod,
            netns: format!("/run/netns/{ns}"),
            node: Some("this node".into()),
        });
    }
    let dst: SocketAddr = match to.parse::<SocketAddr>() {
        Ok(sa) => sa,
        Err(_) => SocketAddr::new(
            to.parse::<IpAddr>().map_err(|_| {
                format!("{to}: no lab is running, so the destination must be ADDRESS[:PORT]")
            })?,
            80,
        ),
    };
    let from_idx = match from {
        "node" | "this-node" => 0,
        ns => places
            .iter()
            .position(|p| p.name == format!("netns {ns}"))
            .ok_or_else(|| {
                format!("{ns}: not `node` and no namespace of that name in /run/netns")
            })?,
    };
    let req = Request {
        from: from_idx,
        src: None,
        dst,
        to: to.to_string(),
        proto: opts.proto,
        size: opts.size,
        timeout: opts.timeout,
        drop_reasons: opts.drop_reasons,
    };
    Ok(podnet_trace::run(
        &places,
        &Cluster::default(),
        &req,
        Some(4789),
    )?)
}
