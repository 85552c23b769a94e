//! The archive-level join of `walvault verify`: files in order across timelines, history
//! files against the segments, and missing segments classified.

use std::collections::BTreeSet;

use walvault_core::layout::StoredWal;
use walvault_core::verify::archive::{
    ArchiveVerifier, FileResult, MissingClass, VerifyReport, Whereabouts, plan,
};
use walvault_core::verify::testing::WalWriter;
use walvault_core::verify::{SegmentVerifier, Severity};
use walvault_core::wal::{HistoryEntry, Lsn, Segment, SegmentSize, TimelineId, WalFileName};

const SYSID: u64 = 7_400_000_000_000_000_001;

fn size() -> SegmentSize {
    SegmentSize::new(1 << 20).expect("1 MiB")
}

/// Six segments of one stream (timeline 1, segments 1 to 6), records of varied sizes, some
/// spanning segments.
fn stream() -> Vec<(Segment, Vec<u8>)> {
    stream_with(0)
}

/// Another history of the same positions: records of other sizes.
fn stream_with(seed: usize) -> Vec<(Segment, Vec<u8>)> {
    let mut w = WalWriter::new(Segment::new(1, 0, 1), size(), SYSID);
    let mut n = 0u32;
    while w.len() < 6 * size().bytes() - 70_000 {
        n += 1;
        let len = [40usize, 300, 9_000, 70_000][(n as usize + seed) % 4] + seed;
        w.record(10, 0, &vec![(n % 251) as u8; len]);
    }
    w.land_at(6 * size().bytes(), 10);
    w.segments()
}

/// The same bytes on another timeline: the page headers' `xlp_tli` rewritten (page headers are
/// outside the records' CRCs), as the segments a promoted standby writes after its switch
/// point at a segment start.
fn on_timeline(data: &[u8], tli: u32) -> Vec<u8> {
    let mut data = data.to_vec();
    for page in (0..data.len()).step_by(8192) {
        data[page + 4..page + 8].copy_from_slice(&tli.to_le_bytes());
    }
    data
}

struct Archive {
    files: Vec<(WalFileName, Vec<u8>)>,
    histories: Vec<(TimelineId, Result<Vec<HistoryEntry>, String>)>,
}

impl Archive {
    /// Timeline 1: segments 1 to 3; timeline 2 from segment 4 (its history says so) to 6.
    fn two_timelines() -> Archive {
        let segs = stream();
        let mut files = Vec::new();
        for (segment, data) in segs {
            if segment.seg <= 3 {
                files.push((WalFileName::Segment(segment), data));
            } else {
                let s2 = Segment::new(2, segment.log, segment.seg);
                files.push((WalFileName::Segment(s2), on_timeline(&data, 2)));
            }
        }
        Archive {
            files,
            histories: vec![(
                TimelineId(2),
                Ok(vec![HistoryEntry {
                    timeline: TimelineId(2),
                    parent: TimelineId(1),
                    switch_point: Segment::new(2, 0, 4).lsn_at(0, size()),
                    reason: "no recovery target specified".into(),
                }]),
            )],
        }
    }

    fn without(mut self, name: &str) -> Archive {
        self.files.retain(|(n, _)| n.to_string() != name);
        self
    }

    fn listing(&self) -> Vec<StoredWal> {
        self.files
            .iter()
            .map(|(name, data)| StoredWal {
                key: name.relative_path(),
                name: *name,
                codec_from_key: None,
                size: data.len() as u64,
            })
            .collect()
    }

    /// Verifies every planned file (in reverse order, as parallel jobs may finish) and joins.
    fn verify(&self, whereabouts: &Whereabouts) -> VerifyReport {
        let plan = plan(self.listing(), size(), None);
        let mut joiner = ArchiveVerifier::new("pg", &plan, None, self.histories.clone());
        for (index, file) in plan.files.iter().enumerate().rev() {
            let data = &self
                .files
                .iter()
                .find(|(n, _)| *n == file.stored.name)
                .expect("planned file exists")
                .1;
            let summary =
                SegmentVerifier::verify(file.segment, size(), file.partial, Some(SYSID), data);
            joiner.push(index, FileResult::Verified(Box::new(summary)));
        }
        joiner.finish(whereabouts, 1.0, 2.0)
    }
}

fn error_lines(report: &VerifyReport) -> Vec<String> {
    report
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .map(ToString::to_string)
        .collect()
}

#[test]
fn a_clean_archive_across_a_timeline_switch_verifies_to_its_last_record() {
    let archive = Archive::two_timelines();
    let report = archive.verify(&Whereabouts::default());
    assert!(report.is_clean(), "{:?}", report.findings);
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    assert_eq!(report.files, 6);
    assert_eq!(report.timelines.len(), 2);
    assert_eq!(report.timelines[1].parent, Some(1));
    let up_to = report.verified_up_to.expect("verified");
    assert_eq!(up_to.file, "000000020000000000000006");
    assert!(report.stats.records > 100);
}

#[test]
fn the_chain_is_checked_across_the_switch() {
    // Timeline 2's first segment from another history of the same positions: valid in
    // itself, but its start does not continue timeline 1's segment 3.
    let mut archive = Archive::two_timelines();
    archive.files[3].1 = on_timeline(&stream_with(1)[3].1, 2);
    let report = archive.verify(&Whereabouts::default());
    let errors = error_lines(&report);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("across the switch from timeline 1")),
        "{errors:?}"
    );
    assert!(!report.is_clean());
    let up_to = report.verified_up_to.expect("timeline 1 verified");
    assert_eq!(up_to.timeline, 1, "{up_to:?}");
}

#[test]
fn history_files_that_do_not_match_their_timeline_are_named() {
    let mut archive = Archive::two_timelines();
    // Says timeline 2 began in segment 5: but the archive holds its segment 4.
    archive.histories[0].1 = Ok(vec![HistoryEntry {
        timeline: TimelineId(2),
        parent: TimelineId(1),
        switch_point: Lsn(Segment::new(2, 0, 5).lsn_at(0, size()).0 + 100),
        reason: String::new(),
    }]);
    let errors = error_lines(&archive.verify(&Whereabouts::default()));
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("00000002.history") && e.contains("earlier segments")),
        "{errors:?}"
    );

    let mut archive = Archive::two_timelines();
    archive.histories.clear();
    let errors = error_lines(&archive.verify(&Whereabouts::default()));
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("00000002.history") && e.contains("missing")),
        "{errors:?}"
    );

    let mut archive = Archive::two_timelines();
    archive.histories[0].1 = Ok(vec![HistoryEntry {
        timeline: TimelineId(2),
        parent: TimelineId(3),
        switch_point: Lsn(0x10),
        reason: String::new(),
    }]);
    let errors = error_lines(&archive.verify(&Whereabouts::default()));
    assert!(
        errors
            .iter()
            .any(|e| e.contains("names timeline 00000003") || e.contains("names timeline 3")),
        "{errors:?}"
    );
}

#[test]
fn a_missing_segment_is_lost_queued_or_ready_by_what_the_host_knows() {
    let archive = Archive::two_timelines().without("000000010000000000000002");
    let missing = Segment::new(1, 0, 2);

    let report = archive.verify(&Whereabouts {
        ready: Some(BTreeSet::new()),
        ..Whereabouts::default()
    });
    assert_eq!(report.lost(), 1);
    assert!(!report.is_clean());
    let range = &report.missing[0];
    assert_eq!(range.first, "000000010000000000000002");
    assert_eq!(range.class, MissingClass::Lost);
    assert_eq!(range.start_lsn, missing.lsn_at(0, size()));
    assert_eq!(
        range.end_lsn.0,
        missing.lsn_at(0, size()).0 + size().bytes()
    );
    assert_eq!(
        report.verified_up_to.expect("up to").file,
        "000000010000000000000001"
    );

    let report = archive.verify(&Whereabouts {
        queued: BTreeSet::from([missing]),
        ..Whereabouts::default()
    });
    assert_eq!(report.missing[0].class, MissingClass::Queued);
    assert!(report.is_clean(), "delayed is not lost");
    assert_eq!(report.delayed(), 1);

    let report = archive.verify(&Whereabouts {
        ready: Some(BTreeSet::from([missing])),
        ..Whereabouts::default()
    });
    assert_eq!(report.missing[0].class, MissingClass::Ready);
}

#[test]
fn segments_after_the_last_archived_one_are_classified_against_the_server() {
    let archive = Archive::two_timelines();
    let server = Some((TimelineId(2), Segment::new(2, 0, 9).lsn_at(100, size())));
    // Segments 7 and 8 are written and not archived; 9 is being written.
    let report = archive.verify(&Whereabouts {
        server,
        ..Whereabouts::default()
    });
    assert_eq!(report.missing.len(), 1, "{:?}", report.missing);
    assert_eq!(report.missing[0].count, 2);
    assert_eq!(report.missing[0].class, MissingClass::Unconfirmed);
    assert!(report.is_clean());

    let ready = BTreeSet::from([Segment::new(2, 0, 7)]);
    let report = archive.verify(&Whereabouts {
        server,
        ready: Some(ready),
        ..Whereabouts::default()
    });
    let classes: Vec<_> = report.missing.iter().map(|m| (m.count, m.class)).collect();
    assert_eq!(classes, [(1, MissingClass::Ready), (1, MissingClass::Lost)]);
}

#[test]
fn a_damaged_file_is_an_error_and_ends_the_verified_run() {
    let mut archive = Archive::two_timelines();
    archive.files[1].1[500_000] ^= 0x40;
    let report = archive.verify(&Whereabouts::default());
    let errors = error_lines(&report);
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("000000010000000000000002 offset")),
        "{errors:?}"
    );
    assert_eq!(
        report.verified_up_to.expect("up to").file,
        "000000010000000000000001"
    );
}

#[test]
fn the_plan_orders_files_prefers_complete_segments_and_warns_of_names_stored_twice() {
    let archive = Archive::two_timelines();
    let mut listing = archive.listing();
    listing.reverse();
    // The .partial of a segment that is also complete, and a second key for one name.
    let s3 = Segment::new(1, 0, 3);
    listing.push(StoredWal {
        key: "0000000100000000/000000010000000000000003.partial".into(),
        name: WalFileName::Partial(s3),
        codec_from_key: None,
        size: 1,
    });
    let mut twice = listing[0].clone();
    twice.key.push_str(".zst");
    listing.push(twice);
    let plan = plan(listing, size(), Some(Segment::new(1, 0, 2)));
    let names: Vec<String> = plan
        .files
        .iter()
        .map(|f| f.stored.name.to_string())
        .collect();
    assert_eq!(
        names,
        [
            "000000010000000000000002",
            "000000010000000000000003",
            "000000020000000000000004",
            "000000020000000000000005",
            "000000020000000000000006"
        ]
    );
    assert_eq!(plan.findings.len(), 1, "{:?}", plan.findings);
    assert_eq!(plan.findings[0].severity, Severity::Warning);
}
