//! Reading manifest files for `apply -f` and `delete -f`.

use std::io::Read;
use std::path::Path;

use podnet_manifest::Document;

/// Every document of `file` (`-` is standard input); the whole file is refused if one document is.
pub fn read(file: &Path) -> Result<Vec<Document>, Box<dyn std::error::Error>> {
    let text = if file == Path::new("-") {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| format!("read standard input: {e}"))?;
        s
    } else {
        std::fs::read_to_string(file).map_err(|e| format!("read {}: {e}", file.display()))?
    };
    podnet_manifest::parse(&text).map_err(|e| format!("{}: {e}", file.display()).into())
}

/// ` (ignored: spec.containers[0].image, ...)`, or nothing.
pub fn ignored_note(doc: &Document) -> String {
    if doc.ignored.is_empty() {
        String::new()
    } else {
        format!(" (ignored: {})", doc.ignored.join(", "))
    }
}

/// Applies every document (checked before), services in one batch; outcomes in order.
pub fn apply_all(
    store: &podnet_store::ClusterStore,
    docs: &[Document],
) -> Result<Vec<podnet_store::Outcome>, Box<dyn std::error::Error>> {
    let objects: Vec<_> = docs.iter().map(|d| &d.object).collect();
    Ok(store.apply_objects(&objects)?)
}
