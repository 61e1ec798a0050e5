//! The embedded store under SIGKILL: a writer process (this test binary,
//! run again as a child) is killed at many points of its writes, appends
//! and compactions included; after each kill the store opens, holds every
//! write the child saw acknowledged, and takes new writes.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use podnet_store::{FileKv, KvBackend, Txn};
use podnet_testkit::TempDir;

const CHILD_DIR: &str = "PODNET_CRASH_WRITER_DIR";
const CHILD_START: &str = "PODNET_CRASH_WRITER_START";
const SLOTS: u64 = 16;
const WRITES_PER_CHILD: u64 = 400;

/// The value of write `seq`: its number, and every fourth one large (so the
/// log outgrows its snapshot every few writes and compactions are killed too).
fn value(seq: u64) -> String {
    let filler = if seq.is_multiple_of(4) {
        200 << 10
    } else {
        100
    };
    format!("{seq}:{}", "x".repeat(filler))
}

fn slot(seq: u64) -> String {
    format!("/crash/s{}", seq % SLOTS)
}

fn seq_of(value: &str) -> u64 {
    value
        .split(':')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The child: conditional writes (each on the value it last saw), printing
/// `acked SEQ` after each returns.
fn writer(dir: &str, start: u64) {
    let kv = FileKv::open(dir).expect("open");
    let mut seen: BTreeMap<String, String> = kv
        .list("/crash/")
        .expect("list")
        .entries
        .into_iter()
        .collect();
    let mut out = std::io::stdout();
    for seq in start..start + WRITES_PER_CHILD {
        let key = slot(seq);
        let mut txn = Txn {
            puts: vec![(key.clone(), value(seq))],
            ..Txn::default()
        };
        match seen.get(&key) {
            Some(v) => txn.equal.push((key.clone(), v.clone())),
            None => txn.absent.push(key.clone()),
        }
        if !kv.transact(&txn).expect("transact") {
            writeln!(out, "conflict {seq}").ok();
            std::process::exit(3);
        }
        seen.insert(key, value(seq));
        writeln!(out, "acked {seq}").ok();
        out.flush().ok();
    }
}

/// Busy-waits `micros` (the kill point's offset; bounded, no sleep).
fn spin(micros: u64) {
    let until = Instant::now() + Duration::from_micros(micros);
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

#[test]
fn file_store_survives_sigkill_at_any_point_of_a_write() {
    if let (Ok(dir), Ok(start)) = (std::env::var(CHILD_DIR), std::env::var(CHILD_START)) {
        return writer(&dir, start.parse().expect("start"));
    }
    let dir = TempDir::new("crash");
    let mut last_acked: BTreeMap<String, u64> = BTreeMap::new();
    let mut kills = 0;
    for round in 0..40u64 {
        let start = round * 10_000;
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "file_store_survives_sigkill_at_any_point_of_a_write",
                "--nocapture",
            ])
            .env(CHILD_DIR, dir.path())
            .env(CHILD_START, start.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let wanted = 1 + round % 6;
        let mut acked = Vec::new();
        for line in lines.by_ref() {
            let line = line.unwrap();
            if let Some(seq) = line.strip_prefix("acked ") {
                acked.push(seq.parse::<u64>().unwrap());
            }
            assert!(!line.starts_with("conflict"), "round {round}: {line}");
            if acked.len() as u64 >= wanted {
                break;
            }
        }
        spin((round * 97) % 3000);
        if child.kill().is_ok() {
            kills += 1;
        }
        child.wait().unwrap();
        for line in lines {
            if let Some(seq) = line.unwrap().strip_prefix("acked ") {
                acked.push(seq.parse().unwrap());
            }
        }
        for seq in acked {
            last_acked.insert(slot(seq), seq);
        }
        // The store opens and holds every acknowledged write (or a later one of its slot).
        let kv = FileKv::open(dir.path())
            .unwrap_or_else(|e| panic!("round {round}: the store does not open: {e}"));
        let stored: BTreeMap<String, String> =
            kv.list("/crash/").unwrap().entries.into_iter().collect();
        for (key, seq) in &last_acked {
            let have = stored.get(key).map(|v| seq_of(v));
            assert!(
                have.is_some_and(|h| h >= *seq),
                "round {round}: {key} acknowledged at {seq}, stored {have:?}"
            );
        }
    }
    assert!(kills >= 30, "the writer was killed mid-run {kills} times");
    // And it still takes writes.
    let kv = FileKv::open(dir.path()).unwrap();
    assert!(kv
        .transact(&Txn {
            puts: vec![("/crash/after".into(), "1".into())],
            ..Txn::default()
        })
        .unwrap());
}
