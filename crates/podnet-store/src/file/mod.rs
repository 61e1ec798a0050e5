//! The embedded store: a directory on one machine, whose writes cost the
//! change, not the store.
//!
//! Keys are grouped by their first path component, the root (`/podnet/`,
//! `/podnet-services/`, ...). Each root is a snapshot (`ROOT.snapshot.GEN`,
//! its keys at one revision) and an append-only log (`ROOT.log.GEN`, one
//! framed, checksummed record per transaction), and a tail (`ROOT.tail`):
//! the log generation, its committed length and the root's last revision.
//! A write appends one record and then replaces the tail by atomic rename,
//! which is its commit point; readers read the tail first and the log only
//! up to its committed length, so a record a killed writer left half (or
//! whole but uncommitted) is never seen, and the next writer cuts it off.
//! When a log outgrows its snapshot, the writer compacts: it writes the next
//! generation's snapshot, then its tail, then removes the old files; a
//! writer finding a compaction half done finishes it.
//!
//! Why not an embedded database: several processes (the agent, `podnet
//! cluster`, the lab) use one store at once, which redb and sled do not
//! allow, and what podnet needs (conditional transactions, revisions, the
//! changes after a revision for watchers) is a log's natural shape.
//!
//! Writers serialize on an `flock` of `DIR/lock`; the revision is global
//! (one more than the highest of the roots' tails). Waiters watch the
//! directory with inotify for tail renames. Leases live in `leases.json`
//! with wall-clock expiry, so heartbeats do not bump revisions.

mod legacy;
mod log;
mod snapshot;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use podnet_kernel::filewatch::DirWatch;
use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::kv::{Changes, KvBackend, Listing, Txn};
use log::Record;
use snapshot::{read_json, read_prefix, write_json, Snapshot, SnapshotRef, Tail};

const LEASES: &str = "leases.json";
/// A log is compacted once it is larger than this and than its snapshot.
const COMPACT_MIN: u64 = 1 << 20;
/// How often a reader starts over when a compaction replaced the files it
/// was reading (each retry sees the new generation).
const READ_ATTEMPTS: usize = 5;

#[derive(Debug, Serialize, Deserialize)]
struct Lease {
    value: String,
    expires_unix_ms: u64,
}

/// What this client knows of one root: all of its keys (loaded by the first
/// conditional write, then kept up by reading only new records), and where
/// change readers left off.
#[derive(Debug, Default)]
struct RootCache {
    /// `(generation, committed length read, keys)`.
    state: Option<(u64, u64, BTreeMap<String, String>)>,
    /// `(generation, offset, revision covered)` of the last change read.
    cursor: Option<(u64, u64, u64)>,
}

/// The embedded key-value store in directory `dir`.
#[derive(Debug)]
pub struct FileKv {
    dir: PathBuf,
    cache: Mutex<HashMap<String, RootCache>>,
}

impl FileKv {
    /// Opens (creating if needed) the store in `dir`; a store written by an
    /// earlier version (one `kv.json`) is converted once.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(|e| io_err(&dir, "create directory", e))?;
        let kv = FileKv {
            dir,
            cache: Mutex::new(HashMap::new()),
        };
        if kv.dir.join(legacy::DATA).exists() {
            let _lock = kv.lock()?;
            legacy::convert(&kv.dir)?;
        }
        Ok(kv)
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

    fn tail_path(&self, root: &str) -> PathBuf {
        self.dir.join(format!("{root}.tail"))
    }

    fn snapshot_path(&self, root: &str, generation: u64) -> PathBuf {
        self.dir.join(format!("{root}.snapshot.{generation}"))
    }

    fn log_path(&self, root: &str, generation: u64) -> PathBuf {
        self.dir.join(format!("{root}.log.{generation}"))
    }

    fn tail(&self, root: &str) -> Result<Tail, StoreError> {
        read_json(&self.tail_path(root))
    }

    /// The roots present (those with a tail).
    fn roots(&self) -> Result<Vec<String>, StoreError> {
        let entries = fs::read_dir(&self.dir).map_err(|e| io_err(&self.dir, "list", e))?;
        let mut roots: Vec<String> = entries
            .filter_map(|e| {
                e.ok()?
                    .file_name()
                    .to_str()?
                    .strip_suffix(".tail")
                    .map(String::from)
            })
            .collect();
        roots.sort();
        Ok(roots)
    }

    /// The roots a prefix can reach: its own when it names one (`/ROOT/...`), else all.
    fn roots_of(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        match prefix.trim_start_matches('/').split_once('/') {
            Some(_) => Ok(vec![root_of(prefix)]),
            None => self.roots(),
        }
    }

    /// The store's revision: the highest of the roots'.
    fn revision(&self) -> Result<u64, StoreError> {
        let mut max = 0;
        for root in self.roots()? {
            max = max.max(self.tail(&root)?.revision);
        }
        Ok(max)
    }

    /// A root's keys under one of `prefixes` and its last revision, read
    /// consistently (a compaction meanwhile makes the read start over).
    fn read_root(
        &self,
        root: &str,
        prefixes: &[&str],
    ) -> Result<(BTreeMap<String, String>, Tail), StoreError> {
        let mut last = None;
        for _ in 0..READ_ATTEMPTS {
            match self.try_read_root(root, prefixes) {
                Err(e) if is_gone(&e) => last = Some(e),
                other => return other,
            }
        }
        Err(last.unwrap_or_else(|| log::gone(&self.tail_path(root))))
    }

    fn try_read_root(
        &self,
        root: &str,
        prefixes: &[&str],
    ) -> Result<(BTreeMap<String, String>, Tail), StoreError> {
        let tail = self.tail(root)?;
        if tail.generation == 0 {
            return Ok((BTreeMap::new(), tail));
        }
        let snap_path = self.snapshot_path(root, tail.generation);
        if !snap_path.exists() {
            return Err(log::gone(&snap_path));
        }
        let Snapshot { mut entries, .. } = read_prefix(&snap_path, prefixes)?;
        for (record, _) in log::read(&self.log_path(root, tail.generation), 0, tail.length)? {
            apply(&mut entries, &record, Some(prefixes));
        }
        Ok((entries, tail))
    }

    fn live_leases(&self) -> Result<BTreeMap<String, Lease>, StoreError> {
        let now = unix_ms();
        let mut leases: BTreeMap<String, Lease> = read_json(&self.dir.join(LEASES))?;
        leases.retain(|_, l| l.expires_unix_ms > now);
        Ok(leases)
    }
}

impl FileKv {
    /// Under the lock: finishes a compaction a dead writer left half done
    /// (its snapshot written, its tail not), and returns the root's tail.
    fn recover(&self, root: &str) -> Result<Tail, StoreError> {
        let tail = self.tail(root)?;
        let next = self.snapshot_path(root, tail.generation + 1);
        if !next.exists() {
            return Ok(tail);
        }
        let snap: Snapshot = read_json(&next)?;
        let done = Tail {
            generation: tail.generation + 1,
            length: 0,
            revision: snap.revision,
            base: snap.revision,
        };
        write_json(&self.tail_path(root), &done)?;
        self.remove_generation(root, tail.generation);
        Ok(done)
    }

    /// Runs `f` on the root's keys as of `tail`: what this client holds,
    /// brought up to date with the records appended since (all of them the
    /// first time). The keys stay in the client, never copied.
    fn with_state<T>(
        &self,
        root: &str,
        tail: &Tail,
        f: impl FnOnce(&BTreeMap<String, String>) -> T,
    ) -> Result<T, StoreError> {
        let mut cache = self.cache.lock().map_err(|_| poisoned(&self.dir))?;
        let entry = cache.entry(root.to_string()).or_default();
        let (mut entries, from) = match entry.state.take() {
            Some((g, at, entries)) if g == tail.generation && at <= tail.length => (entries, at),
            _ if tail.generation == 0 => (BTreeMap::new(), 0),
            _ => (
                read_json::<Snapshot>(&self.snapshot_path(root, tail.generation))?.entries,
                0,
            ),
        };
        for (record, _) in log::read(&self.log_path(root, tail.generation), from, tail.length)? {
            apply(&mut entries, &record, None);
        }
        let out = f(&entries);
        entry.state = Some((tail.generation, tail.length, entries));
        Ok(out)
    }

    /// Remembers a record this client committed, so its next write need not read it back.
    fn note_committed(&self, root: &str, before: &Tail, after: &Tail, record: &Record) {
        let Ok(mut cache) = self.cache.lock() else {
            return;
        };
        let entry = cache.entry(root.to_string()).or_default();
        match entry.state.as_mut() {
            Some((g, at, entries)) if *g == before.generation && *at == before.length => {
                apply(entries, record, None);
                *at = after.length;
            }
            _ => entry.state = None,
        }
    }

    /// Writes generation `tail.generation + 1`: a snapshot of every key at
    /// `tail.revision`, then its tail (the switch), then removes the old files.
    fn compact(&self, root: &str, tail: &Tail) -> Result<Tail, StoreError> {
        let generation = tail.generation + 1;
        let path = self.snapshot_path(root, generation);
        self.with_state(root, tail, |entries| {
            let snap = SnapshotRef {
                revision: tail.revision,
                generation,
                entries,
            };
            write_json(&path, &snap)
        })??;
        let next = Tail {
            generation,
            length: 0,
            revision: tail.revision,
            base: tail.revision,
        };
        write_json(&self.tail_path(root), &next)?;
        // The client's keys are the new snapshot's: only where they stand moves.
        if let Ok(mut cache) = self.cache.lock() {
            if let Some((g, at, _)) = cache.get_mut(root).and_then(|c| c.state.as_mut()) {
                (*g, *at) = (generation, 0);
            }
        }
        self.remove_generation(root, tail.generation);
        Ok(next)
    }

    /// Removes a generation's files (garbage once the next one is committed;
    /// a failure leaves garbage, never a wrong store, so it is logged).
    fn remove_generation(&self, root: &str, generation: u64) {
        for path in [
            self.snapshot_path(root, generation),
            self.log_path(root, generation),
        ] {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(target: "podnet-store", "remove {}: {e}", path.display()),
            }
        }
    }

    /// Whether the root's log has outgrown its snapshot.
    fn outgrown(&self, root: &str, tail: &Tail) -> bool {
        let snapshot =
            fs::metadata(self.snapshot_path(root, tail.generation)).map_or(0, |m| m.len());
        tail.length > COMPACT_MIN.max(snapshot)
    }
}

impl KvBackend for FileKv {
    fn list(&self, prefix: &str) -> Result<Listing, StoreError> {
        let mut listings = self.list_many(&[prefix])?;
        Ok(listings.pop().unwrap_or_default())
    }

    /// Every root the prefixes reach is read once, for all of them (the
    /// services and the endpoints of a full sync share one snapshot).
    fn list_many(&self, prefixes: &[&str]) -> Result<Vec<Listing>, StoreError> {
        let revision = self.revision()?;
        let mut out: Vec<(u64, BTreeMap<String, String>)> = prefixes
            .iter()
            .map(|_| (revision, BTreeMap::new()))
            .collect();
        let mut roots = BTreeSet::new();
        for p in prefixes {
            roots.extend(self.roots_of(p)?);
        }
        for root in roots {
            let mut reaching = Vec::new();
            for (i, p) in prefixes.iter().enumerate() {
                if self.roots_of(p)?.contains(&root) {
                    reaching.push(i);
                }
            }
            let wanted: Vec<&str> = reaching.iter().map(|i| prefixes[*i]).collect();
            let (keys, tail) = self.read_root(&root, &wanted)?;
            for &i in &reaching {
                out[i].0 = out[i].0.max(tail.revision);
            }
            // Moved into the listing of the first prefix that holds it,
            // copied only for a nested prefix that holds it too.
            for (k, v) in keys {
                let holding: Vec<usize> = reaching
                    .iter()
                    .copied()
                    .filter(|i| k.starts_with(prefixes[*i]))
                    .collect();
                if let Some((&first, more)) = holding.split_first() {
                    for &i in more {
                        out[i].1.insert(k.clone(), v.clone());
                    }
                    out[first].1.insert(k, v);
                }
            }
        }
        let leases = self.live_leases()?;
        for (i, p) in prefixes.iter().enumerate() {
            for (k, l) in leases.iter().filter(|(k, _)| k.starts_with(p)) {
                out[i].1.insert(k.clone(), l.value.clone());
            }
        }
        Ok(out
            .into_iter()
            .map(|(revision, entries)| Listing {
                revision,
                entries: entries.into_iter().collect(),
            })
            .collect())
    }

    fn transact(&self, txn: &Txn) -> Result<bool, StoreError> {
        let root = single_root(txn)?;
        let _lock = self.lock()?;
        let tail = self.recover(&root)?;
        if !txn.absent.is_empty() || !txn.equal.is_empty() {
            let holds = self.with_state(&root, &tail, |state| {
                txn.absent.iter().all(|k| !state.contains_key(k))
                    && txn.equal.iter().all(|(k, v)| state.get(k) == Some(v))
            })?;
            if !holds {
                return Ok(false);
            }
        }
        let tail = match tail.generation {
            // A new root: generation 1 starts from an empty snapshot.
            0 => {
                write_json(
                    &self.snapshot_path(&root, 1),
                    &Snapshot {
                        generation: 1,
                        ..Snapshot::default()
                    },
                )?;
                Tail {
                    generation: 1,
                    ..tail
                }
            }
            _ => tail,
        };
        let record = Record {
            revision: self.revision()? + 1,
            puts: txn.puts.clone(),
            deletes: txn.deletes.clone(),
        };
        let log = self.log_path(&root, tail.generation);
        let length = log::append(&log, tail.length, &record.frame())?;
        let committed = Tail {
            length,
            revision: record.revision,
            ..tail
        };
        // The commit point: from here on the write is in the store.
        write_json(&self.tail_path(&root), &committed)?;
        self.note_committed(&root, &tail, &committed, &record);
        if self.outgrown(&root, &committed) {
            self.compact(&root, &committed)?;
        }
        Ok(true)
    }

    fn wait(&self, prefix: &str, after: u64, timeout: Duration) -> Result<Option<u64>, StoreError> {
        let deadline = Instant::now() + timeout;
        let watch = DirWatch::renames_into(&self.dir)
            .map_err(|e| io_err(&self.dir, "watch", std::io::Error::other(e.to_string())))?;
        loop {
            let mut revision = 0;
            for root in self.roots_of(prefix)? {
                revision = revision.max(self.tail(&root)?.revision);
            }
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
        write_json(&self.dir.join(LEASES), &leases)
    }

    fn endpoint(&self) -> String {
        format!("file:{}", self.dir.display())
    }

    /// The records after `after` in the root's log: read from where this
    /// client's last read of the same root ended, so a watcher one change
    /// behind reads one record. `None` when the history before the root's
    /// snapshot is asked for (compacted away: the caller lists).
    fn changes_since(&self, prefix: &str, after: u64) -> Result<Option<Changes>, StoreError> {
        let roots = self.roots_of(prefix)?;
        let [root] = roots.as_slice() else {
            return Ok(None);
        };
        let global = self.revision()?;
        let tail = self.tail(root)?;
        if tail.generation == 0 {
            return Ok(Some(Changes {
                revision: global.max(after),
                entries: Vec::new(),
            }));
        }
        if after < tail.base {
            return Ok(None);
        }
        let from = {
            let cache = self.cache.lock().map_err(|_| poisoned(&self.dir))?;
            match cache.get(root).and_then(|c| c.cursor) {
                Some((g, at, covered))
                    if g == tail.generation && covered == after && at <= tail.length =>
                {
                    at
                }
                _ => 0,
            }
        };
        let records = match log::read(&self.log_path(root, tail.generation), from, tail.length) {
            Err(e) if is_gone(&e) => return Ok(None),
            other => other?,
        };
        let mut entries = Vec::new();
        for (record, _) in records.into_iter().filter(|(r, _)| r.revision > after) {
            entries.extend(
                record
                    .deletes
                    .into_iter()
                    .filter(|k| k.starts_with(prefix))
                    .map(|k| (k, None)),
            );
            entries.extend(
                record
                    .puts
                    .into_iter()
                    .filter(|(k, _)| k.starts_with(prefix))
                    .map(|(k, v)| (k, Some(v))),
            );
        }
        let revision = global.max(tail.revision).max(after);
        if let Ok(mut cache) = self.cache.lock() {
            cache.entry(root.clone()).or_default().cursor =
                Some((tail.generation, tail.length, revision));
        }
        Ok(Some(Changes { revision, entries }))
    }
}

/// Applies a record's writes to `entries` (only keys under one of `prefixes`, when given).
fn apply(entries: &mut BTreeMap<String, String>, record: &Record, prefixes: Option<&[&str]>) {
    let wanted = |k: &str| prefixes.is_none_or(|ps| ps.iter().any(|p| k.starts_with(p)));
    for k in &record.deletes {
        entries.remove(k);
    }
    for (k, v) in record.puts.iter().filter(|(k, _)| wanted(k)) {
        entries.insert(k.clone(), v.clone());
    }
}

/// The one root every key of a transaction is under (a transaction across
/// roots could be half written by a writer killed between two logs).
fn single_root(txn: &Txn) -> Result<String, StoreError> {
    let keys = txn
        .absent
        .iter()
        .chain(txn.equal.iter().map(|(k, _)| k))
        .chain(txn.puts.iter().map(|(k, _)| k))
        .chain(&txn.deletes);
    let roots: BTreeSet<String> = keys.map(|k| root_of(k)).collect();
    match roots.len() {
        1 => Ok(roots.into_iter().next().unwrap_or_default()),
        0 => Ok(root_of("")),
        _ => Err(StoreError::Protocol {
            endpoint: "file store".into(),
            op: "transaction",
            detail: format!("keys under several roots ({roots:?}); one root per transaction"),
        }),
    }
}

/// The root of a key or prefix: its first path component, as a file name.
fn root_of(key: &str) -> String {
    let root: String = key
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    if root.is_empty() {
        "_".into()
    } else {
        root
    }
}

fn is_gone(e: &StoreError) -> bool {
    matches!(e, StoreError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
}

fn poisoned(dir: &Path) -> StoreError {
    io_err(
        dir,
        "cache",
        std::io::Error::other("a thread panicked holding the store cache"),
    )
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub(crate) fn io_err(path: &Path, op: &'static str, source: std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.display().to_string(),
        op,
        source,
    }
}
