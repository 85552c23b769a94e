//! The verifier on real PostgreSQL 15 WAL checked in under tests/data/verify (1 MiB
//! segments, zstd; see its README): clean as it is, damage found and named.

#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::path::PathBuf;

use walvault_core::compression::{Codec, DecodeLimits, Decoder};
use walvault_core::verify::{
    EndReason, FindingKind, SegmentSummary, SegmentVerifier, StreamReport, StreamVerifier,
};
use walvault_core::wal::{Lsn, Segment, SegmentSize, WalFileName};

const SYSID: u64 = 7_714_457_276_642_286_760;

fn size() -> SegmentSize {
    SegmentSize::new(1 << 20).unwrap()
}

fn path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/data/verify/{name}.zst"))
}

fn segment(name: &str) -> Segment {
    name.parse::<WalFileName>().unwrap().segment().unwrap()
}

/// Decompresses and verifies in one pass, 64 KiB at a time, as the host will.
fn verify_streaming(name: &str) -> SegmentSummary {
    let file = std::fs::File::open(path(name)).unwrap();
    let mut decoder = Decoder::new(Some(Codec::Zstd), file, DecodeLimits::default()).unwrap();
    let mut v = SegmentVerifier::new(segment(name), size(), false, Some(SYSID));
    let mut buf = vec![0; 64 << 10];
    loop {
        let n = decoder.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        v.feed(&buf[..n]);
    }
    v.finish()
}

fn bytes(name: &str) -> Vec<u8> {
    let compressed = std::fs::read(path(name)).unwrap();
    walvault_core::compression::decode_all(Some(Codec::Zstd), &compressed, DecodeLimits::default())
        .unwrap()
}

fn verify(seg: Segment, data: &[u8]) -> SegmentSummary {
    SegmentVerifier::verify(seg, size(), false, Some(SYSID), data)
}

fn chain(files: &[(Segment, Vec<u8>)]) -> StreamReport {
    let mut s = StreamVerifier::new();
    for (seg, data) in files {
        s.push(&verify(*seg, data));
    }
    s.finish()
}

const CHAIN: [&str; 5] = [
    "00000001000000000000000E",
    "00000001000000000000000F",
    "000000010000000000000010",
    "000000010000000000000011",
    "000000010000000000000012",
];

fn chain_files() -> Vec<(Segment, Vec<u8>)> {
    CHAIN.iter().map(|n| (segment(n), bytes(n))).collect()
}

#[test]
fn real_wal_verifies_clean_with_pg_waldumps_totals() {
    // A segment ended by pg_switch_wal(): the same totals as pg_waldump --stats.
    let a = verify_streaming("00000001000000000000000A");
    assert!(a.findings.is_empty(), "{:?}", a.findings);
    assert_eq!(a.pg_major, Some(15));
    assert_eq!(a.end.reason, EndReason::Switch);
    assert_eq!(a.last_record, Some(Lsn(0x00A7_7E68)));
    assert_eq!((a.stats.records, a.stats.bytes), (4339, 489_642));
    // The first record starts at 0/A00048: 32 bytes after the long header continue a record.
    assert_eq!(a.continuation.as_ref().unwrap().rem_len, 32);

    let mut stream = StreamVerifier::new();
    for name in CHAIN {
        let s = verify_streaming(name);
        assert!(s.findings.is_empty(), "{name}: {:?}", s.findings);
        stream.push(&s);
    }
    let r = stream.finish();
    assert!(r.findings.is_empty(), "{:?}", r.findings);
    assert_eq!((r.stats.records, r.stats.bytes), (6430, 4_520_296));
    assert_eq!(r.first_record, Some(Lsn(0x00E0_0138)));
    assert_eq!(r.last_record, Some(Lsn(0x0125_4318)));
    assert_eq!(r.unfinished, None);
    let heap = r.stats.by_rmgr.iter().find(|s| s.name == "Heap").unwrap();
    assert!(heap.records > 1000);
}

#[test]
fn a_flipped_byte_in_real_wal_is_a_crc_mismatch_at_its_record() {
    let mut files = chain_files();
    let s = verify(files[1].0, &files[1].1);
    let lsn = s.last_complete_record.unwrap();
    let offset = (lsn.0 % (1 << 20)) as usize;
    let data = &mut files[1].1;
    let tot = u32::from_le_bytes(data[offset..offset + 4].try_into().unwrap()) as usize;
    assert!(tot > 24 && offset % 8192 < 8192 - 32);
    data[offset + 24] ^= 0x10;
    let r = chain(&files);
    assert_eq!(r.findings.len(), 1, "{:?}", r.findings);
    let f = &r.findings[0];
    assert_eq!(
        (f.segment, f.offset, f.lsn),
        (files[1].0, offset as u64, lsn)
    );
    assert!(matches!(f.kind, FindingKind::CrcMismatch { .. }));
}

#[test]
fn damaged_real_archives_are_named() {
    let files = chain_files();
    // Swapped: the page address names it.
    let mut swapped = files.clone();
    swapped[1].1 = files[2].1.clone();
    swapped[2].1 = files[1].1.clone();
    let r = chain(&swapped);
    assert!(matches!(
        r.findings[0].kind,
        FindingKind::WrongPageAddress {
            expected: Lsn(0xF0_0000),
            found: Lsn(0x100_0000)
        }
    ));
    assert_eq!(
        (r.findings[0].segment, r.findings[0].offset),
        (files[1].0, 0)
    );
    // Another cluster's identifier expected.
    let s = SegmentVerifier::verify(files[0].0, size(), false, Some(42), &files[0].1);
    assert_eq!(
        s.findings[0].kind,
        FindingKind::WrongSystemIdentifier {
            expected: 42,
            found: SYSID
        }
    );
    // Truncated.
    let mut cut = files.clone();
    cut[2].1.truncate(300_000);
    let r = chain(&cut);
    assert!(r.findings.iter().any(|f| f.segment == files[2].0
        && f.kind
            == FindingKind::Truncated {
                bytes: 300_000,
                expected: 1 << 20
            }));
    // Zeros from a page on, in a complete segment: the records end early there.
    let mut zeroed = files[3].1.clone();
    zeroed[0x4_0000..].fill(0);
    let s = verify(files[3].0, &zeroed);
    assert_eq!(s.findings.len(), 1, "{:?}", s.findings);
    assert_eq!(s.findings[0].kind, FindingKind::RecordsEndEarly);
    assert!(s.findings[0].offset <= 0x4_0000 && s.findings[0].offset > 0x3_0000);
    // The same as a .partial: clean.
    let p = SegmentVerifier::verify(files[3].0, size(), true, Some(SYSID), &zeroed);
    assert!(p.findings.is_empty(), "{:?}", p.findings);
    // The switch-ended segment stored under the next one's name.
    let a = bytes("00000001000000000000000A");
    let s = verify(segment("00000001000000000000000B"), &a);
    assert!(matches!(
        s.findings[0].kind,
        FindingKind::WrongPageAddress { .. }
    ));
}
