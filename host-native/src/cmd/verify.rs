//! `verify`: reads every archived file in range, decoded, through walvault-core's record-level
//! verifier, in parallel, and reports what would stop a recovery: damaged, foreign or misnamed
//! files, a broken record chain, history files that do not match, missing segments (delayed or
//! lost). The run is recorded in `meta/last-verify.json` for `serve`.
//!
//! Glue only: the plan, the verdict per file and the join are `walvault_core::verify`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, bail};
use walvault_core::compression::DecodeLimits;
use walvault_core::layout::{KeyProblem, StoredWal};
use walvault_core::verify::archive::{
    ArchiveFinding, ArchiveVerifier, FileResult, MissingClass, VerifyPlan, VerifyReport,
    Whereabouts, plan,
};
use walvault_core::verify::{SegmentVerifier, Severity};
use walvault_core::wal::{Lsn, Segment, SegmentSize, TimelineId, WalFileName, parse_history};

use crate::cli::Format;
use crate::server::{ServerCtx, now};
use crate::ui::Ui;

/// Decoded bytes handed to the verifier at a time: large enough to amortise the calls, small
/// enough that a job's memory is the decoder's window plus this.
const CHUNK: usize = 256 << 10;

/// How far workers may run ahead of the oldest file not yet joined (summaries wait in memory
/// until their turn).
const AHEAD: usize = 64;

/// What `verify` was asked.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Start at this WAL name.
    pub from: Option<String>,
    /// Start at the start of this backup (a `.backup` file name or the label it records).
    pub from_backup: Option<String>,
    /// Parallel jobs.
    pub jobs: usize,
}

/// Verifies one server's archive and records the run; returns the report.
pub fn verify_server(ctx: &ServerCtx<'_>, opts: &Options, ui: &Ui) -> anyhow::Result<VerifyReport> {
    let started_at = now();
    let listing = ctx
        .store
        .list(ctx.layout.area_prefix())
        .context("listing the archive")?;
    let mut stored = Vec::new();
    let mut strays = Vec::new();
    let mut in_flight = Vec::new();
    for meta in &listing {
        match ctx.layout.parse_key(meta) {
            Ok(s) => stored.push(s),
            Err(KeyProblem::Temporary) => in_flight.extend(temp_segment(&meta.key)),
            Err(KeyProblem::NotWal | KeyProblem::OutsidePrefix) => {}
            Err(problem) => strays.push(ArchiveFinding {
                file: meta.key.clone(),
                offset: None,
                lsn: None,
                severity: Severity::Warning,
                message: format!("not where a WAL file belongs: {problem}"),
            }),
        }
    }
    let size = ctx.segment_size(&[]);
    let from = start_segment(ctx, &stored, opts)?;
    let plan = plan(stored, size, from);
    let histories = read_histories(ctx, &plan);
    let mut joiner = ArchiveVerifier::new(&ctx.cfg.name, &plan, from, histories);
    run_jobs(ctx, &plan, opts.jobs.max(1), &mut joiner, ui);
    let mut whereabouts = whereabouts(ctx, ui);
    // A copy being written now (its temporary file) is on its way, as a queued one is.
    whereabouts.queued.extend(in_flight);
    let mut report = joiner.finish(&whereabouts, started_at, now());
    report.findings.extend(strays);
    record(ctx, &report, ui);
    Ok(report)
}

/// The first segment to verify, from `--from` or `--from-backup`.
fn start_segment(
    ctx: &ServerCtx<'_>,
    stored: &[StoredWal],
    opts: &Options,
) -> anyhow::Result<Option<Segment>> {
    if let Some(from) = &opts.from {
        let name: WalFileName = from.parse().map_err(|e| usage(format!("--from: {e}")))?;
        return Ok(Some(name.segment().ok_or_else(|| {
            usage(format!("--from: {from} names no segment"))
        })?));
    }
    let Some(wanted) = &opts.from_backup else {
        return Ok(None);
    };
    let labels: Vec<&StoredWal> = stored.iter().filter(|s| s.name.is_backup_label()).collect();
    if let Some(found) = labels.iter().find(|s| s.name.to_string() == *wanted) {
        return Ok(found.name.segment());
    }
    // Else the LABEL a backup file records (the newest backup with that label).
    let mut best: Option<Segment> = None;
    for label in labels {
        let Ok(plain) = read_small(ctx, label) else {
            continue;
        };
        let text = String::from_utf8_lossy(&plain);
        if text.lines().any(|l| {
            l.strip_prefix("LABEL: ")
                .is_some_and(|v| v.trim() == wanted)
        }) && let Some(segment) = label.name.segment()
        {
            best = best.max(Some(segment));
        }
    }
    match best {
        Some(segment) => Ok(Some(segment)),
        None => Err(usage(format!(
            "--from-backup: no archived backup label file is named or labelled '{wanted}'"
        ))),
    }
}

/// A usage error: exit 2.
fn usage(message: String) -> anyhow::Error {
    crate::config::ConfigError {
        section: None,
        key: None,
        message,
    }
    .into()
}

/// Each history file, parsed (or why not).
fn read_histories(
    ctx: &ServerCtx<'_>,
    plan: &VerifyPlan,
) -> Vec<(
    TimelineId,
    Result<Vec<walvault_core::wal::HistoryEntry>, String>,
)> {
    plan.histories
        .iter()
        .filter_map(|h| match h.name {
            WalFileName::History(tli) => Some((tli, h)),
            _ => None,
        })
        .map(|(tli, h)| {
            let parsed = read_small(ctx, h)
                .and_then(|plain| parse_history(tli, &plain).map_err(|e| e.to_string()));
            (tli, parsed)
        })
        .collect()
}

/// A small archived file (a history file, a backup label), decoded as it streams and capped
/// as `get-wal` caps them: an object named like one never costs more memory than that.
fn read_small(ctx: &ServerCtx<'_>, stored: &StoredWal) -> Result<Vec<u8>, String> {
    let reader = ctx.store.get(&stored.key).map_err(|e| e.to_string())?;
    let (reader, _) = walvault_core::encryption::open_if_encrypted(reader, Some(&ctx.decrypt))
        .map_err(|e| format!("cannot be decrypted: {e}"))?;
    let limits = DecodeLimits {
        max_output: walvault_core::archive::MAX_HISTORY_BYTES,
        ..DecodeLimits::default()
    };
    let mut plain = Vec::new();
    stored
        .decoder(reader, limits)
        .and_then(|mut d| d.read_to_end(&mut plain))
        .map_err(|e| format!("cannot be decoded: {e}"))?;
    Ok(plain)
}

/// Reads and verifies one planned file.
fn verify_file(
    ctx: &ServerCtx<'_>,
    file: &walvault_core::verify::archive::PlannedFile,
    size: SegmentSize,
) -> FileResult {
    let reader = match ctx.store.get(&file.stored.key) {
        Ok(r) => r,
        Err(e) => return FileResult::Unreadable(e.to_string()),
    };
    let reader = match walvault_core::encryption::open_if_encrypted(reader, Some(&ctx.decrypt)) {
        Ok((r, _)) => r,
        Err(e) => return FileResult::Unreadable(format!("cannot be decrypted: {e}")),
    };
    let limits = DecodeLimits {
        // A little over a segment, so an over-long file is seen as such by the verifier.
        max_output: size.bytes() + CHUNK as u64,
        ..DecodeLimits::default()
    };
    let mut decoder = match file.stored.decoder(reader, limits) {
        Ok(d) => d,
        Err(e) => return FileResult::Unreadable(format!("cannot be decoded: {e}")),
    };
    let mut verifier =
        SegmentVerifier::new(file.segment, size, file.partial, ctx.cfg.system_identifier);
    let mut buf = vec![0u8; CHUNK];
    loop {
        match decoder.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => verifier.feed(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return FileResult::Unreadable(format!("cannot be decoded: {e}")),
        }
    }
    FileResult::Verified(Box::new(verifier.finish()))
}

/// Verifies the plan's files with `jobs` threads, joining results in order as they come.
fn run_jobs(
    ctx: &ServerCtx<'_>,
    plan: &VerifyPlan,
    jobs: usize,
    joiner: &mut ArchiveVerifier,
    ui: &Ui,
) {
    let total = plan.files.len();
    let next = AtomicUsize::new(0);
    let joined = AtomicUsize::new(0);
    let progress = crate::ui::Progress::new(ui, total);
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::channel::<(usize, FileResult)>();
        for _ in 0..jobs.min(total.max(1)) {
            let tx = tx.clone();
            let (next, joined) = (&next, &joined);
            scope.spawn(move || {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= total {
                        break;
                    }
                    // Bounded memory: wait while far ahead of the oldest file not joined (which
                    // a worker with a smaller index is verifying, so this never waits for ever).
                    while index >= joined.load(Ordering::Relaxed) + AHEAD {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    let result = verify_file(ctx, &plan.files[index], plan.size);
                    if tx.send((index, result)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        let mut done: usize = 0;
        for (index, result) in rx {
            joiner.push(index, result);
            done += 1;
            joined.store(done - joiner.waiting(), Ordering::Relaxed);
            progress.inc(&plan.files[index].stored.name.to_string());
        }
    });
    progress.finish();
}

/// What is known about WAL not in the archive: walvault's queues, the catalogue's times, and
/// with a `conninfo` the server's position and (when its data directory is readable here)
/// PostgreSQL's `.ready` files.
fn whereabouts(ctx: &ServerCtx<'_>, ui: &Ui) -> Whereabouts {
    let mut w = Whereabouts::default();
    for dir in [&ctx.cfg.incoming, &ctx.cfg.streaming] {
        w.queued.extend(queued_segments(dir));
    }
    w.dropped = crate::dropped::read_dropped(ctx.cfg)
        .iter()
        .filter_map(|d| d.name.parse::<WalFileName>().ok()?.segment())
        .collect();
    if let Ok(Ok(entries)) = ctx.catalogue.read() {
        for e in entries {
            if let Ok(name) = e.wal_name()
                && name.is_segment()
                && let Some(segment) = name.segment()
            {
                w.archived_at.insert(segment, e.time);
            }
        }
    }
    let Some(conninfo) = &ctx.cfg.conninfo else {
        return w;
    };
    match server_position(conninfo) {
        Ok((tli, lsn, data_directory)) => {
            w.server = Some((tli, lsn));
            let pg_wal = data_directory.join("pg_wal");
            match crate::dropped::ready_in(&pg_wal) {
                Ok(ready) => {
                    w.ready = Some(ready.iter().filter_map(|r| r.name.segment()).collect());
                }
                Err(e) => ui.verbose(format_args!(
                    "{}/archive_status is not readable here ({e}): segments missing after the \
                     last archived one cannot be confirmed as waiting in PostgreSQL",
                    pg_wal.display()
                )),
            }
        }
        Err(e) => ui.warn(format_args!(
            "cannot ask PostgreSQL where it is ({e:#}): missing segments are classified \
             without it"
        )),
    }
    w
}

/// The segment a temporary file in the archive is being written for: walvault's temporary
/// names are `.<final name>.<pid>.<n>.tmp`.
fn temp_segment(key: &str) -> Option<Segment> {
    let file = key.rsplit('/').next()?;
    let inner = file.strip_prefix('.')?.strip_suffix(".tmp")?;
    let mut parts = inner.rsplitn(3, '.');
    let (_, _, name) = (parts.next()?, parts.next()?, parts.next()?);
    match name.parse::<WalFileName>().ok()? {
        WalFileName::Segment(s) | WalFileName::Partial(s) => Some(s),
        _ => None,
    }
}

/// The segments waiting in a queue directory, as archive-wal lists it (a `.partial` counts for
/// its segment; links and other special files are not queued WAL).
fn queued_segments(dir: &Path) -> Vec<Segment> {
    crate::queue_dir::list_queue(dir)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.kind == walvault_core::queue::EntryKind::File)
        .filter_map(|e| match e.file_name.parse().ok()? {
            WalFileName::Segment(s) | WalFileName::Partial(s) => Some(s),
            _ => None,
        })
        .collect()
}

/// The server's timeline, its WAL write (or, on a standby, receive/replay) position and its
/// data directory.
fn server_position(
    conninfo: &crate::config::Conninfo,
) -> anyhow::Result<(TimelineId, Lsn, PathBuf)> {
    let mut client = crate::pg::connect(conninfo)?;
    let row = client.query_one(
        "SELECT CASE WHEN pg_is_in_recovery() \
           THEN coalesce(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::text \
           ELSE pg_current_wal_lsn()::text END, \
         (SELECT timeline_id FROM pg_control_checkpoint())::int8, \
         current_setting('data_directory', true)",
        &[],
    )?;
    let lsn: String = row.get::<_, Option<String>>(0).unwrap_or_default();
    let lsn: Lsn = lsn.parse().with_context(|| format!("LSN '{lsn}'"))?;
    let tli: i64 = row.get(1);
    let data: Option<String> = row.get(2);
    Ok((
        TimelineId(u32::try_from(tli).context("timeline")?),
        lsn,
        PathBuf::from(data.unwrap_or_default()),
    ))
}

/// Where the last run is recorded (`meta/last-verify.json`), for `serve`.
pub fn last_verify_path(ctx: &ServerCtx<'_>) -> PathBuf {
    ctx.cfg
        .backup_directory
        .join("meta")
        .join("last-verify.json")
}

/// Records the run durably; a failure to record is a warning.
fn record(ctx: &ServerCtx<'_>, report: &VerifyReport, ui: &Ui) {
    let path = last_verify_path(ctx);
    let result = path
        .parent()
        .map_or(Ok(false), |dir| ctx.fs.create_dir_durable(dir))
        .and_then(|_| {
            ctx.fs.write_durable(&path, false, |w| {
                serde_json::to_writer(&mut *w, report).map_err(std::io::Error::other)?;
                w.write_all(b"\n")
            })
        });
    if let Err(e) = result {
        ui.warn(format_args!(
            "cannot record the verification in {}: {e}",
            path.display()
        ));
    }
}

/// `verify`: verifies each server, prints, and returns the exit code: 0 clean, 1 a problem
/// (an error in a file or between files, or a lost segment); Nagios: 0 OK, 1 WARNING (only
/// delayed segments or warnings), 2 CRITICAL.
pub fn verify(
    ctxs: &[ServerCtx<'_>],
    opts: &Options,
    format: Format,
    nagios: bool,
    ui: &Ui,
) -> anyhow::Result<u8> {
    if ctxs.is_empty() {
        bail!("no active server to verify");
    }
    let mut reports = Vec::new();
    for ctx in ctxs {
        reports.push(
            verify_server(ctx, opts, ui)
                .with_context(|| format!("verifying server '{}'", ctx.cfg.name))?,
        );
    }
    let clean = reports.iter().all(VerifyReport::is_clean);
    if nagios {
        let (state, code) = if !clean {
            ("CRITICAL", 2)
        } else if reports
            .iter()
            .any(|r| r.delayed() > 0 || !r.findings.is_empty())
        {
            ("WARNING", 1)
        } else {
            ("OK", 0)
        };
        let parts: Vec<String> = reports.iter().map(nagios_part).collect();
        let perf: Vec<String> = reports
            .iter()
            .map(|r| {
                format!(
                    "'{0}_files'={1} '{0}_errors'={2} '{0}_lost'={3} '{0}_delayed'={4}",
                    r.server,
                    r.files,
                    r.errors(),
                    r.lost(),
                    r.delayed()
                )
            })
            .collect();
        println!(
            "WALVAULT VERIFY {state} - {} | {}",
            parts.join("; "),
            perf.join(" ")
        );
        return Ok(code);
    }
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&reports)?),
        Format::Text => {
            for r in &reports {
                print_text(r);
            }
        }
    }
    Ok(if clean { 0 } else { 1 })
}

fn nagios_part(r: &VerifyReport) -> String {
    let first_problem = r
        .findings
        .iter()
        .find(|f| f.severity == Severity::Error)
        .map(ToString::to_string)
        .or_else(|| {
            r.missing
                .iter()
                .find(|m| m.class == MissingClass::Lost)
                .map(|m| format!("{} to {} lost", m.first, m.last))
        });
    match first_problem {
        Some(p) => format!(
            "{}: {} error(s), {} segment(s) lost; first: {p}",
            r.server,
            r.errors(),
            r.lost()
        ),
        None => format!(
            "{}: {} files verified{}",
            r.server,
            r.files,
            r.verified_up_to
                .as_ref()
                .map_or_else(String::new, |u| format!(", up to {}", u.file))
        ),
    }
}

fn print_text(r: &VerifyReport) {
    use walvault_core::status::{human_bytes, human_duration};
    println!("Server {}:", r.server);
    println!(
        "  verified: {} files, {} records, {} decoded in {}",
        r.files,
        r.stats.records,
        human_bytes(r.bytes),
        human_duration((r.finished_at - r.started_at).max(0.0).round() as u64)
    );
    for t in &r.timelines {
        let branch = match (t.parent, t.switch_point) {
            (Some(p), Some(at)) => format!(", branched from timeline {p} at {at}"),
            _ => String::new(),
        };
        println!(
            "  timeline {}: {} to {} ({} files){branch}",
            t.timeline, t.first, t.last, t.files
        );
    }
    match &r.verified_up_to {
        Some(u) => println!(
            "  replayable up to: {}{}",
            u.file,
            u.lsn
                .map_or_else(String::new, |l| format!(" (last record at {l})"))
        ),
        None => println!("  replayable up to: nothing verified"),
    }
    let errors: Vec<&ArchiveFinding> = r
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .collect();
    let warnings: Vec<&ArchiveFinding> = r
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Warning)
        .collect();
    println!("  errors: {}", if errors.is_empty() { "none" } else { "" });
    for f in errors {
        println!("    {f}");
    }
    if !warnings.is_empty() {
        println!("  warnings:");
        for f in warnings {
            println!("    {f}");
        }
    }
    if r.missing.is_empty() {
        println!("  missing: none");
    } else {
        println!("  missing:");
        for m in &r.missing {
            let class = match m.class {
                MissingClass::Queued => "delayed: waiting in walvault's queue",
                MissingClass::Ready => "delayed: PostgreSQL has it .ready to archive",
                MissingClass::Unconfirmed => {
                    "delayed (unconfirmed): after the last archived segment"
                }
                MissingClass::Dropped => {
                    "DROPPED by archive_queue_max (on record): a recovery cannot cross this"
                }
                MissingClass::Lost => "LOST: a recovery cannot cross this",
            };
            let window = match (m.after_time, m.before_time) {
                (Some(a), Some(b)) => format!(
                    ", WAL written between {} and {}",
                    walvault_core::time::utc_iso8601(a as i64),
                    walvault_core::time::utc_iso8601(b as i64)
                ),
                _ => String::new(),
            };
            let range = if m.count == 1 {
                m.first.clone()
            } else {
                format!("{} to {} ({} segments)", m.first, m.last, m.count)
            };
            println!(
                "    {range}, LSN {} to {}{window}: {class}",
                m.start_lsn, m.end_lsn
            );
        }
    }
    println!("  result: {}", if r.is_clean() { "OK" } else { "FAILED" });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_temporary_file_names_the_segment_it_is_written_for() {
        assert_eq!(
            temp_segment("0000000100000000/.000000010000000000000007.4242.3.tmp"),
            Some(Segment::new(1, 0, 7))
        );
        assert_eq!(
            temp_segment(".000000010000000000000007.partial.1.0.tmp"),
            Some(Segment::new(1, 0, 7))
        );
        assert_eq!(temp_segment(".00000002.history.1.0.tmp"), None);
        assert_eq!(temp_segment("000000010000000000000007"), None);
        assert_eq!(temp_segment(".junk.tmp"), None);
    }
}
