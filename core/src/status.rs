//! The status model and the checks, as pure functions over facts the host gathered.
//!
//! Hosts collect facts (directory counts, catalogue entries, PostgreSQL settings and
//! `pg_stat_archiver`); everything that decides OK or FAILED lives here, so the CLI, the JSON
//! API, the metrics and the dashboard agree.

use serde::{Deserialize, Serialize};

use crate::duplicate::ErrorSummary;
use crate::wal::WalFileName;

/// One check's result, printed as `\t<name>: OK|FAILED (<hint>)`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    /// What was checked (Barman's names where Barman has the check).
    pub name: String,
    /// Passed.
    pub ok: bool,
    /// Detail: why it failed, or a note.
    pub hint: Option<String>,
}

impl CheckResult {
    fn pass(name: &str, hint: Option<String>) -> Self {
        CheckResult {
            name: name.into(),
            ok: true,
            hint,
        }
    }
    fn fail(name: &str, hint: String) -> Self {
        CheckResult {
            name: name.into(),
            ok: false,
            hint: Some(hint),
        }
    }

    /// The text line, Barman style.
    pub fn line(&self) -> String {
        let verdict = if self.ok { "OK" } else { "FAILED" };
        match &self.hint {
            Some(h) => format!("\t{}: {verdict} ({h})", self.name),
            None => format!("\t{}: {verdict}", self.name),
        }
    }
}

/// The segments `archive_queue_max` dropped: a known gap, failing until an operator moves the
/// record aside after a new base backup. `None` when no limit is set and nothing was dropped.
pub fn check_dropped(
    dropped: &[crate::queue_limit::DroppedSegment],
    limit: Option<u64>,
) -> Option<CheckResult> {
    const NAME: &str = "dropped segments";
    match crate::queue_limit::describe_dropped(dropped) {
        Some(text) => Some(CheckResult::fail(NAME, text)),
        None => limit.map(|l| {
            CheckResult::pass(
                NAME,
                Some(format!("none (archive_queue_max: {})", human_bytes(l))),
            )
        }),
    }
}

/// `archive_mode` must be `on` or `always`.
pub fn check_archive_mode(mode: &str) -> CheckResult {
    match mode {
        "on" | "always" => CheckResult::pass("archive_mode", None),
        other => CheckResult::fail(
            "archive_mode",
            format!("is '{other}': please set it to 'on' or 'always'"),
        ),
    }
}

/// `archive_command` must be set (or an `archive_library` used).
pub fn check_archive_command(command: Option<&str>, library: Option<&str>) -> CheckResult {
    match (command.map(str::trim), library.map(str::trim)) {
        (_, Some(lib)) if !lib.is_empty() => CheckResult::pass(
            "archive_command",
            Some(format!("archive_library '{lib}' is used")),
        ),
        (Some(cmd), _) if !cmd.is_empty() && cmd != "(disabled)" => {
            CheckResult::pass("archive_command", None)
        }
        _ => CheckResult::fail(
            "archive_command",
            "not set: archive_command = 'walvault put-wal SERVER %p'".into(),
        ),
    }
}

/// PostgreSQL's `pg_stat_archiver`, with times as seconds since the epoch.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ArchiverStats {
    /// WAL files archived since the stats reset.
    pub archived_count: i64,
    /// The last one.
    pub last_archived_wal: Option<String>,
    /// When.
    pub last_archived_time: Option<f64>,
    /// Failed attempts since the stats reset.
    pub failed_count: i64,
    /// The last failure's WAL.
    pub last_failed_wal: Option<String>,
    /// When.
    pub last_failed_time: Option<f64>,
    /// When the counters were reset.
    pub stats_reset: Option<f64>,
}

impl ArchiverStats {
    /// Archived files per hour since the stats reset.
    pub fn archived_per_hour(&self, now: f64) -> Option<f64> {
        let since = self.stats_reset?;
        let hours = (now - since) / 3600.0;
        (hours > 0.0 && self.archived_count > 0).then(|| self.archived_count as f64 / hours)
    }
}

/// Whether PostgreSQL is archiving successfully: archive mode on and no failure since the last
/// success (a failed `.history` of an older timeline than the last archived WAL does not
/// count: PostgreSQL probes for it).
pub fn is_archiving(mode: &str, stats: &ArchiverStats) -> bool {
    if !matches!(mode, "on" | "always") {
        return false;
    }
    if stats.failed_count == 0 {
        return true;
    }
    let history_of_older_timeline = match (
        stats
            .last_failed_wal
            .as_deref()
            .and_then(|w| w.parse::<WalFileName>().ok()),
        stats
            .last_archived_wal
            .as_deref()
            .and_then(|w| w.parse::<WalFileName>().ok()),
    ) {
        (Some(failed @ WalFileName::History(_)), Some(archived)) => {
            failed.timeline() <= archived.timeline()
        }
        _ => false,
    };
    let success_after_failure = match (stats.last_failed_time, stats.last_archived_time) {
        (Some(failed), Some(archived)) => failed < archived,
        (None, _) => true,
        _ => false,
    };
    history_of_older_timeline || success_after_failure
}

/// The `continuous archiving` check.
pub fn check_continuous_archiving(mode: &str, stats: &ArchiverStats) -> CheckResult {
    if is_archiving(mode, stats) {
        CheckResult::pass("continuous archiving", None)
    } else {
        let detail = match (&stats.last_failed_wal, stats.failed_count) {
            (Some(wal), n) => format!(
                "{n} failure(s); last failed WAL {wal}: see the PostgreSQL log for archive_command's message"
            ),
            (None, _) => "archive_mode is off".to_owned(),
        };
        CheckResult::fail("continuous archiving", detail)
    }
}

/// The `archiver errors` check: `errors/` must be empty.
pub fn check_errors(summary: &ErrorSummary) -> CheckResult {
    if summary.total() == 0 {
        CheckResult::pass("archiver errors", None)
    } else {
        CheckResult::fail(
            "archiver errors",
            format!("{}; see 'walvault show-errors'", summary.hint()),
        )
    }
}

/// A queue's size against `max_incoming_wals_queue`.
pub fn check_queue(name: &str, waiting: usize, max: Option<u64>) -> CheckResult {
    match max {
        Some(max) if waiting as u64 > max => CheckResult::fail(
            name,
            format!("there are too many WALs in queue: {waiting}, max {max}"),
        ),
        _ => CheckResult::pass(name, Some(format!("{waiting} waiting"))),
    }
}

/// The `WAL archive` check: something has been archived.
pub fn check_wal_archive(catalogue_entries: usize, queued: usize) -> CheckResult {
    if catalogue_entries > 0 {
        CheckResult::pass(
            "WAL archive",
            Some(format!("{catalogue_entries} file(s) in the catalogue")),
        )
    } else if queued > 0 {
        CheckResult::fail(
            "WAL archive",
            format!(
                "nothing archived yet, but {queued} file(s) are queued: run 'walvault archive-wal'"
            ),
        )
    } else {
        CheckResult::fail("WAL archive", "no WAL received yet: check archive_command (put-wal or a copy into incoming/) or receive-wal".into())
    }
}

/// The `wal maximum age` check.
pub fn check_last_wal_age(last_time: Option<f64>, now: f64, max_age: Option<u64>) -> CheckResult {
    let Some(max_age) = max_age else {
        return CheckResult::pass(
            "wal maximum age",
            Some("no last_wal_maximum_age provided".into()),
        );
    };
    match last_time {
        None => CheckResult::fail("wal maximum age", "no WAL archived yet".into()),
        Some(t) => {
            let age = (now - t).max(0.0) as u64;
            let text = format!(
                "interval provided: {}, latest wal age: {}",
                human_duration(max_age),
                human_duration(age)
            );
            if age <= max_age {
                CheckResult::pass("wal maximum age", Some(text))
            } else {
                CheckResult::fail("wal maximum age", text)
            }
        }
    }
}

/// Stale temporary files in the archive (left by a crash).
pub fn check_temp_files(count: usize) -> CheckResult {
    if count == 0 {
        CheckResult::pass("temporary files", None)
    } else {
        CheckResult::fail(
            "temporary files",
            format!(
                "{count} stale temporary file(s) in the archive: 'walvault rebuild-xlogdb' removes them"
            ),
        )
    }
}

/// `3 days, 4 hours`, `5 minutes`, `12 seconds`.
pub fn human_duration(seconds: u64) -> String {
    let units = [
        ("day", 86_400),
        ("hour", 3600),
        ("minute", 60),
        ("second", 1),
    ];
    let mut parts = Vec::new();
    let mut rest = seconds;
    for (unit, size) in units {
        let n = rest / size;
        rest %= size;
        if n > 0 {
            parts.push(format!("{n} {unit}{}", if n == 1 { "" } else { "s" }));
        }
        if parts.len() == 2 {
            break;
        }
    }
    if parts.is_empty() {
        "0 seconds".into()
    } else {
        parts.join(", ")
    }
}

/// `1.5 GiB`, `512 B`.
pub fn human_bytes(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < units.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", units[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(
        failed: i64,
        last_failed: Option<&str>,
        failed_t: Option<f64>,
        archived: Option<&str>,
        archived_t: Option<f64>,
    ) -> ArchiverStats {
        ArchiverStats {
            archived_count: 10,
            last_archived_wal: archived.map(Into::into),
            last_archived_time: archived_t,
            failed_count: failed,
            last_failed_wal: last_failed.map(Into::into),
            last_failed_time: failed_t,
            stats_reset: Some(0.0),
        }
    }

    #[test]
    fn archiving_state() {
        assert!(is_archiving("on", &stats(0, None, None, None, None)));
        assert!(!is_archiving("off", &stats(0, None, None, None, None)));
        let wal = Some("000000020000000000000005");
        assert!(
            is_archiving(
                "always",
                &stats(
                    3,
                    Some("000000020000000000000004"),
                    Some(10.0),
                    wal,
                    Some(20.0)
                )
            ),
            "success after failure"
        );
        assert!(
            !is_archiving(
                "on",
                &stats(
                    3,
                    Some("000000020000000000000006"),
                    Some(30.0),
                    wal,
                    Some(20.0)
                )
            ),
            "failing now"
        );
        assert!(
            is_archiving(
                "on",
                &stats(1, Some("00000002.history"), Some(30.0), wal, Some(20.0))
            ),
            "history probe of the current timeline"
        );
        assert!(!is_archiving(
            "on",
            &stats(1, Some("00000003.history"), Some(30.0), wal, Some(20.0))
        ));
        let c = check_continuous_archiving(
            "on",
            &stats(
                3,
                Some("000000020000000000000006"),
                Some(30.0),
                wal,
                Some(20.0),
            ),
        );
        assert!(
            !c.ok
                && c.hint
                    .as_deref()
                    .is_some_and(|h| h.contains("000000020000000000000006"))
        );
    }

    #[test]
    fn settings_checks() {
        assert!(check_archive_mode("on").ok && check_archive_mode("always").ok);
        assert_eq!(
            check_archive_mode("off").line(),
            "\tarchive_mode: FAILED (is 'off': please set it to 'on' or 'always')"
        );
        assert!(!check_archive_command(Some("(disabled)"), None).ok);
        assert!(!check_archive_command(Some(""), Some("")).ok);
        assert!(check_archive_command(Some("walvault put-wal pg %p"), None).ok);
        assert!(check_archive_command(None, Some("basic_archive")).ok);
    }

    #[test]
    fn local_checks() {
        assert_eq!(
            check_errors(&ErrorSummary::default()).line(),
            "\tarchiver errors: OK"
        );
        let e = check_errors(&ErrorSummary {
            duplicates: 1,
            unknown: 2,
            ..ErrorSummary::default()
        });
        assert_eq!(
            e.line(),
            "\tarchiver errors: FAILED (duplicates: 1, unknown: 2; see 'walvault show-errors')"
        );
        assert!(!check_queue("incoming WALs directory", 11, Some(10)).ok);
        assert!(check_queue("incoming WALs directory", 10, Some(10)).ok);
        assert!(check_queue("incoming WALs directory", 1000, None).ok);
        assert!(
            !check_wal_archive(0, 0).ok
                && !check_wal_archive(0, 3).ok
                && check_wal_archive(1, 0).ok
        );
        let age = check_last_wal_age(Some(1000.0), 1000.0 + 7200.0, Some(3600));
        assert_eq!(
            age.line(),
            "\twal maximum age: FAILED (interval provided: 1 hour, latest wal age: 2 hours)"
        );
        assert!(check_last_wal_age(Some(1000.0), 1100.0, Some(3600)).ok);
        assert!(check_last_wal_age(None, 0.0, None).ok);
        assert!(!check_last_wal_age(None, 0.0, Some(1)).ok);
        assert!(!check_temp_files(2).ok);
    }

    #[test]
    fn human_units() {
        assert_eq!(human_duration(0), "0 seconds");
        assert_eq!(human_duration(90_061), "1 day, 1 hour");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 << 29), "1.5 GiB");
        let s = ArchiverStats {
            archived_count: 6,
            stats_reset: Some(0.0),
            ..ArchiverStats::default()
        };
        assert_eq!(s.archived_per_hour(7200.0), Some(3.0));
    }
}
