//! The dashboard's wording and layout: small pure functions over the core's status document,
//! tested natively (`cargo test -p walvault-web-ui --lib --no-default-features`) and run in the browser.

use walvault_core::report::{CatalogueSummary, ReceiveWalStatus, TimelineSummary, segment_at};
use walvault_core::status::human_bytes;
use walvault_core::time::utc_fields;
use walvault_core::verify::archive::VerifySummary;
use walvault_core::wal::{SegmentSize, TimelineId, WalFileName};

pub use walvault_core::report::format_age;

pub fn format_ratio(ratio: Option<f64>) -> String {
    match ratio {
        Some(r) if r.is_finite() => format!("{r:.1}×"),
        _ => "–".into(),
    }
}

/// `2026-11-22 14:05 UTC`.
pub fn format_time(unix_seconds: f64) -> String {
    let (y, mo, d, h, mi, _) = utc_fields(unix_seconds.floor() as i64);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02} UTC")
}

/// `14:00`, the label of an hour bucket.
pub fn hour_label(hour_start: i64) -> String {
    let (_, _, _, h, _, _) = utc_fields(hour_start);
    format!("{h:02}:00")
}

/// Bar heights for counts, scaled so the largest is `max_height` (non-zero counts get at least
/// 1 so they stay visible).
pub fn bar_heights(counts: &[u64], max_height: u32) -> Vec<u32> {
    let top = counts.iter().copied().max().unwrap_or(0);
    counts
        .iter()
        .map(|&c| {
            if c == 0 || top == 0 {
                0
            } else {
                ((c as f64 / top as f64 * f64::from(max_height)).round() as u32).max(1)
            }
        })
        .collect()
}

/// `running (process 4242), lag 1.5 MiB`, with PostgreSQL's problem when it could not be asked.
pub fn describe_receive_wal(rw: &ReceiveWalStatus) -> String {
    let mut text = match (rw.running, rw.pid) {
        (true, Some(pid)) => format!("running (process {pid})"),
        (true, None) => "running".to_owned(),
        (false, _) => "not running".to_owned(),
    };
    if let Some(lag) = rw.lag_bytes {
        text.push_str(&format!(", lag {}", human_bytes(lag)));
    }
    if let Some(slot) = rw.slot_active {
        text.push_str(if slot {
            ", slot active"
        } else {
            ", slot inactive"
        });
    }
    if let Some(problem) = &rw.problem {
        text.push_str(&format!(" · {problem}"));
    }
    text
}

/// `12 files, 1.5 GiB stored`, or why the catalogue cannot be read.
pub fn describe_catalogue(cat: Option<&CatalogueSummary>, problem: Option<&str>) -> String {
    match (cat, problem) {
        (_, Some(p)) => p.to_owned(),
        (Some(c), None) => format!(
            "{} files, {} stored",
            c.entries,
            human_bytes(c.stored_bytes)
        ),
        (None, None) => "–".into(),
    }
}

/// `3 / 48 segments` (last hour / last day).
pub fn describe_rates(cat: &CatalogueSummary) -> String {
    format!(
        "{} / {} segments",
        cat.archived_last_hour, cat.archived_last_day
    )
}

/// `2026-11-22 14:05 UTC (5 minutes ago)`.
pub fn describe_time(then: f64, now: f64) -> String {
    format!("{} ({})", format_time(then), format_age(then, now))
}

/// `Timeline 2: <first> – <last>, 120 segments, 3 missing`.
pub fn timeline_label(tl: &TimelineSummary) -> String {
    let missing = tl.missing();
    format!(
        "Timeline {}: {} – {}, {} segments{}",
        tl.timeline,
        tl.first,
        tl.last,
        tl.segments,
        if missing == 0 {
            String::new()
        } else {
            format!(", {missing} missing")
        }
    )
}

/// `Errors (3 in errors/)`, or `Errors (500 in errors/, newest 200 shown)`.
pub fn errors_heading(total: usize, shown: usize) -> String {
    if shown < total {
        format!("Errors ({total} in errors/, newest {shown} shown)")
    } else {
        format!("Errors ({total} in errors/)")
    }
}

/// One cell of a timeline strip: a run of segment positions, present or missing.
#[derive(Clone, Debug, PartialEq)]
pub struct StripCell {
    /// First segment of the run.
    pub first: String,
    /// Last segment of the run.
    pub last: String,
    /// Segments in the run.
    pub segments: u64,
    /// The run is missing from the archive.
    pub missing: bool,
    /// Share of the timeline's span, 0–1.
    pub share: f64,
}

/// The strip that draws a timeline: alternating present and missing runs from its first to
/// its last segment, recomputed from the names (the browser runs this to lay out gaps).
/// Missing runs keep at least `min_gap_share` of the width so a one-segment gap in a million
/// stays visible.
pub fn timeline_strip(
    tl: &TimelineSummary,
    size: SegmentSize,
    min_gap_share: f64,
) -> Vec<StripCell> {
    let segno = |name: &str| match name.parse::<WalFileName>() {
        Ok(n) => n.segment().map(|s| s.segno(size)),
        Err(_) => None,
    };
    let (Some(first), Some(last)) = (segno(&tl.first), segno(&tl.last)) else {
        return Vec::new();
    };
    let tli = TimelineId(tl.timeline);
    let name = |n| segment_at(tli, n, size).to_string();
    let mut cells = Vec::new();
    let mut cursor = first;
    for gap in &tl.gaps {
        let (Some(g0), Some(g1)) = (segno(&gap.first_missing), segno(&gap.last_missing)) else {
            continue;
        };
        if g0 < cursor || g1 < g0 || g1 > last {
            continue;
        }
        if g0 > cursor {
            cells.push((cursor, g0 - 1, false));
        }
        cells.push((g0, g1, true));
        cursor = g1 + 1;
    }
    if cursor <= last {
        cells.push((cursor, last, false));
    }
    let span = (last - first + 1) as f64;
    let mut out: Vec<StripCell> = cells
        .into_iter()
        .map(|(a, b, missing)| {
            let segments = b - a + 1;
            let share = segments as f64 / span;
            StripCell {
                first: name(a),
                last: name(b),
                segments,
                missing,
                share: if missing {
                    share.max(min_gap_share)
                } else {
                    share
                },
            }
        })
        .collect();
    let total: f64 = out.iter().map(|c| c.share).sum();
    if total > 0.0 {
        for c in &mut out {
            c.share /= total;
        }
    }
    out
}

/// The "verified up to" line of the last `walvault verify`: how far the archive is proven
/// replayable, when, and what was found.
pub fn describe_verify(v: &VerifySummary, now: f64) -> String {
    let up_to = v.verified_up_to.as_ref().map_or_else(
        || "nothing proven replayable".to_owned(),
        |u| format!("verified up to {}", u.file),
    );
    let mut found = Vec::new();
    if v.errors > 0 {
        found.push(format!("{} error(s)", v.errors));
    }
    if v.lost > 0 {
        found.push(format!("{} segment(s) lost", v.lost));
    }
    if v.dropped > 0 {
        found.push(format!("{} dropped by archive_queue_max", v.dropped));
    }
    if v.delayed > 0 {
        found.push(format!("{} delayed", v.delayed));
    }
    let found = if found.is_empty() {
        "no problem".to_owned()
    } else {
        found.join(", ")
    };
    format!(
        "{up_to} ({} files, {} records, {}; {found})",
        v.files,
        v.records,
        walvault_core::report::format_age(v.at, now)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use walvault_core::catalogue::CatalogueEntry;
    use walvault_core::report::{
        sample_entry as entry, sample_segment as seg, summarise_catalogue,
    };

    #[test]
    fn formatting() {
        assert_eq!(format_age(100.0, 100.5), "just now");
        assert_eq!(format_age(100.0, 112.0), "12 seconds ago");
        assert_eq!(format_age(0.0, 90_061.0), "1 day, 1 hour ago");
        assert_eq!(format_age(100.0, 50.0), "in the future");
        assert_eq!(format_ratio(Some(14.249)), "14.2×");
        assert_eq!(format_ratio(None), "–");
        assert_eq!(format_ratio(Some(f64::INFINITY)), "–");
        assert_eq!(format_time(1_800_000_000.0), "2027-01-15 08:00 UTC");
        assert_eq!(hour_label(1_800_000_000 + 5 * 3600), "13:00");
        assert_eq!(bar_heights(&[0, 1, 50, 100], 40), vec![0, 1, 20, 40]);
        assert_eq!(bar_heights(&[0, 0], 40), vec![0, 0]);
        assert_eq!(bar_heights(&[], 40), Vec::<u32>::new());
    }

    #[test]
    fn descriptions() {
        let mut rw = ReceiveWalStatus {
            running: true,
            pid: Some(4242),
            lag_bytes: Some(3 << 19),
            slot_active: Some(true),
            ..ReceiveWalStatus::default()
        };
        assert_eq!(
            describe_receive_wal(&rw),
            "running (process 4242), lag 1.5 MiB, slot active"
        );
        rw = ReceiveWalStatus {
            problem: Some("cannot connect".into()),
            ..ReceiveWalStatus::default()
        };
        assert_eq!(describe_receive_wal(&rw), "not running · cannot connect");
        let cat = summarise_catalogue(
            &[
                entry(&seg(1, 0, 1), 1536, 100.0, None),
                entry(&seg(1, 0, 3), 512, 100.0, None),
            ],
            SegmentSize::default(),
            200.0,
        );
        assert_eq!(
            describe_catalogue(Some(&cat), None),
            "2 files, 2.0 KiB stored"
        );
        assert_eq!(describe_catalogue(Some(&cat), Some("damaged")), "damaged");
        assert_eq!(describe_catalogue(None, None), "–");
        assert_eq!(describe_rates(&cat), "2 / 2 segments");
        assert_eq!(
            timeline_label(&cat.timelines[0]),
            format!(
                "Timeline 1: {} – {}, 2 segments, 1 missing",
                seg(1, 0, 1),
                seg(1, 0, 3)
            )
        );
        assert_eq!(
            describe_time(1_800_000_000.0, 1_800_000_300.0),
            "2027-01-15 08:00 UTC (5 minutes ago)"
        );
        assert_eq!(errors_heading(3, 3), "Errors (3 in errors/)");
        assert_eq!(
            errors_heading(500, 200),
            "Errors (500 in errors/, newest 200 shown)"
        );
    }

    #[test]
    fn strips_show_gaps_in_place() {
        let size = SegmentSize::default();
        let entries: Vec<CatalogueEntry> = [1u32, 2, 3, 7, 8, 100]
            .iter()
            .map(|&i| entry(&seg(1, 0, i), 1, 0.0, None))
            .collect();
        let tl = &summarise_catalogue(&entries, size, 0.0).timelines[0];
        let strip = timeline_strip(tl, size, 0.02);
        let runs: Vec<(u64, bool)> = strip.iter().map(|c| (c.segments, c.missing)).collect();
        assert_eq!(
            runs,
            vec![(3, false), (3, true), (2, false), (91, true), (1, false)]
        );
        assert_eq!(strip[1].first, seg(1, 0, 4));
        assert_eq!(strip[1].last, seg(1, 0, 6));
        assert!((strip.iter().map(|c| c.share).sum::<f64>() - 1.0).abs() < 1e-9);
        // A one-segment gap in a long run stays visible.
        let long: Vec<CatalogueEntry> = (0..10_000u32)
            .filter(|&i| i != 5000)
            .map(|i| {
                entry(
                    &segment_at(TimelineId(1), u64::from(i), size).to_string(),
                    1,
                    0.0,
                    None,
                )
            })
            .collect();
        let tl = &summarise_catalogue(&long, size, 0.0).timelines[0];
        let strip = timeline_strip(tl, size, 0.02);
        assert_eq!(strip.len(), 3);
        assert!(strip[1].missing && strip[1].share > 0.019);
        // No gaps: one present run.
        let tl = &summarise_catalogue(&entries[..3], size, 0.0).timelines[0];
        assert_eq!(timeline_strip(tl, size, 0.02).len(), 1);
    }

    #[test]
    fn the_verify_line_says_how_far_and_what_was_found() {
        use walvault_core::verify::archive::{VerifiedUpTo, VerifySummary};
        let mut v = VerifySummary {
            at: 1000.0,
            files: 64,
            records: 1_460_109,
            verified_up_to: Some(VerifiedUpTo {
                timeline: 1,
                file: "000000010000000000000050".into(),
                lsn: None,
            }),
            ..VerifySummary::default()
        };
        assert_eq!(
            describe_verify(&v, 1060.0),
            "verified up to 000000010000000000000050 (64 files, 1460109 records, 1 minute ago; no problem)"
        );
        v.errors = 2;
        v.lost = 1;
        v.dropped = 3;
        v.verified_up_to = None;
        assert_eq!(
            describe_verify(&v, 1000.0),
            "nothing proven replayable (64 files, 1460109 records, just now; 2 error(s), 1 segment(s) lost, 3 dropped by archive_queue_max)"
        );
    }
}
