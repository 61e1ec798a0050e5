//! Stores written by podnet before the log (one `kv.json` holding every
//! key, a change log and revision files): converted once, when opened.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use serde::Deserialize;

use super::snapshot::{read_json, write_json, Snapshot, Tail};
use super::{io_err, root_of};
use crate::error::StoreError;

/// The old data file.
pub(super) const DATA: &str = "kv.json";

#[derive(Debug, Default, Deserialize)]
struct Data {
    revision: u64,
    entries: BTreeMap<String, String>,
}

/// Under the store's lock: splits `kv.json` into one snapshot per root
/// (generation 1, at the old revision), then removes the old files. A
/// conversion killed half way is done again from `kv.json`, which goes last.
pub(super) fn convert(dir: &Path) -> Result<(), StoreError> {
    let path = dir.join(DATA);
    if !path.exists() {
        return Ok(());
    }
    let data: Data = read_json(&path)?;
    let mut roots: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (k, v) in data.entries {
        roots.entry(root_of(&k)).or_default().insert(k, v);
    }
    for (root, entries) in roots {
        let snap = Snapshot {
            revision: data.revision,
            generation: 1,
            entries,
        };
        write_json(&dir.join(format!("{root}.snapshot.1")), &snap)?;
        let tail = Tail {
            generation: 1,
            length: 0,
            revision: data.revision,
            base: data.revision,
        };
        write_json(&dir.join(format!("{root}.tail")), &tail)?;
    }
    let old = fs::read_dir(dir).map_err(|e| io_err(dir, "list", e))?;
    for entry in old.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with("revision") || name == "changes.json" {
            fs::remove_file(entry.path()).map_err(|e| io_err(&entry.path(), "remove", e))?;
        }
    }
    fs::remove_file(&path).map_err(|e| io_err(&path, "remove", e))
}
