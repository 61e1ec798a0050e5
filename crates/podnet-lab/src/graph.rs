//! `lab graph`: the lab as a Graphviz picture: segments and the router,
//! nodes with their pods (addresses, veth pairs, bridges, VXLAN devices),
//! external hosts, and optionally a trace's path with its drop point.
//! Graphviz places everything; nothing here has coordinates.

use podnet_kernel::{Netns, RouteHandle};
use podnet_trace::Trace;

use crate::error::LabError;
use crate::state::{self, LabState};
use crate::Lab;

/// A DOT identifier (quoted, escaped).
fn id(text: &str) -> String {
    format!("\"{}\"", text.replace('"', "\\\""))
}

/// Appends one line of DOT.
fn line(d: &mut String, text: String) {
    d.push_str(&text);
    d.push('\n');
}

/// What the kernel of one node holds that the picture shows.
struct NodeLinks {
    vxlan: Option<String>,
    bridges: Vec<String>,
    /// Pod namespace name to the node side of its veth.
    veths: Vec<(String, String)>,
}

fn node_links(state: &LabState, node: &str, ns: &str) -> Result<NodeLinks, LabError> {
    let links = RouteHandle::in_netns(&Netns::open_named(ns)?)?.links()?;
    let mut veths = Vec::new();
    for pod in state.pods.iter().filter(|p| p.node == node) {
        let inside = RouteHandle::in_netns(&Netns::open_named(&pod.name)?)?.link_by_name("eth0")?;
        let peer = inside
            .and_then(|l| l.link)
            .and_then(|i| links.iter().find(|l| l.index == i));
        if let Some(p) = peer {
            veths.push((pod.name.clone(), p.name.clone()));
        }
    }
    Ok(NodeLinks {
        vxlan: links
            .iter()
            .find(|l| l.vxlan.is_some())
            .map(|l| l.name.clone()),
        bridges: links
            .iter()
            .filter(|l| l.kind.as_deref() == Some("bridge"))
            .map(|l| l.name.clone())
            .collect(),
        veths,
    })
}

/// The DOT text of a lab (with `trace`'s path, if given).
fn dot(state: &LabState, links: &[(String, NodeLinks)], trace: Option<&Trace>) -> String {
    let mut d = String::from("graph lab {\n  rankdir=LR; compound=true; node [fontname=\"sans\", fontsize=10]; edge [fontname=\"sans\", fontsize=9];\n");
    let segments = state.nodes.iter().map(|n| n.segment).max().unwrap_or(1);
    for s in 1..=segments {
        line(
            &mut d,
            format!(
                "  {} [shape=box, style=rounded, label=\"segment {s}\\n198.18.{s}.0/24\"];",
                id(&format!("seg{s}"))
            ),
        );
    }
    if state.spec.has_router() {
        line(
            &mut d,
            "  router [shape=diamond, label=\"router\"];".to_string(),
        );
        for s in 1..=segments {
            line(
                &mut d,
                format!(
                    "  router -- {} [label=\"198.18.{s}.254\"];",
                    id(&format!("seg{s}"))
                ),
            );
        }
    }
    for (n, (_, nl)) in state.nodes.iter().zip(links) {
        line(
            &mut d,
            format!(
                "  subgraph {} {{\n    label={}; style=rounded;",
                id(&format!("cluster_{}", n.name)),
                id(&n.name)
            ),
        );
        line(
            &mut d,
            format!(
                "    {} [shape=box3d, label=\"node {}\\n{}\"];",
                id(&n.name),
                n.name,
                n.address
            ),
        );
        for b in &nl.bridges {
            line(
                &mut d,
                format!(
                    "    {} [shape=box, label=\"bridge {b}\"];",
                    id(&format!("{}/{b}", n.name))
                ),
            );
        }
        if let Some(vx) = &nl.vxlan {
            line(
                &mut d,
                format!(
                    "    {} [shape=hexagon, label=\"{vx}\"];",
                    id(&format!("{}/vxlan", n.name))
                ),
            );
            line(
                &mut d,
                format!(
                    "    {} -- {};",
                    id(&n.name),
                    id(&format!("{}/vxlan", n.name))
                ),
            );
        }
        for p in state.pods.iter().filter(|p| p.node == n.name) {
            let ips: Vec<String> = p.ips.iter().map(|i| i.to_string()).collect();
            line(
                &mut d,
                format!(
                    "    {} [shape=ellipse, label=\"{}/{}\\n{}\"];",
                    id(&p.name),
                    p.namespace,
                    p.pod,
                    ips.join("\\n")
                ),
            );
            let host_end = nl
                .veths
                .iter()
                .find(|(ns, _)| ns == &p.name)
                .map(|(_, v)| v.as_str())
                .unwrap_or("?");
            line(
                &mut d,
                format!(
                    "    {} -- {} [label=\"veth {host_end} | eth0\"];",
                    id(&n.name),
                    id(&p.name)
                ),
            );
        }
        d.push_str("  }\n");
        line(
            &mut d,
            format!(
                "  {} -- {} [label=\"eth0 {}\"];",
                id(&n.name),
                id(&format!("seg{}", n.segment)),
                n.address
            ),
        );
    }
    let vx: Vec<&String> = state
        .nodes
        .iter()
        .zip(links)
        .filter(|(_, (_, l))| l.vxlan.is_some())
        .map(|(n, _)| &n.name)
        .collect();
    for (i, a) in vx.iter().enumerate() {
        for b in &vx[i + 1..] {
            line(
                &mut d,
                format!(
                    "  {} -- {} [style=dashed, color=gray, label=\"VXLAN\"];",
                    id(&format!("{a}/vxlan")),
                    id(&format!("{b}/vxlan"))
                ),
            );
        }
    }
    for h in &state.hosts {
        line(
            &mut d,
            format!(
                "  {} [shape=component, label=\"host {}\\n{}\"];",
                id(&format!("host-{}", h.name)),
                h.name,
                h.address
            ),
        );
        line(
            &mut d,
            format!("  router -- {};", id(&format!("host-{}", h.name))),
        );
    }
    if let Some(t) = trace {
        path(&mut d, state, t);
    }
    d.push_str("}\n");
    d
}

/// The graph node a trace hop's place stands for.
fn place_id(state: &LabState, place: &str) -> Option<String> {
    if let Some(n) = place.strip_prefix("node ") {
        return Some(n.to_string());
    }
    if let Some(p) = place.strip_prefix("pod ") {
        let (ns, name) = p.split_once('/')?;
        return state.pod(ns, name).ok().map(|p| p.name.clone());
    }
    if let Some(h) = place.strip_prefix("host ") {
        return Some(format!("host-{h}"));
    }
    (place == "router").then(|| "router".to_string())
}

/// The traced path as numbered red edges, the drop point marked.
fn path(d: &mut String, state: &LabState, t: &Trace) {
    let ids: Vec<String> = t
        .hops
        .iter()
        .filter_map(|h| place_id(state, &h.place))
        .collect();
    for (i, pair) in ids.windows(2).enumerate() {
        line(
            d,
            format!(
            "  {} -- {} [color=red, penwidth=2, fontcolor=red, label=\"{}\", constraint=false];",
            id(&pair[0]),
            id(&pair[1]),
            i + 1
        ),
        );
    }
    if let Some(place) = t.verdict.place.as_deref().filter(|_| !t.verdict.delivered) {
        if let Some(at) = place_id(state, place) {
            line(
                d,
                format!(
                    "  {} [color=red, style=filled, fillcolor=mistyrose];",
                    id(&at)
                ),
            );
            line(d, format!(
                "  drop [shape=note, color=red, label={}];\n  {} -- drop [color=red, style=dotted];",
                id(&format!("DROPPED: {}\\n{}", t.verdict.cause.name(), t.verdict.summary)),
                id(&at)
            ));
        }
    }
}

impl Lab {
    /// The lab's picture as DOT, with a trace's path when given.
    pub fn graph(&self, trace: Option<&Trace>) -> Result<String, LabError> {
        let state = state::read(self)?;
        let mut links = Vec::new();
        for n in &state.nodes {
            links.push((n.name.clone(), node_links(&state, &n.name, &n.ns)?));
        }
        Ok(dot(&state, &links, trace))
    }
}
