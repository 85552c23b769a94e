//! The facts `serve` gathers: the catalogue (read incrementally), the segment size, and each
//! server's status, refreshed in the background.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;
use std::time::Duration;

use walvault_core::catalogue::{CatalogueEntry, CatalogueError};
use walvault_core::duplicate::summarise_errors;
use walvault_core::queue::QueueKind;
use walvault_core::report::{
    self, CheckRun, ErrorFileStatus, HealthFacts, MAX_ERROR_FILES, ReceiveWalStatus, ServerStatus,
    StatusDocument,
};
use walvault_core::wal::SegmentSize;

use super::super::{receive_wal, reports};
use super::{State, locked};
use crate::server::{ServerCtx, now};

/// What identifies one version of the catalogue file.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) struct FileId {
    dev: u64,
    ino: u64,
}

/// The catalogue as read so far: lines up to `read_to` (always a line end), sorted by name.
#[derive(Debug, Default)]
pub(super) struct CatalogueCache {
    id: Option<FileId>,
    read_to: u64,
    entries: Arc<Vec<CatalogueEntry>>,
}

pub(super) fn file_id(meta: &fs::Metadata) -> FileId {
    use std::os::unix::fs::MetadataExt;
    FileId {
        dev: meta.dev(),
        ino: meta.ino(),
    }
}

/// The catalogue sorted by name, reading only what was appended since the last call (a new
/// file, as `rebuild-xlogdb` and retention write, is read whole). A line still being written
/// is left for the next call.
pub(super) fn catalogue(
    state: &State,
    ctx: &ServerCtx<'_>,
) -> Result<Arc<Vec<CatalogueEntry>>, String> {
    let path = ctx.catalogue.path();
    let mut caches = locked(&state.catalogues);
    let cache = caches.entry(ctx.cfg.name.clone()).or_default();
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            *cache = CatalogueCache::default();
            return Ok(Arc::clone(&cache.entries));
        }
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let id = file_id(&meta);
    if cache.id != Some(id) || meta.len() < cache.read_to {
        *cache = CatalogueCache {
            id: Some(id),
            ..CatalogueCache::default()
        };
    }
    if meta.len() == cache.read_to {
        return Ok(Arc::clone(&cache.entries));
    }
    let mut tail = Vec::with_capacity((meta.len() - cache.read_to) as usize);
    file.seek(SeekFrom::Start(cache.read_to))
        .and_then(|_| file.take(meta.len() - cache.read_to).read_to_end(&mut tail))
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let complete = tail.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    if complete == 0 {
        return Ok(Arc::clone(&cache.entries));
    }
    let text = String::from_utf8_lossy(&tail[..complete]);
    let first_line = 1 + cache.entries.len();
    let mut added = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let entry =
            CatalogueEntry::parse_line(line, first_line + i).map_err(|e: CatalogueError| {
                format!("{e}: run 'walvault rebuild-xlogdb {}'", ctx.cfg.name)
            })?;
        added.push(entry);
    }
    added.sort_by(|a, b| a.name.cmp(&b.name));
    let entries = Arc::make_mut(&mut cache.entries);
    let in_order = match (entries.last(), added.first()) {
        (Some(last), Some(first)) => last.name <= first.name,
        _ => true,
    };
    entries.extend(added);
    if !in_order {
        entries.sort_by(|a, b| a.name.cmp(&b.name));
    }
    cache.read_to += complete as u64;
    Ok(Arc::clone(&cache.entries))
}

pub(super) fn segment_size(state: &State, ctx: &ServerCtx<'_>) -> SegmentSize {
    if let Some(size) = ctx.cfg.wal_segment_size {
        return size;
    }
    locked(&state.segment_sizes)
        .get(&ctx.cfg.name)
        .copied()
        .unwrap_or_default()
}

pub(super) fn status_document(state: &State, only: Option<&str>) -> StatusDocument {
    let now = now();
    StatusDocument {
        generated_at: now,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        servers: state
            .servers
            .iter()
            .filter(|s| only.is_none_or(|name| s.cfg.name == name))
            .map(|ctx| server_status(state, ctx, now))
            .collect(),
    }
}

pub(super) fn server_status(state: &State, ctx: &ServerCtx<'_>, now: f64) -> ServerStatus {
    let cfg = ctx.cfg;
    let size = segment_size(state, ctx);
    let (summary, catalogue_problem) = match catalogue(state, ctx) {
        Ok(entries) => (Some(report::summarise_catalogue(&entries, size, now)), None),
        Err(problem) => (None, Some(problem)),
    };
    let mut error_files: Vec<ErrorFileStatus> = reports::error_entries(ctx, false)
        .unwrap_or_default()
        .into_iter()
        .map(|e| ErrorFileStatus {
            reason: e.recorded_reason.unwrap_or(e.reason),
            file: e.file,
            original: e.original,
            kind: e.kind,
            moved_at: e.moved_at,
            size: e.size,
        })
        .collect();
    let names: Vec<&str> = error_files.iter().map(|e| e.file.as_str()).collect();
    let errors = summarise_errors(&names);
    error_files.sort_by(|a, b| b.moved_at.cmp(&a.moved_at).then(a.file.cmp(&b.file)));
    error_files.truncate(MAX_ERROR_FILES);
    let receive_wal = cfg.streaming_archiver.then(|| {
        let holder = receive_wal::holder(cfg);
        let mut st = locked(&state.streaming)
            .get(&cfg.name)
            .cloned()
            .unwrap_or_default();
        st.running = holder.is_some();
        st.pid = holder.flatten();
        st
    });
    let last_check = fs::read(ctx.last_check_path())
        .ok()
        .and_then(|bytes| serde_json::from_slice::<CheckRun>(&bytes).ok());
    let last_verify = fs::read(crate::cmd::verify::last_verify_path(ctx))
        .ok()
        .and_then(|bytes| {
            serde_json::from_slice::<walvault_core::verify::archive::VerifyReport>(&bytes).ok()
        })
        .map(|r| r.summary());
    let mut dropped = crate::dropped::read_dropped(cfg);
    let dropped_total = dropped.len();
    dropped.truncate(MAX_ERROR_FILES);
    let incoming_waiting = ServerCtx::waiting(&cfg.incoming, QueueKind::Incoming);
    let archive_wal_stalled = crate::server::stalled_archive_wal(cfg);
    // The verdict from the facts, before they go into the document.
    let health = report::assess(
        &HealthFacts {
            catalogue_problem: catalogue_problem.as_deref(),
            catalogue: summary.as_ref(),
            last_check: last_check.as_ref(),
            last_verify: last_verify.as_ref(),
            dropped: &dropped,
            archive_wal_stalled: archive_wal_stalled.as_deref(),
            receive_wal: receive_wal.as_ref(),
            last_wal_maximum_age: cfg.last_wal_maximum_age,
            errors: &errors,
            max_incoming_wals_queue: cfg.max_incoming_wals_queue,
            incoming_waiting,
        },
        now,
    );
    ServerStatus {
        server: cfg.name.clone(),
        description: cfg.description.clone(),
        archive: ctx.archive_location(),
        compression: cfg.compression.map(|c| c.name().to_owned()),
        wal_segment_size: size.bytes(),
        last_wal_maximum_age: cfg.last_wal_maximum_age,
        max_incoming_wals_queue: cfg.max_incoming_wals_queue,
        health,
        catalogue: summary,
        catalogue_problem,
        incoming_waiting,
        streaming_waiting: if cfg.streaming_archiver {
            ServerCtx::waiting(&cfg.streaming, QueueKind::Streaming)
        } else {
            0
        },
        errors,
        error_files,
        receive_wal,
        last_check,
        last_verify,
        dropped,
        dropped_total,
        archive_wal_stalled,
    }
}

/// Detects segment sizes once, then asks PostgreSQL about streaming every `refresh`.
pub(super) fn gather_in_background(state: &State, refresh: Duration) {
    for ctx in state.servers {
        if ctx.cfg.wal_segment_size.is_none() {
            // Local archives answer at once; object storage may take a listing.
            let size = ctx.segment_size(&[]);
            locked(&state.segment_sizes).insert(ctx.cfg.name.clone(), size);
        }
    }
    loop {
        for ctx in state.servers.iter().filter(|s| s.cfg.streaming_archiver) {
            let mut st = ReceiveWalStatus {
                observed_at: Some(now()),
                ..ReceiveWalStatus::default()
            };
            match receive_wal::facts(ctx.cfg) {
                Ok(f) => {
                    st.slot_active = f.slot.as_ref().map(|s| s.active);
                    st.slot_restart_lsn = f.slot.and_then(|s| s.restart_lsn);
                    st.sender_state = f.receiver.as_ref().map(|r| r.state.clone());
                    st.lag_bytes = f
                        .receiver
                        .and_then(|r| r.lag_bytes)
                        .and_then(|b| u64::try_from(b).ok());
                }
                Err(e) => st.problem = Some(format!("{e:#}")),
            }
            locked(&state.streaming).insert(ctx.cfg.name.clone(), st);
        }
        std::thread::sleep(refresh);
    }
}
