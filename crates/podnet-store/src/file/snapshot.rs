//! A root's snapshot (its keys at one revision, replaced whole by
//! compaction) and its tail (the commit point: the log generation, its
//! committed length and the last revision), both small JSON files replaced
//! by atomic rename.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::io_err;
use crate::error::StoreError;

/// A root's keys as of `revision`; its log is generation `generation`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct Snapshot {
    pub revision: u64,
    pub generation: u64,
    pub entries: BTreeMap<String, String>,
}

/// A snapshot written from keys held elsewhere (the same file as [`Snapshot`]).
#[derive(Debug, Serialize)]
pub(super) struct SnapshotRef<'a> {
    pub revision: u64,
    pub generation: u64,
    pub entries: &'a BTreeMap<String, String>,
}

/// The commit point of a root: what of its log counts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Tail {
    /// The log generation in use.
    pub generation: u64,
    /// Committed bytes of that log.
    pub length: u64,
    /// The root's last revision (of its last record, or of its snapshot).
    pub revision: u64,
    /// The revision of this generation's snapshot: changes after it are in the log.
    #[serde(default)]
    pub base: u64,
}

/// Reads a JSON file; `T::default()` when it does not exist.
pub(super) fn read_json<T: Default + for<'de> Deserialize<'de>>(
    path: &Path,
) -> Result<T, StoreError> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
            key: path.display().to_string(),
            detail: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(io_err(path, "read", e)),
    }
}

/// Replaces `path` with `value` as JSON, by writing a temporary file and
/// renaming it over (readers see the old or the new file, whole).
pub(super) fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), StoreError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    let mut f = File::create(&tmp).map_err(|e| io_err(&tmp, "create", e))?;
    f.write_all(&bytes).map_err(|e| io_err(&tmp, "write", e))?;
    fs::rename(&tmp, path).map_err(|e| io_err(path, "rename", e))
}

/// A snapshot keeping only the keys under one of `prefixes` (parsed as it
/// is read, so a listing never holds the other keys in memory).
/// Read as a stream: the file's bytes are never held whole beside the keys.
pub(super) fn read_prefix(path: &Path, prefixes: &[&str]) -> Result<Snapshot, StoreError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Snapshot::default()),
        Err(e) => return Err(io_err(path, "read", e)),
    };
    let reader = std::io::BufReader::with_capacity(1 << 16, file);
    let mut de = serde_json::Deserializer::from_reader(reader);
    serde::de::DeserializeSeed::deserialize(PrefixSeed(prefixes), &mut de).map_err(|e| {
        StoreError::Corrupt {
            key: path.display().to_string(),
            detail: e.to_string(),
        }
    })
}

/// Parses a snapshot keeping only the entries whose key starts with one of the prefixes.
struct PrefixSeed<'a>(&'a [&'a str]);

impl<'de> serde::de::DeserializeSeed<'de> for PrefixSeed<'_> {
    type Value = Snapshot;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Snapshot, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for PrefixSeed<'_> {
    type Value = Snapshot;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a podnet store snapshot")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Snapshot, A::Error> {
        let mut snap = Snapshot::default();
        while let Some(field) = map.next_key::<String>()? {
            match field.as_str() {
                "revision" => snap.revision = map.next_value()?,
                "generation" => snap.generation = map.next_value()?,
                "entries" => snap.entries = map.next_value_seed(EntriesSeed(self.0))?,
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(snap)
    }
}

/// The `entries` object, filtered by prefix as it is read.
struct EntriesSeed<'a>(&'a [&'a str]);

impl<'de> serde::de::DeserializeSeed<'de> for EntriesSeed<'_> {
    type Value = BTreeMap<String, String>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for EntriesSeed<'_> {
    type Value = BTreeMap<String, String>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("store entries")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = BTreeMap::new();
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if self.0.iter().any(|p| key.starts_with(p)) {
                out.insert(key.into_owned(), map.next_value()?);
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(out)
    }
}
