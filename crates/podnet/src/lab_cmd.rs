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
