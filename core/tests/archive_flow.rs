//! The archive flow driven end to end over in-memory storage and queues, with an injected
//! clock: every outcome, what happens to the source, and what the catalogue says.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::{self, Read};

use walvault_core::archive::{
    ArchiveHooks, ArchiveSettings, Archiver, CatalogueSink, FileOutcome, HookVerdict,
    InvalidReason, NoHooks, Queue, SourceFile, run_batch,
};
use walvault_core::batch::BatchOptions;
use walvault_core::catalogue::CatalogueEntry;
use walvault_core::compression::{Codec, DecodeLimits, Level, decode_all, encode_all};
use walvault_core::duplicate::DifferenceReason;
use walvault_core::encryption::Decrypt;
use walvault_core::layout::Layout;
use walvault_core::queue::{DirEntry, EntryKind, QueueKind, select_batch};
use walvault_core::restore::{RestoreError, locate, restore};
use walvault_core::storage::{
    Fault, FaultyStore, MemoryStore, ObjectMeta, Op, Payload, PutMode, StorageError, WalStore,
    get_bytes,
};
use walvault_core::wal::{HeaderError, SegmentSize, WalFileName, synthetic_page_header};

const NOW: f64 = 1_795_305_600.0; // 2026-11-22T00:00:00Z
const OLD: f64 = NOW - 3600.0;
const SYSID: u64 = 7_400_000_000_000_000_001;

fn size() -> SegmentSize {
    SegmentSize::new(1 << 20).expect("1 MiB")
}

/// A WAL-like segment: a valid page header, then records-ish bytes that compress.
fn segment(name: &str, seed: u8) -> Vec<u8> {
    let n: WalFileName = name.parse().expect("name");
    let mut data = vec![0u8; size().bytes() as usize];
    data[..40].copy_from_slice(&synthetic_page_header(&n, size(), SYSID));
    for (i, b) in data.iter_mut().enumerate().skip(40).take(300_000) {
        *b = (i as u8).wrapping_mul(31).wrapping_add(seed) % 17;
    }
    data
}

#[derive(Default)]
struct MemQueue {
    files: BTreeMap<String, (Vec<u8>, f64)>,
    errors: BTreeMap<String, Vec<u8>>,
    fail_release: bool,
    unreadable: Option<String>,
}

struct MemSource(Vec<u8>);
impl SourceFile for MemSource {
    fn open(&self) -> io::Result<Box<dyn Read + '_>> {
        Ok(Box::new(&self.0[..]))
    }
}

struct Unreadable;
impl SourceFile for Unreadable {
    fn open(&self) -> io::Result<Box<dyn Read + '_>> {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "permission denied",
        ))
    }
}

impl MemQueue {
    fn add(&mut self, name: &str, data: Vec<u8>, mtime: f64) {
        self.files.insert(name.into(), (data, mtime));
    }
    fn listing(&self) -> Vec<DirEntry> {
        self.files
            .iter()
            .map(|(n, (d, m))| DirEntry {
                file_name: n.clone(),
                kind: EntryKind::File,
                size: d.len() as u64,
                mtime: *m,
            })
            .collect()
    }
}

impl Queue for MemQueue {
    fn source<'a>(&'a self, c: &walvault_core::queue::Candidate) -> Box<dyn SourceFile + 'a> {
        if self.unreadable.as_deref() == Some(c.file_name.as_str()) {
            return Box::new(Unreadable);
        }
        Box::new(MemSource(
            self.files
                .get(&c.file_name)
                .map(|f| f.0.clone())
                .unwrap_or_default(),
        ))
    }
    fn release(&mut self, file_name: &str) -> io::Result<()> {
        if self.fail_release {
            return Err(io::Error::other("read-only queue"));
        }
        self.files
            .remove(file_name)
            .map(drop)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, file_name.to_owned()))
    }
    fn move_to_errors(
        &mut self,
        file_name: &str,
        names: &mut dyn Iterator<Item = String>,
    ) -> io::Result<String> {
        let mut target = None;
        for name in names {
            if !self.errors.contains_key(&name) {
                target = Some(name);
                break;
            }
        }
        let target =
            target.ok_or_else(|| io::Error::new(io::ErrorKind::AlreadyExists, "no free name"))?;
        let (data, _) = self
            .files
            .remove(file_name)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, file_name.to_owned()))?;
        self.errors.insert(target.clone(), data);
        Ok(target)
    }
}

#[derive(Default)]
struct MemCatalogue {
    lines: Vec<CatalogueEntry>,
    fail: bool,
}
impl CatalogueSink for MemCatalogue {
    fn append(&mut self, entries: &[CatalogueEntry]) -> io::Result<()> {
        if self.fail {
            return Err(io::Error::other("disk full"));
        }
        self.lines.extend_from_slice(entries);
        Ok(())
    }
    fn missing(&self, names: &[String]) -> io::Result<Vec<String>> {
        Ok(names
            .iter()
            .filter(|n| !self.lines.iter().any(|l| &l.name == *n))
            .cloned()
            .collect())
    }
}

fn settings(codec: Option<Codec>) -> ArchiveSettings {
    ArchiveSettings {
        codec,
        level: Level::Low,
        segment_size: size(),
        system_identifier: Some(SYSID),
        ..ArchiveSettings::default()
    }
}

struct Run {
    report: walvault_core::archive::BatchReport,
}

/// The candidate for one old file of `size` bytes in `incoming/`.
fn old_candidate(name: &str, size: usize) -> walvault_core::queue::Candidate {
    select_batch(
        QueueKind::Incoming,
        vec![DirEntry {
            file_name: name.into(),
            kind: EntryKind::File,
            size: size as u64,
            mtime: OLD,
        }],
        0,
    )
    .files
    .remove(0)
}

fn run(
    store: &dyn WalStore,
    s: &ArchiveSettings,
    queue: &mut MemQueue,
    catalogue: &mut MemCatalogue,
    kind: QueueKind,
    hooks: &dyn ArchiveHooks,
) -> Run {
    let batch = select_batch(kind, queue.listing(), 0);
    let archiver = Archiver {
        store,
        settings: s,
        decryptor: None,
        encryptor: None,
    };
    Run {
        report: run_batch(
            &archiver,
            &batch,
            queue,
            catalogue,
            hooks,
            NOW,
            BatchOptions::default(),
        ),
    }
}

fn outcomes(r: &Run) -> Vec<(String, String)> {
    r.report
        .files
        .iter()
        .map(|f| {
            let kind = match &f.outcome {
                FileOutcome::Archived { .. } => "archived",
                FileOutcome::IdenticalDuplicate { .. } => "identical",
                FileOutcome::DifferentDuplicate { .. } => "different",
                FileOutcome::Invalid { .. } => "invalid",
                FileOutcome::Unknown { .. } => "unknown",
                FileOutcome::Deferred { .. } => "deferred",
                FileOutcome::SourceError { .. } => "unreadable",
                FileOutcome::Failed { .. } => "failed",
            };
            (f.file_name.clone(), kind.to_owned())
        })
        .collect()
}

const S1: &str = "000000010000000000000001";
const S2: &str = "000000010000000000000002";
const S3: &str = "000000010000000000000003";

#[test]
fn archives_compresses_and_catalogues_in_name_order() {
    let store = MemoryStore::new();
    let s = settings(Some(Codec::Gzip));
    let mut q = MemQueue::default();
    q.add(S2, segment(S2, 2), OLD + 2.5);
    q.add(S1, segment(S1, 1), OLD + 1.0);
    q.add(
        "00000002.history",
        b"1\t0/2000000\tno recovery target specified\n".to_vec(),
        OLD,
    );
    q.add("garbage.txt", b"x".to_vec(), OLD);
    let mut cat = MemCatalogue::default();
    let r = run(&store, &s, &mut q, &mut cat, QueueKind::Incoming, &NoHooks);
    assert_eq!(
        outcomes(&r),
        [
            (S1.into(), "archived".into()),
            (S2.into(), "archived".into()),
            ("00000002.history".into(), "archived".into()),
            ("garbage.txt".into(), "unknown".into())
        ]
    );
    assert!(!r.report.failed());
    assert!(q.files.is_empty(), "every source released or moved");
    assert_eq!(
        q.errors.keys().collect::<Vec<_>>(),
        ["garbage.txt.20261122T000000Z.unknown"]
    );
    assert_eq!(
        store.keys(),
        [
            "0000000100000000/000000010000000000000001",
            "0000000100000000/000000010000000000000002",
            "00000002.history"
        ]
    );
    let names: Vec<&str> = cat.lines.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, [S1, S2, "00000002.history"]);
    for entry in &cat.lines {
        let key = WalFileName::from_path(&entry.name)
            .expect("name")
            .relative_path();
        let stored = get_bytes(&store, &key).expect("stored");
        assert_eq!(
            entry.size,
            stored.len() as u64,
            "catalogue records the stored size"
        );
        assert_eq!(entry.compression.as_deref(), Some("gzip"));
        assert_eq!(Codec::identify(&stored), Some(Codec::Gzip));
    }
    assert_eq!(
        cat.lines[1].to_line(),
        format!(
            "{S2}\t{}\t{}\tgzip\tNone\n",
            cat.lines[1].size, "1795302002.5"
        )
    );
    let back = decode_all(
        Some(Codec::Gzip),
        &get_bytes(&store, &format!("0000000100000000/{S1}")).expect("get"),
        DecodeLimits::default(),
    )
    .expect("decode");
    assert!(
        back == segment(S1, 1),
        "archived content decompresses to the original"
    );
}

#[test]
fn identical_duplicate_is_dropped_even_when_compressed_differently() {
    let store = MemoryStore::new();
    let data = segment(S1, 1);
    store.insert(
        &format!("0000000100000000/{S1}"),
        &encode_all(Some(Codec::Zstd), Level::Low, &data).expect("zstd"),
    );
    let mut q = MemQueue::default();
    // The user gzipped it before dropping it in incoming: still the same WAL.
    q.add(
        S1,
        encode_all(Some(Codec::Gzip), Level::High, &data).expect("gzip"),
        OLD,
    );
    let mut cat = MemCatalogue::default();
    let r = run(
        &store,
        &settings(Some(Codec::Bzip2)),
        &mut q,
        &mut cat,
        QueueKind::Incoming,
        &NoHooks,
    );
    assert_eq!(outcomes(&r), [(S1.into(), "identical".into())]);
    assert!(q.files.is_empty() && q.errors.is_empty());
    // The copy was stored without a catalogue line (as after a crash): the rerun adds one that
    // describes the stored copy (zstd), not the re-delivered file (gzip).
    assert_eq!(cat.lines.len(), 1);
    assert_eq!(cat.lines[0].compression.as_deref(), Some("zstd"));
}

#[test]
fn different_duplicate_never_overwrites_and_goes_to_errors() {
    let store = MemoryStore::new();
    let original = segment(S1, 1);
    store.insert(&format!("0000000100000000/{S1}"), &original);
    let mut q = MemQueue::default();
    let other = segment(S1, 9);
    q.add(S1, other.clone(), OLD);
    let mut cat = MemCatalogue::default();
    let r = run(
        &store,
        &settings(None),
        &mut q,
        &mut cat,
        QueueKind::Incoming,
        &NoHooks,
    );
    assert_eq!(outcomes(&r), [(S1.into(), "different".into())]);
    let error_name = format!("{S1}.20261122T000000Z.duplicate");
    assert_eq!(
        q.errors.get(&error_name),
        Some(&other),
        "source kept byte for byte in errors/"
    );
    assert!(
        get_bytes(&store, &format!("0000000100000000/{S1}")).expect("get") == original,
        "archive untouched"
    );
    assert_eq!(
        r.report.files[0].error_file.as_deref(),
        Some(error_name.as_str())
    );
}

#[test]
fn cloud_duplicate_found_under_another_extension() {
    let store = MemoryStore::new();
    let layout = Layout::cloud("base", "pg");
    let data = segment(S1, 1);
    store.insert(
        &format!("base/pg/wals/0000000100000000/{S1}.zst"),
        &encode_all(Some(Codec::Zstd), Level::Low, &data).expect("zstd"),
    );
    let s = ArchiveSettings {
        layout: layout.clone(),
        ..settings(Some(Codec::Gzip))
    };
    let mut q = MemQueue::default();
    q.add(S1, data, OLD);
    q.add(S2, segment(S2, 2), OLD);
    let mut cat = MemCatalogue::default();
    let r = run(&store, &s, &mut q, &mut cat, QueueKind::Incoming, &NoHooks);
    assert_eq!(
        outcomes(&r),
        [
            (S1.into(), "identical".into()),
            (S2.into(), "archived".into())
        ]
    );
    assert!(
        store
            .keys()
            .contains(&format!("base/pg/wals/0000000100000000/{S2}.gz"))
    );
    assert!(
        !store
            .keys()
            .contains(&format!("base/pg/wals/0000000100000000/{S1}.gz")),
        "no second copy under the new extension"
    );
}

#[test]
fn invalid_content_goes_to_errors_with_reason() {
    let store = MemoryStore::new();
    let mut q = MemQueue::default();
    q.add(S1, Vec::new(), OLD); // empty
    q.add(S2, segment(S2, 2)[..4096].to_vec(), OLD); // short and old
    q.add(S3, segment(S2, 3), OLD); // header says segment 2
    q.add(
        "000000010000000000000004",
        b"\x1f\x8b\x08\x00garbage".to_vec(),
        OLD,
    ); // corrupt gzip
    let mut foreign = segment("000000010000000000000005", 5);
    foreign[24..32].copy_from_slice(&42u64.to_le_bytes());
    q.add("000000010000000000000005", foreign, OLD);
    q.add("00000003.history", b"not a history file\n".to_vec(), OLD);
    let mut cat = MemCatalogue::default();
    let r = run(
        &store,
        &settings(Some(Codec::Lz4)),
        &mut q,
        &mut cat,
        QueueKind::Incoming,
        &NoHooks,
    );
    let reasons: Vec<InvalidReason> = r
        .report
        .files
        .iter()
        .map(|f| match &f.outcome {
            FileOutcome::Invalid { reason } => reason.clone(),
            other => panic!("{} should be invalid, got {other:?}", f.file_name),
        })
        .collect();
    assert_eq!(reasons[0], InvalidReason::Empty);
    assert!(
        matches!(reasons[1], InvalidReason::WrongSize { size: 4096, .. }),
        "{:?}",
        reasons[1]
    );
    assert!(
        matches!(
            reasons[2],
            InvalidReason::PageHeader(HeaderError::WrongAddress { .. })
        ),
        "{:?}",
        reasons[2]
    );
    assert!(
        matches!(&reasons[3], InvalidReason::Corrupt { what, .. } if what == "gzip data"),
        "{:?}",
        reasons[3]
    );
    assert!(
        matches!(reasons[4], InvalidReason::ForeignCluster { .. }),
        "{:?}",
        reasons[4]
    );
    assert!(
        matches!(reasons[5], InvalidReason::History(_)),
        "{:?}",
        reasons[5]
    );
    // The words, as archive-wal prints them.
    assert_eq!(reasons[0].to_string(), "empty file");
    assert!(reasons[3].to_string().starts_with("corrupt gzip data: "));
    assert_eq!(q.errors.len(), 6);
    assert!(
        q.errors
            .keys()
            .all(|k| k.ends_with(".20261122T000000Z.invalid"))
    );
    assert!(store.keys().is_empty() && cat.lines.is_empty());
}

#[test]
fn young_short_segment_is_deferred_not_rejected() {
    let store = MemoryStore::new();
    let mut q = MemQueue::default();
    q.add(S1, segment(S1, 1)[..100_000].to_vec(), NOW - 2.0);
    let mut cat = MemCatalogue::default();
    let r = run(
        &store,
        &settings(None),
        &mut q,
        &mut cat,
        QueueKind::Incoming,
        &NoHooks,
    );
    assert_eq!(outcomes(&r), [(S1.into(), "deferred".into())]);
    assert!(q.files.contains_key(S1) && q.errors.is_empty());
}

#[test]
fn precompressed_source_is_stored_as_is() {
    let store = MemoryStore::new();
    let data = segment(S1, 1);
    let bz = encode_all(Some(Codec::Bzip2), Level::Low, &data).expect("bzip2");
    let mut q = MemQueue::default();
    q.add(S1, bz.clone(), OLD);
    let mut cat = MemCatalogue::default();
    run(
        &store,
        &settings(Some(Codec::Gzip)),
        &mut q,
        &mut cat,
        QueueKind::Incoming,
        &NoHooks,
    );
    assert_eq!(cat.lines[0].compression.as_deref(), Some("bzip2"));
    assert!(get_bytes(&store, &format!("0000000100000000/{S1}")).expect("get") == bz);
}

#[test]
fn storage_outage_keeps_every_source_and_a_rerun_completes() {
    let store = FaultyStore::new(MemoryStore::new());
    store.script(Op::Put, &[Fault::Pass, Fault::Transient]);
    let s = settings(Some(Codec::Zstd));
    let mut q = MemQueue::default();
    for (i, n) in [S1, S2, S3].iter().enumerate() {
        q.add(n, segment(n, i as u8), OLD);
    }
    let mut cat = MemCatalogue::default();
    let r = run(&store, &s, &mut q, &mut cat, QueueKind::Incoming, &NoHooks);
    assert_eq!(
        outcomes(&r),
        [(S1.into(), "archived".into()), (S2.into(), "failed".into())]
    );
    assert!(r.report.failed() && r.report.stopped.is_some());
    assert_eq!(
        q.files.keys().collect::<Vec<_>>(),
        [S2, S3],
        "the failed file and the rest stay queued"
    );
    assert_eq!(cat.lines.len(), 1);
    let r = run(&store, &s, &mut q, &mut cat, QueueKind::Incoming, &NoHooks);
    assert_eq!(
        outcomes(&r),
        [
            (S2.into(), "archived".into()),
            (S3.into(), "archived".into())
        ]
    );
    assert!(q.files.is_empty());
    assert_eq!(
        cat.lines
            .iter()
            .map(|e| e.name.as_str())
            .collect::<Vec<_>>(),
        [S1, S2, S3]
    );
}

#[test]
fn store_sync_failure_writes_no_catalogue_line_and_keeps_sources() {
    let store = FaultyStore::new(MemoryStore::new());
    store.script(Op::Sync, &[Fault::Permanent]);
    let mut q = MemQueue::default();
    q.add(S1, segment(S1, 1), OLD);
    let mut cat = MemCatalogue::default();
    let r = run(
        &store,
        &settings(None),
        &mut q,
        &mut cat,
        QueueKind::Incoming,
        &NoHooks,
    );
    let error = r.report.catalogue_error.clone().unwrap_or_default();
    assert!(
        error.contains("durable") && error.contains("sources kept"),
        "{error}"
    );
    assert!(r.report.failed());
    assert!(
        q.files.contains_key(S1),
        "source kept while the copy may not be durable"
    );
    assert!(
        cat.lines.is_empty(),
        "no catalogue line for a copy that may not survive"
    );
    // The next run syncs again (the copy found existing) before committing.
    let r = run(
        &store,
        &settings(None),
        &mut q,
        &mut cat,
        QueueKind::Incoming,
        &NoHooks,
    );
    assert_eq!(outcomes(&r), [(S1.into(), "identical".into())]);
    assert!(q.files.is_empty());
    assert_eq!(cat.lines.len(), 1);
    let syncs = store
        .calls()
        .iter()
        .filter(|(op, _)| *op == Op::Sync)
        .count();
    assert_eq!(syncs, 2);
}

#[test]
fn catalogue_failure_releases_nothing_and_rerun_is_harmless() {
    let store = MemoryStore::new();
    let mut q = MemQueue::default();
    q.add(S1, segment(S1, 1), OLD);
    let mut cat = MemCatalogue {
        fail: true,
        ..MemCatalogue::default()
    };
    let r = run(
        &store,
        &settings(None),
        &mut q,
        &mut cat,
        QueueKind::Incoming,
        &NoHooks,
    );
    assert!(r.report.catalogue_error.is_some() && r.report.failed());
    assert!(
        q.files.contains_key(S1),
        "source kept when the catalogue is not durable"
    );
    cat.fail = false;
    let r = run(
        &store,
        &settings(None),
        &mut q,
        &mut cat,
        QueueKind::Incoming,
        &NoHooks,
    );
    assert_eq!(outcomes(&r), [(S1.into(), "identical".into())]);
    assert!(q.files.is_empty());
    // The rerun repairs the catalogue: the stored copy gets its line, once.
    assert_eq!(cat.lines.len(), 1);
    assert_eq!(cat.lines[0].name, S1);
    assert_eq!(
        cat.lines[0].size,
        store
            .head(&format!("0000000100000000/{S1}"))
            .expect("head")
            .size
    );
    let mut q2 = MemQueue::default();
    q2.add(S1, segment(S1, 1), OLD);
    run(
        &store,
        &settings(None),
        &mut q2,
        &mut cat,
        QueueKind::Incoming,
        &NoHooks,
    );
    assert_eq!(
        cat.lines.len(),
        1,
        "a catalogued copy is not appended twice"
    );
}

#[test]
fn repaired_catalogue_line_records_how_the_copy_is_stored() {
    let store = MemoryStore::new();
    let data = segment(S1, 1);
    store.insert(
        &format!("0000000100000000/{S1}"),
        &encode_all(Some(Codec::Xz), Level::Low, &data).expect("xz"),
    );
    let mut q = MemQueue::default();
    q.add(S1, data, OLD);
    let mut cat = MemCatalogue::default();
    run(
        &store,
        &settings(Some(Codec::Gzip)),
        &mut q,
        &mut cat,
        QueueKind::Incoming,
        &NoHooks,
    );
    assert_eq!(cat.lines[0].compression.as_deref(), Some("xz"));
}

#[test]
fn unreadable_source_is_kept_and_the_batch_goes_on() {
    let store = MemoryStore::new();
    let mut q = MemQueue {
        unreadable: Some(S1.into()),
        ..MemQueue::default()
    };
    q.add(S1, segment(S1, 1), OLD);
    q.add(S2, segment(S2, 2), OLD);
    let mut cat = MemCatalogue::default();
    let r = run(
        &store,
        &settings(None),
        &mut q,
        &mut cat,
        QueueKind::Incoming,
        &NoHooks,
    );
    assert_eq!(
        outcomes(&r),
        [
            (S1.into(), "unreadable".into()),
            (S2.into(), "archived".into())
        ]
    );
    assert!(r.report.failed());
    assert!(q.files.contains_key(S1) && !q.files.contains_key(S2));
}

#[test]
fn release_failure_is_reported() {
    let store = MemoryStore::new();
    let mut q = MemQueue {
        fail_release: true,
        ..MemQueue::default()
    };
    q.add(S1, segment(S1, 1), OLD);
    let r = run(
        &store,
        &settings(None),
        &mut q,
        &mut MemCatalogue::default(),
        QueueKind::Incoming,
        &NoHooks,
    );
    assert!(r.report.failed());
    assert!(
        r.report.files[0]
            .source_error
            .as_deref()
            .is_some_and(|e| e.contains("read-only"))
    );
}

#[derive(Default)]
struct Recorder {
    stop_at: Option<&'static str>,
    log: RefCell<Vec<String>>,
}
impl ArchiveHooks for Recorder {
    fn before(&self, c: &walvault_core::queue::Candidate) -> HookVerdict {
        self.log.borrow_mut().push(format!("pre {}", c.file_name));
        if self.stop_at == Some(c.file_name.as_str()) {
            HookVerdict::Stop
        } else {
            HookVerdict::Proceed
        }
    }
    fn after(&self, c: &walvault_core::queue::Candidate, outcome: &FileOutcome) {
        self.log.borrow_mut().push(format!(
            "post {} {}",
            c.file_name,
            outcome.error().unwrap_or_default()
        ));
    }
}

#[test]
fn hooks_wrap_each_file_and_see_errors() {
    let store = MemoryStore::new();
    store.insert(&format!("0000000100000000/{S2}"), &segment(S2, 7));
    let mut q = MemQueue::default();
    q.add(S1, segment(S1, 1), OLD);
    q.add(S2, segment(S2, 2), OLD);
    let hooks = Recorder::default();
    run(
        &store,
        &settings(None),
        &mut q,
        &mut MemCatalogue::default(),
        QueueKind::Incoming,
        &hooks,
    );
    let log = hooks.log.borrow();
    assert_eq!(log[0], format!("pre {S1}"));
    assert_eq!(log[1], format!("post {S1} "));
    assert_eq!(log[2], format!("pre {S2}"));
    assert!(
        log[3].starts_with(&format!("post {S2} DuplicateWalFile:")),
        "post hook receives the error: {}",
        log[3]
    );
}

#[test]
fn pre_hook_stop_leaves_everything_queued() {
    let store = MemoryStore::new();
    let mut q = MemQueue::default();
    q.add(S1, segment(S1, 1), OLD);
    q.add("junk", b"j".to_vec(), OLD);
    let hooks = Recorder {
        stop_at: Some(S1),
        ..Recorder::default()
    };
    let r = run(
        &store,
        &settings(None),
        &mut q,
        &mut MemCatalogue::default(),
        QueueKind::Incoming,
        &hooks,
    );
    assert!(r.report.stopped.is_some());
    assert_eq!(
        q.files.len(),
        2,
        "nothing archived, unknown entries not moved in a stopped run"
    );
    assert!(store.keys().is_empty());
}

#[test]
fn streaming_partials_are_checked_against_the_segment_size() {
    let store = MemoryStore::new();
    let mut q = MemQueue::default();
    let p1 = format!("{S1}.partial");
    q.add(&p1, segment(S1, 1)[..300_000].to_vec(), OLD);
    let p2 = format!("{S2}.partial");
    let mut too_big = segment(S2, 2);
    too_big.extend_from_slice(&[0; 10]);
    q.add(&p2, too_big, OLD);
    q.add(&format!("{S3}.partial"), segment(S3, 3), OLD); // newest: held back
    let mut cat = MemCatalogue::default();
    let r = run(
        &store,
        &settings(Some(Codec::Snappy)),
        &mut q,
        &mut cat,
        QueueKind::Streaming,
        &NoHooks,
    );
    assert_eq!(
        outcomes(&r),
        [
            (p1.clone(), "archived".into()),
            (p2.clone(), "invalid".into())
        ]
    );
    assert!(q.files.contains_key(&format!("{S3}.partial")));
    assert_eq!(cat.lines[0].name, p1);
}

/// A store whose first listing misses an object that a concurrent archiver just wrote.
/// An object store whose listings show nothing for the first `hidden` calls (another archiver
/// stores meanwhile; an eventually consistent store), while reads of an exact key see every
/// object at once.
struct LaggingStore {
    inner: MemoryStore,
    hidden: RefCell<usize>,
}
impl WalStore for LaggingStore {
    fn head(&self, key: &str) -> Result<ObjectMeta, StorageError> {
        self.inner.head(key)
    }
    fn get(&self, key: &str) -> Result<Box<dyn Read + Send + '_>, StorageError> {
        self.inner.get(key)
    }
    fn put(
        &self,
        key: &str,
        mode: PutMode,
        payload: &mut dyn Payload,
    ) -> Result<ObjectMeta, StorageError> {
        self.inner.put(key, mode, payload)
    }
    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        let mut hidden = self.hidden.borrow_mut();
        if *hidden > 0 {
            *hidden -= 1;
            return Ok(Vec::new());
        }
        self.inner.list(prefix)
    }
    fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.inner.delete(key)
    }
}

#[test]
fn create_if_absent_closes_the_race_with_another_archiver() {
    let store = LaggingStore {
        inner: MemoryStore::new(),
        hidden: RefCell::new(1),
    };
    let data = segment(S1, 1);
    store.inner.insert(&format!("0000000100000000/{S1}"), &data);
    let mut q = MemQueue::default();
    q.add(S1, data, OLD);
    let r = run(
        &store,
        &settings(None),
        &mut q,
        &mut MemCatalogue::default(),
        QueueKind::Incoming,
        &NoHooks,
    );
    assert_eq!(outcomes(&r), [(S1.into(), "identical".into())]);
}

#[test]
fn a_listing_that_lags_still_gets_duplicates_decided_by_the_exact_key() {
    // Before: the refused create sent the archiver back to the listing, which still showed
    // nothing, and the file failed ("appeared and disappeared") until the listing caught up.
    let layout = Layout::cloud("base", "pg");
    let store = LaggingStore {
        inner: MemoryStore::new(),
        hidden: RefCell::new(usize::MAX),
    };
    let data = segment(S1, 1);
    store.inner.insert(
        &format!("base/pg/wals/0000000100000000/{S1}.gz"),
        &encode_all(Some(Codec::Gzip), Level::Low, &data).expect("gzip"),
    );
    let s = ArchiveSettings {
        layout,
        ..settings(Some(Codec::Gzip))
    };
    let mut q = MemQueue::default();
    q.add(S1, data, OLD);
    let mut cat = MemCatalogue::default();
    let r = run(&store, &s, &mut q, &mut cat, QueueKind::Incoming, &NoHooks);
    assert_eq!(outcomes(&r), [(S1.into(), "identical".into())]);
    assert!(q.files.is_empty() && q.errors.is_empty());

    let mut q = MemQueue::default();
    q.add(S1, segment(S1, 2), OLD);
    let r = run(&store, &s, &mut q, &mut cat, QueueKind::Incoming, &NoHooks);
    assert_eq!(outcomes(&r), [(S1.into(), "different".into())]);
    assert_eq!(q.errors.len(), 1, "kept in errors/");
    assert_eq!(
        store.inner.keys().len(),
        1,
        "nothing stored beside or over it"
    );
}

#[test]
fn a_name_stored_under_two_codecs_is_served_only_when_both_copies_agree() {
    let store = MemoryStore::new();
    let layout = Layout::cloud("base", "pg");
    let name: WalFileName = S1.parse().expect("name");
    let data = segment(S1, 1);
    let gz = format!("base/pg/wals/0000000100000000/{S1}.gz");
    let zst = format!("base/pg/wals/0000000100000000/{S1}.zst");
    store.insert(
        &gz,
        &encode_all(Some(Codec::Gzip), Level::Low, &data).expect("gzip"),
    );
    store.insert(
        &zst,
        &encode_all(Some(Codec::Zstd), Level::Low, &data).expect("zstd"),
    );
    let mut out = Vec::new();
    restore(&store, &layout, &name, false, Some(size()), None, &mut out).expect("identical copies");
    assert!(out == data);

    // A different WAL under the second extension (a writer whose listing lagged): before,
    // the first key listed was served, whichever history it held.
    store.insert(
        &zst,
        &encode_all(Some(Codec::Zstd), Level::Low, &segment(S1, 2)).expect("zstd"),
    );
    let mut out = Vec::new();
    let err = restore(&store, &layout, &name, false, Some(size()), None, &mut out)
        .expect_err("two histories under one name");
    match &err {
        RestoreError::Conflicting { keys, .. } => assert_eq!(keys.len(), 2, "{err}"),
        other => panic!("{other}"),
    }
    assert!(out.is_empty(), "nothing served");
    assert!(err.to_string().contains("must not pick"), "{err}");
}

/// A toy cipher for tests only: XOR with a fixed byte behind a 4-byte marker.
struct XorCipher;
impl Decrypt for XorCipher {
    fn name(&self) -> &str {
        "xor-test"
    }
    fn detect(&self, prefix: &[u8]) -> bool {
        prefix.starts_with(b"XOR1")
    }
    fn decrypt<'a>(
        &self,
        mut r: Box<dyn Read + Send + 'a>,
    ) -> io::Result<Box<dyn Read + Send + 'a>> {
        let mut all = Vec::new();
        r.read_to_end(&mut all)?;
        Ok(Box::new(io::Cursor::new(
            all.into_iter()
                .skip(4)
                .map(|b| b ^ 0x5A)
                .collect::<Vec<u8>>(),
        )))
    }
}

#[test]
fn encrypted_copy_is_compared_after_decryption_when_a_key_is_available() {
    let store = MemoryStore::new();
    let data = segment(S1, 1);
    let compressed = encode_all(Some(Codec::Gzip), Level::Low, &data).expect("gzip");
    let mut encrypted = b"XOR1".to_vec();
    encrypted.extend(compressed.iter().map(|b| b ^ 0x5A));
    store.insert(&format!("0000000100000000/{S1}"), &encrypted);
    let s = settings(None);
    let candidate = old_candidate(S1, data.len());
    let with_key = Archiver {
        store: &store,
        settings: &s,
        decryptor: Some(&XorCipher),
        encryptor: None,
    };
    assert!(matches!(
        with_key.archive_file(&candidate, &MemSource(data.clone()), NOW),
        FileOutcome::IdenticalDuplicate { .. }
    ));
    let mut other = data.clone();
    other[500_000] ^= 1;
    assert!(matches!(
        with_key.archive_file(&candidate, &MemSource(other), NOW),
        FileOutcome::DifferentDuplicate { .. }
    ));
    // Without a key an OpenPGP copy cannot be compared: kept apart, and the reason says why.
    store.insert(
        &format!("0000000100000000/{S1}"),
        &[0x85, 0x01, 0x0C, 0x03, 0, 0, 0, 0],
    );
    let no_key = Archiver {
        store: &store,
        settings: &s,
        decryptor: None,
        encryptor: None,
    };
    match no_key.archive_file(&candidate, &MemSource(data), NOW) {
        FileOutcome::DifferentDuplicate { reasons, .. } => {
            assert_eq!(reasons, [DifferenceReason::EncryptedWithoutKey]);
            assert!(
                reasons[0].to_string().contains("no decryption key"),
                "{}",
                reasons[0]
            );
        }
        other => panic!("expected a different duplicate, got {other:?}"),
    }
}

#[test]
fn restore_serves_decompressed_prefers_full_segment_and_reports_faults() {
    let store = MemoryStore::new();
    let layout = Layout::cloud("", "pg");
    let data = segment(S1, 1);
    store.insert(
        &format!("pg/wals/0000000100000000/{S1}.partial.gz"),
        &encode_all(Some(Codec::Gzip), Level::Low, &data[..5000]).expect("gz"),
    );
    let name: WalFileName = S1.parse().expect("name");
    let mut out = Vec::new();
    assert!(matches!(
        restore(&store, &layout, &name, false, Some(size()), None, &mut out),
        Err(RestoreError::NotFound(_))
    ));
    let served =
        restore(&store, &layout, &name, true, Some(size()), None, &mut out).expect("partial");
    assert_eq!(
        (served.found.to_string(), served.bytes),
        (format!("{S1}.partial"), 5000)
    );
    assert!(out == data[..5000], "partial served decompressed");
    store.insert(
        &format!("pg/wals/0000000100000000/{S1}.zst"),
        &encode_all(Some(Codec::Zstd), Level::Low, &data).expect("zst"),
    );
    assert_eq!(
        locate(&store, &layout, &name, true)
            .expect("locate")
            .map(|f| f.key),
        Some(format!("pg/wals/0000000100000000/{S1}.zst"))
    );
    out.clear();
    restore(&store, &layout, &name, true, Some(size()), None, &mut out).expect("full");
    assert!(out == data);
    // Without a configured size, the segment's own page header gives it.
    out.clear();
    restore(&store, &layout, &name, false, None, None, &mut out).expect("size from the header");
    assert!(out == data);
    let mut headerless = data.clone();
    headerless[..40].fill(0);
    store.insert(
        &format!("pg/wals/0000000100000000/{S3}.zst"),
        &encode_all(Some(Codec::Zstd), Level::Low, &headerless).expect("zst"),
    );
    let s3: WalFileName = S3.parse().expect("name");
    assert!(matches!(
        restore(&store, &layout, &s3, false, None, None, &mut Vec::new()),
        Err(RestoreError::Damaged { problem, .. }) if problem.contains("no valid WAL page header")
    ));
    // A truncated archived segment is damaged, never served short.
    let s2: WalFileName = S2.parse().expect("name");
    store.insert(
        &format!("pg/wals/0000000100000000/{S2}.lz4"),
        &encode_all(Some(Codec::Lz4), Level::Low, &segment(S2, 2)[..1000]).expect("lz4"),
    );
    assert!(matches!(
        restore(
            &store,
            &layout,
            &s2,
            false,
            Some(size()),
            None,
            &mut Vec::new()
        ),
        Err(RestoreError::Damaged { .. })
    ));
    // A storage outage is not "not found".
    let faulty = FaultyStore::new(MemoryStore::new());
    faulty.script(Op::List, &[Fault::Transient]);
    assert!(
        matches!(restore(&faulty, &layout, &name, false, Some(size()), None, &mut Vec::new()), Err(RestoreError::Storage(e)) if e.is_retryable())
    );
}

/// Returns the full segment on the first open (validation) and a shorter one afterwards, as a
/// file truncated by someone else between the check and the copy.
struct Shrinking {
    data: Vec<u8>,
    opened: RefCell<usize>,
}
impl SourceFile for Shrinking {
    fn open(&self) -> io::Result<Box<dyn Read + '_>> {
        let n = self.opened.replace_with(|n| *n + 1);
        Ok(Box::new(if n == 0 {
            &self.data[..]
        } else {
            &self.data[..1000]
        }))
    }
}

#[test]
fn a_source_that_changes_after_validation_stores_nothing() {
    let store = MemoryStore::new();
    let s = settings(Some(Codec::Zstd));
    let data = segment(S1, 1);
    let candidate = old_candidate(S1, data.len());
    let archiver = Archiver {
        store: &store,
        settings: &s,
        decryptor: None,
        encryptor: None,
    };
    match archiver.archive_file(
        &candidate,
        &Shrinking {
            data,
            opened: RefCell::new(0),
        },
        NOW,
    ) {
        FileOutcome::SourceError { error } => {
            assert!(error.contains("changed while being archived"), "{error}")
        }
        other => panic!("expected a source error, got {other:?}"),
    }
    assert!(
        store.keys().is_empty(),
        "nothing stored from a changing source"
    );
}

mod openpgp_keys {
    use walvault_core::encryption::openpgp::{
        OpenPgpDecryptor, OpenPgpEncryptor, Recipient, parse_public_keys, parse_secret_keys,
    };

    fn data(name: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/tests/data/openpgp/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .expect("test key")
    }

    /// Encrypts to test key A (RSA).
    pub fn encryptor() -> OpenPgpEncryptor {
        let keys = parse_public_keys("a", &data("a.pub.asc")).expect("key");
        let recipient = Recipient::of("a", &keys[0], 1_800_000_000).expect("recipient");
        OpenPgpEncryptor::new(vec![recipient], Box::new(|| Box::new(rand_core::OsRng)))
            .expect("one recipient")
    }

    /// Test key A's secret key and passphrase.
    pub fn decryptor() -> OpenPgpDecryptor {
        let keys = parse_secret_keys("a", &data("a.sec.asc")).expect("key");
        OpenPgpDecryptor::new(keys, Box::new(|| Ok(b"walvault-test-a\n".to_vec())))
    }
}

#[test]
fn encrypted_archive_round_trip_catalogues_gpg_and_compares_after_decryption() {
    let encrypt = openpgp_keys::encryptor();
    let decrypt = openpgp_keys::decryptor();
    for layout in [Layout::Local, Layout::cloud("p", "pg")] {
        let store = MemoryStore::new();
        let mut s = settings(Some(Codec::Zstd));
        s.layout = layout.clone();
        let data = segment(S1, 3);
        let candidate = old_candidate(S1, data.len());
        let archiver = Archiver {
            store: &store,
            settings: &s,
            decryptor: Some(&decrypt),
            encryptor: Some(&encrypt),
        };
        let (entry, key) = match archiver.archive_file(&candidate, &MemSource(data.clone()), NOW) {
            FileOutcome::Archived { entry, key } => (entry, key),
            other => panic!("expected archived, got {other:?}"),
        };
        assert_eq!(entry.encryption.as_deref(), Some("gpg"));
        assert_eq!(entry.compression.as_deref(), Some("zstd"));
        match &layout {
            Layout::Local => assert_eq!(key, format!("0000000100000000/{S1}")),
            Layout::Cloud { .. } => {
                assert_eq!(key, format!("p/pg/wals/0000000100000000/{S1}.zst.gpg"))
            }
        }
        let stored = walvault_core::storage::get_bytes(&store, &key).expect("stored");
        assert_eq!(
            stored[0], 0x85,
            "the old-format session key Barman recognises"
        );
        assert_eq!(entry.size, stored.len() as u64);
        // Restored: decrypted and decompressed, byte for byte.
        let name: WalFileName = S1.parse().expect("name");
        let mut out = Vec::new();
        restore(
            &store,
            &layout,
            &name,
            false,
            Some(size()),
            Some(&decrypt),
            &mut out,
        )
        .expect("restore");
        assert_eq!(out, data);
        // Without the secret key: an error that stops recovery, never "not found".
        let err = restore(
            &store,
            &layout,
            &name,
            false,
            Some(size()),
            None,
            &mut Vec::new(),
        )
        .expect_err("no key");
        assert!(matches!(err, RestoreError::Undecryptable { .. }), "{err}");
        // The same WAL again is recognised after decryption; other bytes are kept apart.
        assert!(matches!(
            archiver.archive_file(&candidate, &MemSource(data.clone()), NOW),
            FileOutcome::IdenticalDuplicate { ref entry, .. } if entry.encryption.as_deref() == Some("gpg")
        ));
        let mut other = data.clone();
        other[700_000] ^= 1;
        assert!(matches!(
            archiver.archive_file(&candidate, &MemSource(other), NOW),
            FileOutcome::DifferentDuplicate { .. }
        ));
        // A tampered copy is damaged, not served.
        let mut tampered = stored.clone();
        let at = tampered.len() - 100;
        tampered[at] ^= 0x40;
        store.insert(&key, &tampered);
        let err = restore(
            &store,
            &layout,
            &name,
            false,
            Some(size()),
            Some(&decrypt),
            &mut Vec::new(),
        )
        .expect_err("tampered");
        assert!(matches!(err, RestoreError::Damaged { .. }), "{err}");
    }
}
