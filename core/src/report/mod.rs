//! What `walvault serve` reports: the `/api/status` model ([`status`]), the catalogue summary
//! behind it ([`catalogue`]: rates, per-hour counts, timelines and gaps) and the health
//! verdict. The Prometheus text is rendered by `serve` itself, and the dashboard's wording
//! lives with the dashboard (web-ui), both from the status document.
//!
//! Everything here is a pure function of facts the host gathered and the time it passes in,
//! so the server and the browser (which runs this module compiled to wasm) agree.

pub mod catalogue;
pub mod status;

pub use catalogue::*;
pub use status::*;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::CatalogueEntry;
    use crate::status::CheckResult;
    use crate::wal::{Segment, SegmentSize, TimelineId};

    const MB16: u64 = 16 << 20;

    use super::status::{sample_entry as entry, sample_segment as seg};

    #[test]
    fn segment_at_inverts_segno() {
        for size in [1u64 << 20, MB16, 1 << 30] {
            let size = SegmentSize::new(size).expect("valid size");
            for s in [
                Segment::new(3, 0, 0),
                Segment::new(3, 7, size.max_seg()),
                Segment::new(3, 0xFFFF_FFFF, 1),
            ] {
                assert_eq!(segment_at(TimelineId(3), s.segno(size), size), s);
            }
        }
    }

    #[test]
    fn summary_counts_rates_gaps_and_ratio() {
        let now = 1_800_000_000.0; // an hour boundary: 1_800_000_000 = 500_000 * 3600
        let size = SegmentSize::default();
        let mut entries = Vec::new();
        // Timeline 1: segments 0x..FE, 0x..FF, 1/00 (log wrap), then 1/03, 1/04: gap 1/01–1/02.
        for (i, (log, s)) in [(0, 0xFE), (0, 0xFF), (1, 0), (1, 3), (1, 4)]
            .iter()
            .enumerate()
        {
            entries.push(entry(
                &seg(1, *log, *s),
                MB16 / 8,
                now - 7200.0 + i as f64 * 1000.0,
                Some("zstd"),
            ));
        }
        // A partial closing timeline 1 right after, then timeline 2 with its history file.
        entries.push(entry(
            &format!("{}.partial", seg(1, 1, 5)),
            MB16 / 8,
            now - 1800.0,
            Some("zstd"),
        ));
        entries.push(entry("00000002.history", 42, now - 1700.0, None));
        entries.push(entry(&seg(2, 1, 5), MB16 / 4, now - 60.0, Some("lz4")));
        entries.push(entry(
            &format!("{}.00000028.backup", seg(2, 1, 5)),
            300,
            now - 50.0,
            None,
        ));
        entries.push(entry("garbage", 1, now, None));
        let s = summarise_catalogue(&entries, size, now);
        assert_eq!(
            (
                s.entries,
                s.segments,
                s.partials,
                s.history_files,
                s.backup_labels,
                s.other
            ),
            (10, 6, 1, 1, 1, 1)
        );
        assert_eq!(s.original_bytes, 7 * MB16);
        assert_eq!(s.stored_bytes, 6 * MB16 / 8 + MB16 / 4 + 42 + 300 + 1);
        let ratio = s.compression_ratio.expect("segments give a ratio");
        assert!((ratio - 7.0 / (6.0 / 8.0 + 0.25)).abs() < 1e-9, "{ratio}");
        assert_eq!(s.codecs["zstd"], 6);
        assert_eq!(s.codecs["none"], 3);
        assert_eq!(s.last_archived_wal.as_deref(), Some(seg(2, 1, 5).as_str()));
        assert_eq!(s.last_archived_time, Some(now - 60.0));
        // WAL times: -7200, -6200, -5200, -4200, -3200, -1800 (partial), -60.
        assert_eq!(s.archived_last_hour, 3);
        assert_eq!(s.archived_last_day, 7);
        assert_eq!(s.per_hour.len(), HOURS_CHARTED);
        assert_eq!(
            s.per_hour.last().expect("24 buckets").hour_start,
            now as i64
        );
        let counts: Vec<u64> = s.per_hour.iter().map(|h| h.segments).collect();
        // Hours H-2h: 4 (-7200 … -4200), H-1h: 3, the current hour H: none yet.
        assert_eq!(&counts[20..], &[0, 4, 3, 0]);
        assert_eq!(counts.iter().sum::<u64>(), 7);
        assert_eq!(s.timelines.len(), 2);
        let t1 = &s.timelines[0];
        assert_eq!((t1.timeline, t1.segments, t1.history), (1, 6, false));
        assert_eq!(t1.first, seg(1, 0, 0xFE));
        assert_eq!(t1.last, seg(1, 1, 5));
        assert_eq!(
            t1.gaps,
            vec![Gap {
                first_missing: seg(1, 1, 1),
                last_missing: seg(1, 1, 2),
                missing: 2
            }]
        );
        assert!(s.timelines[1].history && s.timelines[1].gaps.is_empty());
        assert_eq!((s.missing_segments(), s.gap_count()), (2, 1));
        assert_eq!(
            t1.gaps[0].describe(),
            "000000010000000100000001 – 000000010000000100000002 (2 segments)"
        );
    }

    #[test]
    fn gaps_follow_the_segment_size() {
        // With 1 GiB segments a log holds 4 segments: 0/03 then 1/00 is contiguous.
        let size = SegmentSize::new(1 << 30).expect("1 GiB is valid");
        let entries = [
            entry(&seg(1, 0, 3), 1, 0.0, None),
            entry(&seg(1, 1, 0), 1, 0.0, None),
        ];
        assert!(
            summarise_catalogue(&entries, size, 0.0).timelines[0]
                .gaps
                .is_empty()
        );
        let s = summarise_catalogue(&entries, SegmentSize::default(), 0.0);
        assert_eq!(s.timelines[0].gaps[0].missing, 252);
        assert_eq!(
            Gap {
                missing: 1,
                ..s.timelines[0].gaps[0].clone()
            }
            .describe(),
            format!("{} (1 segment)", seg(1, 0, 4))
        );
    }

    #[test]
    fn empty_catalogue() {
        let s = summarise_catalogue(&[], SegmentSize::default(), 100.0);
        assert_eq!(s.compression_ratio, None);
        assert_eq!(s.last_archived_wal, None);
        assert!(s.timelines.is_empty());
        assert_eq!(s.per_hour.iter().map(|h| h.segments).sum::<u64>(), 0);
    }

    fn status() -> ServerStatus {
        sample_status()
    }

    #[test]
    fn a_stalled_archive_wal_is_failing() {
        let mut s = status();
        s.archive_wal_stalled = Some("archive-wal (pid 7) has held the lock for 20 min".into());
        let v = assess(&s.health_facts(), 1000.0);
        assert_eq!(v.state, Health::Failing);
        assert_eq!(
            v.reasons,
            ["archive-wal (pid 7) has held the lock for 20 min"]
        );
    }

    #[test]
    fn a_corrupt_record_or_a_lost_segment_found_by_verify_is_failing_a_delayed_one_is_not() {
        use crate::verify::Severity;
        use crate::verify::archive::{ArchiveFinding, VerifySummary};
        let mut s = status();
        s.last_verify = Some(VerifySummary {
            at: 940.0,
            files: 3,
            delayed: 2,
            ..VerifySummary::default()
        });
        assert_eq!(assess(&s.health_facts(), 1000.0).state, Health::Healthy);
        s.last_verify = Some(VerifySummary {
            at: 940.0,
            files: 3,
            errors: 1,
            failures: vec![ArchiveFinding {
                file: "000000010000000000000002".into(),
                offset: Some(8232),
                lsn: None,
                severity: Severity::Error,
                message: "incorrect record checksum".into(),
            }],
            ..VerifySummary::default()
        });
        let v = assess(&s.health_facts(), 1000.0);
        assert_eq!(v.state, Health::Failing);
        assert_eq!(
            v.reasons,
            [
                "verify found 1 error(s) 1 minute ago, first: 000000010000000000000002 offset 8232: incorrect record checksum"
            ]
        );
    }

    #[test]
    fn health_verdicts() {
        let mut s = status();
        assert_eq!(
            assess(&s.health_facts(), 1000.0),
            HealthVerdict {
                state: Health::Healthy,
                reasons: vec![]
            }
        );
        s.errors.duplicates = 1;
        s.incoming_waiting = 11;
        let v = assess(&s.health_facts(), 1000.0);
        assert_eq!(v.state, Health::Warning);
        assert_eq!(
            v.reasons,
            vec![
                "errors/: duplicates: 1".to_owned(),
                "11 files waiting in incoming/, over max_incoming_wals_queue (10)".to_owned()
            ]
        );
        let v = assess(&s.health_facts(), 1000.0 + 7200.0);
        assert_eq!(v.state, Health::Failing);
        assert_eq!(
            v.reasons[0],
            "the last WAL is 2 hours old, over last_wal_maximum_age (1 hour)"
        );
        s.receive_wal = Some(ReceiveWalStatus::default());
        s.last_check = Some(CheckRun {
            at: 900.0,
            ok: false,
            checks: vec![CheckResult {
                name: "archive_mode".into(),
                ok: false,
                hint: Some("is 'off'".into()),
            }],
        });
        s.catalogue_problem = Some("line 3 is damaged".into());
        let v = assess(&s.health_facts(), 1000.0);
        assert_eq!(v.state, Health::Failing);
        assert_eq!(
            &v.reasons[..3],
            &[
                "catalogue: line 3 is damaged".to_owned(),
                "check 'archive_mode' failed 1 minute, 40 seconds ago: is 'off'".to_owned(),
                "receive-wal is not running".to_owned(),
            ]
        );
        let mut gap = status();
        gap.catalogue = Some(summarise_catalogue(
            &[
                entry(&seg(1, 0, 1), 1, 1000.0, None),
                entry(&seg(1, 0, 4), 1, 1000.0, None),
            ],
            SegmentSize::default(),
            1000.0,
        ));
        let v = assess(&gap.health_facts(), 1000.0);
        assert_eq!(v.state, Health::Failing);
        assert_eq!(
            v.reasons,
            vec![
                "2 segment(s) missing in 1 gap(s): recovery cannot replay past the first"
                    .to_owned()
            ]
        );
        gap.catalogue = Some(summarise_catalogue(&[], SegmentSize::default(), 1000.0));
        assert_eq!(assess(&gap.health_facts(), 1000.0).state, Health::Warning);
    }

    #[test]
    fn pages_of_the_catalogue() {
        let sorted: Vec<CatalogueEntry> = (1..=5)
            .map(|i| entry(&seg(1, 0, i), 1, 0.0, None))
            .collect();
        let p = wal_page("pg", &sorted, None, 2);
        assert_eq!(
            (p.total, p.wals.len(), p.next_after.clone()),
            (5, 2, Some(seg(1, 0, 2)))
        );
        let p = wal_page("pg", &sorted, p.next_after.as_deref(), 2);
        assert_eq!(p.wals[0].name, seg(1, 0, 3));
        let p = wal_page("pg", &sorted, p.next_after.as_deref(), 2);
        assert_eq!((p.wals.len(), p.next_after), (1, None));
        let p = wal_page("pg", &sorted, Some("zzz"), 2);
        assert!(p.wals.is_empty() && p.next_after.is_none());
        assert_eq!(wal_page("pg", &sorted, Some(""), 0).wals.len(), 0);
        assert_eq!(wal_page("pg", &sorted, None, usize::MAX).wals.len(), 5);
    }

    #[test]
    fn error_kinds_and_ages() {
        assert!(explain_error_kind("duplicate").contains("archived copy was kept"));
        assert_eq!(explain_error_kind("whatever"), "unrecognised entry");
        assert_eq!(format_age(100.0, 100.5), "just now");
        assert_eq!(format_age(100.0, 112.0), "12 seconds ago");
        assert_eq!(format_age(0.0, 90_061.0), "1 day, 1 hour ago");
        assert_eq!(format_age(100.0, 50.0), "in the future");
    }
}
