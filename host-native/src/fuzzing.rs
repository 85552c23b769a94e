//! The body of the configuration parser's fuzz target (`fuzz/fuzz_targets/config.rs`), run
//! by cargo-fuzz and, over the checked-in seed corpus `fuzz/corpus/config/`, by this
//! module's test on stable (the core's targets live in `walvault_core::fuzzing`).

use std::path::Path;

use crate::config::{ArchiveLocation, Config};

/// Parses untrusted configuration text; true when it is a valid configuration.
///
/// Beyond not panicking: parsing is deterministic, and a configuration that is accepted
/// keeps the promises the README makes of it (every directory absolute, so `put-wal` never
/// archives relative to PostgreSQL's data directory; valid server names; a streaming
/// archiver always has a connection string; at least one archiver on).
pub fn config(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    let path = Path::new(crate::config::DEFAULT_CONFIG_PATH);
    let parsed = Config::parse(text, path);
    assert_eq!(
        parsed,
        Config::parse(text, path),
        "parsing is not deterministic"
    );
    let config = match parsed {
        Ok(config) => config,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return false;
        }
    };
    assert!(config.home.is_absolute(), "{}", config.home.display());
    for (name, server) in &config.servers {
        assert_eq!(&server.name, name);
        assert!(
            !name.is_empty()
                && !name.starts_with('.')
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
            "server name {name:?}"
        );
        let mut directories = vec![
            &server.backup_directory,
            &server.incoming,
            &server.streaming,
            &server.errors,
            &server.xlogdb_directory,
            &server.lock_directory,
        ];
        if let ArchiveLocation::Local(wals) = &server.archive {
            directories.push(wals);
        }
        for dir in directories {
            assert!(dir.is_absolute(), "[{name}]: {}", dir.display());
        }
        assert!(server.archiver || server.streaming_archiver, "[{name}]");
        assert!(
            !server.streaming_archiver || server.streaming_conninfo.is_some(),
            "[{name}]: a streaming archiver without a connection string"
        );
        assert_ne!(server.jobs, Some(0), "[{name}]");
    }
    true
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::panic::{self, AssertUnwindSafe};
    use std::path::PathBuf;

    use super::*;

    /// Runs [`config`] on every file of the corpus; (files, accepted, failures).
    fn run_corpus(dir: &Path) -> (usize, usize, Vec<String>) {
        let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let (mut files, mut accepted, mut failures) = (0, 0, Vec::new());
        for entry in entries {
            let path = entry.expect("corpus entry").path();
            let data = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            files += 1;
            match panic::catch_unwind(AssertUnwindSafe(|| config(&data))) {
                Ok(ok) => accepted += usize::from(ok),
                Err(_) => failures.push(path.display().to_string()),
            }
        }
        (files, accepted, failures)
    }

    #[test]
    fn config_target_over_its_seed_corpus() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/config");
        let (files, accepted, failures) = run_corpus(&dir);
        assert!(failures.is_empty(), "panicked on {failures:?}");
        // An empty corpus, or one the parser rejects whole, would prove nothing.
        assert!(
            files > 0 && accepted > 0,
            "{files} files, {accepted} accepted"
        );
        assert!(accepted < files, "no seed exercises an error path");
    }
}
