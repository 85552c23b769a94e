//! Decisions for streaming with `pg_receivewal`: which partial file to repair before a start,
//! how `--reset` realigns the streaming directory with the server, whether a `pg_receivewal`
//! can stream from a server, and whether `synchronous_standby_names` names the receiver.
//!
//! The host lists the directory and queries PostgreSQL; everything here is pure.

use serde::{Deserialize, Serialize};

use crate::wal::{Lsn, Segment, SegmentSize, TimelineId, WalFileName};

/// A file in the streaming directory: its name and size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamingFile {
    /// The file name.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
}

/// The newest `.partial` in the streaming directory when its size is neither 0 nor the
/// segment size.
///
/// `pg_receivewal` pads a new partial to the full size before writing WAL into it, and it
/// refuses to resume from a partial of any other size. Such a file can only come from a
/// crash during that padding, so it holds no WAL and can be truncated to 0 (which
/// `pg_receivewal` accepts and pads again).
pub fn partial_to_truncate(files: &[StreamingFile], size: SegmentSize) -> Option<&StreamingFile> {
    files
        .iter()
        .filter(|f| matches!(f.name.parse(), Ok(WalFileName::Partial(_))))
        .max_by(|a, b| a.name.cmp(&b.name))
        .filter(|f| f.size != 0 && f.size != size.bytes())
}

/// What `receive-wal --reset` does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResetPlan {
    /// The newest streamed file is already where streaming must resume.
    Aligned,
    /// The streaming directory holds WAL newer than the server's current position: the
    /// server is not the one streamed from, or it was restored to an earlier point.
    /// Resetting would hide that, so it is refused.
    Ahead {
        /// The newest streamed file.
        newest: String,
        /// The segment the server is writing.
        current: String,
    },
    /// Move `set_aside` (the newest file, when it is a partial) out of `pg_receivewal`'s way
    /// and create an empty `create` partial, from which `pg_receivewal` resumes.
    ///
    /// Barman deletes that partial; it may hold the only copy of the old position's last WAL
    /// (after a timeline switch, the old timeline's end), so walvault hands it to the archiver
    /// (incoming/) instead.
    Realign {
        /// A stale partial to move to incoming/ for archiving.
        set_aside: Option<String>,
        /// The empty `.partial` to create.
        create: String,
    },
}

/// Plans `--reset`: the position to resume from is the segment of the slot's `restart_lsn`
/// when there is one (the slot keeps WAL from there), else the segment of the server's
/// current LSN; both on the server's current timeline.
pub fn plan_reset(
    files: &[StreamingFile],
    timeline: TimelineId,
    current_lsn: Lsn,
    restart_lsn: Option<Lsn>,
    size: SegmentSize,
) -> ResetPlan {
    let (current, _) = Segment::from_lsn(timeline, current_lsn, size);
    let (restart, _) = Segment::from_lsn(timeline, restart_lsn.unwrap_or(current_lsn), size);
    let newest = files
        .iter()
        .filter_map(|f| match f.name.parse::<WalFileName>() {
            Ok(n @ (WalFileName::Segment(_) | WalFileName::Partial(_))) => Some((n, f)),
            _ => None,
        })
        .max_by(|(a, _), (b, _)| a.cmp(b));
    let create = WalFileName::Partial(restart).to_string();
    let Some((name, file)) = newest else {
        return ResetPlan::Realign {
            set_aside: None,
            create,
        };
    };
    let segment = name.segment().unwrap_or(restart);
    if segment.segno(size) > current.segno(size) {
        return ResetPlan::Ahead {
            newest: file.name.clone(),
            current: current.to_string(),
        };
    }
    // On the server's timeline and not behind what the slot keeps: streaming can resume from
    // there (re-streaming from restart_lsn would only rewrite the newest partial).
    if segment.timeline == timeline && segment.segno(size) >= restart.segno(size) {
        return ResetPlan::Aligned;
    }
    ResetPlan::Realign {
        set_aside: name.is_partial().then(|| file.name.clone()),
        create,
    }
}

/// The first number of the version in `pg_receivewal --version` output ("pg_receivewal
/// (PostgreSQL) 15.8 (Debian 15.8-1)" gives 15; 9.6 gives 9).
pub fn parse_tool_major(version_output: &str) -> Option<u32> {
    let rest = version_output.split(')').nth(1)?.trim_start();
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Whether a `pg_receivewal` of `client_major` can stream from a server of
/// `server_version_num` (e.g. 150008): it must be at least 10 and not older than the server
/// (a client knows the protocol and WAL layout of its own and earlier versions).
pub fn receivewal_compatible(client_major: u32, server_version_num: u32) -> Result<(), String> {
    let server_major = if server_version_num >= 100_000 {
        server_version_num / 10_000
    } else {
        server_version_num / 100
    };
    if client_major < 10 {
        return Err(format!(
            "pg_receivewal {client_major} is too old: walvault needs PostgreSQL 10 or later"
        ));
    }
    if server_major > client_major {
        return Err(format!(
            "pg_receivewal {client_major} cannot stream from PostgreSQL {server_major}: \
             install pg_receivewal {server_major} or later (or set path_prefix)"
        ));
    }
    Ok(())
}

/// Whether `synchronous_standby_names` lists `application_name` (or `*`), in any of its
/// forms: `a, b`, `FIRST n (a, b)`, `n (a, b)`, `ANY n (a, b)`, with double-quoted names.
/// Unquoted names compare case-insensitively, as PostgreSQL does.
pub fn sync_names_include(setting: &str, application_name: &str) -> bool {
    let list = match (setting.find('('), setting.rfind(')')) {
        (Some(open), Some(close)) if open < close => &setting[open + 1..close],
        _ => setting,
    };
    list.split(',').map(str::trim).any(|item| {
        if item == "*" {
            true
        } else if let Some(quoted) = item.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
            quoted.replace("\"\"", "\"") == application_name
        } else {
            !item.is_empty() && item.eq_ignore_ascii_case(application_name)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB16: u64 = 16 << 20;

    fn f(name: &str, size: u64) -> StreamingFile {
        StreamingFile {
            name: name.into(),
            size,
        }
    }

    #[test]
    fn only_the_newest_partial_of_a_wrong_size_is_truncated() {
        let size = SegmentSize::DEFAULT;
        let files = [
            f("000000010000000000000001", MB16),
            f("000000010000000000000002.partial", 8192),
            f("000000010000000000000003.partial", 123),
        ];
        assert_eq!(
            partial_to_truncate(&files, size).map(|f| f.name.as_str()),
            Some("000000010000000000000003.partial")
        );
        let padded = [f("000000010000000000000003.partial", MB16)];
        assert_eq!(partial_to_truncate(&padded, size), None);
        let empty = [f("000000010000000000000003.partial", 0)];
        assert_eq!(partial_to_truncate(&empty, size), None);
        // An older broken partial is not the one pg_receivewal resumes from.
        let older = [
            f("000000010000000000000002.partial", 5),
            f("000000010000000000000003.partial", MB16),
        ];
        assert_eq!(partial_to_truncate(&older, size), None);
        assert_eq!(partial_to_truncate(&[f("garbage.partial", 5)], size), None);
    }

    #[test]
    fn reset_plans() {
        let size = SegmentSize::DEFAULT;
        let tli = TimelineId(1);
        let lsn = |s: &str| s.parse::<Lsn>().expect("lsn");
        // Nothing streamed yet: create the partial of the current segment.
        assert_eq!(
            plan_reset(&[], tli, lsn("0/5000060"), None, size),
            ResetPlan::Realign {
                set_aside: None,
                create: "000000010000000000000005.partial".into()
            }
        );
        // Already there, as a partial or as a completed file.
        let at = [f("000000010000000000000005.partial", MB16)];
        assert_eq!(
            plan_reset(&at, tli, lsn("0/5000060"), None, size),
            ResetPlan::Aligned
        );
        // The slot's restart_lsn wins over the current position.
        let behind = [
            f("000000010000000000000001", MB16),
            f("000000010000000000000002.partial", MB16),
        ];
        assert_eq!(
            plan_reset(&behind, tli, lsn("0/9000000"), Some(lsn("0/7000028")), size),
            ResetPlan::Realign {
                set_aside: Some("000000010000000000000002.partial".into()),
                create: "000000010000000000000007.partial".into()
            }
        );
        // A completed newest file is kept.
        let complete = [f("000000010000000000000002", MB16)];
        assert_eq!(
            plan_reset(&complete, tli, lsn("0/9000000"), None, size),
            ResetPlan::Realign {
                set_aside: None,
                create: "000000010000000000000009.partial".into()
            }
        );
        // Between the slot's restart_lsn and the current WAL: already resumable.
        let between = [f("000000010000000000000008.partial", MB16)];
        assert_eq!(
            plan_reset(
                &between,
                tli,
                lsn("0/9000000"),
                Some(lsn("0/7000028")),
                size
            ),
            ResetPlan::Aligned
        );
        // Ahead of the server: refused.
        let ahead = [f("00000001000000000000000A.partial", MB16)];
        assert_eq!(
            plan_reset(&ahead, tli, lsn("0/9000000"), None, size),
            ResetPlan::Ahead {
                newest: "00000001000000000000000A.partial".into(),
                current: "000000010000000000000009".into()
            }
        );
        // After a timeline switch the old timeline's last partial is set aside, even at the
        // same segment number (pg_receivewal could not tell which one to resume from).
        let old_tli = [f("000000010000000000000009.partial", MB16)];
        assert_eq!(
            plan_reset(&old_tli, TimelineId(2), lsn("0/9000100"), None, size),
            ResetPlan::Realign {
                set_aside: Some("000000010000000000000009.partial".into()),
                create: "000000020000000000000009.partial".into()
            }
        );
        // History files and strangers do not count as a position.
        let other = [f("00000002.history", 40), f("junk", 1)];
        assert!(matches!(
            plan_reset(&other, TimelineId(2), lsn("0/9000000"), None, size),
            ResetPlan::Realign { set_aside: None, ref create } if create == "000000020000000000000009.partial"
        ));
    }

    #[test]
    fn tool_versions() {
        assert_eq!(
            parse_tool_major("pg_receivewal (PostgreSQL) 15.8 (Debian 15.8-1.pgdg120+1)\n"),
            Some(15)
        );
        assert_eq!(
            parse_tool_major("pg_receivewal (PostgreSQL) 17beta1"),
            Some(17)
        );
        assert_eq!(
            parse_tool_major("pg_receivexlog (PostgreSQL) 9.6.24"),
            Some(9)
        );
        assert_eq!(parse_tool_major("nonsense"), None);
        assert_eq!(receivewal_compatible(15, 150_008), Ok(()));
        assert_eq!(receivewal_compatible(16, 130_002), Ok(()));
        let err = receivewal_compatible(15, 160_001).expect_err("older client");
        assert!(err.contains("cannot stream from PostgreSQL 16"), "{err}");
        assert!(receivewal_compatible(9, 90_624).is_err());
    }

    #[test]
    fn synchronous_standby_names_forms() {
        let app = "barman_receive_wal";
        for yes in [
            "*",
            "barman_receive_wal",
            "a, barman_receive_wal",
            "FIRST 1 (a, barman_receive_wal)",
            "2 (barman_receive_wal, b)",
            "ANY 1 (x, *)",
            "\"barman_receive_wal\"",
            "BARMAN_RECEIVE_WAL",
        ] {
            assert!(sync_names_include(yes, app), "{yes}");
        }
        for no in [
            "",
            "a, b",
            "FIRST 1 (a)",
            "\"BARMAN_RECEIVE_WAL\"",
            "barman",
        ] {
            assert!(!sync_names_include(no, app), "{no}");
        }
    }
}
