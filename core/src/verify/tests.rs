//! Unit tests over streams from the test writer.

#![allow(clippy::unwrap_used)]

use super::testing::WalWriter;
use super::*;
use crate::wal::{Lsn, Segment, SegmentSize};

const SYSID: u64 = 7_345_678_901_234_567_890;

fn small() -> SegmentSize {
    SegmentSize::new(1 << 20).unwrap()
}

fn body(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn small_records_verify_clean() {
    let mut w = WalWriter::new(Segment::new(1, 0, 3), small(), SYSID);
    let mut i = 0u8;
    while w.len() < 2 << 20 {
        w.record(10, 0, &body(50 + usize::from(i) * 7, i));
        i = i.wrapping_add(1);
    }
    let mut stream = StreamVerifier::new();
    for (seg, bytes) in w.segments() {
        let s = SegmentVerifier::verify(seg, small(), false, Some(SYSID), &bytes);
        assert!(s.findings.is_empty(), "{:?}", s.findings);
        stream.push(&s);
    }
    let r = stream.finish();
    assert!(r.findings.is_empty(), "{:?}", r.findings);
    let done: Vec<_> = w.records().iter().filter(|r| r.end <= 2 << 20).collect();
    assert_eq!(r.stats.records, done.len() as u64);
}

const SEG: u64 = 1 << 20;

fn files_of(w: &WalWriter) -> Vec<SegmentSummary> {
    w.segments()
        .iter()
        .map(|(seg, bytes)| SegmentVerifier::verify(*seg, small(), false, Some(SYSID), bytes))
        .collect()
}

fn stitch(summaries: &[SegmentSummary]) -> StreamReport {
    let mut s = StreamVerifier::new();
    for summary in summaries {
        s.push(summary);
    }
    s.finish()
}

#[test]
fn memory_does_not_grow_with_records() {
    // The verifier's whole state: no buffer of record bytes anywhere.
    assert!(std::mem::size_of::<SegmentVerifier>() < 1024);
    let mut w = WalWriter::new(Segment::new(1, 0, 3), small(), SYSID);
    w.record(10, 0, &body(100, 1));
    w.record(9, 0, &body(3_000_000, 2));
    while w.len() < 4 * SEG {
        w.record(10, 0, &body(100, 3));
    }
    let summaries = files_of(&w);
    for s in &summaries {
        assert!(s.findings.is_empty(), "{:?}", s.findings);
        assert!(s.continuation.as_ref().is_none_or(|c| c.head.len() <= 16));
    }
    let r = stitch(&summaries);
    assert!(r.findings.is_empty(), "{:?}", r.findings);
    let whole = w.records().iter().filter(|r| r.end <= 4 * SEG);
    assert_eq!(r.stats.records, whole.count() as u64);
}

#[test]
fn one_byte_at_a_time_is_the_same_as_all_at_once() {
    let mut w = WalWriter::new(Segment::new(1, 0, 3), small(), SYSID);
    while w.len() < SEG + 1000 {
        w.record(11, 0, &body(5000, 1));
    }
    let (seg, bytes) = &w.segments()[0];
    let whole = SegmentVerifier::verify(*seg, small(), false, Some(SYSID), bytes);
    let mut v = SegmentVerifier::new(*seg, small(), false, Some(SYSID));
    for b in bytes {
        v.feed(std::slice::from_ref(b));
    }
    assert_eq!(v.finish(), whole);
    assert!(whole.unfinished.is_some());
}

#[test]
fn a_header_split_across_files_is_checked_by_the_stitcher() {
    for left in [8, 16] {
        let mut w = WalWriter::new(Segment::new(1, 0, 3), small(), SYSID);
        w.record(10, 0, &body(100, 1));
        w.land_at(SEG - left, 10);
        let last_before = w.records().last().unwrap().lsn;
        // xl_prev broken (CRC right): only the stitcher, with both halves, can see it.
        let bad = super::testing::record_bytes(Lsn(0x30_0000), 10, 0, &body(500, 2));
        let at = w.raw_record(&bad, 10);
        while w.len() < 2 * SEG {
            w.record(10, 0, &body(100, 3));
        }
        let summaries = files_of(&w);
        assert!(summaries.iter().all(|s| s.findings.is_empty()));
        assert_eq!(
            summaries[0].unfinished.as_ref().unwrap().header.len(),
            left as usize
        );
        let r = stitch(&summaries);
        assert_eq!(r.findings.len(), 1, "{:?}", r.findings);
        assert_eq!(r.findings[0].lsn, at);
        assert_eq!(
            r.findings[0].kind,
            FindingKind::PrevLinkBroken {
                expected_prev: last_before,
                found_prev: Lsn(0x30_0000)
            }
        );
    }
}

#[test]
fn overwritten_continuations_are_followed_as_postgresql_does() {
    // Within a file.
    let mut w = WalWriter::new(Segment::new(1, 0, 3), small(), SYSID);
    for i in 0..10 {
        w.record(10, 0, &body(300, i));
    }
    w.abandoned_record(20_000);
    w.record(0, 0xD0, &body(16, 0));
    while w.len() < SEG {
        w.record(10, 0, &body(300, 1));
    }
    let summaries = files_of(&w);
    assert!(
        summaries[0].findings.is_empty(),
        "{:?}",
        summaries[0].findings
    );
    assert_eq!(summaries[0].overwritten_records, 1);
    assert_eq!(
        summaries[0].stats.records,
        w.records().iter().filter(|r| r.end <= SEG).count() as u64
    );
    // Across files: the abandoned record starts in the first file.
    let mut w = WalWriter::new(Segment::new(1, 0, 3), small(), SYSID);
    while w.len() < SEG - 3000 {
        w.record(10, 0, &body(300, 2));
    }
    let last = w.records().last().unwrap().lsn;
    w.land_at(SEG - 1000, 10);
    let last = w.records().last().map_or(last, |r| r.lsn);
    w.abandoned_record(5000);
    let next = w.record(0, 0xD0, &body(16, 0));
    while w.len() < 2 * SEG {
        w.record(10, 0, &body(300, 3));
    }
    let summaries = files_of(&w);
    assert!(summaries.iter().all(|s| s.findings.is_empty()));
    assert_eq!(summaries[1].first_record.unwrap().lsn, next);
    assert_eq!(summaries[1].first_record.unwrap().prev, Some(last));
    let r = stitch(&summaries);
    assert!(r.findings.is_empty(), "{:?}", r.findings);
    assert_eq!(r.overwritten_records, 1);
}

#[test]
fn a_switch_split_across_segments_pads_the_next_one() {
    for left in [8, 16] {
        let mut w = WalWriter::new(Segment::new(1, 0, 3), small(), SYSID);
        w.record(10, 0, &body(100, 1));
        w.land_at(SEG - left, 10);
        let switch = w.switch();
        assert_eq!(w.len(), 2 * SEG);
        while w.len() < 3 * SEG {
            w.record(10, 0, &body(100, 3));
        }
        let summaries = files_of(&w);
        assert!(summaries.iter().all(|s| s.findings.is_empty()));
        assert_eq!(summaries[1].end.reason, EndReason::SwitchContinued);
        assert_eq!(summaries[2].first_record.unwrap().prev, Some(switch));
        let r = stitch(&summaries);
        assert!(r.findings.is_empty(), "{:?}", r.findings);
        // Another record so split (here: its rmgr changed) is not taken for a switch.
        let mut other = summaries.clone();
        let head = &mut other[1].continuation.as_mut().unwrap().head;
        head[17 - left as usize] = 10;
        assert!(!stitch(&other).is_clean());
    }
}
