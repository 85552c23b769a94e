//! `archive_queue_max`: a limit on the WAL PostgreSQL holds waiting to be archived, so that an
//! archive outage cannot fill `pg_wal` and stop the database.
//!
//! The queue is measured where it grows: PostgreSQL's `archive_status/*.ready` (not walvault's
//! own queues). While it is over the limit, `put-wal` acknowledges segments without archiving
//! them, oldest first (PostgreSQL hands them over oldest first), so PostgreSQL can recycle
//! them. Each one is recorded ([`DroppedSegment`]) and becomes a known gap: `check` fails and
//! every report names it as dropped by policy, never as lost. Only complete segments are
//! dropped: history files, backup labels and `.partial` files are small and a recovery needs
//! them.

use serde::{Deserialize, Serialize};

use crate::wal::WalFileName;

/// One WAL PostgreSQL has ready to archive, and its size in `pg_wal`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadyWal {
    /// Its name.
    pub name: WalFileName,
    /// Bytes it occupies.
    pub bytes: u64,
}

/// What to do with the segment PostgreSQL asks to archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueueVerdict {
    /// Archive it (no limit, within the limit, or not a segment).
    Archive,
    /// Acknowledge it without archiving: the queue is over the limit and it is among the
    /// oldest segments whose removal brings the queue back under.
    Drop {
        /// Bytes of ready WAL, this segment included.
        queue_bytes: u64,
        /// The limit.
        limit: u64,
    },
}

/// Decides for `name` given PostgreSQL's ready list and the limit (`archive_queue_max`).
pub fn decide(name: &WalFileName, ready: &[ReadyWal], limit: Option<u64>) -> QueueVerdict {
    let Some(limit) = limit else {
        return QueueVerdict::Archive;
    };
    if !name.is_segment() {
        return QueueVerdict::Archive;
    }
    let queue_bytes: u64 = ready.iter().map(|r| r.bytes).sum();
    if queue_bytes <= limit {
        return QueueVerdict::Archive;
    }
    // Oldest first: the segments that must go for the rest to fit under the limit.
    let mut segments: Vec<&ReadyWal> = ready.iter().filter(|r| r.name.is_segment()).collect();
    segments.sort_by_key(|r| r.name.segment());
    let mut left = queue_bytes;
    for r in segments {
        if left <= limit {
            break;
        }
        if r.name == *name {
            return QueueVerdict::Drop { queue_bytes, limit };
        }
        left -= r.bytes;
    }
    QueueVerdict::Archive
}

/// A segment acknowledged without being archived (`meta/dropped.jsonl`, one per line).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DroppedSegment {
    /// The segment.
    pub name: String,
    /// When (Unix seconds).
    pub at: f64,
    /// Why now: the queue over the limit, and what archiving it had found.
    pub reason: String,
    /// Bytes of ready WAL when it was dropped.
    pub queue_bytes: u64,
    /// `archive_queue_max` then.
    pub limit: u64,
}

/// What the dropped segments mean for an operator (`check`, `status`, the dashboard).
pub fn describe_dropped(dropped: &[DroppedSegment]) -> Option<String> {
    let first = dropped.first()?;
    let last = dropped.last()?;
    Some(format!(
        "{} segment(s) dropped by archive_queue_max ({} to {}): no point-in-time recovery \
         across them until a base backup taken after {}; move meta/dropped.jsonl aside once \
         one exists",
        dropped.len(),
        first.name,
        last.name,
        last.name
    ))
}

/// A ready list of these names, 16 MiB per segment and 40 bytes per history file (tests).
#[cfg(test)]
pub(crate) fn ready(names: &[&str]) -> Vec<ReadyWal> {
    names
        .iter()
        .map(|n| ReadyWal {
            name: n.parse().expect("name"),
            bytes: if n.ends_with(".history") {
                40
            } else {
                16 << 20
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &str) -> WalFileName {
        n.parse().expect("name")
    }

    const S1: &str = "000000010000000000000001";
    const S2: &str = "000000010000000000000002";
    const S3: &str = "000000010000000000000003";

    #[test]
    fn without_a_limit_or_under_it_everything_is_archived() {
        let list = ready(&[S1, S2, S3]);
        assert_eq!(decide(&name(S1), &list, None), QueueVerdict::Archive);
        assert_eq!(
            decide(&name(S1), &list, Some(48 << 20)),
            QueueVerdict::Archive
        );
    }

    #[test]
    fn over_the_limit_the_oldest_go_until_the_rest_fits() {
        let list = ready(&[S3, S1, S2, "00000002.history"]);
        let limit = Some(20 << 20);
        let queue_bytes = (48 << 20) + 40;
        for (n, verdict) in [
            (
                S1,
                QueueVerdict::Drop {
                    queue_bytes,
                    limit: 20 << 20,
                },
            ),
            (
                S2,
                QueueVerdict::Drop {
                    queue_bytes,
                    limit: 20 << 20,
                },
            ),
            (S3, QueueVerdict::Archive),
            ("00000002.history", QueueVerdict::Archive),
        ] {
            assert_eq!(decide(&name(n), &list, limit), verdict, "{n}");
        }
    }

    #[test]
    fn the_description_says_what_the_gap_costs() {
        let d = |n: &str| DroppedSegment {
            name: n.into(),
            at: 1.0,
            reason: "archive unreachable".into(),
            queue_bytes: 1,
            limit: 1,
        };
        assert_eq!(describe_dropped(&[]), None);
        let text = describe_dropped(&[d(S1), d(S2)]).expect("text");
        assert!(text.starts_with("2 segment(s) dropped by archive_queue_max (000000010000000000000001 to 000000010000000000000002)"));
        assert!(text.contains("no point-in-time recovery"));
    }
}
