//! The archive batch as a state machine: the one batch policy every host pumps.
//!
//! Sans-IO, in the style of quinn-proto's `Connection`: the engine never touches a file, a
//! store, a catalogue or a clock. A host drives it with three calls:
//!
//! 1. [`BatchEngine::next_file`] hands out the next file to archive, in name order. The host
//!    archives it ([`crate::archive::Archiver::archive_with_hooks`]), on as many threads as it
//!    likes, and reports the outcome with [`BatchEngine::file_done`].
//! 2. [`BatchEngine::poll_commit`] yields the commit's steps, in order, once a chunk of files
//!    has its outcomes: make the stored copies durable (the store syncs each directory once),
//!    find the catalogue lines missing for copies found already archived (the repair of a
//!    crash between storing and cataloguing), append the catalogue lines durably, then release
//!    the sources and move rejects to `errors/`. The host carries out each step ([`perform`]
//!    does it over the storage traits) and reports with [`BatchEngine::step_done`].
//! 3. Once [`BatchEngine::is_finished`], [`BatchEngine::into_report`] says what happened.
//!
//! The engine decides: chunking, stopping at the first storage failure (the store is likely
//! unavailable), stopping where a pre-archive hook asks (nothing after that file is committed,
//! unknown entries are not moved), never releasing a source before its copy and catalogue line
//! are durable, never releasing anything when the sync or the catalogue fails, and the
//! catalogue repair. `walvault archive-wal` (threaded), its WASI guest (inline), `put-wal` (a
//! batch of one whose source PostgreSQL keeps) and the tests all run it.

use std::io;

use serde::{Deserialize, Serialize};

use crate::archive::{BatchReport, CatalogueSink, Disposition, FileOutcome, FileReport, Queue};
use crate::catalogue::CatalogueEntry;
use crate::duplicate::{ErrorKind, error_file_names};
use crate::queue::{Batch, Candidate, Unknown};
use crate::storage::WalStore;

/// Files archived between two commits by default: bounds what a killed run redoes and how long
/// sources wait for release (their removal then overlaps with the next files), while still
/// grouping the directory and catalogue syncs.
pub const COMMIT_EVERY: usize = 16;

/// How a batch runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchOptions {
    /// Files per commit (at least 1).
    pub commit_every: usize,
    /// Whether the sources are the batch's to release and to move to `errors/` (a queue
    /// directory), or stay where they are (`put-wal`: the file is PostgreSQL's, and the exit
    /// status tells it what happened).
    pub own_sources: bool,
}

impl Default for BatchOptions {
    fn default() -> Self {
        BatchOptions {
            commit_every: COMMIT_EVERY,
            own_sources: true,
        }
    }
}

/// One step of a commit, for the host to carry out.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum CommitStep {
    /// Make every stored copy durable ([`WalStore::sync`]). Answer [`StepResult::Done`] or
    /// [`StepResult::Failed`].
    SyncStore,
    /// Which of these WAL names the catalogue lacks. Answer [`StepResult::Missing`] or
    /// [`StepResult::Failed`].
    FindMissing(Vec<String>),
    /// Append these lines to the catalogue, durably. Answer [`StepResult::Done`] or
    /// [`StepResult::Failed`].
    AppendCatalogue(Vec<CatalogueEntry>),
    /// Delete the queued file: the archive has it durably. Answer [`StepResult::Done`] or
    /// [`StepResult::Failed`].
    Release {
        /// The name in the queue.
        file_name: String,
    },
    /// Move the queued entry to `errors/` under the first of [`ErrorNames::iter`] that does not
    /// exist, never replacing anything. Answer [`StepResult::Moved`] or [`StepResult::Failed`].
    MoveToErrors {
        /// The name in the queue.
        file_name: String,
        /// The names it may take.
        names: ErrorNames,
    },
}

/// The names an entry may take in `errors/`, in order of preference.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorNames {
    file_name: String,
    now_unix: i64,
    kind: ErrorKind,
}

impl ErrorNames {
    /// The candidates ([`crate::duplicate::error_file_names`]).
    pub fn iter(&self) -> impl Iterator<Item = String> + '_ {
        error_file_names(&self.file_name, self.now_unix, self.kind)
    }
}

/// What carrying out a [`CommitStep`] gave.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StepResult {
    /// Done.
    Done,
    /// The names the catalogue lacks ([`CommitStep::FindMissing`]).
    Missing(Vec<String>),
    /// Moved to `errors/` under this name ([`CommitStep::MoveToErrors`]).
    Moved(String),
    /// It failed, and why.
    Failed(String),
}

/// Why no more files are handed out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    /// A pre-archive hook asked to stop.
    Hook,
    /// The store failed (or the catalogue could not be written).
    Failure,
}

/// Where a commit in progress is.
#[derive(Debug)]
enum Phase {
    Sync,
    FindMissing,
    Append,
    /// Releasing or moving the `n`-th committed file.
    Dispose(usize),
    /// Moving the `n`-th unknown entry.
    Unknown(usize),
}

#[derive(Debug)]
struct Commit {
    outcomes: Vec<(Candidate, FileOutcome)>,
    unknown: Vec<Unknown>,
    /// Lines to append: archived files', then repairs found missing.
    entries: Vec<CatalogueEntry>,
    phase: Phase,
    /// The sync or the catalogue failed: nothing is released.
    error: Option<String>,
    files: Vec<FileReport>,
    last: bool,
}

/// The batch engine (see the module docs).
#[derive(Debug)]
pub struct BatchEngine {
    files: Vec<Candidate>,
    unknown: Vec<Unknown>,
    options: BatchOptions,
    now_unix: i64,
    /// Per file, its outcome until a commit takes it.
    results: Vec<Option<FileOutcome>>,
    /// Files handed out so far (in name order).
    claimed: usize,
    /// Files handed out whose outcome has not come back.
    in_flight: usize,
    /// Files `[0, committed)` are committed.
    committed: usize,
    stop: Option<Stop>,
    /// The first file a pre-archive hook stopped at.
    hook_at: Option<usize>,
    commit: Option<Commit>,
    /// A step was handed out and its result has not come back.
    awaiting: bool,
    finished: bool,
    report: BatchReport,
}

impl BatchEngine {
    /// An engine for `batch` ([`crate::queue::select_batch`]'s decision), run at `now_unix`
    /// (the time in `errors/` names).
    pub fn new(batch: Batch, now_unix: f64, options: BatchOptions) -> Self {
        BatchEngine {
            results: batch.files.iter().map(|_| None).collect(),
            files: batch.files,
            unknown: batch.unknown,
            options: BatchOptions {
                commit_every: options.commit_every.max(1),
                ..options
            },
            now_unix: now_unix as i64,
            claimed: 0,
            in_flight: 0,
            committed: 0,
            stop: None,
            hook_at: None,
            commit: None,
            awaiting: false,
            finished: false,
            report: BatchReport::default(),
        }
    }

    /// The next file to archive, with its index for [`BatchEngine::file_done`]; `None` once
    /// every file is handed out or the batch stopped (for good: a worker that gets `None` can
    /// leave).
    pub fn next_file(&mut self) -> Option<(usize, Candidate)> {
        if self.stop.is_some() || self.finished || self.claimed >= self.files.len() {
            return None;
        }
        let index = self.claimed;
        self.claimed += 1;
        self.in_flight += 1;
        Some((index, self.files[index].clone()))
    }

    /// A file's outcome; `None` when its pre-archive hook stopped the run (the file was left
    /// alone). A storage failure stops the batch: the store is likely unavailable.
    pub fn file_done(&mut self, index: usize, outcome: Option<FileOutcome>) {
        self.in_flight = self.in_flight.saturating_sub(1);
        match outcome {
            None => {
                self.stop = Some(Stop::Hook);
                self.hook_at = Some(self.hook_at.map_or(index, |h| h.min(index)));
            }
            Some(outcome) => {
                if matches!(outcome, FileOutcome::Failed { .. }) {
                    self.stop.get_or_insert(Stop::Failure);
                }
                if let Some(slot) = self.results.get_mut(index) {
                    *slot = Some(outcome);
                }
            }
        }
    }

    /// Whether the batch is over: every commit done.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// The next commit step, when one is due; `None` when the engine waits for file outcomes
    /// (or a step's result), or is finished.
    pub fn poll_commit(&mut self) -> Option<CommitStep> {
        if self.awaiting || self.finished {
            return None;
        }
        loop {
            if self.commit.is_none() {
                self.commit = Some(self.start_commit()?);
            }
            if let Some(step) = self.next_step() {
                self.awaiting = true;
                return Some(step);
            }
            self.finish_commit();
            if self.finished {
                return None;
            }
        }
    }

    /// The result of the step [`BatchEngine::poll_commit`] gave last.
    pub fn step_done(&mut self, result: StepResult) {
        if !self.awaiting {
            return;
        }
        self.awaiting = false;
        let Some(commit) = self.commit.as_mut() else {
            return;
        };
        match (&commit.phase, result) {
            (Phase::Sync, r) => {
                if let StepResult::Failed(e) = r {
                    commit.error = Some(format!(
                        "making the archived copies durable failed: {e}; sources kept"
                    ));
                }
                commit.phase = Phase::FindMissing;
            }
            (Phase::FindMissing, r) => {
                match r {
                    StepResult::Missing(missing) => {
                        let repairs = commit.outcomes.iter().filter_map(|(_, o)| match o {
                            FileOutcome::IdenticalDuplicate { entry, .. }
                                if missing.contains(&entry.name) =>
                            {
                                Some(entry.clone())
                            }
                            _ => None,
                        });
                        commit.entries.extend(repairs);
                        commit.entries.sort_by(|a, b| a.name.cmp(&b.name));
                    }
                    StepResult::Failed(e) => {
                        commit.error = Some(format!("reading the catalogue failed: {e}"));
                    }
                    StepResult::Done | StepResult::Moved(_) => {}
                }
                commit.phase = Phase::Append;
            }
            (Phase::Append, r) => {
                if let StepResult::Failed(e) = r {
                    commit.error = Some(format!("writing the catalogue failed: {e}; sources kept"));
                }
                commit.phase = Phase::Dispose(0);
            }
            (Phase::Dispose(i), r) | (Phase::Unknown(i), r) => {
                // Files are reported in step order: committed files, then unknown entries.
                let (i, next) = match commit.phase {
                    Phase::Unknown(_) => (commit.outcomes.len() + i, Phase::Unknown(i + 1)),
                    _ => (*i, Phase::Dispose(i + 1)),
                };
                if let Some(file) = commit.files.get_mut(i) {
                    match r {
                        StepResult::Moved(name) => file.error_file = Some(name),
                        StepResult::Failed(e) => file.source_error = Some(e),
                        StepResult::Done | StepResult::Missing(_) => {}
                    }
                }
                commit.phase = next;
            }
        }
    }

    /// What happened, once finished (or so far).
    pub fn into_report(self) -> BatchReport {
        self.report
    }

    /// A commit, when one is due.
    fn start_commit(&mut self) -> Option<Commit> {
        let n = self.files.len();
        let end = (self.committed + self.options.commit_every).min(n);
        let settled = match self.stop {
            None => self.claimed >= end && (self.committed..end).all(|i| self.results[i].is_some()),
            // After a stop, every file in flight first: their copies are stored and get their
            // catalogue lines in this commit.
            Some(_) => self.in_flight == 0,
        };
        if !settled {
            return None;
        }
        // As Barman: nothing after the file a hook stopped at is committed (those copies are
        // found again, identical, by the next run). After a failure, every outcome there is.
        let upto = match self.stop {
            None => end,
            Some(Stop::Hook) => self.hook_at.unwrap_or(end).max(self.committed),
            Some(Stop::Failure) => n,
        };
        let outcomes: Vec<(Candidate, FileOutcome)> = (self.committed..upto)
            .filter_map(|i| self.results[i].take().map(|o| (self.files[i].clone(), o)))
            .collect();
        self.committed = upto.max(self.committed);
        let last = end >= n || self.stop.is_some();
        // As Barman: a run stopped by a pre hook does not move unknown entries either.
        let unknown = if last && self.stop != Some(Stop::Hook) && self.options.own_sources {
            std::mem::take(&mut self.unknown)
        } else {
            Vec::new()
        };
        let entries = outcomes
            .iter()
            .filter_map(|(_, o)| match o {
                FileOutcome::Archived { entry, .. } => Some(entry.clone()),
                _ => None,
            })
            .collect();
        let mut files: Vec<FileReport> = outcomes
            .iter()
            .map(|(c, o)| FileReport {
                file_name: c.file_name.clone(),
                name: Some(c.name),
                outcome: o.clone(),
                error_file: None,
                source_error: None,
            })
            .collect();
        files.extend(unknown.iter().map(|u| FileReport {
            file_name: u.file_name.clone(),
            name: None,
            outcome: FileOutcome::Unknown { reason: u.reason },
            error_file: None,
            source_error: None,
        }));
        Some(Commit {
            outcomes,
            unknown,
            entries,
            phase: Phase::Sync,
            error: None,
            files,
            last,
        })
    }

    /// The current commit's next step, advancing past phases with nothing to do.
    fn next_step(&mut self) -> Option<CommitStep> {
        let own_sources = self.options.own_sources;
        let now_unix = self.now_unix;
        let commit = self.commit.as_mut()?;
        loop {
            match commit.phase {
                Phase::Sync => {
                    let relies_on_store = commit.outcomes.iter().any(|(_, o)| {
                        matches!(
                            o,
                            FileOutcome::Archived { .. } | FileOutcome::IdenticalDuplicate { .. }
                        )
                    });
                    if relies_on_store {
                        return Some(CommitStep::SyncStore);
                    }
                    commit.phase = Phase::FindMissing;
                }
                Phase::FindMissing => {
                    let names: Vec<String> = commit
                        .outcomes
                        .iter()
                        .filter_map(|(_, o)| match o {
                            FileOutcome::IdenticalDuplicate { entry, .. } => {
                                Some(entry.name.clone())
                            }
                            _ => None,
                        })
                        .collect();
                    if !names.is_empty() && commit.error.is_none() {
                        return Some(CommitStep::FindMissing(names));
                    }
                    commit.phase = Phase::Append;
                }
                Phase::Append => {
                    if !commit.entries.is_empty() && commit.error.is_none() {
                        return Some(CommitStep::AppendCatalogue(commit.entries.clone()));
                    }
                    commit.phase = Phase::Dispose(0);
                }
                Phase::Dispose(i) => {
                    let Some((candidate, outcome)) = commit.outcomes.get(i) else {
                        commit.phase = Phase::Unknown(0);
                        continue;
                    };
                    let file_name = candidate.file_name.clone();
                    let step = match outcome.disposition() {
                        _ if !own_sources => None,
                        Disposition::Release if commit.error.is_none() => {
                            Some(CommitStep::Release { file_name })
                        }
                        // Rejects go to errors/ even when the catalogue failed: they were
                        // never going to be archived.
                        Disposition::ToErrors(kind) => Some(CommitStep::MoveToErrors {
                            names: ErrorNames {
                                file_name: file_name.clone(),
                                now_unix,
                                kind,
                            },
                            file_name,
                        }),
                        Disposition::Release | Disposition::Keep => None,
                    };
                    match step {
                        Some(step) => return Some(step),
                        None => commit.phase = Phase::Dispose(i + 1),
                    }
                }
                Phase::Unknown(i) => {
                    let entry = commit.unknown.get(i)?;
                    return Some(CommitStep::MoveToErrors {
                        file_name: entry.file_name.clone(),
                        names: ErrorNames {
                            file_name: entry.file_name.clone(),
                            now_unix,
                            kind: ErrorKind::Unknown,
                        },
                    });
                }
            }
        }
    }

    /// Records a commit whose steps are all done, and decides whether the batch goes on.
    fn finish_commit(&mut self) {
        let Some(commit) = self.commit.take() else {
            return;
        };
        self.report.files.extend(commit.files);
        if self.report.catalogue_error.is_none() {
            self.report.catalogue_error = commit.error;
        }
        match self.stop {
            Some(Stop::Hook) => {
                self.report.stopped = Some(
                    "a pre-archive retry hook asked to stop (exit 63); the remaining files stay queued"
                        .into(),
                );
            }
            Some(Stop::Failure) => {
                self.report.stopped = Some(format!(
                    "stopped after a storage failure; {} file(s) not attempted stay queued",
                    self.files.len() - self.claimed
                ));
            }
            None if self.report.catalogue_error.is_some() => {
                self.report.stopped = Some("stopped: the catalogue cannot be written".into());
                // Workers finish their current file; their copies are found as identical
                // duplicates by the next run.
                self.stop = Some(Stop::Failure);
            }
            None => {}
        }
        if commit.last || self.stop.is_some() {
            self.stop.get_or_insert(Stop::Failure);
            self.finished = true;
        }
    }
}

/// Carries out one commit step over the storage traits: what every host does, unless it has
/// reasons of its own (a background remover for releases).
pub fn perform<S: WalStore + ?Sized>(
    step: &CommitStep,
    store: &S,
    queue: &mut dyn Queue,
    catalogue: &mut dyn CatalogueSink,
) -> StepResult {
    let done = |r: io::Result<()>| match r {
        Ok(()) => StepResult::Done,
        Err(e) => StepResult::Failed(e.to_string()),
    };
    match step {
        CommitStep::SyncStore => match store.sync() {
            Ok(()) => StepResult::Done,
            Err(e) => StepResult::Failed(e.to_string()),
        },
        CommitStep::FindMissing(names) => match catalogue.missing(names) {
            Ok(missing) => StepResult::Missing(missing),
            Err(e) => StepResult::Failed(e.to_string()),
        },
        CommitStep::AppendCatalogue(entries) => done(catalogue.append(entries)),
        CommitStep::Release { file_name } => done(queue.release(file_name)),
        CommitStep::MoveToErrors { file_name, names } => {
            match queue.move_to_errors(file_name, &mut names.iter()) {
                Ok(name) => StepResult::Moved(name),
                Err(e) => StepResult::Failed(e.to_string()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::UnknownReason;
    use crate::wal::WalFileName;

    fn candidate(n: u32) -> Candidate {
        let name: WalFileName = format!("0000000100000000000000{n:02X}")
            .parse()
            .expect("name");
        Candidate {
            name,
            file_name: name.to_string(),
            size: 16,
            mtime: 1.0,
        }
    }

    fn entry(c: &Candidate) -> CatalogueEntry {
        CatalogueEntry {
            name: c.name.to_string(),
            size: 16,
            time: 1.0,
            compression: None,
            encryption: None,
        }
    }

    fn archived(c: &Candidate) -> FileOutcome {
        FileOutcome::Archived {
            entry: entry(c),
            key: c.name.relative_path(),
        }
    }

    fn batch(n: u32, unknown: &[&str]) -> Batch {
        Batch {
            files: (1..=n).map(candidate).collect(),
            unknown: unknown
                .iter()
                .map(|u| Unknown {
                    file_name: (*u).into(),
                    reason: UnknownReason::NotAWalName,
                })
                .collect(),
            ..Batch::default()
        }
    }

    /// Pumps every due step, answering with `answer`; returns the steps seen.
    fn drain(e: &mut BatchEngine, answer: impl Fn(&CommitStep) -> StepResult) -> Vec<CommitStep> {
        let mut seen = Vec::new();
        while let Some(step) = e.poll_commit() {
            e.step_done(answer(&step));
            seen.push(step);
        }
        seen
    }

    fn ok(step: &CommitStep) -> StepResult {
        match step {
            CommitStep::FindMissing(_) => StepResult::Missing(vec![]),
            CommitStep::MoveToErrors { names, .. } => {
                StepResult::Moved(names.iter().next().unwrap_or_default())
            }
            _ => StepResult::Done,
        }
    }

    fn kinds(steps: &[CommitStep]) -> Vec<&'static str> {
        steps
            .iter()
            .map(|s| match s {
                CommitStep::SyncStore => "sync",
                CommitStep::FindMissing(_) => "find",
                CommitStep::AppendCatalogue(_) => "append",
                CommitStep::Release { .. } => "release",
                CommitStep::MoveToErrors { .. } => "errors",
            })
            .collect()
    }

    #[test]
    fn commits_each_chunk_in_order_sync_then_catalogue_then_release() {
        let options = BatchOptions {
            commit_every: 2,
            own_sources: true,
        };
        let mut e = BatchEngine::new(batch(3, &["junk"]), 0.0, options);
        let (a, ca) = e.next_file().expect("first");
        let (b, cb) = e.next_file().expect("second");
        // Out of order: nothing is due until the whole chunk is in.
        e.file_done(b, Some(archived(&cb)));
        assert_eq!(e.poll_commit(), None);
        e.file_done(a, Some(archived(&ca)));
        let steps = drain(&mut e, ok);
        assert_eq!(kinds(&steps), ["sync", "append", "release", "release"]);
        assert_eq!(
            steps[1],
            CommitStep::AppendCatalogue(vec![entry(&ca), entry(&cb)])
        );
        assert!(!e.is_finished());
        let (c, cc) = e.next_file().expect("third");
        assert_eq!(e.next_file(), None);
        e.file_done(c, Some(archived(&cc)));
        // The last chunk moves the unknown entries too.
        assert_eq!(
            kinds(&drain(&mut e, ok)),
            ["sync", "append", "release", "errors"]
        );
        assert!(e.is_finished());
        let report = e.into_report();
        assert_eq!(report.files.len(), 4);
        assert_eq!(
            report.files[3].error_file.as_deref(),
            Some("junk.19700101T000000Z.unknown")
        );
    }

    #[test]
    fn a_failed_sync_or_catalogue_releases_nothing_and_stops() {
        for failing in ["sync", "append"] {
            let mut e = BatchEngine::new(batch(2, &[]), 0.0, BatchOptions::default());
            while let Some((i, c)) = e.next_file() {
                e.file_done(i, Some(archived(&c)));
            }
            let steps = drain(&mut e, |s| match (s, failing) {
                (CommitStep::SyncStore, "sync") | (CommitStep::AppendCatalogue(_), "append") => {
                    StepResult::Failed("disk full".into())
                }
                _ => ok(s),
            });
            assert!(!kinds(&steps).contains(&"release"), "{failing}: {steps:?}");
            assert!(e.is_finished());
            let report = e.into_report();
            assert!(report.catalogue_error.is_some() && report.stopped.is_some());
        }
    }

    #[test]
    fn an_identical_copy_missing_from_the_catalogue_gets_its_line() {
        let mut e = BatchEngine::new(batch(2, &[]), 0.0, BatchOptions::default());
        let (a, ca) = e.next_file().expect("a");
        let (b, cb) = e.next_file().expect("b");
        let identical = |c: &Candidate| FileOutcome::IdenticalDuplicate {
            key: c.name.relative_path(),
            entry: entry(c),
        };
        e.file_done(a, Some(identical(&ca)));
        e.file_done(b, Some(identical(&cb)));
        let missing = ca.name.to_string();
        let steps = drain(&mut e, |s| match s {
            CommitStep::FindMissing(names) => {
                assert_eq!(names.len(), 2);
                StepResult::Missing(vec![missing.clone()])
            }
            _ => ok(s),
        });
        assert_eq!(
            kinds(&steps),
            ["sync", "find", "append", "release", "release"]
        );
        assert_eq!(steps[2], CommitStep::AppendCatalogue(vec![entry(&ca)]));
    }

    #[test]
    fn a_storage_failure_stops_handing_out_and_commits_what_is_stored() {
        let mut e = BatchEngine::new(batch(5, &["junk"]), 0.0, BatchOptions::default());
        let (a, ca) = e.next_file().expect("a");
        let (b, _) = e.next_file().expect("b");
        let (c, cc) = e.next_file().expect("c");
        e.file_done(
            b,
            Some(FileOutcome::Failed {
                error: "503".into(),
                retryable: true,
            }),
        );
        assert_eq!(e.next_file(), None, "nothing more is handed out");
        e.file_done(a, Some(archived(&ca)));
        // c is still in flight: its copy may be stored, so the commit waits for it.
        assert_eq!(e.poll_commit(), None);
        e.file_done(c, Some(archived(&cc)));
        let steps = drain(&mut e, ok);
        assert_eq!(
            kinds(&steps),
            ["sync", "append", "release", "release", "errors"]
        );
        assert!(e.is_finished());
        let report = e.into_report();
        assert_eq!(
            report.stopped.as_deref(),
            Some("stopped after a storage failure; 2 file(s) not attempted stay queued")
        );
    }

    #[test]
    fn a_hook_stop_commits_nothing_from_its_file_on_and_moves_no_unknown_entry() {
        let mut e = BatchEngine::new(batch(3, &["junk"]), 0.0, BatchOptions::default());
        let (a, ca) = e.next_file().expect("a");
        let (b, _) = e.next_file().expect("b");
        let (c, cc) = e.next_file().expect("c");
        e.file_done(c, Some(archived(&cc)));
        e.file_done(a, Some(archived(&ca)));
        e.file_done(b, None);
        let steps = drain(&mut e, ok);
        assert_eq!(kinds(&steps), ["sync", "append", "release"]);
        let report = e.into_report();
        assert_eq!(report.files.len(), 1, "only the file before the stop");
        assert!(report.stopped.is_some());
    }

    #[test]
    fn a_batch_of_one_that_keeps_its_source_still_commits_and_repairs() {
        // put-wal: the file stays PostgreSQL's, whatever happened to it.
        let options = BatchOptions {
            own_sources: false,
            ..BatchOptions::default()
        };
        let mut e = BatchEngine::new(batch(1, &[]), 0.0, options);
        let (a, ca) = e.next_file().expect("a");
        e.file_done(
            a,
            Some(FileOutcome::IdenticalDuplicate {
                key: ca.name.relative_path(),
                entry: entry(&ca),
            }),
        );
        let name = ca.name.to_string();
        let steps = drain(&mut e, |s| match s {
            CommitStep::FindMissing(_) => StepResult::Missing(vec![name.clone()]),
            _ => ok(s),
        });
        assert_eq!(kinds(&steps), ["sync", "find", "append"]);
        let mut e = BatchEngine::new(batch(1, &[]), 0.0, options);
        let (a, _) = e.next_file().expect("a");
        e.file_done(
            a,
            Some(FileOutcome::Invalid {
                reason: crate::archive::InvalidReason::Empty,
            }),
        );
        assert!(drain(&mut e, ok).is_empty(), "a reject is not moved");
        assert!(e.is_finished());
    }

    #[test]
    fn an_empty_batch_finishes_and_unknown_entries_alone_are_moved() {
        let mut e = BatchEngine::new(Batch::default(), 0.0, BatchOptions::default());
        assert!(drain(&mut e, ok).is_empty());
        assert!(e.is_finished());
        let mut e = BatchEngine::new(batch(0, &["a", "b"]), 0.0, BatchOptions::default());
        assert_eq!(kinds(&drain(&mut e, ok)), ["errors", "errors"]);
        assert!(e.is_finished());
    }
}
