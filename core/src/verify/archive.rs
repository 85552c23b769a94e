//! Verifying a whole archive: which files to read and in which order ([`plan`]), how the
//! per-file summaries join into one stream per timeline and across timeline switches, and
//! what is missing and why ([`ArchiveVerifier`]).
//!
//! Sans-IO like the rest of the verifier: the host lists the store, parses the history files,
//! reads and decodes each planned file into a [`SegmentVerifier`](super::SegmentVerifier)
//! (in parallel), hands the summaries over in any order, and finally says what it knows about
//! the WAL that is not in the archive ([`Whereabouts`]). Memory stays bounded: summaries are
//! joined as they arrive in order; only those a timeline switch needs are kept.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{Finding, RecordStats, SegmentSummary, Severity, StreamReport, StreamVerifier};
use crate::layout::StoredWal;
use crate::wal::{HistoryEntry, Lsn, Segment, SegmentSize, TimelineId, WalFileName};

/// A file to verify.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedFile {
    /// Where it is stored.
    pub stored: StoredWal,
    /// Its segment.
    pub segment: Segment,
    /// Whether it is a `.partial`.
    pub partial: bool,
}

/// What [`plan`] decided: the files in verification order (timeline, then segment), the
/// history files to read first, and what the listing alone shows to be wrong.
#[derive(Clone, Debug)]
pub struct VerifyPlan {
    /// The cluster's segment size.
    pub size: SegmentSize,
    /// Segments and `.partial` files to verify, in order.
    pub files: Vec<PlannedFile>,
    /// History files, by timeline.
    pub histories: Vec<StoredWal>,
    /// Found in the listing: a name stored under several keys.
    pub findings: Vec<ArchiveFinding>,
}

/// Plans the verification of an archive from its listing. `from` skips segments before it
/// (on any timeline); a `.partial` is verified only when its complete segment is not stored
/// (a promoted server's last segment of the old timeline, or the streamed file in progress).
pub fn plan(listing: Vec<StoredWal>, size: SegmentSize, from: Option<Segment>) -> VerifyPlan {
    let mut by_name: BTreeMap<String, Vec<StoredWal>> = BTreeMap::new();
    for stored in listing {
        by_name
            .entry(stored.name.to_string())
            .or_default()
            .push(stored);
    }
    let mut findings = Vec::new();
    let mut files = Vec::new();
    let mut histories = Vec::new();
    let complete: BTreeSet<Segment> = by_name
        .values()
        .map(|copies| copies[0].name)
        .filter(WalFileName::is_segment)
        .filter_map(|n| n.segment())
        .collect();
    let from_segno = from.map(|f| f.segno(size));
    for (name, mut copies) in by_name {
        copies.sort_by(|a, b| a.key.cmp(&b.key));
        let name_text = name;
        let name = copies[0].name;
        if copies.len() > 1 {
            findings.push(ArchiveFinding {
                file: name_text,
                offset: None,
                lsn: None,
                severity: Severity::Warning,
                message: format!(
                    "stored under {} keys ({}): get-wal serves it only while their contents \
                     agree; the first is verified",
                    copies.len(),
                    copies
                        .iter()
                        .map(|c| c.key.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        let stored = copies.swap_remove(0);
        match name {
            WalFileName::History(_) => histories.push(stored),
            WalFileName::Segment(segment) | WalFileName::Partial(segment) => {
                let partial = name.is_partial();
                if partial && complete.contains(&segment) {
                    continue;
                }
                if from_segno.is_some_and(|f| segment.segno(size) < f) {
                    continue;
                }
                files.push(PlannedFile {
                    stored,
                    segment,
                    partial,
                });
            }
            WalFileName::BackupLabel { .. } => {}
        }
    }
    files.sort_by_key(|f| (f.segment.timeline, f.segment.segno(size), f.partial));
    VerifyPlan {
        size,
        files,
        histories,
        findings,
    }
}

/// A problem in the archive, found in a file (with its offset and LSN when known) or in how
/// files relate (a timeline switch, a history file).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveFinding {
    /// The file name (a segment, `.partial` or history file).
    pub file: String,
    /// Byte offset in the decompressed file.
    pub offset: Option<u64>,
    /// The WAL position.
    pub lsn: Option<Lsn>,
    /// How bad.
    pub severity: Severity,
    /// What is wrong.
    pub message: String,
}

impl ArchiveFinding {
    fn from_finding(f: &Finding, partial: bool) -> Self {
        let file = if partial {
            WalFileName::Partial(f.segment).to_string()
        } else {
            f.segment.to_string()
        };
        ArchiveFinding {
            file,
            offset: Some(f.offset),
            lsn: Some(f.lsn),
            severity: f.severity(),
            message: f.kind.to_string(),
        }
    }

    fn error(file: String, message: String) -> Self {
        ArchiveFinding {
            file,
            offset: None,
            lsn: None,
            severity: Severity::Error,
            message,
        }
    }
}

impl std::fmt::Display for ArchiveFinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(offset) = self.offset {
            write!(f, " offset {offset}")?;
        }
        if let Some(lsn) = self.lsn {
            write!(f, " (LSN {lsn})")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// What the host knows about WAL that is not in the archive, to tell a delayed segment from a
/// lost one.
#[derive(Clone, Debug, Default)]
pub struct Whereabouts {
    /// Names waiting in walvault's `incoming/` and `streaming/` (a `.partial` counts for its
    /// segment).
    pub queued: BTreeSet<Segment>,
    /// Segments with a `.ready` file in PostgreSQL's `archive_status/`; `None` when the data
    /// directory could not be read.
    pub ready: Option<BTreeSet<Segment>>,
    /// The server's current timeline and WAL write position, when it could be asked.
    pub server: Option<(TimelineId, Lsn)>,
    /// When each archived WAL was archived (its catalogue time), to bound a lost range in
    /// time.
    pub archived_at: BTreeMap<Segment, f64>,
    /// Segments `archive_queue_max` acknowledged without archiving (`meta/dropped.jsonl`).
    pub dropped: BTreeSet<Segment>,
}

/// Why a segment is missing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MissingClass {
    /// Waiting in walvault's queues (`incoming/`, `streaming/`): archived at the next run.
    Queued,
    /// PostgreSQL has it `.ready` to archive: its `archive_command` has not succeeded yet.
    Ready,
    /// After the last archived segment and before the server's current one, with no way to
    /// look into `archive_status/`: most likely on its way, but unconfirmed.
    Unconfirmed,
    /// Acknowledged without archiving by `archive_queue_max`, on record: a known gap, which a
    /// recovery cannot cross either.
    Dropped,
    /// Nowhere: not archived, not queued, not waiting in PostgreSQL. A recovery cannot cross
    /// it.
    Lost,
}

impl MissingClass {
    /// A recovery could still get past it once archiving catches up.
    pub fn is_delayed(self) -> bool {
        !matches!(self, MissingClass::Lost | MissingClass::Dropped)
    }
}

/// A run of consecutive missing segments of one class.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MissingRange {
    /// The timeline.
    pub timeline: u32,
    /// The first missing segment.
    pub first: String,
    /// The last missing segment.
    pub last: String,
    /// How many.
    pub count: u64,
    /// The WAL a recovery could not replay: from the first segment's start...
    pub start_lsn: Lsn,
    /// ...to the last segment's end.
    pub end_lsn: Lsn,
    /// Why it is missing.
    pub class: MissingClass,
    /// When the archived segment just before the range was archived (the gap's time window
    /// starts about then).
    pub after_time: Option<f64>,
    /// When the archived segment just after it was archived.
    pub before_time: Option<f64>,
}

/// One timeline as the archive holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineReport {
    /// The timeline.
    pub timeline: u32,
    /// The timeline it branched from, per its history file.
    pub parent: Option<u32>,
    /// Where it branched, per its history file.
    pub switch_point: Option<Lsn>,
    /// The first file verified.
    pub first: String,
    /// The last file verified.
    pub last: String,
    /// Files verified.
    pub files: u64,
    /// Records verified, per resource manager.
    pub stats: RecordStats,
    /// The last record verified.
    pub last_record: Option<Lsn>,
}

/// How far the archive is proven replayable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifiedUpTo {
    /// The timeline.
    pub timeline: u32,
    /// The last file of the unbroken, clean run from the newest timeline's first file.
    pub file: String,
    /// Its last record.
    pub lsn: Option<Lsn>,
}

/// The verdict on an archive (`walvault verify`, `meta/last-verify.json`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// The server.
    pub server: String,
    /// When the run started (Unix seconds).
    pub started_at: f64,
    /// When it finished.
    pub finished_at: f64,
    /// The first segment asked for (`--from`), if any.
    pub from: Option<String>,
    /// Files verified (segments and `.partial` files).
    pub files: u64,
    /// Decompressed bytes read.
    pub bytes: u64,
    /// Records verified, per resource manager.
    pub stats: RecordStats,
    /// The timelines, oldest first.
    pub timelines: Vec<TimelineReport>,
    /// Problems, in WAL order.
    pub findings: Vec<ArchiveFinding>,
    /// Missing segments, by range.
    pub missing: Vec<MissingRange>,
    /// How far the newest timeline is proven replayable from its first file.
    pub verified_up_to: Option<VerifiedUpTo>,
}

impl VerifyReport {
    /// Errors found (corrupt, foreign, misnamed or unreadable files, broken chains, history
    /// files that do not match).
    pub fn errors(&self) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .count()
    }

    /// Segments lost: missing and nowhere on their way.
    pub fn lost(&self) -> u64 {
        self.missing_where(|c| c == MissingClass::Lost)
    }

    /// Segments dropped by `archive_queue_max` (known gaps).
    pub fn dropped(&self) -> u64 {
        self.missing_where(|c| c == MissingClass::Dropped)
    }

    /// Segments missing but on their way.
    pub fn delayed(&self) -> u64 {
        self.missing_where(MissingClass::is_delayed)
    }

    /// Missing segments whose class passes `keep`.
    fn missing_where(&self, keep: impl Fn(MissingClass) -> bool) -> u64 {
        self.missing
            .iter()
            .filter(|m| keep(m.class))
            .map(|m| m.count)
            .sum()
    }

    /// No error, nothing lost and nothing dropped (delayed segments are not a problem of the
    /// archive; dropped ones are known, but a recovery cannot cross them).
    pub fn is_clean(&self) -> bool {
        self.errors() == 0 && self.lost() == 0 && self.dropped() == 0
    }
}

/// At most this many failures and lost ranges are kept in a [`VerifySummary`] (the counts
/// cover all).
pub const MAX_SUMMARY_ITEMS: usize = 20;

/// The last `walvault verify` of a server, as `serve` shows it (`/api/status`, the dashboard,
/// `/metrics`) and judges health by.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VerifySummary {
    /// When the run finished (Unix seconds).
    pub at: f64,
    /// How long it took, in seconds.
    pub seconds: f64,
    /// Files verified.
    pub files: u64,
    /// Records verified.
    pub records: u64,
    /// Decoded bytes read.
    pub bytes: u64,
    /// Errors found.
    pub errors: usize,
    /// Segments lost.
    pub lost: u64,
    /// Segments missing but on their way.
    pub delayed: u64,
    /// Segments dropped by `archive_queue_max`.
    #[serde(default)]
    pub dropped: u64,
    /// How far the archive is proven replayable.
    pub verified_up_to: Option<VerifiedUpTo>,
    /// The first errors, in WAL order.
    pub failures: Vec<ArchiveFinding>,
    /// The first lost ranges.
    pub lost_ranges: Vec<MissingRange>,
}

impl VerifySummary {
    /// No error, nothing lost, nothing dropped.
    pub fn is_clean(&self) -> bool {
        self.errors == 0 && self.lost == 0 && self.dropped == 0
    }
}

impl VerifyReport {
    /// The summary `serve` keeps of this run.
    pub fn summary(&self) -> VerifySummary {
        VerifySummary {
            at: self.finished_at,
            seconds: (self.finished_at - self.started_at).max(0.0),
            files: self.files,
            records: self.stats.records,
            bytes: self.bytes,
            errors: self.errors(),
            lost: self.lost(),
            delayed: self.delayed(),
            dropped: self.dropped(),
            verified_up_to: self.verified_up_to.clone(),
            failures: self
                .findings
                .iter()
                .filter(|f| f.severity == Severity::Error)
                .take(MAX_SUMMARY_ITEMS)
                .cloned()
                .collect(),
            lost_ranges: self
                .missing
                .iter()
                .filter(|m| m.class == MissingClass::Lost)
                .take(MAX_SUMMARY_ITEMS)
                .cloned()
                .collect(),
        }
    }
}

/// What a planned file turned out to be.
#[derive(Clone, Debug)]
pub enum FileResult {
    /// Read, decoded and verified.
    Verified(Box<SegmentSummary>),
    /// Could not be read or decoded (the error).
    Unreadable(String),
}

/// The state of the timeline whose files are being joined.
#[derive(Debug)]
struct Current {
    timeline: TimelineId,
    stream: StreamVerifier,
    first: Segment,
    first_partial: bool,
    last: Segment,
    last_partial: bool,
    files: u64,
    /// The run from the first file is still unbroken and clean.
    intact: bool,
    up_to: Option<(Segment, bool, Option<Lsn>)>,
}

/// A timeline whose files are all joined.
#[derive(Debug)]
struct Closed {
    report: TimelineReport,
    up_to: Option<(Segment, bool, Option<Lsn>)>,
    intact: bool,
}

/// A timeline's switch as its history file tells it.
#[derive(Clone, Copy, Debug)]
struct Switch {
    parent: TimelineId,
    point: Lsn,
}

/// Joins the planned files' results, in plan order, into the [`VerifyReport`].
#[derive(Debug)]
pub struct ArchiveVerifier {
    server: String,
    size: SegmentSize,
    from: Option<Segment>,
    files: Vec<(Segment, bool)>,
    pending: BTreeMap<usize, FileResult>,
    next: usize,
    bytes: u64,
    stats: RecordStats,
    findings: Vec<ArchiveFinding>,
    gaps: Vec<(TimelineId, u64, u64)>,
    switches: BTreeMap<TimelineId, Switch>,
    history_problems: Vec<ArchiveFinding>,
    /// Summaries a timeline switch needs: the parent's segment before the switch point and the
    /// child's first.
    wanted: BTreeSet<Segment>,
    kept: BTreeMap<Segment, SegmentSummary>,
    timelines: Vec<Closed>,
    /// Timelines whose start does not follow from their parent (history file, switch).
    broken_switch: BTreeSet<u32>,
    current: Option<Current>,
}

impl ArchiveVerifier {
    /// Starts the join for `plan`, with the history files already read: each timeline's parsed
    /// entries, or why it could not be read or parsed.
    pub fn new(
        server: &str,
        plan: &VerifyPlan,
        from: Option<Segment>,
        histories: Vec<(TimelineId, Result<Vec<HistoryEntry>, String>)>,
    ) -> Self {
        let mut switches = BTreeMap::new();
        let mut history_problems = Vec::new();
        let mut wanted = BTreeSet::new();
        let mut broken_switch = BTreeSet::new();
        for (timeline, parsed) in histories {
            let file = WalFileName::History(timeline).to_string();
            if !matches!(&parsed, Ok(entries) if entries.last().is_some_and(|l| l.parent < timeline))
            {
                broken_switch.insert(timeline.0);
            }
            match parsed {
                Err(e) => history_problems.push(ArchiveFinding::error(file, e)),
                Ok(entries) => match entries.last() {
                    None => history_problems.push(ArchiveFinding::error(
                        file,
                        "no entries: the switch point of the timeline is unknown".into(),
                    )),
                    Some(last) if last.parent >= timeline => {
                        history_problems.push(ArchiveFinding::error(
                            file,
                            format!(
                                "names timeline {} as its parent, not an earlier one",
                                last.parent
                            ),
                        ));
                    }
                    Some(last) => {
                        let (at, _) = Segment::from_lsn(timeline, last.switch_point, plan.size);
                        wanted.insert(at);
                        let before = Segment {
                            timeline: last.parent,
                            ..at
                        };
                        if let Some(p) = before.prev(plan.size) {
                            wanted.insert(p);
                        }
                        switches.insert(
                            timeline,
                            Switch {
                                parent: last.parent,
                                point: last.switch_point,
                            },
                        );
                    }
                },
            }
        }
        ArchiveVerifier {
            server: server.to_owned(),
            size: plan.size,
            from,
            files: plan.files.iter().map(|f| (f.segment, f.partial)).collect(),
            pending: BTreeMap::new(),
            next: 0,
            bytes: 0,
            stats: RecordStats::default(),
            findings: plan.findings.clone(),
            gaps: Vec::new(),
            switches,
            history_problems,
            wanted,
            kept: BTreeMap::new(),
            timelines: Vec::new(),
            broken_switch,
            current: None,
        }
    }

    /// The result of planned file `index`, in any order.
    pub fn push(&mut self, index: usize, result: FileResult) {
        self.pending.insert(index, result);
        while let Some(result) = self.pending.remove(&self.next) {
            let (segment, partial) = self.files[self.next];
            self.next += 1;
            self.join(segment, partial, result);
        }
    }

    /// Files whose results are waiting for an earlier one.
    pub fn waiting(&self) -> usize {
        self.pending.len()
    }

    fn join(&mut self, segment: Segment, partial: bool, result: FileResult) {
        let size = self.size;
        if self
            .current
            .as_ref()
            .is_some_and(|c| c.timeline != segment.timeline)
        {
            self.close_timeline();
        }
        let current = self.current.get_or_insert_with(|| Current {
            timeline: segment.timeline,
            stream: StreamVerifier::new(),
            first: segment,
            first_partial: partial,
            last: segment,
            last_partial: partial,
            files: 0,
            intact: true,
            up_to: None,
        });
        if current.files > 0 {
            let (prev, now) = (current.last.segno(size), segment.segno(size));
            if now > prev + 1 {
                self.gaps.push((segment.timeline, prev + 1, now - 1));
                current.stream.gap();
                current.intact = false;
            } else if current.last_partial {
                // A .partial is the end of what was written on this timeline; anything after
                // it cannot follow it.
                current.stream.gap();
                current.intact = false;
            }
        }
        current.files += 1;
        current.last = segment;
        current.last_partial = partial;
        match result {
            FileResult::Unreadable(error) => {
                let file = if partial {
                    WalFileName::Partial(segment)
                } else {
                    WalFileName::Segment(segment)
                };
                self.findings.push(ArchiveFinding::error(
                    file.to_string(),
                    format!("cannot be read: {error}"),
                ));
                current.stream.gap();
                current.intact = false;
            }
            FileResult::Verified(summary) => {
                self.bytes += summary.bytes;
                current.stream.push(&summary);
                if current.intact && summary.is_clean() {
                    current.up_to = Some((
                        segment,
                        partial,
                        summary.last_complete_record.or(summary.last_record),
                    ));
                } else {
                    current.intact = false;
                }
                // A timeline's first file is kept too: where its pages change timeline is
                // where it began, whatever its history file says.
                if (self.wanted.contains(&segment) || current.files == 1) && !partial {
                    self.kept.insert(segment, *summary);
                }
            }
        }
    }

    fn close_timeline(&mut self) {
        let Some(current) = self.current.take() else {
            return;
        };
        let report: StreamReport = current.stream.finish();
        let partial_of = |f: &Finding| f.segment == current.last && current.last_partial;
        self.findings.extend(
            report
                .findings
                .iter()
                .map(|f| ArchiveFinding::from_finding(f, partial_of(f))),
        );
        self.stats.merge(&report.stats);
        let switch = self.switches.get(&current.timeline).copied();
        let name = |s: Segment, partial: bool| {
            if partial {
                WalFileName::Partial(s).to_string()
            } else {
                s.to_string()
            }
        };
        self.timelines.push(Closed {
            report: TimelineReport {
                timeline: current.timeline.0,
                parent: switch.map(|s| s.parent.0),
                switch_point: switch.map(|s| s.point),
                first: name(current.first, current.first_partial),
                last: name(current.last, current.last_partial),
                files: current.files,
                stats: report.stats,
                last_record: report.last_record,
            },
            up_to: current.up_to,
            intact: current.intact,
        });
    }

    /// Checks each timeline against its history, classifies what is missing with what the
    /// host knows, and returns the report. `started_at` and `finished_at` are the host's clock.
    pub fn finish(
        mut self,
        whereabouts: &Whereabouts,
        started_at: f64,
        finished_at: f64,
    ) -> VerifyReport {
        self.close_timeline();
        let size = self.size;
        let mut findings = std::mem::take(&mut self.history_problems);
        findings.append(&mut self.findings);
        let firsts: BTreeMap<u32, (u64, u64)> = self
            .timelines
            .iter()
            .map(|c| &c.report)
            .filter_map(|t| {
                let first: WalFileName = t.first.parse().ok()?;
                let last: WalFileName = t.last.parse().ok()?;
                Some((
                    t.timeline,
                    (first.segment()?.segno(size), last.segment()?.segno(size)),
                ))
            })
            .collect();
        let mut gaps = std::mem::take(&mut self.gaps);
        for (timeline, &(first, _)) in &firsts {
            let timeline = TimelineId(*timeline);
            if timeline.0 > 1 && !self.switches.contains_key(&timeline) {
                self.broken_switch.insert(timeline.0);
                let file = WalFileName::History(timeline).to_string();
                if !findings.iter().any(|f| f.file == file) {
                    findings.push(ArchiveFinding::error(
                        file,
                        format!(
                            "missing: recovery cannot follow the switch to timeline {timeline}"
                        ),
                    ));
                }
            }
            let Some(switch) = self.switches.get(&timeline).copied() else {
                continue;
            };
            let (at, offset) = Segment::from_lsn(timeline, switch.point, size);
            let at_segno = at.segno(size);
            let history = WalFileName::History(timeline).to_string();
            if first < at_segno && self.from.is_none_or(|f| f.segno(size) <= first) {
                self.broken_switch.insert(timeline.0);
                findings.push(ArchiveFinding::error(
                    history.clone(),
                    format!(
                        "says timeline {timeline} began at {} (in {at}), but the archive holds \
                         earlier segments of it",
                        switch.point
                    ),
                ));
            } else if first > at_segno && self.from.is_none_or(|f| f.segno(size) <= at_segno) {
                // The first file's pages start on another timeline: the switch was there, and
                // the history file is wrong; else segments are missing at the start.
                let per_log = u64::from(size.max_seg()) + 1;
                let first_segment = Segment {
                    timeline,
                    log: (first / per_log) as u32,
                    seg: (first % per_log) as u32,
                };
                match self.kept.get(&first_segment).and_then(|s| s.first_page_tli) {
                    Some(page_tli) if page_tli != timeline.0 => {
                        self.broken_switch.insert(timeline.0);
                        findings.push(ArchiveFinding::error(
                            history.clone(),
                            format!(
                                "says timeline {timeline} began at {}, but {first_segment} is \
                                 where its pages switch from timeline {page_tli}",
                                switch.point
                            ),
                        ));
                    }
                    _ => gaps.push((timeline, at_segno, first - 1)),
                }
            }
            // The parent's segments must reach the switch point.
            if let Some(&(p_first, p_last)) = firsts.get(&switch.parent.0)
                && p_first < at_segno
                && p_last + 1 < at_segno
            {
                gaps.push((switch.parent, p_last + 1, at_segno - 1));
            }
            // The child's first segment: the pages before the switch point were copied from
            // the parent and carry its timeline.
            if let Some(child) = self.kept.get(&at) {
                if offset > 0
                    && child.first_page_tli.is_some_and(|t| t != switch.parent.0)
                    && child.first_page_tli != Some(timeline.0)
                {
                    self.broken_switch.insert(timeline.0);
                    findings.push(ArchiveFinding::error(
                        history.clone(),
                        format!(
                            "says timeline {timeline} branched from {} at {}, but the pages of \
                             {at} before that point carry timeline {}",
                            switch.parent,
                            switch.point,
                            child.first_page_tli.unwrap_or(0)
                        ),
                    ));
                }
                // The record chain goes on across the switch.
                let before = Segment {
                    timeline: switch.parent,
                    ..at
                }
                .prev(size);
                if let Some(parent) = before.and_then(|b| self.kept.get(&b))
                    && parent.is_clean()
                    && child.is_clean()
                {
                    let mut link = StreamVerifier::new();
                    link.push(parent);
                    link.push(child);
                    for f in link.finish().findings {
                        if !parent.findings.contains(&f) && !child.findings.contains(&f) {
                            self.broken_switch.insert(timeline.0);
                            let mut finding = ArchiveFinding::from_finding(&f, false);
                            finding.message = format!(
                                "across the switch from timeline {}: {}",
                                switch.parent, finding.message
                            );
                            findings.push(finding);
                        }
                    }
                }
            }
        }
        // The server's position: segments after the newest archived one up to the current
        // one are expected, not yet archived.
        if let Some((server_tli, lsn)) = whereabouts.server {
            let (current, _) = Segment::from_lsn(server_tli, lsn, size);
            let last_archived = firsts
                .get(&server_tli.0)
                .map(|&(_, last)| last)
                .or_else(|| {
                    self.switches
                        .get(&server_tli)
                        .map(|s| Segment::from_lsn(server_tli, s.point, size).0.segno(size))
                        .and_then(|s| s.checked_sub(1))
                });
            if let Some(last) = last_archived
                && current.segno(size) > last + 1
            {
                gaps.push((server_tli, last + 1, current.segno(size) - 1));
            }
        }
        let mut missing = Vec::new();
        for (timeline, from, to) in gaps {
            classify(timeline, from, to, size, whereabouts, &firsts, &mut missing);
        }
        missing.sort_by(|a, b| (a.timeline, &a.first).cmp(&(b.timeline, &b.first)));
        // Along the timelines, oldest first: the clean run ends in the first timeline that
        // has a bad file or a hole (a delayed one too: a recovery cannot cross it today).
        let mut verified_up_to = None;
        for Closed {
            report: t,
            up_to,
            intact,
        } in &self.timelines
        {
            let started_badly = missing
                .iter()
                .any(|m| m.timeline == t.timeline && m.first < t.first);
            if started_badly || (t.timeline > 1 && self.broken_switch.contains(&t.timeline)) {
                break;
            }
            if let Some((segment, partial, lsn)) = up_to {
                verified_up_to = Some(VerifiedUpTo {
                    timeline: t.timeline,
                    file: if *partial {
                        WalFileName::Partial(*segment).to_string()
                    } else {
                        segment.to_string()
                    },
                    lsn: *lsn,
                });
            }
            if !intact || missing.iter().any(|m| m.timeline == t.timeline) {
                break;
            }
        }
        VerifyReport {
            server: self.server,
            started_at,
            finished_at,
            from: self.from.map(|f| f.to_string()),
            files: self.timelines.iter().map(|c| c.report.files).sum(),
            bytes: self.bytes,
            stats: self.stats,
            timelines: self.timelines.into_iter().map(|c| c.report).collect(),
            findings,
            missing,
            verified_up_to,
        }
    }
}

/// Splits the missing segments `from..=to` (segment numbers) of `timeline` into runs of one
/// class.
fn classify(
    timeline: TimelineId,
    from: u64,
    to: u64,
    size: SegmentSize,
    whereabouts: &Whereabouts,
    archived: &BTreeMap<u32, (u64, u64)>,
    out: &mut Vec<MissingRange>,
) {
    let per_log = u64::from(size.max_seg()) + 1;
    let segment_of = |segno: u64| Segment {
        timeline,
        log: (segno / per_log) as u32,
        seg: (segno % per_log) as u32,
    };
    let newest_archived = archived.get(&timeline.0).map(|&(_, last)| last);
    let class_of = |segno: u64| {
        let segment = segment_of(segno);
        if whereabouts.dropped.contains(&segment) {
            MissingClass::Dropped
        } else if whereabouts.queued.contains(&segment) {
            MissingClass::Queued
        } else if let Some(ready) = &whereabouts.ready {
            if ready.contains(&segment) {
                MissingClass::Ready
            } else {
                MissingClass::Lost
            }
        } else if newest_archived.is_none_or(|last| segno > last)
            && whereabouts.server.is_some_and(|(t, _)| t == timeline)
        {
            MissingClass::Unconfirmed
        } else {
            MissingClass::Lost
        }
    };
    let time_of = |segno: Option<u64>| {
        segno.and_then(|s| whereabouts.archived_at.get(&segment_of(s)).copied())
    };
    let mut start = from;
    while start <= to {
        let class = class_of(start);
        let mut end = start;
        while end < to && class_of(end + 1) == class {
            end += 1;
        }
        let (first, last) = (segment_of(start), segment_of(end));
        out.push(MissingRange {
            timeline: timeline.0,
            first: first.to_string(),
            last: last.to_string(),
            count: end - start + 1,
            start_lsn: first.lsn_at(0, size),
            end_lsn: Lsn(last.lsn_at(0, size).0 + size.bytes()),
            class,
            after_time: time_of(start.checked_sub(1)),
            before_time: time_of(end.checked_add(1)),
        });
        start = end + 1;
    }
}
