//! What `walvault serve` reports: the `/api/status` model, the catalogue summary behind it
//! (rates, per-hour counts, timelines and gaps), the health verdict, the Prometheus text
//! rendering, and the small layout and formatting functions the dashboard draws with.
//!
//! Everything here is a pure function of facts the host gathered and the time it passes in,
//! so the server and the browser (which runs this module compiled to wasm) agree.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::catalogue::CatalogueEntry;
use crate::duplicate::ErrorSummary;
use crate::status::{CheckResult, human_bytes, human_duration};
use crate::time::utc_fields;
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

/// One file in `errors/`, with the reason it is there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorFileStatus {
    /// The name in `errors/`.
    pub file: String,
    /// The name it had in its queue.
    pub original: String,
    /// `duplicate`, `unknown`, `invalid`, `error` or another suffix.
    pub kind: String,
    /// When it was moved, `YYYYMMDDTHHMMSSZ`.
    pub moved_at: Option<String>,
    /// Bytes.
    pub size: u64,
    /// The reason the run that moved it recorded, else what the kind means.
    pub reason: String,
}

/// What an `errors/` suffix means and what to do about it.
pub fn explain_error_kind(kind: &str) -> &'static str {
    match kind {
        "duplicate" => {
            "a WAL with this name is already archived with different content; the archived copy was kept (compare them; a second cluster may archive to this server)"
        }
        "unknown" => "not a WAL file name, or not a regular file; it does not belong in the queue",
        "invalid" => {
            "a WAL name whose content is wrong (empty, wrong size, corrupt compression, or a page header that does not match the name); the log of the run that moved it says which"
        }
        "error" => "left by another tool; not relevant to archiving",
        _ => "unrecognised entry",
    }
}

/// The streaming archiver's state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReceiveWalStatus {
    /// A `receive-wal` process holds the server's lock.
    pub running: bool,
    /// Its process id, when known.
    pub pid: Option<u32>,
    /// The replication slot exists and a client streams from it.
    pub slot_active: Option<bool>,
    /// The slot's `restart_lsn`.
    pub slot_restart_lsn: Option<String>,
    /// The walsender's state (`streaming`, `catchup`, …), when PostgreSQL shows a receiver.
    pub sender_state: Option<String>,
    /// Bytes between PostgreSQL's current WAL position and what the receiver flushed.
    pub lag_bytes: Option<u64>,
    /// When PostgreSQL was last asked, seconds since the epoch.
    pub observed_at: Option<f64>,
    /// Why PostgreSQL's view is missing.
    pub problem: Option<String>,
}

/// The last `walvault check` run, as it recorded itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckRun {
    /// When it ran, seconds since the epoch.
    pub at: f64,
    /// All checks passed.
    pub ok: bool,
    /// Each check.
    pub checks: Vec<CheckResult>,
}

/// Healthy, warning or failing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Nothing needs attention.
    Healthy,
    /// Something needs a look; WAL is still being archived.
    Warning,
    /// Archiving is broken or the archive cannot be used for recovery as it is.
    Failing,
}

impl Health {
    /// `healthy`, `warning`, `failing`.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Warning => "warning",
            Health::Failing => "failing",
        }
    }
}

/// A health state with every reason for it, worst first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthVerdict {
    /// The worst state found.
    pub state: Health,
    /// Why, worst first; empty when healthy.
    pub reasons: Vec<String>,
}

/// Everything `/api/status` reports about one server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServerStatus {
    /// The server (its configuration section).
    pub server: String,
    /// Its description.
    pub description: Option<String>,
    /// Where its WAL is archived.
    pub archive: String,
    /// Compression for new WAL.
    pub compression: Option<String>,
    /// The segment size gaps are computed with, bytes.
    pub wal_segment_size: u64,
    /// `last_wal_maximum_age` in seconds, when configured.
    pub last_wal_maximum_age: Option<u64>,
    /// `max_incoming_wals_queue`, when configured.
    pub max_incoming_wals_queue: Option<u64>,
    /// Healthy, warning or failing, and why.
    pub health: HealthVerdict,
    /// The catalogue, summarised; `None` when it cannot be read.
    pub catalogue: Option<CatalogueSummary>,
    /// Why the catalogue cannot be read.
    pub catalogue_problem: Option<String>,
    /// Files waiting in `incoming/`.
    pub incoming_waiting: usize,
    /// Files waiting in `streaming/`.
    pub streaming_waiting: usize,
    /// `errors/` by kind.
    pub errors: ErrorSummary,
    /// `errors/`, newest first (at most [`MAX_ERROR_FILES`]).
    pub error_files: Vec<ErrorFileStatus>,
    /// The streaming archiver, when it is configured.
    pub receive_wal: Option<ReceiveWalStatus>,
    /// The last `walvault check`, when one was recorded.
    pub last_check: Option<CheckRun>,
    /// Why archiving is stalled, when a run has held the archive-wal lock without progress
    /// for too long (later runs then cannot archive).
    #[serde(default)]
    pub archive_wal_stalled: Option<String>,
}

/// At most this many `errors/` entries are listed in a status (the counts cover all).
pub const MAX_ERROR_FILES: usize = 200;

/// The `/api/status` document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusDocument {
    /// When it was computed, seconds since the epoch.
    pub generated_at: f64,
    /// walvault's version.
    pub version: String,
    /// Every configured server, by name.
    pub servers: Vec<ServerStatus>,
}

/// One `/api/wals` page.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WalPage {
    /// The server.
    pub server: String,
    /// Lines in the catalogue.
    pub total: usize,
    /// The lines after `after` in name order, at most `limit`.
    pub wals: Vec<CatalogueEntry>,
    /// Pass as `after` for the next page; `None` on the last page.
    pub next_after: Option<String>,
}

/// A page of catalogue lines in name order: those named after `after`, at most `limit`.
/// `sorted` must be sorted by name.
pub fn wal_page(
    server: &str,
    sorted: &[CatalogueEntry],
    after: Option<&str>,
    limit: usize,
) -> WalPage {
    let start = after.map_or(0, |a| sorted.partition_point(|e| e.name.as_str() <= a));
    let end = start.saturating_add(limit).min(sorted.len());
    let wals = sorted[start..end].to_vec();
    WalPage {
        server: server.to_owned(),
        total: sorted.len(),
        next_after: (end < sorted.len())
            .then(|| wals.last().map(|e| e.name.clone()))
            .flatten(),
        wals,
    }
}

/// The health of a server from its status (the `health` field is ignored).
pub fn assess(status: &ServerStatus, now: f64) -> HealthVerdict {
    let mut found: Vec<(Health, String)> = Vec::new();
    let mut add = |h, reason: String| found.push((h, reason));
    if let Some(problem) = &status.catalogue_problem {
        add(Health::Failing, format!("catalogue: {problem}"));
    }
    if let Some(run) = &status.last_check {
        for c in run.checks.iter().filter(|c| !c.ok) {
            add(
                Health::Failing,
                format!(
                    "check '{}' failed {}: {}",
                    c.name,
                    format_age(run.at, now),
                    c.hint.as_deref().unwrap_or("no detail")
                ),
            );
        }
    }
    if let Some(stalled) = &status.archive_wal_stalled {
        add(Health::Failing, stalled.clone());
    }
    if let Some(rw) = &status.receive_wal
        && !rw.running
    {
        add(Health::Failing, "receive-wal is not running".into());
    }
    if let Some(cat) = &status.catalogue {
        match (cat.last_archived_time, status.last_wal_maximum_age) {
            (Some(t), Some(max)) if now - t > max as f64 => add(
                Health::Failing,
                format!(
                    "the last WAL is {} old, over last_wal_maximum_age ({})",
                    human_duration((now - t) as u64),
                    human_duration(max)
                ),
            ),
            (None, _) => add(Health::Warning, "no WAL archived yet".into()),
            _ => {}
        }
        let missing = cat.missing_segments();
        if missing > 0 {
            add(
                Health::Failing,
                format!(
                    "{missing} segment(s) missing in {} gap(s): recovery cannot replay past the first",
                    cat.gap_count()
                ),
            );
        }
    }
    if status.errors.total() > 0 {
        add(
            Health::Warning,
            format!("errors/: {}", status.errors.hint()),
        );
    }
    if let Some(max) = status.max_incoming_wals_queue
        && status.incoming_waiting as u64 > max
    {
        add(
            Health::Warning,
            format!(
                "{} files waiting in incoming/, over max_incoming_wals_queue ({max})",
                status.incoming_waiting
            ),
        );
    }
    found.sort_by_key(|f| std::cmp::Reverse(f.0));
    HealthVerdict {
        state: found.first().map_or(Health::Healthy, |f| f.0),
        reasons: found.into_iter().map(|f| f.1).collect(),
    }
}

/// Escapes a Prometheus label value.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Metrics {
    text: String,
}

impl Metrics {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", label(v)))
            .collect();
        let value = if value.is_finite() {
            format!("{value}")
        } else if value.is_nan() {
            "NaN".into()
        } else if value > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
        if labels.is_empty() {
            let _ = writeln!(self.text, "{name} {value}");
        } else {
            let _ = writeln!(self.text, "{name}{{{}}} {value}", labels.join(","));
        }
    }
    /// One family with one sample per server (servers where `get` gives `None` are skipped).
    fn per_server(
        &mut self,
        doc: &StatusDocument,
        name: &str,
        help: &str,
        get: impl Fn(&ServerStatus) -> Option<f64>,
    ) {
        self.family(name, "gauge", help);
        for s in &doc.servers {
            if let Some(v) = get(s) {
                self.sample(name, &[("server", &s.server)], v);
            }
        }
    }
    /// One family with, per server, one sample per value of a second label `key` (`get` gives
    /// the label values and their samples; none for a server skips it).
    fn per_server_by(
        &mut self,
        doc: &StatusDocument,
        name: &str,
        help: &str,
        key: &str,
        get: impl Fn(&ServerStatus) -> Vec<(&'static str, f64)>,
    ) {
        self.family(name, "gauge", help);
        for s in &doc.servers {
            for (value, n) in get(s) {
                self.sample(name, &[("server", &s.server), (key, value)], n);
            }
        }
    }
}

/// Counters the server keeps about itself, rendered with the status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServeCounters {
    /// Requests answered, by route (`/api/status`, `/metrics`, …, `other`) and status code.
    pub requests: BTreeMap<(String, u16), u64>,
}

/// The Prometheus text exposition (format 0.0.4) of a status document.
pub fn render_metrics(doc: &StatusDocument, counters: &ServeCounters) -> String {
    let mut m = Metrics {
        text: String::new(),
    };
    m.family("walvault_info", "gauge", "walvault's version (always 1).");
    m.sample("walvault_info", &[("version", &doc.version)], 1.0);
    m.family(
        "walvault_http_requests_total",
        "counter",
        "HTTP requests answered by walvault serve, by route and status code.",
    );
    for ((route, code), n) in &counters.requests {
        m.sample(
            "walvault_http_requests_total",
            &[("route", route), ("code", &code.to_string())],
            *n as f64,
        );
    }
    m.per_server_by(
        doc,
        "walvault_health",
        "1 for the server's current health state (healthy, warning, failing), else 0.",
        "state",
        |s| {
            [Health::Healthy, Health::Warning, Health::Failing]
                .into_iter()
                .map(|h| (h.as_str(), if s.health.state == h { 1.0 } else { 0.0 }))
                .collect()
        },
    );
    fn cat(s: &ServerStatus) -> Option<&CatalogueSummary> {
        s.catalogue.as_ref()
    }
    m.per_server(
        doc,
        "walvault_catalogue_readable",
        "1 when the catalogue (<server>-xlog.db) can be read.",
        |s| Some(if s.catalogue.is_some() { 1.0 } else { 0.0 }),
    );
    m.per_server(
        doc,
        "walvault_catalogue_entries",
        "Lines in the catalogue.",
        |s| cat(s).map(|c| c.entries as f64),
    );
    m.per_server_by(
        doc,
        "walvault_archived_files",
        "Files in the catalogue by type (segment, partial, history, backup_label, other).",
        "type",
        |s| {
            cat(s).map_or_else(Vec::new, |c| {
                [
                    ("segment", c.segments),
                    ("partial", c.partials),
                    ("history", c.history_files),
                    ("backup_label", c.backup_labels),
                    ("other", c.other),
                ]
                .into_iter()
                .map(|(kind, n)| (kind, n as f64))
                .collect()
            })
        },
    );
    m.per_server(
        doc,
        "walvault_last_archived_timestamp_seconds",
        "WAL time of the newest archived segment.",
        |s| cat(s).and_then(|c| c.last_archived_time),
    );
    m.per_server(
        doc,
        "walvault_last_archived_age_seconds",
        "Seconds since the WAL time of the newest archived segment.",
        |s| {
            cat(s)
                .and_then(|c| c.last_archived_time)
                .map(|t| (doc.generated_at - t).max(0.0))
        },
    );
    m.per_server(
        doc,
        "walvault_archived_segments_last_hour",
        "Segments with a WAL time in the last hour.",
        |s| cat(s).map(|c| c.archived_last_hour as f64),
    );
    m.per_server(
        doc,
        "walvault_archived_segments_last_day",
        "Segments with a WAL time in the last 24 hours.",
        |s| cat(s).map(|c| c.archived_last_day as f64),
    );
    m.per_server(
        doc,
        "walvault_stored_bytes",
        "Bytes stored in the archive, as the catalogue records them.",
        |s| cat(s).map(|c| c.stored_bytes as f64),
    );
    m.per_server(
        doc,
        "walvault_original_bytes",
        "Uncompressed bytes of the archived segments.",
        |s| cat(s).map(|c| c.original_bytes as f64),
    );
    m.per_server(
        doc,
        "walvault_compression_ratio",
        "Uncompressed over stored bytes of the archived segments.",
        |s| cat(s).and_then(|c| c.compression_ratio),
    );
    m.per_server(
        doc,
        "walvault_timelines",
        "Timelines with archived segments.",
        |s| cat(s).map(|c| c.timelines.len() as f64),
    );
    m.per_server(
        doc,
        "walvault_gaps",
        "Runs of missing segments between the first and last archived segment of a timeline.",
        |s| cat(s).map(|c| c.gap_count() as f64),
    );
    m.per_server(
        doc,
        "walvault_missing_segments",
        "Segments missing in those gaps.",
        |s| cat(s).map(|c| c.missing_segments() as f64),
    );
    m.per_server_by(
        doc,
        "walvault_queue_files",
        "Files waiting to be archived, by queue (incoming, streaming).",
        "queue",
        |s| {
            vec![
                ("incoming", s.incoming_waiting as f64),
                ("streaming", s.streaming_waiting as f64),
            ]
        },
    );
    m.per_server_by(
        doc,
        "walvault_error_files",
        "Files in errors/ by kind (duplicate, unknown, invalid, not_relevant, other).",
        "kind",
        |s| {
            let e = &s.errors;
            [
                ("duplicate", e.duplicates),
                ("unknown", e.unknown),
                ("invalid", e.invalid),
                ("not_relevant", e.not_relevant),
                ("other", e.other),
            ]
            .into_iter()
            .map(|(kind, n)| (kind, n as f64))
            .collect()
        },
    );
    m.per_server(
        doc,
        "walvault_receive_wal_running",
        "1 when a receive-wal process holds the server's lock (streaming servers only).",
        |s| {
            s.receive_wal
                .as_ref()
                .map(|r| if r.running { 1.0 } else { 0.0 })
        },
    );
    m.per_server(
        doc,
        "walvault_receive_wal_lag_bytes",
        "Bytes between PostgreSQL's current WAL position and what pg_receivewal flushed.",
        |s| {
            s.receive_wal
                .as_ref()
                .and_then(|r| r.lag_bytes)
                .map(|b| b as f64)
        },
    );
    m.per_server(
        doc,
        "walvault_check_ok",
        "1 when every check of the last recorded 'walvault check' passed.",
        |s| s.last_check.as_ref().map(|c| if c.ok { 1.0 } else { 0.0 }),
    );
    m.per_server(
        doc,
        "walvault_check_timestamp_seconds",
        "When the last 'walvault check' ran.",
        |s| s.last_check.as_ref().map(|c| c.at),
    );
    m.text
}

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

#[cfg(test)]
mod tests {
    use super::*;

    const MB16: u64 = 16 << 20;

    fn entry(name: &str, size: u64, time: f64, compression: Option<&str>) -> CatalogueEntry {
        CatalogueEntry {
            name: name.into(),
            size,
            time,
            compression: compression.map(Into::into),
            encryption: None,
        }
    }

    fn seg(tli: u32, log: u32, seg: u32) -> String {
        Segment::new(tli, log, seg).to_string()
    }

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
        ServerStatus {
            server: "pg \"main\"".into(),
            description: None,
            archive: "/var/lib/walvault/pg/wals".into(),
            compression: Some("zstd".into()),
            wal_segment_size: MB16,
            last_wal_maximum_age: Some(3600),
            max_incoming_wals_queue: Some(10),
            health: HealthVerdict {
                state: Health::Healthy,
                reasons: vec![],
            },
            catalogue: Some(summarise_catalogue(
                &[entry(&seg(1, 0, 1), 100, 1000.0, Some("zstd"))],
                SegmentSize::default(),
                1000.0,
            )),
            catalogue_problem: None,
            incoming_waiting: 0,
            streaming_waiting: 0,
            errors: ErrorSummary::default(),
            error_files: vec![],
            receive_wal: None,
            last_check: None,
            archive_wal_stalled: None,
        }
    }

    #[test]
    fn a_stalled_archive_wal_is_failing() {
        let mut s = status();
        s.archive_wal_stalled = Some("archive-wal (pid 7) has held the lock for 20 min".into());
        let v = assess(&s, 1000.0);
        assert_eq!(v.state, Health::Failing);
        assert_eq!(
            v.reasons,
            ["archive-wal (pid 7) has held the lock for 20 min"]
        );
    }

    #[test]
    fn health_verdicts() {
        let mut s = status();
        assert_eq!(
            assess(&s, 1000.0),
            HealthVerdict {
                state: Health::Healthy,
                reasons: vec![]
            }
        );
        s.errors.duplicates = 1;
        s.incoming_waiting = 11;
        let v = assess(&s, 1000.0);
        assert_eq!(v.state, Health::Warning);
        assert_eq!(
            v.reasons,
            vec![
                "errors/: duplicates: 1".to_owned(),
                "11 files waiting in incoming/, over max_incoming_wals_queue (10)".to_owned()
            ]
        );
        let v = assess(&s, 1000.0 + 7200.0);
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
        let v = assess(&s, 1000.0);
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
        let v = assess(&gap, 1000.0);
        assert_eq!(v.state, Health::Failing);
        assert_eq!(
            v.reasons,
            vec![
                "2 segment(s) missing in 1 gap(s): recovery cannot replay past the first"
                    .to_owned()
            ]
        );
        gap.catalogue = Some(summarise_catalogue(&[], SegmentSize::default(), 1000.0));
        assert_eq!(assess(&gap, 1000.0).state, Health::Warning);
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
    fn metrics_text() {
        let mut s = status();
        s.health = assess(&s, 1000.0);
        s.errors.duplicates = 2;
        s.receive_wal = Some(ReceiveWalStatus {
            running: true,
            lag_bytes: Some(8192),
            ..Default::default()
        });
        let doc = StatusDocument {
            generated_at: 1060.0,
            version: "0.1.0".into(),
            servers: vec![s],
        };
        let mut counters = ServeCounters::default();
        counters.requests.insert(("/metrics".into(), 200), 3);
        let text = render_metrics(&doc, &counters);
        for line in [
            "# TYPE walvault_http_requests_total counter",
            "walvault_http_requests_total{route=\"/metrics\",code=\"200\"} 3",
            "walvault_health{server=\"pg \\\"main\\\"\",state=\"healthy\"} 1",
            "walvault_last_archived_age_seconds{server=\"pg \\\"main\\\"\"} 60",
            "walvault_error_files{server=\"pg \\\"main\\\"\",kind=\"duplicate\"} 2",
            "walvault_receive_wal_lag_bytes{server=\"pg \\\"main\\\"\"} 8192",
            "walvault_compression_ratio{server=\"pg \\\"main\\\"\"} 167772.16",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(!text.contains("walvault_check_ok{"), "no check recorded");
        // Every sample line is `name{labels} value` with a finite or special value.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let value = l.rsplit(' ').next().expect("a value");
            assert!(value.parse::<f64>().is_ok(), "{l}");
        }
    }

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
        assert!(explain_error_kind("duplicate").contains("archived copy was kept"));
        assert_eq!(explain_error_kind("whatever"), "unrecognised entry");
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
}
