//! A root's write-ahead log: framed records appended under the store's lock.
//!
//! A record is `[payload length: u32 LE][CRC-32 of the payload: u32 LE]
//! [payload: JSON {"r": revision, "p": [[key, value], ...], "d": [key, ...]}]`.
//! Only the bytes up to the committed length (the root's tail file) count:
//! a record past it was being written when its writer died, is invisible to
//! readers, and is cut off by the next writer.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::io_err;
use crate::error::StoreError;

/// One transaction's changes to one root.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct Record {
    /// Its revision.
    #[serde(rename = "r")]
    pub revision: u64,
    /// Keys written, with their values.
    #[serde(rename = "p", default)]
    pub puts: Vec<(String, String)>,
    /// Keys deleted.
    #[serde(rename = "d", default)]
    pub deletes: Vec<String>,
}

const HEADER: usize = 8;

impl Record {
    /// The record framed for the log.
    pub fn frame(&self) -> Vec<u8> {
        let payload = serde_json::to_vec(self).unwrap_or_default();
        let mut out = Vec::with_capacity(HEADER + payload.len());
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        out.extend_from_slice(&payload);
        out
    }
}

/// Appends `bytes` at `at` (the committed length, cutting off whatever a
/// dead writer left past it); returns the new length.
pub(super) fn append(path: &Path, at: u64, bytes: &[u8]) -> Result<u64, StoreError> {
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| io_err(path, "open log", e))?;
    f.set_len(at).map_err(|e| io_err(path, "truncate log", e))?;
    f.seek(SeekFrom::Start(at))
        .map_err(|e| io_err(path, "seek log", e))?;
    f.write_all(bytes)
        .map_err(|e| io_err(path, "append to log", e))?;
    Ok(at + bytes.len() as u64)
}

/// The records between byte `from` and `to` (the committed length), with
/// the offset after each. A missing log is empty (nothing appended yet).
pub(super) fn read(path: &Path, from: u64, to: u64) -> Result<Vec<(Record, u64)>, StoreError> {
    if to <= from {
        return Ok(Vec::new());
    }
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(gone(path)),
        Err(e) => return Err(io_err(path, "open log", e)),
    };
    f.seek(SeekFrom::Start(from))
        .map_err(|e| io_err(path, "seek log", e))?;
    let mut bytes = vec![0; (to - from) as usize];
    f.read_exact(&mut bytes)
        .map_err(|e| io_err(path, "read log", e))?;
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < bytes.len() {
        let (record, len) = parse(&bytes[at..]).ok_or_else(|| corrupt(path, from + at as u64))?;
        at += len;
        out.push((record, from + at as u64));
    }
    Ok(out)
}

/// One record from the front of `bytes`, and its framed length.
fn parse(bytes: &[u8]) -> Option<(Record, usize)> {
    let len = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(bytes.get(4..8)?.try_into().ok()?);
    let payload = bytes.get(HEADER..HEADER + len)?;
    if crc32fast::hash(payload) != crc {
        return None;
    }
    Some((serde_json::from_slice(payload).ok()?, HEADER + len))
}

/// The log a reader wanted was compacted away meanwhile: read again.
pub(super) fn gone(path: &Path) -> StoreError {
    StoreError::Io {
        path: path.display().to_string(),
        op: "open log (compacted meanwhile)",
        source: std::io::Error::from(std::io::ErrorKind::NotFound),
    }
}

fn corrupt(path: &Path, at: u64) -> StoreError {
    StoreError::Corrupt {
        key: path.display().to_string(),
        detail: format!("committed record at byte {at} does not read (length or checksum)"),
    }
}
