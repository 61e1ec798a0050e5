//! The kubectl-like lab verbs: printing `get`, running `exec`, parsing `label`.

use podnet_lab::get::Resource;
use podnet_lab::objects::LabelChange;
use podnet_lab::Lab;

/// Prints kubectl-style result lines.
pub fn print(lines: Vec<String>) {
    for l in lines {
        println!("{l}");
    }
}

/// `lab get RESOURCE [-n NS | -A] [-o wide|json|yaml]`.
pub fn get(
    lab: &Lab,
    resource: &str,
    namespace: Option<&str>,
    output: Option<&str>,
) -> Result<(), Box<dyn std::error::Error>> {
    let what = Resource::parse(resource)?;
    match output {
        None | Some("wide") => {
            let table = lab.get(what, namespace, output == Some("wide"))?;
            if table.rows.is_empty() {
                let scope = namespace
                    .map(|n| format!(" in namespace {n}"))
                    .unwrap_or_default();
                eprintln!("No resources found{scope}.");
            } else {
                print!("{table}");
            }
        }
        Some(format @ ("json" | "yaml")) => {
            let items: Vec<serde_json::Value> = lab
                .objects(what, namespace)?
                .iter()
                .map(|o| o.render())
                .collect();
            let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
            if format == "json" {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                print!("{}", serde_yaml_ng::to_string(&list)?);
            }
        }
        Some(other) => {
            return Err(format!("unknown output format {other:?}: wide, json or yaml").into())
        }
    }
    Ok(())
}

/// `lab exec TARGET [-n NS] -- CMD...`: the command's exit status becomes ours.
pub fn exec(
    lab: &Lab,
    target: &str,
    namespace: &str,
    command: &[String],
) -> Result<(), Box<dyn std::error::Error>> {
    let status = lab.exec(target, namespace, command)?;
    if !status.success() {
        std::process::exit(status.code().unwrap_or(1));
    }
    Ok(())
}

/// `lab label pod|namespace NAME key=value|key- ...`.
pub fn label(
    lab: &Lab,
    kind: &str,
    name: &str,
    namespace: &str,
    changes: &[String],
) -> Result<(), Box<dyn std::error::Error>> {
    let changes = changes
        .iter()
        .map(|c| LabelChange::parse(c))
        .collect::<Result<Vec<_>, _>>()?;
    println!("{}", lab.label(kind, name, namespace, &changes)?);
    Ok(())
}

/// `lab graph [--out FILE] [--trace TRACE.json]`: DOT rendered by `dot` when
/// it is installed and a file is asked for, printed otherwise.
pub fn graph(
    lab: &Lab,
    out: Option<&std::path::Path>,
    trace: Option<&std::path::Path>,
) -> Result<(), Box<dyn std::error::Error>> {
    let trace: Option<podnet_trace::Trace> = match trace {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("read {}: {e}", path.display()))?;
            Some(serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?)
        }
        None => None,
    };
    let dot = lab.graph(trace.as_ref())?;
    let Some(out) = out else {
        print!("{dot}");
        return Ok(());
    };
    let format = out.extension().and_then(|e| e.to_str()).unwrap_or("svg");
    let child = std::process::Command::new("dot")
        .arg(format!("-T{format}"))
        .arg("-o")
        .arg(out)
        .stdin(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "`dot` is not available ({e}; Debian: apt install graphviz); the DOT text follows"
            );
            print!("{dot}");
            return Ok(());
        }
    };
    use std::io::Write;
    child
        .stdin
        .take()
        .ok_or("dot: no stdin")?
        .write_all(dot.as_bytes())?;
    let status = child.wait()?;
    if !status.success() {
        return Err(format!("dot failed ({status}) rendering {}", out.display()).into());
    }
    println!("wrote {}", out.display());
    Ok(())
}
