//! `rebuild-xlogdb` and `delete-wals`.

use std::fs;
use std::io::Read;

use anyhow::{Context, bail};
use walvault_core::catalogue::{CatalogueEntry, catalogue_file_name};
use walvault_core::compression::{Codec, MAGIC_MAX_LEN};
use walvault_core::encryption::looks_like_openpgp;
use walvault_core::layout::KeyProblem;
use walvault_core::retention::deleted_before;
use walvault_core::wal::WalFileName;

use crate::fsutil::Fs;
use crate::hooks::{HookEnv, HookKind, HookRunner};
use crate::queue_dir::mtime_of;
use crate::server::ServerCtx;
use crate::ui::Ui;

/// Counts of a rebuild, by kind.
#[derive(Debug, Default)]
struct RebuildCounts {
    history: usize,
    backup_labels: usize,
    partial: usize,
    wal: usize,
    misplaced: usize,
    unexpected: usize,
}

/// `rebuild-xlogdb`: the catalogue from the archive directory. Keeps `.partial` files and
/// refuses files in the wrong hash directory (Barman drops the former and accepts the latter).
pub fn rebuild(ctx: &ServerCtx<'_>, ui: &Ui) -> anyhow::Result<u8> {
    // Object storage is rebuilt by listing it (Barman cannot); its listing carries no
    // modification times, so those lines get the rebuild's time.
    let root = ctx.local_archive_dir();
    let shown = |key: &str| match root {
        Some(root) => root.join(key).display().to_string(),
        None => format!("{}{key}", ctx.archive_root()),
    };
    let _archiving = exclude_archiving(ctx, ui)?;
    let rebuilt_at = crate::server::now();
    ui.info(format_args!(
        "Rebuilding xlogdb for server {}",
        ctx.cfg.name
    ));
    if let Some(root) = root {
        // Temp files of killed writers (the store's listing never shows temp names).
        let removed = remove_dead_temp_files_under(ctx.fs, root)
            .with_context(|| format!("cleaning temporary files in {}", root.display()))?;
        if removed > 0 {
            ui.warn(format_args!(
                "removed {removed} temporary file(s) left by interrupted writers in {}",
                root.display()
            ));
        }
    }
    let catalogue_name = catalogue_file_name(&ctx.cfg.name);
    let counts = ctx.catalogue.rewrite_with(|| {
        let mut counts = RebuildCounts::default();
        let mut entries = Vec::new();
        let listing = ctx
            .store
            .list(ctx.layout.area_prefix())
            .map_err(std::io::Error::other)?;
        for meta in &listing {
            let path = shown(&meta.key);
            let local_path = root.map(|r| r.join(&meta.key));
            match ctx.layout.parse_key(meta) {
                Ok(stored) => {
                    let mut head = [0u8; MAGIC_MAX_LEN];
                    let got = ctx.store.get(&meta.key).map_err(std::io::Error::other)?.read(&mut head)?;
                    let time = match &local_path {
                        Some(p) => mtime_of(&fs::metadata(p)?),
                        None => rebuilt_at,
                    };
                    let encrypted = looks_like_openpgp(&head[..got]);
                    match stored.name {
                        WalFileName::History(_) => counts.history += 1,
                        WalFileName::BackupLabel { .. } => counts.backup_labels += 1,
                        WalFileName::Partial(_) => counts.partial += 1,
                        WalFileName::Segment(_) => counts.wal += 1,
                    }
                    entries.push(CatalogueEntry {
                        name: stored.name.to_string(),
                        size: meta.size,
                        time,
                        compression: if encrypted { stored.codec_from_key.map(|c| c.name().to_owned()) } else { stored.codec_from_key.or_else(|| Codec::identify(&head[..got])).map(|c| c.name().to_owned()) },
                        encryption: encrypted.then(|| "gpg".to_owned()),
                    });
                }
                Err(KeyProblem::Temporary) => {
                    counts.unexpected += 1;
                    ui.warn(format_args!("unexpected object {path}; not added to the catalogue"));
                }
                Err(KeyProblem::Misplaced { expected }) => {
                    counts.misplaced += 1;
                    let wants = if expected.is_empty() { "the archive root".to_owned() } else { format!("{expected}/") };
                    ui.warn(format_args!("{path} is in the wrong directory (it belongs in {wants}); not added to the catalogue"));
                }
                Err(_) if meta.key == catalogue_name || meta.key.starts_with('.') => {}
                Err(_) => {
                    counts.unexpected += 1;
                    ui.warn(format_args!("unexpected file {path}; not added to the catalogue"));
                }
            }
        }
        Ok((entries, counts))
    })?;
    ui.info(format_args!(
        "Done rebuilding xlogdb for server {} (history: {}, backup_labels: {}, wal_file: {}, partial: {})",
        ctx.cfg.name, counts.history, counts.backup_labels, counts.wal, counts.partial
    ));
    Ok(if counts.misplaced + counts.unexpected > 0 {
        1
    } else {
        0
    })
}

/// [`Fs::remove_dead_temp_files`] in an archive's root and each of its hash directories.
fn remove_dead_temp_files_under(fs: Fs, root: &std::path::Path) -> std::io::Result<usize> {
    let mut removed = fs.remove_dead_temp_files(root)?;
    let entries = match fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            removed += fs.remove_dead_temp_files(&entry.path())?;
        }
    }
    Ok(removed)
}

/// Takes the server's archive-wal lock for a maintenance run that rewrites the catalogue
/// from the archive or deletes from it, waiting for a running archive-wal to finish (a cron
/// run meanwhile skips the server, as it does for another archive-wal). Without it a
/// deletion could remove the hash directory an archive-wal is about to write into, or take
/// a WAL between its upload and its catalogue line, and a rebuild could write the line of a
/// WAL whose own commit then appends it again.
pub(crate) fn exclude_archiving(
    ctx: &ServerCtx<'_>,
    ui: &Ui,
) -> anyhow::Result<crate::lock::LockFile> {
    let path = crate::lock::lock_path(&ctx.cfg.lock_directory, &ctx.cfg.name, "archive-wal");
    match ctx.fs.lock(&path, false) {
        Ok(lock) => Ok(lock),
        Err(crate::lock::LockError::Busy { .. }) => {
            ui.verbose(format_args!(
                "waiting for the running archive-wal of server {}",
                ctx.cfg.name
            ));
            ctx.fs
                .lock(&path, true)
                .with_context(|| format!("taking {}", path.display()))
        }
        Err(e) => Err(e).with_context(|| format!("taking {}", path.display())),
    }
}

/// `delete-wals --before NAME`: removes older archived files one by one, with the WAL delete
/// hooks, then removes hash directories that became empty (never a directory with files in
/// it, unlike Barman's ≥256-entry rmtree).
pub fn delete_wals(
    ctx: &ServerCtx<'_>,
    before: &str,
    dry_run: bool,
    ui: &Ui,
) -> anyhow::Result<u8> {
    let keep_from: WalFileName = before
        .parse()
        .with_context(|| format!("--before {before:?} is not a WAL segment name"))?;
    if !keep_from.is_segment() {
        bail!("--before needs a WAL segment name, got {before}");
    }
    let _archiving = (!dry_run).then(|| exclude_archiving(ctx, ui)).transpose()?;
    let runner = HookRunner::new(ctx.cfg, ctx.config_origin, ui);
    let listing = ctx
        .store
        .list(ctx.layout.area_prefix())
        .context("listing the archive")?;
    let doomed: Vec<_> = listing
        .iter()
        .filter_map(|m| ctx.layout.parse_key(m).ok())
        .filter(|s| deleted_before(&s.name, &keep_from))
        .collect();
    if dry_run {
        for s in &doomed {
            ui.info(format_args!("would delete {}{}", ctx.archive_root(), s.key));
        }
        return Ok(0);
    }
    let mut deleted = std::collections::HashSet::new();
    let mut failures = 0;
    ctx.catalogue.rewrite_with(|| {
        for stored in &doomed {
            let env = HookEnv {
                segment: stored.name.to_string(),
                file: format!("{}{}", ctx.archive_root(), stored.key),
                size: stored.size,
                ..HookEnv::default()
            };
            if runner.pre(HookKind::WalDelete, &env) == walvault_core::archive::HookVerdict::Stop {
                ui.warn(format_args!(
                    "a pre WAL delete hook asked to stop; {} and later files kept",
                    stored.name
                ));
                break;
            }
            let result = ctx.store.delete(&stored.key);
            let error = result
                .as_ref()
                .err()
                .map(ToString::to_string)
                .unwrap_or_default();
            runner.post(
                HookKind::WalDelete,
                &HookEnv {
                    error: error.clone(),
                    ..env
                },
            );
            match result {
                Ok(()) => {
                    ui.verbose(format_args!("deleted {}", stored.key));
                    deleted.insert(stored.name.to_string());
                }
                Err(e) => {
                    failures += 1;
                    ui.warn(format_args!(
                        "Ignoring deletion of WAL file {}: {e}",
                        stored.key
                    ));
                }
            }
        }
        let current = ctx.catalogue.read()?.map_err(std::io::Error::other)?;
        // What is still archived, listed under the catalogue lock: a WAL archived meanwhile
        // keeps its line.
        let still: std::collections::HashSet<String> = ctx
            .store
            .list(ctx.layout.area_prefix())
            .map_err(std::io::Error::other)?
            .iter()
            .filter_map(|m| ctx.layout.parse_key(m).ok())
            .map(|s| s.name.to_string())
            .collect();
        Ok((
            current
                .into_iter()
                .filter(|e| {
                    // Also the lines of WAL before the cut-off that are gone already: a run
                    // killed between deleting them and rewriting the catalogue left them.
                    let gone = !still.contains(&e.name)
                        && e.wal_name().is_ok_and(|n| deleted_before(&n, &keep_from));
                    !deleted.contains(&e.name) && !gone
                })
                .collect(),
            (),
        ))
    })?;
    crate::faults::failpoint("catalogue-rewritten");
    if let Some(root) = ctx.local_archive_dir() {
        let mut dirs: Vec<_> = doomed
            .iter()
            .filter_map(|s| s.key.rsplit_once('/').map(|(d, _)| d.to_owned()))
            .collect();
        dirs.sort();
        dirs.dedup();
        for dir in dirs {
            // remove_dir fails on a non-empty directory: exactly the safety wanted.
            if fs::remove_dir(root.join(&dir)).is_ok() {
                ctx.fs.sync_dir(root)?;
            }
        }
    }
    ui.info(format_args!(
        "deleted {} file(s) before {keep_from} from server {}",
        deleted.len(),
        ctx.cfg.name
    ));
    Ok(if failures > 0 { 1 } else { 0 })
}
