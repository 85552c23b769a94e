//! Test-only fault injection, compiled in with the `fault-injection` feature (the test suite's
//! build; release builds contain none of it), as neon's pageserver wraps its remote storage
//! in an unreliable wrapper: the shipped commands run over real stores while the tests make
//! them fail.
//!
//! - `WALVAULT_FAULTS`: faults for the store's operations, as
//!   `OP=FAULT[,FAULT…][;OP=…]` with OP one of `head get put list delete sync` and FAULT one
//!   of `transient permanent pass`, optionally `*N` (`put=pass*2,transient;sync=permanent`):
//!   each call of an operation takes the next fault scripted for it.
//! - `WALVAULT_CRASH_AFTER`: the process aborts right after the first commit step of that
//!   kind is carried out (`sync`, `catalogue`, `release`, `errors`), as a kill or a power cut
//!   between two steps would leave it.
//! - `WALVAULT_CRASH_AT=POINT[:N]`: the process aborts the N-th time (default the first) it
//!   reaches a [`failpoint`], the finer points inside those steps where a crash trial stops it.
//! - `WALVAULT_PAUSE_AT=POINT:MS`: the run sleeps MS milliseconds each time it reaches the
//!   failpoint, to line up a race deterministically.
//! - `WALVAULT_FS_JOURNAL=FILE`: every file-system change that durability depends on, and
//!   every sync, is appended to FILE as it happens ([`journal`]), so that a crash trial can
//!   work out what a power cut at the moment the process died would have kept.
//!
//! Without the feature both functions do nothing and read no environment.

// A release build must never be able to fail on purpose.
#[cfg(all(feature = "fault-injection", not(debug_assertions)))]
compile_error!("the fault-injection feature is for test builds only (debug assertions on)");

use walvault_core::batch::CommitStep;
use walvault_core::storage::WalStore;

/// The store the commands use: `store` itself, or with the feature and `WALVAULT_FAULTS` set,
/// `store` behind the core's fault injector.
pub fn wrap_store<'a>(
    store: Box<dyn WalStore + Sync + 'a>,
) -> anyhow::Result<Box<dyn WalStore + Sync + 'a>> {
    #[cfg(feature = "fault-injection")]
    if let Ok(spec) = std::env::var("WALVAULT_FAULTS") {
        let faulty = walvault_core::storage::FaultyStore::new(store);
        for (op, faults) in parse(&spec)? {
            faulty.script(op, &faults);
        }
        return Ok(Box::new(faulty));
    }
    Ok(store)
}

/// Called after each commit step is carried out: aborts the process when
/// `WALVAULT_CRASH_AFTER` names the step (with the feature).
pub fn after_step(step: &CommitStep) {
    #[cfg(feature = "fault-injection")]
    if let Ok(wanted) = std::env::var("WALVAULT_CRASH_AFTER") {
        let kind = match step {
            CommitStep::SyncStore => "sync",
            CommitStep::FindMissing(_) => "find",
            CommitStep::AppendCatalogue(_) => "catalogue",
            CommitStep::Release { .. } => "release",
            CommitStep::MoveToErrors { .. } => "errors",
        };
        if kind == wanted {
            eprintln!("walvault: WALVAULT_CRASH_AFTER={wanted}: aborting");
            std::process::abort();
        }
    }
    #[cfg(not(feature = "fault-injection"))]
    let _ = step;
}

/// The points a crash trial can stop a run at ([`failpoint`]), in the order a WAL meets them.
pub const FAILPOINTS: &[&str] = &[
    // The archived copy: written to its temp file, synced, linked under its name.
    "temp-written",
    "file-synced",
    "linked",
    // The commit: the store's directories synced, the catalogue lines appended and synced,
    // a source handed over for removal, the queue directory synced after the removals.
    "dir-synced",
    "catalogue-appended",
    "before-release",
    "after-release",
    // delete-wals: one archived file removed; the catalogue rewritten.
    "wal-deleted",
    "catalogue-rewritten",
    // reencrypt: the new copy stored under its temporary key; the WAL's copy replaced.
    "reencrypt-copy-stored",
    "reencrypt-replaced",
];

/// A point where a test-only build can crash: with `WALVAULT_CRASH_AT=POINT[:N]`, the process
/// aborts the N-th time it gets here (no destructor, no flush: as a `kill -9` would stop
/// it). Nothing at all without the feature.
pub fn failpoint(point: &'static str) {
    #[cfg(feature = "fault-injection")]
    {
        debug_assert!(FAILPOINTS.contains(&point), "{point} is not in FAILPOINTS");
        // WALVAULT_PAUSE_AT=POINT:MS holds the run there, to line up a race.
        if let Ok(pause) = std::env::var("WALVAULT_PAUSE_AT")
            && let Some((wanted, ms)) = pause.split_once(':')
            && wanted == point
        {
            std::thread::sleep(std::time::Duration::from_millis(ms.parse().unwrap_or(0)));
        }
        let Ok(spec) = std::env::var("WALVAULT_CRASH_AT") else {
            return;
        };
        let (wanted, nth) = match spec.split_once(':') {
            Some((w, n)) => (w, n.parse::<u32>().unwrap_or(1)),
            None => (spec.as_str(), 1),
        };
        if wanted != point {
            return;
        }
        static HITS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        if HITS.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == nth {
            eprintln!("walvault: WALVAULT_CRASH_AT={spec}: aborting");
            std::process::abort();
        }
    }
    #[cfg(not(feature = "fault-injection"))]
    let _ = point;
}

/// A file-system change or sync, as [`journal`] records it.
#[derive(Debug, Clone, Copy)]
pub enum FsEvent<'a> {
    /// A new file (its data is lost in a power cut until it is synced).
    Create(&'a std::path::Path),
    /// Bytes appended to a file of this length.
    Append(&'a std::path::Path, u64),
    /// A file's data synced (`fsync`/`fdatasync` returned).
    SyncFile(&'a std::path::Path),
    /// A hard link made.
    Link(&'a std::path::Path, &'a std::path::Path),
    /// A rename.
    Rename(&'a std::path::Path, &'a std::path::Path),
    /// A name removed.
    Unlink(&'a std::path::Path),
    /// A directory made.
    Mkdir(&'a std::path::Path),
    /// A directory synced (its entries are durable).
    SyncDir(&'a std::path::Path),
}

/// Records a file-system event in `WALVAULT_FS_JOURNAL` (with the feature). Changes are
/// recorded before they are made and syncs after they succeed, so the journal never claims
/// more durability than there was.
pub fn journal(event: FsEvent<'_>) {
    #[cfg(feature = "fault-injection")]
    {
        use std::io::Write;
        use std::sync::{Mutex, OnceLock, PoisonError};
        static FILE: OnceLock<Option<Mutex<std::fs::File>>> = OnceLock::new();
        let file = FILE.get_or_init(|| {
            let path = std::env::var_os("WALVAULT_FS_JOURNAL")?;
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .ok()
                .map(Mutex::new)
        });
        let Some(file) = file else {
            return;
        };
        let p = |path: &std::path::Path| path.display().to_string();
        let line = match event {
            FsEvent::Create(a) => format!("create\t{}\n", p(a)),
            FsEvent::Append(a, len) => format!("append\t{}\t{len}\n", p(a)),
            FsEvent::SyncFile(a) => format!("syncfile\t{}\n", p(a)),
            FsEvent::Link(a, b) => format!("link\t{}\t{}\n", p(a), p(b)),
            FsEvent::Rename(a, b) => format!("rename\t{}\t{}\n", p(a), p(b)),
            FsEvent::Unlink(a) => format!("unlink\t{}\n", p(a)),
            FsEvent::Mkdir(a) => format!("mkdir\t{}\n", p(a)),
            FsEvent::SyncDir(a) => format!("syncdir\t{}\n", p(a)),
        };
        // One write per line on an O_APPEND file: whole lines, whatever the threads do.
        let _ = file
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .write_all(line.as_bytes());
    }
    #[cfg(not(feature = "fault-injection"))]
    let _ = event;
}

#[cfg(feature = "fault-injection")]
type Script = Vec<(
    walvault_core::storage::Op,
    Vec<walvault_core::storage::Fault>,
)>;

#[cfg(feature = "fault-injection")]
fn parse(spec: &str) -> anyhow::Result<Script> {
    use anyhow::{Context, bail};
    use walvault_core::storage::{Fault, Op};
    let mut script = Vec::new();
    for part in spec.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (op, faults) = part
            .split_once('=')
            .with_context(|| format!("WALVAULT_FAULTS: {part:?} is not OP=FAULTS"))?;
        let op = match op.trim() {
            "head" => Op::Head,
            "get" => Op::Get,
            "put" => Op::Put,
            "list" => Op::List,
            "delete" => Op::Delete,
            "sync" => Op::Sync,
            other => bail!("WALVAULT_FAULTS: unknown operation {other:?}"),
        };
        let mut list = Vec::new();
        for fault in faults.split(',').map(str::trim) {
            let (name, count) = match fault.split_once('*') {
                Some((name, n)) => (name, n.parse::<usize>().context("WALVAULT_FAULTS: count")?),
                None => (fault, 1),
            };
            let fault = match name {
                "transient" => Fault::Transient,
                "permanent" => Fault::Permanent,
                "pass" => Fault::Pass,
                other => bail!("WALVAULT_FAULTS: unknown fault {other:?}"),
            };
            list.extend(std::iter::repeat_n(fault, count));
        }
        script.push((op, list));
    }
    Ok(script)
}

#[cfg(all(test, feature = "fault-injection"))]
mod tests {
    use super::*;
    use walvault_core::storage::{Fault, Op};

    #[test]
    fn fault_scripts_parse() {
        let script = parse("put=pass*2,transient; sync=permanent").expect("parses");
        assert_eq!(
            script,
            [
                (Op::Put, vec![Fault::Pass, Fault::Pass, Fault::Transient]),
                (Op::Sync, vec![Fault::Permanent])
            ]
        );
        assert!(parse("put=sometimes").is_err());
        assert!(parse("fly=pass").is_err());
    }
}
