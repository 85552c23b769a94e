//! The catalogue summarised for `serve` and the dashboard: rates, per-hour counts, timelines
//! and gaps.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::catalogue::CatalogueEntry;
use crate::wal::{Segment, SegmentSize, TimelineId, WalFileName};

/// Hours of history in [`CatalogueSummary::per_hour`].
pub const HOURS_CHARTED: usize = 24;

/// Segments archived in one UTC hour.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HourCount {
    /// Start of the hour, seconds since the Unix epoch.
    pub hour_start: i64,
    /// Segments (complete or partial) whose WAL time falls in that hour.
    pub segments: u64,
}

/// Segments missing between two archived ones on the same timeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    /// The first missing segment's name.
    pub first_missing: String,
    /// The last missing segment's name.
    pub last_missing: String,
    /// How many segments are missing.
    pub missing: u64,
}

impl Gap {
    /// `000000010000000000000005` or `…05 – …07 (3 segments)`.
    pub fn describe(&self) -> String {
        if self.missing == 1 {
            format!("{} (1 segment)", self.first_missing)
        } else {
            format!(
                "{} – {} ({} segments)",
                self.first_missing, self.last_missing, self.missing
            )
        }
    }
}

/// One timeline as the catalogue holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineSummary {
    /// The timeline.
    pub timeline: u32,
    /// The first archived segment (complete or partial).
    pub first: String,
    /// The last archived segment (complete or partial).
    pub last: String,
    /// Distinct segments archived.
    pub segments: u64,
    /// Whether the catalogue holds the timeline's `.history` file (timeline 1 has none).
    pub history: bool,
    /// Missing runs between `first` and `last`, in order.
    pub gaps: Vec<Gap>,
}

impl TimelineSummary {
    /// Segments missing on this timeline.
    pub fn missing(&self) -> u64 {
        self.gaps.iter().map(|g| g.missing).sum()
    }
}

/// What the catalogue says, summarised for one point in time.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CatalogueSummary {
    /// Lines in the catalogue.
    pub entries: usize,
    /// Complete segments.
    pub segments: u64,
    /// `.partial` segments.
    pub partials: u64,
    /// `.history` files.
    pub history_files: u64,
    /// Backup labels.
    pub backup_labels: u64,
    /// Lines whose name is not a WAL name (written by another tool).
    pub other: u64,
    /// Bytes stored (compressed and encrypted sizes, as recorded).
    pub stored_bytes: u64,
    /// Bytes those segments hold uncompressed (segment size each).
    pub original_bytes: u64,
    /// `original_bytes / stored bytes of segments`; `None` with no segments.
    pub compression_ratio: Option<f64>,
    /// Lines per compression name (`none` for plain).
    pub codecs: BTreeMap<String, u64>,
    /// The newest segment (complete or partial) by name order.
    pub last_archived_wal: Option<String>,
    /// Its WAL time (the source file's mtime), seconds since the epoch.
    pub last_archived_time: Option<f64>,
    /// Segments with a WAL time in the last hour.
    pub archived_last_hour: u64,
    /// Segments with a WAL time in the last 24 hours.
    pub archived_last_day: u64,
    /// Segments per hour over the last [`HOURS_CHARTED`] hours, oldest first; the last bucket
    /// is the current hour.
    pub per_hour: Vec<HourCount>,
    /// Timelines in order.
    pub timelines: Vec<TimelineSummary>,
}

impl CatalogueSummary {
    /// Segments missing on every timeline.
    pub fn missing_segments(&self) -> u64 {
        self.timelines.iter().map(TimelineSummary::missing).sum()
    }

    /// Gaps on every timeline.
    pub fn gap_count(&self) -> usize {
        self.timelines.iter().map(|t| t.gaps.len()).sum()
    }
}

/// The segment at position `segno` of the WAL stream (the inverse of [`Segment::segno`]).
pub fn segment_at(timeline: TimelineId, segno: u64, size: SegmentSize) -> Segment {
    let per_log = u64::from(size.max_seg()) + 1;
    Segment {
        timeline,
        log: (segno / per_log) as u32,
        seg: (segno % per_log) as u32,
    }
}

/// Summarises catalogue lines at `now` (seconds since the epoch). Segment numbers use `size`;
/// the archive's segment size must be known for gaps to be right.
pub fn summarise_catalogue(
    entries: &[CatalogueEntry],
    size: SegmentSize,
    now: f64,
) -> CatalogueSummary {
    let mut s = CatalogueSummary {
        entries: entries.len(),
        ..CatalogueSummary::default()
    };
    let current_hour = (now.floor() as i64).div_euclid(3600) * 3600;
    let first_hour = current_hour - 3600 * (HOURS_CHARTED as i64 - 1);
    let mut hours = vec![0u64; HOURS_CHARTED];
    let mut per_timeline: BTreeMap<u32, BTreeSet<u64>> = BTreeMap::new();
    let mut histories = BTreeSet::new();
    let mut segment_stored = 0u64;
    let mut last: Option<(WalFileName, &CatalogueEntry)> = None;
    for e in entries {
        s.stored_bytes += e.size;
        *s.codecs
            .entry(e.compression.clone().unwrap_or_else(|| "none".into()))
            .or_default() += 1;
        let Ok(name) = e.wal_name() else {
            s.other += 1;
            continue;
        };
        let segment = match name {
            WalFileName::Segment(seg) => {
                s.segments += 1;
                seg
            }
            WalFileName::Partial(seg) => {
                s.partials += 1;
                seg
            }
            WalFileName::History(tli) => {
                s.history_files += 1;
                histories.insert(tli.0);
                continue;
            }
            WalFileName::BackupLabel { .. } => {
                s.backup_labels += 1;
                continue;
            }
        };
        segment_stored += e.size;
        s.original_bytes += size.bytes();
        per_timeline
            .entry(segment.timeline.0)
            .or_default()
            .insert(segment.segno(size));
        let age = now - e.time;
        if (0.0..3600.0).contains(&age) {
            s.archived_last_hour += 1;
        }
        if (0.0..86_400.0).contains(&age) {
            s.archived_last_day += 1;
        }
        let hour = (e.time.floor() as i64).div_euclid(3600) * 3600;
        if (first_hour..=current_hour).contains(&hour) {
            hours[((hour - first_hour) / 3600) as usize] += 1;
        }
        if last.is_none_or(|(n, _)| name > n) {
            last = Some((name, e));
        }
    }
    s.compression_ratio =
        (segment_stored > 0).then(|| s.original_bytes as f64 / segment_stored as f64);
    s.last_archived_wal = last.map(|(n, _)| n.to_string());
    s.last_archived_time = last.map(|(_, e)| e.time);
    s.per_hour = hours
        .into_iter()
        .enumerate()
        .map(|(i, segments)| HourCount {
            hour_start: first_hour + 3600 * i as i64,
            segments,
        })
        .collect();
    s.timelines = per_timeline
        .into_iter()
        .map(|(tli, segnos)| timeline_summary(TimelineId(tli), &segnos, size, &histories))
        .collect();
    s
}

fn timeline_summary(
    tli: TimelineId,
    segnos: &BTreeSet<u64>,
    size: SegmentSize,
    histories: &BTreeSet<u32>,
) -> TimelineSummary {
    let name = |segno| segment_at(tli, segno, size).to_string();
    let mut gaps = Vec::new();
    let mut previous: Option<u64> = None;
    for &n in segnos {
        if let Some(p) = previous
            && n > p + 1
        {
            gaps.push(Gap {
                first_missing: name(p + 1),
                last_missing: name(n - 1),
                missing: n - p - 1,
            });
        }
        previous = Some(n);
    }
    // Non-empty: only timelines with a segment are summarised.
    let first = segnos.first().copied().unwrap_or_default();
    let last = segnos.last().copied().unwrap_or_default();
    TimelineSummary {
        timeline: tli.0,
        first: name(first),
        last: name(last),
        segments: segnos.len() as u64,
        history: histories.contains(&tli.0),
        gaps,
    }
}
