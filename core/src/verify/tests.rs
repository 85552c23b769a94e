//! Unit tests over streams from the test writer.

#![allow(clippy::unwrap_used)]

use super::testing::WalWriter;
use super::*;
use crate::wal::{Segment, SegmentSize};

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
