//! The `/api/status` document, `/api/wals` pages and the health verdict.

use serde::{Deserialize, Serialize};

use super::catalogue::CatalogueSummary;
use crate::catalogue::CatalogueEntry;
use crate::duplicate::ErrorSummary;
use crate::status::{CheckResult, human_duration};
use crate::verify::archive::VerifySummary;

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
    /// The last `walvault verify`, when one was recorded.
    #[serde(default)]
    pub last_verify: Option<VerifySummary>,
    /// Segments `archive_queue_max` acknowledged without archiving (known gaps), oldest first
    /// (at most [`MAX_ERROR_FILES`]; `dropped_total` counts all).
    #[serde(default)]
    pub dropped: Vec<crate::queue_limit::DroppedSegment>,
    /// How many segments were dropped.
    #[serde(default)]
    pub dropped_total: usize,
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

/// What a server's health is judged from: the facts of its status, gathered by the host.
#[derive(Clone, Copy, Debug)]
pub struct HealthFacts<'a> {
    /// Why the catalogue cannot be read.
    pub catalogue_problem: Option<&'a str>,
    /// The catalogue, summarised.
    pub catalogue: Option<&'a CatalogueSummary>,
    /// The last recorded `walvault check`.
    pub last_check: Option<&'a CheckRun>,
    /// The last recorded `walvault verify`.
    pub last_verify: Option<&'a VerifySummary>,
    /// Segments dropped by `archive_queue_max`.
    pub dropped: &'a [crate::queue_limit::DroppedSegment],
    /// Why archiving is stalled (a lock held without progress).
    pub archive_wal_stalled: Option<&'a str>,
    /// The streaming archiver, when configured.
    pub receive_wal: Option<&'a ReceiveWalStatus>,
    /// `last_wal_maximum_age` in seconds.
    pub last_wal_maximum_age: Option<u64>,
    /// `errors/` by kind.
    pub errors: &'a ErrorSummary,
    /// `max_incoming_wals_queue`.
    pub max_incoming_wals_queue: Option<u64>,
    /// Files waiting in `incoming/`.
    pub incoming_waiting: usize,
}

impl ServerStatus {
    /// The facts of this status that its health is judged from.
    pub fn health_facts(&self) -> HealthFacts<'_> {
        HealthFacts {
            catalogue_problem: self.catalogue_problem.as_deref(),
            catalogue: self.catalogue.as_ref(),
            last_check: self.last_check.as_ref(),
            last_verify: self.last_verify.as_ref(),
            dropped: &self.dropped,
            archive_wal_stalled: self.archive_wal_stalled.as_deref(),
            receive_wal: self.receive_wal.as_ref(),
            last_wal_maximum_age: self.last_wal_maximum_age,
            errors: &self.errors,
            max_incoming_wals_queue: self.max_incoming_wals_queue,
            incoming_waiting: self.incoming_waiting,
        }
    }
}

/// A server's health from the facts of its status: the worst state found, with every reason.
pub fn assess(facts: &HealthFacts<'_>, now: f64) -> HealthVerdict {
    let mut found: Vec<(Health, String)> = Vec::new();
    let mut add = |h, reason: String| found.push((h, reason));
    if let Some(problem) = facts.catalogue_problem {
        add(Health::Failing, format!("catalogue: {problem}"));
    }
    if let Some(run) = facts.last_check {
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
    if let Some(run) = facts.last_verify {
        if let Some(first) = run.failures.first() {
            add(
                Health::Failing,
                format!(
                    "verify found {} error(s) {}, first: {first}",
                    run.errors,
                    format_age(run.at, now)
                ),
            );
        }
        if let Some(range) = run.lost_ranges.first() {
            let first = if range.first == range.last {
                range.first.clone()
            } else {
                format!("{} to {}", range.first, range.last)
            };
            add(
                Health::Failing,
                format!(
                    "verify found {} segment(s) lost {}, first: {first}",
                    run.lost,
                    format_age(run.at, now),
                ),
            );
        }
    }
    if let Some(text) = crate::queue_limit::describe_dropped(facts.dropped) {
        add(Health::Failing, text);
    }
    if let Some(stalled) = facts.archive_wal_stalled {
        add(Health::Failing, stalled.to_owned());
    }
    if let Some(rw) = facts.receive_wal
        && !rw.running
    {
        add(Health::Failing, "receive-wal is not running".into());
    }
    if let Some(cat) = facts.catalogue {
        match (cat.last_archived_time, facts.last_wal_maximum_age) {
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
    if facts.errors.total() > 0 {
        add(Health::Warning, format!("errors/: {}", facts.errors.hint()));
    }
    if let Some(max) = facts.max_incoming_wals_queue
        && facts.incoming_waiting as u64 > max
    {
        add(
            Health::Warning,
            format!(
                "{} files waiting in incoming/, over max_incoming_wals_queue ({max})",
                facts.incoming_waiting
            ),
        );
    }
    found.sort_by_key(|f| std::cmp::Reverse(f.0));
    HealthVerdict {
        state: found.first().map_or(Health::Healthy, |f| f.0),
        reasons: found.into_iter().map(|f| f.1).collect(),
    }
}

/// A catalogue line for tests: `name`, stored `size`, source `time`, `compression`.
#[cfg(any(test, feature = "testing"))]
pub fn sample_entry(name: &str, size: u64, time: f64, compression: Option<&str>) -> CatalogueEntry {
    CatalogueEntry {
        name: name.into(),
        size,
        time,
        compression: compression.map(Into::into),
        encryption: None,
    }
}

/// The name of segment `seg` of log `log` on timeline `tli` (16 MiB segments), for tests.
#[cfg(any(test, feature = "testing"))]
pub fn sample_segment(tli: u32, log: u32, seg: u32) -> String {
    crate::wal::Segment::new(tli, log, seg).to_string()
}

/// A server's status as a healthy local archive with one zstd segment reports it (at time
/// 1000), for tests of what is built on the status document (here, in `serve`, the
/// dashboard).
#[cfg(any(test, feature = "testing"))]
pub fn sample_status() -> ServerStatus {
    let entry = sample_entry("000000010000000000000001", 100, 1000.0, Some("zstd"));
    ServerStatus {
        server: "pg \"main\"".into(),
        description: None,
        archive: "/var/lib/walvault/pg/wals".into(),
        compression: Some("zstd".into()),
        wal_segment_size: 16 << 20,
        last_wal_maximum_age: Some(3600),
        max_incoming_wals_queue: Some(10),
        health: HealthVerdict {
            state: Health::Healthy,
            reasons: vec![],
        },
        catalogue: Some(super::catalogue::summarise_catalogue(
            &[entry],
            crate::wal::SegmentSize::default(),
            1000.0,
        )),
        catalogue_problem: None,
        incoming_waiting: 0,
        streaming_waiting: 0,
        errors: ErrorSummary::default(),
        error_files: vec![],
        receive_wal: None,
        last_check: None,
        last_verify: None,
        dropped: vec![],
        dropped_total: 0,
        archive_wal_stalled: None,
    }
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
