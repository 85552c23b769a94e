//! The verifier against real PostgreSQL WAL (not checked in: 64 segments of 16 MiB from
//! pgbench, made by bench/make-wal.sh).
//!
//! `WALVAULT_REAL_WAL_DIR=/tmp/peerbench/corpus cargo test -p walvault-core --release --test
//! verify_real -- --ignored --nocapture` verifies every segment and the chain and, where
//! `pg_waldump` is found (`WALVAULT_PG_WALDUMP`, default PostgreSQL 15's), compares the
//! record count and combined size with its `--stats` total over the same files.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use walvault_core::verify::{SegmentVerifier, StreamVerifier};
use walvault_core::wal::{SegmentSize, WalFileName};

fn segments(dir: &Path) -> Vec<(WalFileName, PathBuf)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let e = e.unwrap();
            let name: WalFileName = e.file_name().to_str()?.parse().ok()?;
            name.is_segment().then(|| (name, e.path()))
        })
        .collect();
    out.sort_by_key(|(n, _)| *n);
    out
}

/// `pg_waldump --stats`'s total line: records and combined size.
fn waldump_totals(dir: &Path, first: &str, last: &str) -> Option<(u64, u64)> {
    let bin = std::env::var("WALVAULT_PG_WALDUMP")
        .unwrap_or_else(|_| "/usr/lib/postgresql/15/bin/pg_waldump".to_owned());
    let out = Command::new(bin)
        .arg("--stats")
        .arg("-p")
        .arg(dir)
        .arg(first)
        .arg(last)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let total = text.lines().find(|l| l.starts_with("Total"))?;
    let fields: Vec<&str> = total.split_whitespace().collect();
    // Total N record-size [%] fpi-size [%] combined-size [100%]
    Some((fields[1].parse().ok()?, fields[6].parse().ok()?))
}

#[test]
#[ignore = "needs WALVAULT_REAL_WAL_DIR (real WAL, see bench/make-wal.sh)"]
fn real_wal_verifies_clean_and_matches_pg_waldump() {
    let Ok(dir) = std::env::var("WALVAULT_REAL_WAL_DIR") else {
        eprintln!("WALVAULT_REAL_WAL_DIR not set: nothing to verify");
        return;
    };
    let dir = PathBuf::from(dir);
    let files = segments(&dir);
    assert!(!files.is_empty(), "no segments in {}", dir.display());
    let size = SegmentSize::DEFAULT;
    let mut stream = StreamVerifier::new();
    let mut bytes = 0u64;
    let mut busy = std::time::Duration::ZERO;
    for (name, path) in &files {
        let data = std::fs::read(path).unwrap();
        let started = Instant::now();
        let mut v = SegmentVerifier::new(name.segment().unwrap(), size, false, None);
        // Chunks of 64 KiB, as a decompressor would hand them over.
        for chunk in data.chunks(64 << 10) {
            v.feed(chunk);
        }
        let summary = v.finish();
        busy += started.elapsed();
        bytes += data.len() as u64;
        assert!(summary.is_clean(), "{name}: {:?}", summary.findings);
        stream.push(&summary);
    }
    let report = stream.finish();
    assert!(report.is_clean(), "{:?}", report.findings);
    let secs = busy.as_secs_f64();
    println!(
        "verified {} segments, {} MiB in {:.3} s: {:.2} GB/s single-threaded",
        files.len(),
        bytes >> 20,
        secs,
        bytes as f64 / secs / 1e9
    );
    println!(
        "walvault: {} records, {} bytes (first {:?}, last {:?})",
        report.stats.records, report.stats.bytes, report.first_record, report.last_record
    );
    for r in &report.stats.by_rmgr {
        println!("  {:<20} {:>10} {:>14}", r.name, r.records, r.bytes);
    }
    let first = files[0].0.to_string();
    let last = files[files.len() - 1].0.to_string();
    match waldump_totals(&dir, &first, &last) {
        Some((records, combined)) => {
            println!("pg_waldump: {records} records, {combined} bytes");
            assert_eq!(report.stats.records, records);
            assert_eq!(report.stats.bytes, combined);
        }
        None => println!("pg_waldump not found: counts not compared"),
    }
}
