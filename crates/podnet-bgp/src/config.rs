//! BIRD's configuration for one node, rendered from what the cluster says
//! (as Calico's confd renders it): a pure function, checked against golden
//! files and against BIRD's own `configure check`.
//!
//! The routes, in Calico's model:
//! - the agent keeps a blackhole route (kernel protocol 113) for each of the
//!   node's blocks; BIRD's kernel protocol learns exactly those and the
//!   BGP sessions advertise them;
//! - BIRD exports to the kernel only routes it learned over BGP (they carry
//!   kernel protocol 12, BIRD's), never one for the node's own blocks;
//! - sessions import no route for the node's own blocks (a peer reflecting
//!   them back must not win);
//! - service addresses the node advertises ([`crate::services`]) are
//!   static routes in BIRD only; no service address, whoever advertises
//!   it, is exported to the kernel.

use std::fmt::Write as _;
use std::net::IpAddr;

/// What a session is to the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerKind {
    /// iBGP (same AS), routes not reflected.
    Internal,
    /// iBGP to a client of this node, a route reflector.
    ReflectorClient,
    /// eBGP (another AS): accepts routes carrying the node's own AS, since
    /// every node of a cluster may share one AS behind one router.
    External,
}

/// One of a node's BGP sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The protocol's name in BIRD (`node_node2`, `peer_tor`); letters, digits, `_`.
    pub name: String,
    /// What the peer is called in the cluster (BIRD's `description`).
    pub description: String,
    /// The peer's address.
    pub address: IpAddr,
    /// The peer's AS number.
    pub asn: u32,
    /// Wait for the peer to connect (one side of each mesh pair), so that
    /// both sides starting at once do not race.
    pub passive: bool,
    /// iBGP, reflector client or eBGP.
    pub kind: PeerKind,
    /// An eBGP peer beyond the node's segments (iBGP is multihop anyway).
    pub multihop: bool,
}

/// Everything one node's BIRD needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeBgp {
    /// The node's name (for the file's header).
    pub node: String,
    /// BGP router ID: the node's IPv4 underlay address.
    pub router_id: std::net::Ipv4Addr,
    /// The node's AS number.
    pub asn: u32,
    /// The node's pod blocks (IPv4 and IPv6).
    pub blocks: Vec<ipnet::IpNet>,
    /// The route-reflector cluster ID, when the node is a reflector.
    pub reflector_cluster: Option<std::net::Ipv4Addr>,
    /// The next hop of its IPv6 routes (its global IPv6 underlay address);
    /// none: IPv6 routes are not exchanged.
    pub next_hop_v6: Option<std::net::Ipv6Addr>,
    /// Its sessions.
    pub peers: Vec<Peer>,
    /// The service addresses it advertises, and those it never installs.
    pub services: crate::services::ServiceRoutes,
}

/// Timers: bounded, so that a new node is reached in about a second and a
/// restart's graceful wait does not stall the cluster for minutes.
const CONNECT_DELAY: u32 = 1;
const CONNECT_RETRY: u32 = 2;
const HOLD: u32 = 9;
const KEEPALIVE: u32 = 3;
const RESTART_TIME: u32 = 60;
/// How long a BIRD started with `-R` waits for its peers before it prunes
/// the kernel routes it did not learn again (BIRD's default is 240 s).
const RESTART_WAIT: u32 = 20;

/// The node's `bird.conf`.
pub fn render(n: &NodeBgp) -> String {
    let mut out = format!(
        "# BIRD configuration of node {}, written by podnet's agent from the cluster store.\n\
         # Do not edit: the agent rewrites it on every change.\n\n\
         router id {};\n\
         graceful restart wait {RESTART_WAIT};\n\n",
        n.node, n.router_id
    );
    render_sets(&mut out, n);
    out += FIXED;
    render_kernel(&mut out);
    render_service_statics(&mut out, &n.services);
    render_filters(&mut out);
    render_template(&mut out, n);
    for p in &n.peers {
        render_peer(&mut out, p, n.reflector_cluster);
    }
    out
}

/// The prefix sets per family: the node's own blocks (`OWN4`, `OWN6`) and
/// every service prefix (`SERVICES4`, `SERVICES6`).
fn render_sets(out: &mut String, n: &NodeBgp) {
    for v6 in [false, true] {
        let family = |b: &&ipnet::IpNet| b.addr().is_ipv6() == v6;
        let blocks: Vec<String> = n
            .blocks
            .iter()
            .filter(family)
            .map(ToString::to_string)
            .collect();
        let reserved: Vec<String> = n
            .services
            .reserved
            .iter()
            .filter(family)
            .map(|b| format!("{b}+"))
            .collect();
        let (own, services) = if v6 {
            ("OWN6", "SERVICES6")
        } else {
            ("OWN4", "SERVICES4")
        };
        let _ = writeln!(out, "define {own} = [ {} ];", prefix_set(&blocks, v6));
        let _ = writeln!(
            out,
            "define {services} = [ {} ];",
            prefix_set(&reserved, v6)
        );
    }
}

/// The kernel protocols: learn the agent's routes, write only BGP's, never
/// the node's own blocks or a service prefix.
fn render_kernel(out: &mut String) {
    for (n, family, own, services) in [
        (4, "ipv4", "OWN4", "SERVICES4"),
        (6, "ipv6", "OWN6", "SERVICES6"),
    ] {
        let _ = write!(
            out,
            "\nprotocol kernel kernel{n} {{\n\
             \tlearn;\n\
             \tmerge paths on;\n\
             \tgraceful restart on;\n\
             \t{family} {{\n\
             \t\timport where krt_source != 12;\n\
             \t\texport where source = RTS_BGP && !(net ~ {own}) && !(net ~ {services});\n\
             \t}};\n}}\n"
        );
    }
}

/// The sessions' filters: refuse the node's own blocks; send its blocks,
/// its service addresses and what BGP brought.
fn render_filters(out: &mut String) {
    for (family, own) in [("ipv4", "OWN4"), ("ipv6", "OWN6")] {
        let _ = write!(
            out,
            "\nfilter podnet_import_{family} {{\n\
             \tif net ~ {own} then reject;\n\
             \taccept;\n}}\n\
             \nfilter podnet_export_{family} {{\n\
             \tif net ~ {own} && source = RTS_INHERIT then accept;\n\
             \tif source = RTS_STATIC then accept;\n\
             \tif source = RTS_BGP then accept;\n\
             \treject;\n}}\n"
        );
    }
}

/// What every session shares: AS, timers, graceful restart, channels.
fn render_template(out: &mut String, n: &NodeBgp) {
    let _ = write!(
        out,
        "\ntemplate bgp podnet_peer {{\n\
         \tlocal as {asn};\n\
         \tconnect delay time {CONNECT_DELAY};\n\
         \tconnect retry time {CONNECT_RETRY};\n\
         \thold time {HOLD};\n\
         \tkeepalive time {KEEPALIVE};\n\
         \tgraceful restart on;\n\
         \tgraceful restart time {RESTART_TIME};\n\
         \tipv4 {{ import filter podnet_import_ipv4; export filter podnet_export_ipv4; }};\n",
        asn = n.asn
    );
    if let Some(v6) = n.next_hop_v6 {
        let _ = writeln!(
            out,
            "\tipv6 {{ import filter podnet_import_ipv6; export filter podnet_export_ipv6; next hop address {v6}; }};"
        );
    }
    *out += "}\n";
}

/// A BIRD prefix set of `items`; one no address matches when there are none
/// (a prefix set may not be empty).
fn prefix_set(items: &[String], v6: bool) -> String {
    match (items.is_empty(), v6) {
        (false, _) => items.join(", "),
        (true, false) => "0.0.0.0/32{32,32}".into(),
        (true, true) => "::/128{128,128}".into(),
    }
}

/// The service addresses the node advertises: a static protocol per
/// family, whose routes BGP exports and the kernel never sees.
fn render_service_statics(out: &mut String, services: &crate::services::ServiceRoutes) {
    for (n, v6) in [(4, false), (6, true)] {
        let routes: Vec<&ipnet::IpNet> = services
            .advertised
            .iter()
            .filter(|b| b.addr().is_ipv6() == v6)
            .collect();
        if routes.is_empty() {
            continue;
        }
        let _ = write!(
            out,
            "\n# Service addresses this node advertises (never installed in its kernel).\n\
             protocol static podnet_services{n} {{\n\tipv{n};\n"
        );
        for r in routes {
            let _ = writeln!(out, "\troute {r} blackhole;");
        }
        *out += "}\n";
    }
}

fn render_peer(out: &mut String, p: &Peer, cluster: Option<std::net::Ipv4Addr>) {
    let _ = write!(
        out,
        "\nprotocol bgp {} from podnet_peer {{\n\tdescription \"{}\";\n\tneighbor {} as {};\n",
        p.name,
        p.description.replace('"', ""),
        p.address,
        p.asn
    );
    if p.passive {
        *out += "\tpassive on;\n";
    }
    if p.multihop {
        *out += "\tmultihop;\n";
    }
    match p.kind {
        PeerKind::Internal => {}
        PeerKind::ReflectorClient => {
            *out += "\trr client;\n";
            if let Some(id) = cluster {
                let _ = writeln!(out, "\trr cluster id {id};");
            }
        }
        PeerKind::External => *out += "\tallow local as;\n",
    }
    *out += "}\n";
}

/// What every node has: the interfaces (the kernel protocols, learning only
/// the agent's blackholes and exporting only BGP, follow per family).
const FIXED: &str = "
protocol device {
\tscan time 10;
}

# Connected networks, so that next hops resolve; never exported anywhere.
protocol direct {
\tipv4;
\tipv6;
}

# BIRD learns the kernel's routes (the agent's blackholes for the node's
# blocks, protocol 113, and the routes next hops resolve through); it
# advertises only the blackholes (and the service addresses below) and writes
# only what it learned over BGP, never a service address.";
