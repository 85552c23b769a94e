//! Timeline history files (`TTTTTTTT.history`).

use serde::{Deserialize, Serialize};

use super::{Lsn, TimelineId};

/// One line of a history file: timeline `parent` ended at `switch_point`, starting the
/// file's own timeline (or a later ancestor of it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The timeline named by the history file.
    pub timeline: TimelineId,
    /// The timeline that was switched away from.
    pub parent: TimelineId,
    /// Where the parent timeline ended.
    pub switch_point: Lsn,
    /// Free text written by PostgreSQL (recovery target, "no recovery target specified", …).
    pub reason: String,
}

/// Why a history file cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum HistoryError {
    /// No entry at all (blank and comment lines only).
    #[error("history file for timeline {0} has no entries")]
    Empty(TimelineId),
    /// A line that is not `parent<TAB>X/X<TAB>reason`.
    #[error("history file for timeline {timeline}, line {line}: {problem}")]
    BadLine {
        /// The timeline named by the file.
        timeline: TimelineId,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        problem: String,
    },
}

/// Parses a history file's content (already decompressed). Blank lines and lines starting with
/// `#` are skipped; every other line must have exactly three tab-separated fields.
pub fn parse_history(
    timeline: TimelineId,
    content: &[u8],
) -> Result<Vec<HistoryEntry>, HistoryError> {
    let text = String::from_utf8_lossy(content);
    let mut entries = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let bad = |problem: String| HistoryError::BadLine {
            timeline,
            line: index + 1,
            problem,
        };
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        let [parent, switch_point, reason] = fields[..] else {
            return Err(bad(format!(
                "expected 3 tab-separated fields, found {}",
                fields.len()
            )));
        };
        let parent = parent
            .trim()
            .parse::<u32>()
            .map_err(|_| bad(format!("parent timeline {parent:?} is not a number")))?;
        let switch_point = switch_point
            .trim()
            .parse::<Lsn>()
            .map_err(|e| bad(e.to_string()))?;
        entries.push(HistoryEntry {
            timeline,
            parent: TimelineId(parent),
            switch_point,
            reason: reason.to_owned(),
        });
    }
    if entries.is_empty() {
        return Err(HistoryError::Empty(timeline));
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_reference_history() {
        // docs/barman-behaviours.md#B-KEEP-05.
        let content = b"# Comment\n\n1\t2/83000168\tat restore point \"myrp\"\n";
        let entries = parse_history(TimelineId(2), content).expect("valid");
        assert_eq!(
            entries,
            [HistoryEntry {
                timeline: TimelineId(2),
                parent: TimelineId(1),
                switch_point: Lsn(0x2_8300_0168),
                reason: "at restore point \"myrp\"".into(),
            }]
        );
    }

    #[test]
    fn parses_multi_line_history() {
        let content = b"1\t0/3000000\tno recovery target specified\n\n2\t0/5000060\tbefore 2026-11-21 10:00:00+00\n";
        let entries = parse_history(TimelineId(3), content).expect("valid");
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1].parent, TimelineId(2));
        assert_eq!(entries[1].switch_point.to_string(), "0/5000060");
    }

    #[test]
    fn rejects_bad_contents() {
        assert_eq!(
            parse_history(TimelineId(2), b""),
            Err(HistoryError::Empty(TimelineId(2)))
        );
        assert_eq!(
            parse_history(TimelineId(2), b"# only a comment\n\n"),
            Err(HistoryError::Empty(TimelineId(2)))
        );
        for bad in [
            &b"1\t2/83000168\n"[..],
            b"1\t2/83000168\treason\textra\n",
            b"x\t2/83000168\treason\n",
            b"1\tnope\treason\n",
        ] {
            let err = parse_history(TimelineId(2), bad).expect_err("must fail");
            assert!(
                matches!(err, HistoryError::BadLine { line: 1, .. }),
                "{err}"
            );
        }
    }
}
