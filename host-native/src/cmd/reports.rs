//! `list-wals` and `show-errors`.

use std::fs;

use anyhow::Context;
use serde::Serialize;
use walvault_core::duplicate::{ErrorKind, parse_error_file_name};
use walvault_core::report::explain_error_kind;
use walvault_core::time::utc_iso8601;

use crate::cli::Format;
use crate::queue_dir::mtime_of;
use crate::server::ServerCtx;

/// `list-wals`: the catalogue, one line per archived file.
pub fn list_wals(ctx: &ServerCtx<'_>, format: Format) -> anyhow::Result<u8> {
    let entries = ctx
        .catalogue
        .read()
        .context("reading the catalogue")?
        .with_context(|| {
            format!(
                "{} is damaged: run 'walvault rebuild-xlogdb {}'",
                ctx.catalogue.path().display(),
                ctx.cfg.name
            )
        })?;
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&entries)?),
        Format::Text => {
            for e in entries {
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    e.name,
                    e.size,
                    utc_iso8601(e.time as i64),
                    e.compression.as_deref().unwrap_or("-"),
                    e.encryption.as_deref().unwrap_or("-")
                );
            }
        }
    }
    Ok(0)
}

/// One entry of `errors/`, explained.
#[derive(Debug, Serialize)]
pub struct ErrorEntry {
    /// The file in errors/.
    pub file: String,
    /// The name it had in its queue.
    pub original: String,
    /// When it was moved (UTC stamp from the name).
    pub moved_at: Option<String>,
    /// duplicate / unknown / invalid / other.
    pub kind: String,
    /// What that means and what to do.
    pub reason: String,
    /// Size in bytes.
    pub size: u64,
    /// For duplicates: whether the archive still holds a copy under that name.
    pub archived_copy: Option<String>,
    /// The exact reason recorded when the file was moved.
    pub recorded_reason: Option<String>,
}

/// `show-errors`: what is in errors/ and why.
pub fn show_errors(ctx: &ServerCtx<'_>, format: Format) -> anyhow::Result<u8> {
    let entries = error_entries(ctx, true)?;
    print_errors(ctx, &entries, format)?;
    Ok(0)
}

/// The entries of `errors/` by name, with the reason recorded when each was moved;
/// `find_copies` also looks up the archived copy of each duplicate (a storage call each).
pub fn error_entries(ctx: &ServerCtx<'_>, find_copies: bool) -> anyhow::Result<Vec<ErrorEntry>> {
    let mut entries = Vec::new();
    let dir = &ctx.cfg.errors;
    let listing = match fs::read_dir(dir) {
        Ok(l) => l.collect::<Result<Vec<_>, _>>()?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    for entry in listing {
        let file = entry.file_name().to_string_lossy().into_owned();
        let parsed = parse_error_file_name(&file);
        let meta = entry.metadata()?;
        let archived_copy = (find_copies && parsed.suffix == ErrorKind::Duplicate.suffix())
            .then(|| parsed.original.parse().ok())
            .flatten()
            .and_then(|name| ctx.layout.find_in(&*ctx.store, &name).ok())
            .and_then(|found| {
                found
                    .first()
                    .map(|s| format!("{}{}", ctx.archive_root(), s.key))
            });
        entries.push(ErrorEntry {
            reason: explain_error_kind(&parsed.suffix).to_owned(),
            kind: parsed.suffix,
            original: parsed.original,
            moved_at: parsed
                .stamp
                .or_else(|| Some(walvault_core::time::utc_stamp(mtime_of(&meta) as i64))),
            size: meta.len(),
            archived_copy,
            recorded_reason: None,
            file,
        });
    }
    entries.sort_by(|a, b| a.file.cmp(&b.file));
    // The reason recorded by the run that moved the file, when there is one.
    if let Ok(text) = fs::read_to_string(ctx.error_reasons_path()) {
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if let (Some(file), Some(reason)) = (v["file"].as_str(), v["reason"].as_str())
                && let Some(e) = entries.iter_mut().find(|e| e.file == file)
            {
                e.recorded_reason = Some(reason.to_owned());
            }
        }
    }
    Ok(entries)
}

fn print_errors(ctx: &ServerCtx<'_>, entries: &[ErrorEntry], format: Format) -> anyhow::Result<()> {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&entries)?),
        Format::Text if entries.is_empty() => {
            println!("errors/ of server '{}' is empty", ctx.cfg.name)
        }
        Format::Text => {
            // Names and reasons come from the queues: no control character reaches the
            // terminal.
            let shown = walvault_core::text::escape_controls;
            for e in entries {
                println!(
                    "{} ({}, {} bytes, moved {})",
                    shown(&e.file),
                    e.kind,
                    e.size,
                    shown(e.moved_at.as_deref().unwrap_or("?"))
                );
                println!(
                    "\t{}",
                    shown(e.recorded_reason.as_deref().unwrap_or(&e.reason))
                );
                if let Some(copy) = &e.archived_copy {
                    println!("\tarchived copy: {}", shown(copy));
                }
            }
        }
    }
    Ok(())
}
