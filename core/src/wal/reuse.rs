//! Detecting an archive re-used by a new cluster (Barman's `check-wal-archive`).

use super::WalFileName;

/// Why an archive's contents make it unsafe for a cluster starting on a timeline.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArchiveReuseError {
    /// No timeline was given, so any content at all is suspicious.
    #[error("Expected empty archive")]
    ExpectedEmpty,
    /// The timeline argument is not a positive number.
    #[error("Cannot check WAL archive with malformed timeline {0}")]
    MalformedTimeline(String),
    /// Files on the new cluster's timeline or later already exist.
    #[error("Found {count} {noun} in WAL archive equal to or newer than timeline {timeline}", noun = if *count == 1 { "file" } else { "files" })]
    NewerFiles {
        /// How many.
        count: usize,
        /// The timeline checked.
        timeline: u32,
    },
    /// Something in the archive is not a WAL file name.
    #[error("Unexpected file {0} found in WAL archive")]
    Unexpected(String),
}

/// Checks that an archive holding `names` can take WAL from a cluster on `timeline`: with no
/// timeline the archive must be empty; otherwise nothing may be on that timeline or a later one.
pub fn check_archive_usable<S: AsRef<str>>(
    names: &[S],
    timeline: Option<&str>,
) -> Result<(), ArchiveReuseError> {
    let Some(timeline) = timeline else {
        return if names.is_empty() {
            Ok(())
        } else {
            Err(ArchiveReuseError::ExpectedEmpty)
        };
    };
    let tli = match timeline.trim().parse::<u32>() {
        Ok(t) if t > 0 => t,
        _ => return Err(ArchiveReuseError::MalformedTimeline(timeline.to_owned())),
    };
    let mut count = 0;
    for name in names {
        let name = name.as_ref();
        let parsed = WalFileName::from_path(name)
            .map_err(|_| ArchiveReuseError::Unexpected(name.to_owned()))?;
        if parsed.timeline().0 >= tli {
            count += 1;
        }
    }
    if count > 0 {
        Err(ArchiveReuseError::NewerFiles {
            count,
            timeline: tli,
        })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_cases() {
        // docs/barman-behaviours.md#B-KEEP-06.
        let none: [&str; 0] = [];
        assert_eq!(check_archive_usable(&none, None), Ok(()));
        for lone in [
            "000000010000000000000001",
            "00000001.history",
            "000000010000000000000001.00000028.backup",
        ] {
            assert_eq!(
                check_archive_usable(&[lone], None),
                Err(ArchiveReuseError::ExpectedEmpty)
            );
        }
        for bad in ["0", "-1", "two"] {
            let err = check_archive_usable(&none, Some(bad)).expect_err("malformed");
            assert_eq!(
                err.to_string(),
                format!("Cannot check WAL archive with malformed timeline {bad}")
            );
        }
        assert_eq!(
            check_archive_usable(&["00000002.history"], Some("3")),
            Ok(())
        );
        let err = check_archive_usable(&["00000002.history", "00000003.history"], Some("2"))
            .expect_err("newer");
        assert_eq!(
            err.to_string(),
            "Found 2 files in WAL archive equal to or newer than timeline 2"
        );
        let err =
            check_archive_usable(&["000000020000000000000001"], Some("1")).expect_err("newer");
        assert_eq!(
            err.to_string(),
            "Found 1 file in WAL archive equal to or newer than timeline 1"
        );
        let err = check_archive_usable(
            &["000000010000000100000001", "000000010000000100000001.gz"],
            Some("2"),
        )
        .expect_err("odd file");
        assert_eq!(
            err.to_string(),
            "Unexpected file 000000010000000100000001.gz found in WAL archive"
        );
    }
}
