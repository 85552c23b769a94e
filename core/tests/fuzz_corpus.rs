//! The fuzz targets (`fuzz/`, cargo-fuzz on nightly) over their checked-in seed corpus, as
//! ordinary tests on stable: every file of `fuzz/corpus/<target>/` goes through the body the
//! fuzzer runs (`walvault_core::fuzzing`). Inputs the fuzzer once crashed on are kept in the
//! corpus, so this is also the regression suite for its findings. The configuration
//! parser's target runs in the native host (`walvault::fuzzing`).

use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use walvault_core::fuzzing::{Target, seeds};

/// The corpus target of the native host, whose directory sits next to the core's.
const HOST_TARGETS: [&str; 1] = ["config"];

fn corpus_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus")
}

/// What one corpus directory gave.
#[derive(Debug)]
struct Run {
    files: usize,
    accepted: usize,
    /// `file: panic message` for every input the body panicked on.
    failures: Vec<String>,
}

/// Runs `body` on every file of `dir`, recording panics with the file's name. A missing or
/// empty directory is an error: a corpus that runs nothing proves nothing.
fn run_corpus(dir: &Path, body: impl Fn(&[u8]) -> bool) -> Result<Run, String> {
    let entries = fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut run = Run {
        files: 0,
        accepted: 0,
        failures: Vec::new(),
    };
    for entry in entries {
        let path = entry.map_err(|e| format!("{}: {e}", dir.display()))?.path();
        let data = fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        run.files += 1;
        match panic::catch_unwind(AssertUnwindSafe(|| body(&data))) {
            Ok(accepted) => run.accepted += usize::from(accepted),
            Err(payload) => {
                let message = payload
                    .downcast_ref::<&str>()
                    .map(ToString::to_string)
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "(no message)".into());
                run.failures.push(format!("{}: {message}", path.display()));
            }
        }
    }
    if run.files == 0 {
        return Err(format!("{}: empty corpus", dir.display()));
    }
    Ok(run)
}

#[test]
fn every_target_over_its_seed_corpus() {
    let mut problems = Vec::new();
    for target in Target::ALL {
        let dir = corpus_root().join(target.name());
        match run_corpus(&dir, |data| target.run(data)) {
            Ok(run) => {
                eprintln!(
                    "{}: {} files, {} accepted",
                    target.name(),
                    run.files,
                    run.accepted
                );
                problems.extend(run.failures);
                // Seeds that all fail the first check would leave the fuzzer at the door.
                if run.accepted == 0 {
                    problems.push(format!("{}: no seed is accepted", target.name()));
                }
            }
            Err(e) => problems.push(e),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn corpus_directories_are_the_targets() {
    let mut found: Vec<String> = fs::read_dir(corpus_root())
        .expect("fuzz/corpus")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    let mut expected: Vec<String> = Target::ALL.iter().map(|t| t.name().to_owned()).collect();
    expected.extend(HOST_TARGETS.map(String::from));
    expected.sort();
    assert_eq!(
        found, expected,
        "a corpus without a test, or a target without a corpus"
    );
}

#[test]
fn generated_seeds_are_in_the_corpus() {
    // Compressed seeds differ between the native and the pure-Rust encoders; names and
    // headers are the same bytes in both builds.
    for seed in seeds() {
        let path = corpus_root().join(seed.target.name()).join(seed.name);
        let data = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if !matches!(seed.target, Target::Decompress(_)) {
            assert!(
                data == seed.data,
                "{} differs from its generator",
                path.display()
            );
        }
    }
}

#[test]
fn the_runner_fails_on_panics_and_on_missing_or_empty_corpora() {
    let dir = corpus_root().join("wal_name");
    let run = run_corpus(&dir, |data| {
        assert!(data != b"000000010000000000000001", "deliberate");
        true
    })
    .expect("the wal_name corpus");
    assert_eq!(run.failures.len(), 1, "{:?}", run.failures);
    assert!(
        run.failures[0].contains("segment: deliberate"),
        "{:?}",
        run.failures
    );

    assert!(run_corpus(&corpus_root().join("no-such-target"), |_| true).is_err());
    let empty = Path::new(env!("CARGO_TARGET_TMPDIR")).join("empty-fuzz-corpus");
    fs::create_dir_all(&empty).expect("create an empty directory");
    assert!(run_corpus(&empty, |_| true).is_err());
}

/// Regenerates the generated part of the seed corpus (files found by fuzzing stay):
/// `cargo test -p walvault-core --features native-codecs --test fuzz_corpus -- --ignored`.
#[test]
#[ignore = "writes fuzz/corpus"]
fn write_seed_corpus() {
    for seed in seeds() {
        let dir = corpus_root().join(seed.target.name());
        fs::create_dir_all(&dir).expect("corpus directory");
        fs::write(dir.join(seed.name), &seed.data).expect("seed file");
    }
}
