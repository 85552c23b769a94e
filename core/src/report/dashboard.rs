//! The dashboard's wording and layout: pure functions the browser runs (compiled to wasm) and
//! the native tests check.

use serde::{Deserialize, Serialize};

use super::catalogue::{CatalogueSummary, TimelineSummary, segment_at};
use super::status::ReceiveWalStatus;
use crate::status::{human_bytes, human_duration};
use crate::time::utc_fields;
use crate::wal::{SegmentSize, TimelineId, WalFileName};

/// `just now`, `12 seconds ago`, `3 days, 4 hours ago`; `in the future` for clock skew.
pub fn format_age(then: f64, now: f64) -> String {
    let age = now - then;
    if age < -1.0 {
        "in the future".into()
    } else if age < 1.0 {
        "just now".into()
    } else {
        format!("{} ago", human_duration(age as u64))
    }
}

/// `14.2×`; `–` when unknown.
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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
