//! The WAL verifier over streams from the test writer: clean streams fed in any chunks and
//! split into files, and each kind of damage found and named with its segment and offset.

#![allow(clippy::unwrap_used)]

use std::sync::OnceLock;

use proptest::prelude::*;
use walvault_core::verify::testing::{WalWriter, record_bytes};
use walvault_core::verify::{
    EndReason, Finding, FindingKind, SegmentSummary, SegmentVerifier, Severity, StreamReport,
    StreamVerifier,
};
use walvault_core::wal::{Lsn, Segment, SegmentSize};

const SYSID: u64 = 7_345_678_901_234_567_890;
const OTHER_SYSID: u64 = 7_111_111_111_111_111_111;
const SEG: u64 = 1 << 20;
const PAGE: u64 = 8192;

fn size() -> SegmentSize {
    SegmentSize::new(SEG).unwrap()
}

fn first_segment() -> Segment {
    Segment::new(1, 0, 0x10)
}

fn body(n: usize, seed: usize) -> Vec<u8> {
    (0..n)
        .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 7) as u8)
        .collect()
}

/// A stream of records of the given body sizes (cycled) until `bytes` are written; a switch
/// record after record `switch_at`.
fn stream(sizes: &[usize], bytes: u64, switch_at: Option<usize>, sysid: u64) -> WalWriter {
    let mut w = WalWriter::new(first_segment(), size(), sysid);
    let mut i = 0;
    while w.len() < bytes {
        let n = sizes[i % sizes.len()];
        w.record(10 + (i % 3) as u8, 0, &body(n, i));
        if switch_at == Some(i) {
            w.switch();
        }
        i += 1;
    }
    w
}

fn feed(v: &mut SegmentVerifier, bytes: &[u8], chunks: &[usize]) {
    let mut at = 0;
    let mut k = 0;
    while at < bytes.len() {
        let n = chunks[k % chunks.len()].max(1).min(bytes.len() - at);
        v.feed(&bytes[at..at + n]);
        at += n;
        k += 1;
    }
}

fn verify_file(seg: Segment, bytes: &[u8], partial: bool, sysid: Option<u64>) -> SegmentSummary {
    SegmentVerifier::verify(seg, size(), partial, sysid, bytes)
}

fn verify_all(files: &[(Segment, Vec<u8>)], sysid: Option<u64>) -> StreamReport {
    let mut stream = StreamVerifier::new();
    for (seg, bytes) in files {
        stream.push(&verify_file(*seg, bytes, false, sysid));
    }
    stream.finish()
}

fn errors(r: &StreamReport) -> Vec<&Finding> {
    r.findings
        .iter()
        .filter(|f| f.severity() == Severity::Error)
        .collect()
}

/// The stream offset of byte `idx` of the record starting at stream offset `start`.
fn record_byte_offset(start: u64, idx: u64) -> u64 {
    let (mut pos, mut left) = (start, idx);
    loop {
        let page_end = (pos / PAGE + 1) * PAGE;
        if left < page_end - pos {
            return pos + left;
        }
        left -= page_end - pos;
        pos = page_end + if page_end.is_multiple_of(SEG) { 40 } else { 24 };
    }
}

/// Records wholly within stream offsets `[from, to)`, starting at or after `from`: count and
/// bytes.
fn expected_totals(w: &WalWriter, from: u64, to: u64) -> (u64, u64) {
    let start = w.records()[0].lsn.0 - record_offset(w, 0);
    w.records()
        .iter()
        .filter(|r| r.lsn.0 - start >= from && r.end <= to)
        .fold((0, 0), |(n, b), r| (n + 1, b + u64::from(r.total_len)))
}

fn record_offset(w: &WalWriter, i: usize) -> u64 {
    w.records()[i].lsn.0 - first_segment().lsn_at(0, size()).0
}

proptest! {
    // Multi-MiB streams: few cases by default, PROPTEST_CASES=n for more.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(24),
        ..ProptestConfig::default()
    })]

    /// Any stream verifies clean whatever the chunk sizes, from whichever file it starts, and
    /// the stitched totals are what the writer wrote.
    #[test]
    fn clean_stream_verifies_in_any_chunks(
        sizes in prop::collection::vec(
            prop_oneof![8 => 0usize..300, 3 => 300usize..20_000, 1 => 20_000usize..1_600_000],
            1..40,
        ),
        chunks in prop::collection::vec(
            prop_oneof![1usize..9, 9usize..5_000, 5_000usize..300_000],
            1..20,
        ),
        switch_at in prop::option::of(0usize..200),
        skip in 0usize..2,
        old_headers in any::<bool>(),
    ) {
        let mut w = WalWriter::new(first_segment(), size(), SYSID);
        w.zero_headers_after_switch = !old_headers;
        let mut i = 0;
        while w.len() < 4 * SEG + SEG / 2 {
            w.record(10 + (i % 12) as u8, 0, &body(sizes[i % sizes.len()], i));
            if switch_at == Some(i) {
                w.switch();
            }
            i += 1;
        }
        let files = w.segments();
        let mut stream = StreamVerifier::new();
        for (seg, bytes) in files.iter().skip(skip) {
            let mut v = SegmentVerifier::new(*seg, size(), false, Some(SYSID));
            feed(&mut v, bytes, &chunks);
            let s = v.finish();
            prop_assert!(s.findings.is_empty(), "{}: {:?}", seg, s.findings);
            stream.push(&s);
        }
        let r = stream.finish();
        prop_assert!(r.findings.is_empty(), "{:?}", r.findings);
        let (records, bytes) =
            expected_totals(&w, skip as u64 * SEG, files.len() as u64 * SEG);
        prop_assert_eq!(r.stats.records, records);
        prop_assert_eq!(r.stats.bytes, bytes);
    }

    /// Any byte flipped inside any record is found, in the record's segment, at the record.
    #[test]
    fn a_flipped_byte_is_found_at_its_record(pick in any::<prop::sample::Index>(), at in any::<prop::sample::Index>(), bit in 0u8..8) {
        let (w, files) = flip_stream();
        let end = files.len() as u64 * SEG;
        let candidates: Vec<usize> = (0..w.records().len())
            .filter(|&i| w.records()[i].end <= end)
            .collect();
        let i = candidates[pick.index(candidates.len())];
        let rec = w.records()[i];
        let start = record_offset(w, i);
        let off = record_byte_offset(start, at.index(rec.total_len as usize) as u64);
        let mut files = files.clone();
        files[(off / SEG) as usize].1[(off % SEG) as usize] ^= 1 << bit;
        let r = verify_all(&files, Some(SYSID));
        let errs = errors(&r);
        prop_assert!(!errs.is_empty(), "flip at {off} in record {i} at {} not found", rec.lsn);
        let rec_segment = files[(start / SEG) as usize].0;
        prop_assert!(
            errs.iter().any(|f| f.segment == rec_segment
                && f.lsn == rec.lsn
                && f.offset == start % SEG),
            "flip at {off} in record at {} ({rec_segment} offset {}): {:?}",
            rec.lsn,
            start % SEG,
            errs
        );
    }
}

/// A writer and the complete segments it wrote.
type Written = (WalWriter, Vec<(Segment, Vec<u8>)>);

fn flip_stream() -> &'static Written {
    static STREAM: OnceLock<Written> = OnceLock::new();
    STREAM.get_or_init(|| {
        let w = stream(
            &[40, 7000, 130, 20_000, 0, 900, 300_000, 64],
            3 * SEG,
            None,
            SYSID,
        );
        let files = w.segments();
        (w, files)
    })
}

fn four_segments() -> Written {
    let w = stream(&[40, 7000, 130, 20_000, 0, 900, 64], 4 * SEG, None, SYSID);
    let files = w.segments();
    (w, files)
}

#[test]
fn records_larger_than_a_segment_and_split_headers_verify() {
    // A 2.5 MiB record spans three files; then headers split across a page and a segment.
    let mut w = WalWriter::new(first_segment(), size(), SYSID);
    w.record(10, 0, &body(100, 1));
    let big = w.record(9, 0, &body(2_500_000, 2));
    let mut split_page = false;
    let mut split_segment = false;
    let mut i = 0;
    while w.len() < 6 * SEG {
        // Land the next record 8 or 16 bytes before a page or segment end, whichever comes.
        let pos = w.len() + 128;
        let target_seg = (pos / SEG + 1) * SEG - 8 * (1 + (i % 2));
        let target_page = (pos / PAGE + 1) * PAGE - 8 * (1 + (i % 2));
        let target = if split_segment {
            target_page
        } else {
            target_seg
        };
        w.land_at(target, 12);
        let before = w.len();
        w.record(11, 0, &body(300, i as usize));
        split_page |= before % PAGE > PAGE - 24;
        split_segment |= before % SEG > SEG - 24;
        i += 1;
    }
    assert!(split_page && split_segment);
    let files = w.segments();
    let r = verify_all(&files, Some(SYSID));
    assert!(r.findings.is_empty(), "{:?}", r.findings);
    let (records, bytes) = expected_totals(&w, 0, files.len() as u64 * SEG);
    assert_eq!((r.stats.records, r.stats.bytes), (records, bytes));
    assert!(r.first_record.unwrap() < big);
}

#[test]
fn swapped_files_are_wrong_page_addresses() {
    let (_, mut files) = four_segments();
    let (a, b) = (files[1].1.clone(), files[2].1.clone());
    files[1].1 = b;
    files[2].1 = a;
    let r = verify_all(&files, Some(SYSID));
    let errs = errors(&r);
    assert!(matches!(
        errs[0],
        Finding { segment, offset: 0, kind: FindingKind::WrongPageAddress { .. }, .. }
            if *segment == files[1].0
    ));
    assert!(
        errs.iter()
            .any(|f| f.segment == files[2].0
                && matches!(f.kind, FindingKind::WrongPageAddress { .. }))
    );
}

#[test]
fn a_foreign_cluster_is_named() {
    let (_, mut files) = four_segments();
    let foreign = stream(&[50, 3000], 4 * SEG, None, OTHER_SYSID).segments();
    files[2].1 = foreign[2].1.clone();
    // With the cluster's identifier known: the file itself.
    let r = verify_all(&files, Some(SYSID));
    let errs = errors(&r);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].segment, files[2].0);
    assert_eq!(
        errs[0].kind,
        FindingKind::WrongSystemIdentifier {
            expected: SYSID,
            found: OTHER_SYSID
        }
    );
    // Without it: the chain sees the change.
    let r = verify_all(&files, None);
    assert!(errors(&r).iter().any(|f| f.segment == files[2].0
        && f.kind
            == FindingKind::WrongSystemIdentifier {
                expected: SYSID,
                found: OTHER_SYSID
            }));
}

#[test]
fn a_truncated_file_is_named() {
    let (_, mut files) = four_segments();
    files[1].1.truncate(500_000);
    let r = verify_all(&files, Some(SYSID));
    let errs = errors(&r);
    assert!(errs.iter().any(|f| f.segment == files[1].0
        && f.offset == 500_000
        && f.kind
            == FindingKind::Truncated {
                bytes: 500_000,
                expected: SEG
            }));
}

#[test]
fn a_longer_file_is_named() {
    let (_, mut files) = four_segments();
    files[1].1.extend_from_slice(&[0; 100]);
    let s = verify_file(files[1].0, &files[1].1, false, Some(SYSID));
    assert_eq!(
        s.findings[0].kind,
        FindingKind::TooLong {
            bytes: SEG + 100,
            expected: SEG
        }
    );
}

#[test]
fn a_recycled_file_shows_stale_pages() {
    // The segment's second half still holds pages from an earlier pass (another segment's
    // addresses), as a recycled segment does where it was not yet overwritten.
    let (_, mut files) = four_segments();
    let stale_from = 40 * PAGE;
    let old = files[0].1.clone();
    files[2].1[stale_from as usize..].copy_from_slice(&old[stale_from as usize..]);
    let r = verify_all(&files, Some(SYSID));
    let errs = errors(&r);
    assert!(
        errs.iter().any(|f| f.segment == files[2].0
            && f.offset <= stale_from
            && matches!(
                f.kind,
                FindingKind::WrongPageAddress { .. }
                    | FindingKind::ContinuationLength { .. }
                    | FindingKind::MissingContinuation { .. }
            )),
        "{errs:?}"
    );
    // Exactly at a page whose previous page's records end cleanly: the page address.
    let page_err = errs
        .iter()
        .find(|f| matches!(f.kind, FindingKind::WrongPageAddress { .. }));
    if let Some(f) = page_err {
        assert_eq!(f.offset, stale_from);
    }
}

#[test]
fn a_stale_record_after_valid_ones_breaks_the_prev_link() {
    // A valid-looking record (right CRC) whose xl_prev points elsewhere: a stale record from an
    // earlier pass at a record boundary.
    let mut w = WalWriter::new(first_segment(), size(), SYSID);
    for i in 0..50 {
        w.record(10, 0, &body(100, i));
    }
    let stale = record_bytes(Lsn(0x0F00_0028), 10, 0, &body(100, 7));
    let at = w.raw_record(&stale, 10);
    while w.len() < SEG {
        w.record(10, 0, &body(100, 3));
    }
    let files = w.segments();
    let s = verify_file(files[0].0, &files[0].1, false, Some(SYSID));
    assert_eq!(s.findings.len(), 1, "{:?}", s.findings);
    assert_eq!(s.findings[0].lsn, at);
    assert!(matches!(
        s.findings[0].kind,
        FindingKind::PrevLinkBroken {
            found_prev: Lsn(0x0F00_0028),
            ..
        }
    ));
}

#[test]
fn a_broken_prev_link_across_files_is_found_by_the_stitcher() {
    // The second file's first record points at the wrong record: each file is fine alone.
    let mut w = WalWriter::new(first_segment(), size(), SYSID);
    while w.len() < SEG - 2000 {
        w.record(10, 0, &body(100, 1));
    }
    w.record(10, 0, &body(4000, 2)); // spans into the second file
    let wrong = record_bytes(Lsn(0x10_0000), 10, 0, &body(100, 3));
    let at = w.raw_record(&wrong, 10);
    while w.len() < 2 * SEG {
        w.record(10, 0, &body(100, 4));
    }
    let files = w.segments();
    for (seg, bytes) in &files {
        assert!(
            verify_file(*seg, bytes, false, Some(SYSID))
                .findings
                .is_empty()
        );
    }
    let r = verify_all(&files, Some(SYSID));
    assert_eq!(r.findings.len(), 1, "{:?}", r.findings);
    let f = &r.findings[0];
    assert_eq!((f.segment, f.lsn), (files[1].0, at));
    assert!(matches!(f.kind, FindingKind::PrevLinkBroken { .. }));
}

#[test]
fn gaps_and_out_of_order_files_restart_the_chain() {
    let (_, files) = four_segments();
    // Told of the gap: no finding.
    let mut s = StreamVerifier::new();
    s.push(&verify_file(files[0].0, &files[0].1, false, None));
    s.gap();
    s.push(&verify_file(files[2].0, &files[2].1, false, None));
    s.push(&verify_file(files[3].0, &files[3].1, false, None));
    let r = s.finish();
    assert!(r.findings.is_empty(), "{:?}", r.findings);
    // Not told: named, never linked.
    let mut s = StreamVerifier::new();
    s.push(&verify_file(files[0].0, &files[0].1, false, None));
    s.push(&verify_file(files[2].0, &files[2].1, false, None));
    let r = s.finish();
    assert_eq!(r.findings.len(), 1);
    assert_eq!(
        r.findings[0].kind,
        FindingKind::NotConsecutive {
            previous: files[0].0
        }
    );
}

#[test]
fn a_switch_ends_the_records_and_the_next_file_links_to_it() {
    for old_headers in [false, true] {
        let mut w = WalWriter::new(first_segment(), size(), SYSID);
        w.zero_headers_after_switch = !old_headers;
        for i in 0..30 {
            w.record(10, 0, &body(500, i));
        }
        let switch = w.switch();
        while w.len() < 2 * SEG {
            w.record(10, 0, &body(500, 1));
        }
        let files = w.segments();
        let s = verify_file(files[0].0, &files[0].1, false, Some(SYSID));
        assert!(s.findings.is_empty(), "{:?}", s.findings);
        assert_eq!(s.end.reason, EndReason::Switch);
        assert_eq!(s.last_record, Some(switch));
        let next = verify_file(files[1].0, &files[1].1, false, Some(SYSID));
        assert_eq!(next.first_record.unwrap().prev, Some(switch));
        let r = verify_all(&files, Some(SYSID));
        assert!(r.findings.is_empty(), "{:?}", r.findings);
        assert_eq!(r.stats.records, 32 + next.stats.records - 1);
        // Stale bytes after the switch are a warning, not an error.
        let mut stale = files[0].1.clone();
        stale[SEG as usize - 100] = 1;
        let s = verify_file(files[0].0, &stale, false, Some(SYSID));
        assert!(s.is_clean());
        assert_eq!(s.findings.len(), 1);
        assert_eq!(s.findings[0].offset, SEG - 100);
        assert_eq!(
            s.findings[0].kind,
            FindingKind::NonZeroAfterEnd {
                after: EndReason::Switch
            }
        );
    }
}

#[test]
fn a_partial_ends_at_zeros_and_a_complete_segment_may_not() {
    let mut w = WalWriter::new(first_segment(), size(), SYSID);
    while w.len() < SEG + 300_000 {
        w.record(10, 0, &body(700, 5));
    }
    let (seg, bytes) = w.partial_segment().unwrap();
    let partial = verify_file(seg, &bytes, true, Some(SYSID));
    assert!(partial.findings.is_empty(), "{:?}", partial.findings);
    assert_eq!(partial.end.reason, EndReason::Zeros);
    assert_eq!(partial.end.offset, w.len() - SEG);
    // A short .partial is fine too.
    let short = verify_file(seg, &bytes[..(w.len() - SEG) as usize], true, Some(SYSID));
    assert!(short.findings.is_empty(), "{:?}", short.findings);
    // The same bytes as a complete segment: recovery would stop there.
    let complete = verify_file(seg, &bytes, false, Some(SYSID));
    assert_eq!(complete.findings.len(), 1);
    assert_eq!(complete.findings[0].kind, FindingKind::RecordsEndEarly);
    assert_eq!(complete.findings[0].offset, w.len() - SEG);
    // Stale bytes after a partial's end: a warning.
    let mut stale = bytes.clone();
    stale[SEG as usize - 10] = 0xAA;
    let s = verify_file(seg, &stale, true, Some(SYSID));
    assert!(s.is_clean());
    assert!(matches!(
        s.findings[0].kind,
        FindingKind::NonZeroAfterEnd {
            after: EndReason::Zeros
        }
    ));
}

#[test]
fn unknown_magics_are_refused_by_name() {
    let w = stream(&[100], SEG, None, SYSID);
    let files = w.segments();
    let mut bytes = files[0].1.clone();
    bytes[0..2].copy_from_slice(&0xD098u16.to_le_bytes()); // PostgreSQL 11
    let s = verify_file(files[0].0, &bytes, false, None);
    assert_eq!(
        s.findings[0].kind,
        FindingKind::UnknownMagic { magic: 0xD098 }
    );
    assert!(s.findings[0].kind.to_string().contains("0xD098"));
    // Every supported magic verifies.
    for magic in [0xD101u16, 0xD106, 0xD10D, 0xD110, 0xD113, 0xD116, 0xD118] {
        let mut w = WalWriter::new(first_segment(), size(), SYSID).magic(magic);
        while w.len() < SEG {
            w.record(10, 0, &body(200, 1));
        }
        let (seg, bytes) = &w.segments()[0];
        let s = verify_file(*seg, bytes, false, Some(SYSID));
        assert!(s.findings.is_empty(), "{magic:04X}: {:?}", s.findings);
    }
}

#[test]
fn a_page_of_another_timeline_is_refused() {
    // A timeline-2 stream under a timeline-1 name.
    let mut w = WalWriter::new(Segment::new(2, 0, 0x10), size(), SYSID);
    while w.len() < SEG {
        w.record(10, 0, &body(200, 1));
    }
    let bytes = &w.segments()[0].1;
    let s = verify_file(first_segment(), bytes, false, Some(SYSID));
    assert_eq!(
        s.findings[0].kind,
        FindingKind::TimelineAboveFile { found: 2, file: 1 }
    );
}

#[test]
fn summaries_round_trip_through_json() {
    let (_, files) = four_segments();
    let s = verify_file(files[1].0, &files[1].1, false, Some(SYSID));
    let json = serde_json::to_string(&s).unwrap();
    assert!(json.contains("\"segment\":\"000000010000000000000011\""));
    let back: SegmentSummary = serde_json::from_str(&json).unwrap();
    assert_eq!(back, s);
}
