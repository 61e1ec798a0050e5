//! The embedded store: one JSON file in a directory, for one machine.
//!
//! Writers take an exclusive `flock` on `DIR/lock`, read `kv.json`, and
//! replace it by atomic rename, bumping the revision; readers just read the
//! file (a rename is atomic, so they see one whole revision). Waiters watch
//! the directory with inotify and re-read the revision. Leases live in a
//! second file, `leases.json`, with wall-clock expiry, so that heartbeats do
//! not bump the revision and wake every agent.
//!
//! Two things keep big stores (100,000 services) cheap for readers: each
//! top-level root (`/podnet/`, `/podnet-services/`) has a small file with the
//! revision of its last change (`revision.ROOT`), so waiters neither parse the
//! data to learn it nor wake for another root's writes, and a listing keeps
//! only the keys under its prefix while parsing, so the node agents' cluster
//! snapshots never hold the services in memory.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::AsFd;

use podnet_kernel::filewatch::DirWatch;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::kv::{Changes, KvBackend, Listing, Txn};

const DATA: &str = "kv.json";
const LEASES: &str = "leases.json";
const REVISION: &str = "revision";
const CHANGELOG: &str = "changes.json";
/// The change log keeps at most this many bytes of keys and values: readers
/// further behind list instead.
const CHANGELOG_BYTES: usize = 4 << 20;

/// The recent changes, so that a reader one change behind need not parse the
/// whole store to learn what changed.
#[derive(Debug, Default, Serialize, Deserialize)]
struct ChangeLog {
    /// Every change after this revision is in `entries`.
    covers_after: u64,
    /// The store revision when the log was written.
    revision: u64,
    /// `(revision, key, new value or null)`, oldest first.
    entries: Vec<(u64, String, Option<String>)>,
}

impl ChangeLog {
    /// Appends one transaction's changes, then drops whole revisions from the
    /// front until the log fits its size.
    fn record(&mut self, revision: u64, txn: &Txn) {
        for k in &txn.deletes {
            self.entries.push((revision, k.clone(), None));
        }
        for (k, v) in &txn.puts {
            self.entries.push((revision, k.clone(), Some(v.clone())));
        }
        self.revision = revision;
        let size =
            |e: &(u64, String, Option<String>)| e.1.len() + e.2.as_ref().map_or(0, String::len);
        let mut total: usize = self.entries.iter().map(size).sum();
        while total > CHANGELOG_BYTES {
            let Some(oldest) = self.entries.first().map(|e| e.0) else {
                break;
            };
            let cut = self.entries.iter().take_while(|e| e.0 == oldest).count();
            total -= self.entries[..cut].iter().map(size).sum::<usize>();
            self.entries.drain(..cut);
            self.covers_after = oldest;
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Data {
    revision: u64,
    entries: BTreeMap<String, String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Lease {
    value: String,
    expires_unix_ms: u64,
}

/// The embedded key-value store in directory `dir`.
#[derive(Debug, Clone)]
pub struct FileKv {
    dir: PathBuf,
}

impl FileKv {
    /// Opens (creating if needed) the store in `dir`.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(|e| io_err(&dir, "create directory", e))?;
        Ok(FileKv { dir })
    }

    fn lock(&self) -> Result<File, StoreError> {
        let path = self.dir.join("lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| io_err(&path, "open lock", e))?;
        podnet_kernel::process::lock_exclusive(f.as_fd()).map_err(|e| io_err(&path, "flock", e))?;
        Ok(f)
    }

    fn read_json<T: Default + for<'de> Deserialize<'de>>(
        &self,
        name: &str,
    ) -> Result<T, StoreError> {
        let path = self.dir.join(name);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                key: path.display().to_string(),
                detail: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
            Err(e) => Err(io_err(&path, "read", e)),
        }
    }

    fn write_json<T: Serialize>(&self, name: &str, value: &T) -> Result<(), StoreError> {
        let path = self.dir.join(name);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let bytes = serde_json::to_vec(value).unwrap_or_default();
        let mut f = File::create(&tmp).map_err(|e| io_err(&tmp, "create", e))?;
        f.write_all(&bytes).map_err(|e| io_err(&tmp, "write", e))?;
        fs::rename(&tmp, &path).map_err(|e| io_err(&path, "rename", e))
    }

    /// The entries under `prefix` and the revision, parsed from `kv.json`
    /// without keeping the other entries.
    fn read_prefix(&self, prefix: &str) -> Result<Data, StoreError> {
        let path = self.dir.join(DATA);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Data::default()),
            Err(e) => return Err(io_err(&path, "read", e)),
        };
        let mut de = serde_json::Deserializer::from_slice(&bytes);
        serde::de::DeserializeSeed::deserialize(PrefixSeed(prefix), &mut de).map_err(|e| {
            StoreError::Corrupt {
                key: path.display().to_string(),
                detail: e.to_string(),
            }
        })
    }

    /// The revision of the last change under the top-level root of `prefix`
    /// (`/podnet/`, `/podnet-services/`), so that a waiter on one root is not
    /// woken by writes to another; 0 when that root was never written.
    fn root_revision(&self, prefix: &str) -> Result<u64, StoreError> {
        let path = self.dir.join(root_file(prefix));
        match fs::read_to_string(&path) {
            Ok(text) => text.trim().parse().map_err(|_| StoreError::Corrupt {
                key: path.display().to_string(),
                detail: format!("not a revision: {text:?}"),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(io_err(&path, "read", e)),
        }
    }

    fn live_leases(&self) -> Result<BTreeMap<String, Lease>, StoreError> {
        let now = unix_ms();
        let mut leases: BTreeMap<String, Lease> = self.read_json(LEASES)?;
        leases.retain(|_, l| l.expires_unix_ms > now);
        Ok(leases)
    }
}

impl KvBackend for FileKv {
    fn list(&self, prefix: &str) -> Result<Listing, StoreError> {
        let data = self.read_prefix(prefix)?;
        let mut entries: BTreeMap<String, String> = data
            .entries
            .into_iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .collect();
        for (k, l) in self.live_leases()? {
            if k.starts_with(prefix) {
                entries.insert(k, l.value);
            }
        }
        Ok(Listing {
            revision: data.revision,
            entries: entries.into_iter().collect(),
        })
    }

    fn transact(&self, txn: &Txn) -> Result<bool, StoreError> {
        let _lock = self.lock()?;
        let mut data: Data = self.read_json(DATA)?;
        let ok = txn.absent.iter().all(|k| !data.entries.contains_key(k))
            && txn
                .equal
                .iter()
                .all(|(k, v)| data.entries.get(k) == Some(v));
        if !ok {
            return Ok(false);
        }
        for k in &txn.deletes {
            data.entries.remove(k);
        }
        for (k, v) in &txn.puts {
            data.entries.insert(k.clone(), v.clone());
        }
        data.revision += 1;
        self.write_json(DATA, &data)?;
        let mut log: ChangeLog = self.read_json(CHANGELOG)?;
        if log.revision + 1 != data.revision {
            // A store written before the log existed: it covers from here on.
            log = ChangeLog {
                covers_after: data.revision - 1,
                ..ChangeLog::default()
            };
        }
        log.record(data.revision, txn);
        self.write_json(CHANGELOG, &log)?;
        let roots: BTreeSet<String> = txn
            .puts
            .iter()
            .map(|(k, _)| k)
            .chain(&txn.deletes)
            .map(|k| root_file(k))
            .collect();
        for r in roots {
            self.write_json(&r, &data.revision)?;
        }
        Ok(true)
    }

    fn wait(&self, prefix: &str, after: u64, timeout: Duration) -> Result<Option<u64>, StoreError> {
        let deadline = Instant::now() + timeout;
        let watch = DirWatch::renames_into(&self.dir)
            .map_err(|e| io_err(&self.dir, "watch", std::io::Error::other(e.to_string())))?;
        loop {
            let revision = self.root_revision(prefix)?;
            if revision > after {
                return Ok(Some(revision));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            watch
                .wait(left.max(Duration::from_millis(1)))
                .map_err(|e| io_err(&self.dir, "watch", std::io::Error::other(e.to_string())))?;
        }
    }

    fn refresh_lease(&self, key: &str, value: &str, ttl: Duration) -> Result<(), StoreError> {
        let _lock = self.lock()?;
        let mut leases = self.live_leases()?;
        leases.insert(
            key.to_string(),
            Lease {
                value: value.to_string(),
                expires_unix_ms: unix_ms() + ttl.as_millis() as u64,
            },
        );
        self.write_json(LEASES, &leases)
    }

    fn endpoint(&self) -> String {
        format!("file:{}", self.dir.display())
    }

    fn changes_since(&self, prefix: &str, after: u64) -> Result<Option<Changes>, StoreError> {
        let log: ChangeLog = self.read_json(CHANGELOG)?;
        if after < log.covers_after || after > log.revision {
            return Ok(None);
        }
        Ok(Some(Changes {
            revision: log.revision,
            entries: log
                .entries
                .into_iter()
                .filter(|(rev, k, _)| *rev > after && k.starts_with(prefix))
                .map(|(_, k, v)| (k, v))
                .collect(),
        }))
    }
}

/// Parses `kv.json` keeping only the entries whose key starts with a prefix.
struct PrefixSeed<'a>(&'a str);

impl<'de> serde::de::DeserializeSeed<'de> for PrefixSeed<'_> {
    type Value = Data;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Data, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for PrefixSeed<'_> {
    type Value = Data;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a podnet store file")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Data, A::Error> {
        let mut data = Data::default();
        while let Some(field) = map.next_key::<String>()? {
            match field.as_str() {
                "revision" => data.revision = map.next_value()?,
                "entries" => data.entries = map.next_value_seed(EntriesSeed(self.0))?,
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(data)
    }
}

/// The `entries` object, filtered by prefix as it is read.
struct EntriesSeed<'a>(&'a str);

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
            if key.starts_with(self.0) {
                out.insert(key.into_owned(), map.next_value()?);
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(out)
    }
}

/// `revision.ROOT` for a key or prefix under `/ROOT/`.
fn root_file(key: &str) -> String {
    let root: String = key
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    format!("{REVISION}.{root}")
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn io_err(path: &Path, op: &'static str, source: std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.display().to_string(),
        op,
        source,
    }
}
