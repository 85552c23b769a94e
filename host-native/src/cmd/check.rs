//! `check` and `status`.

use std::fs;
use std::path::Path;

use serde::Serialize;
use walvault_core::catalogue::CatalogueEntry;
use walvault_core::duplicate::{ErrorSummary, summarise_errors};
use walvault_core::queue::QueueKind;
use walvault_core::report::CheckRun;
use walvault_core::status::{self, CheckResult, human_bytes};
use walvault_core::time::utc_iso8601;

use super::receive_wal;
use crate::cli::Format;
use crate::config::{Config, ServerConfig};
use crate::fsutil::is_temp_name;
use crate::hooks;
use crate::pg::{self, PgFacts};
use crate::server::ServerCtx;
use crate::server::now;
use crate::ui::Ui;

/// Facts gathered locally.
struct Local {
    catalogue: Vec<CatalogueEntry>,
    catalogue_problem: Option<String>,
    errors: ErrorSummary,
    incoming_waiting: usize,
    streaming_waiting: usize,
    temp_files: usize,
}

fn gather(ctx: &ServerCtx<'_>) -> Local {
    let (catalogue, catalogue_problem) = match ctx.catalogue.read() {
        Ok(Ok(entries)) => (entries, None),
        Ok(Err(e)) => (
            Vec::new(),
            Some(format!(
                "{e}: run 'walvault rebuild-xlogdb {}'",
                ctx.cfg.name
            )),
        ),
        Err(e) => (
            Vec::new(),
            Some(format!(
                "cannot read {}: {e}",
                ctx.catalogue.path().display()
            )),
        ),
    };
    let error_names: Vec<String> = fs::read_dir(&ctx.cfg.errors)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let temp_files = ctx.local_archive_dir().map_or(0, |root| {
        let mut n = 0;
        if let Ok(rd) = fs::read_dir(root) {
            for entry in rd.filter_map(Result::ok) {
                let name = entry.file_name().to_string_lossy().into_owned();
                if is_temp_name(&name) {
                    n += 1;
                } else if entry.path().is_dir() {
                    n += fs::read_dir(entry.path())
                        .map(|d| {
                            d.filter_map(Result::ok)
                                .filter(|e| is_temp_name(&e.file_name().to_string_lossy()))
                                .count()
                        })
                        .unwrap_or(0);
                }
            }
        }
        n
    });
    Local {
        catalogue,
        catalogue_problem,
        errors: summarise_errors(&error_names),
        incoming_waiting: ServerCtx::waiting(&ctx.cfg.incoming, QueueKind::Incoming),
        streaming_waiting: if ctx.cfg.streaming_archiver {
            ServerCtx::waiting(&ctx.cfg.streaming, QueueKind::Streaming)
        } else {
            0
        },
        temp_files,
    }
}

fn directory_check(name: &str, dir: &Path) -> CheckResult {
    let probe = dir.join(format!(".walvault-check.{}.tmp", std::process::id()));
    let result = fs::write(&probe, b"").and_then(|()| fs::remove_file(&probe));
    CheckResult {
        name: name.to_owned(),
        ok: result.is_ok(),
        hint: Some(match result {
            Ok(()) => dir.display().to_string(),
            Err(e) => format!("{}: {e}", dir.display()),
        }),
    }
}

fn last_wal(catalogue: &[CatalogueEntry]) -> Option<&CatalogueEntry> {
    catalogue
        .iter()
        .filter(|e| e.wal_name().is_ok_and(|n| n.is_segment() || n.is_partial()))
        .max_by(|a, b| a.name.cmp(&b.name))
}

/// JSON form of a check run.
#[derive(Debug, Serialize)]
pub struct CheckReport {
    /// The server.
    pub server: String,
    /// All passed.
    pub ok: bool,
    /// Each check.
    pub checks: Vec<CheckResult>,
}

/// Runs every check for one server of `config`.
pub fn run_checks(ctx: &ServerCtx<'_>, config: &Config) -> CheckReport {
    let cfg = ctx.cfg;
    let local = gather(ctx);
    let mut checks = Vec::new();
    if let Some(problem) = &local.catalogue_problem {
        checks.push(CheckResult {
            name: "catalogue".into(),
            ok: false,
            hint: Some(problem.clone()),
        });
    }
    checks.push(status::check_wal_archive(
        local.catalogue.len(),
        local.incoming_waiting + local.streaming_waiting,
    ));
    if let Some(root) = ctx.local_archive_dir() {
        checks.push(directory_check("archive directory", root));
    }
    if cfg.archiver {
        checks.push(directory_check(
            "incoming WALs directory writable",
            &cfg.incoming,
        ));
        checks.push(status::check_queue(
            "incoming WALs directory",
            local.incoming_waiting,
            cfg.max_incoming_wals_queue,
        ));
    }
    if cfg.streaming_archiver {
        checks.push(status::check_queue(
            "streaming WALs directory",
            local.streaming_waiting,
            cfg.max_incoming_wals_queue,
        ));
    }
    checks.push(directory_check("errors directory writable", &cfg.errors));
    checks.push(status::check_errors(&local.errors));
    checks.push(status::check_last_wal_age(
        last_wal(&local.catalogue).map(|e| e.time),
        now(),
        cfg.last_wal_maximum_age,
    ));
    checks.push(status::check_temp_files(local.temp_files));
    if let Some(dropped) =
        status::check_dropped(&crate::dropped::read_dropped(cfg), cfg.archive_queue_max)
    {
        checks.push(dropped);
    }
    if let Some(stalled) = crate::server::stalled_archive_wal(cfg) {
        checks.push(CheckResult {
            name: "archive-wal".into(),
            ok: false,
            hint: Some(stalled),
        });
    }
    checks.extend(encryption_checks(ctx));
    checks.push(permissions_check(ctx));
    if let Some(config) = config_file_check(config) {
        checks.push(config);
    }
    if let Some(hooks) = hook_check(cfg) {
        checks.push(hooks);
    }
    if let Some(conninfo) = &cfg.conninfo {
        match pg::connect(conninfo).and_then(|mut c| pg::facts(&mut c)) {
            Err(e) => checks.push(CheckResult {
                name: "PostgreSQL".into(),
                ok: false,
                hint: Some(format!("{e:#}")),
            }),
            Ok(facts) => checks.extend(pg_checks(ctx, &facts)),
        }
    }
    if cfg.streaming_archiver {
        checks.extend(streaming_checks(ctx));
    }
    CheckReport {
        server: cfg.name.clone(),
        ok: checks.iter().all(|c| c.ok),
        checks,
    }
}

/// With `encryption = "gpg"`: a test encryption to the configured recipients (Barman's
/// `encryption` check), opened again when a secret key is configured (which runs the
/// passphrase command: a broken one fails here, not in a recovery); then `encryption keys`:
/// archived WAL that only keys no longer configured can open (see `reencrypt`).
fn encryption_checks(ctx: &ServerCtx<'_>) -> Vec<CheckResult> {
    use walvault_core::encryption::{Decrypt as _, Encrypt as _};
    if ctx.cfg.encryption.is_none() {
        return Vec::new();
    }
    let fail = |name: &str, hint: String| CheckResult {
        name: name.into(),
        ok: false,
        hint: Some(hint),
    };
    let encryptor = match ctx.encryptor() {
        Ok(Some(e)) => e,
        Ok(None) => return vec![fail("encryption", "no recipients".into())],
        Err(e) => return vec![fail("encryption", format!("{e:#}"))],
    };
    let names: Vec<_> = encryptor
        .recipients()
        .iter()
        .map(|r| r.fingerprint.clone())
        .collect();
    let mut sealed = Vec::new();
    let sample = b"walvault check: a test encryption";
    let mut checks = vec![match encryptor.encrypt(&mut &sample[..], &mut sealed) {
        Err(e) => fail("encryption", format!("a test encryption failed: {e}")),
        Ok(()) if ctx.cfg.decryption.is_none() => CheckResult {
            name: "encryption".into(),
            ok: true,
            hint: Some(format!(
                "gpg to {}; no secret key here, so this host cannot read the WAL back",
                names.join(", ")
            )),
        },
        Ok(()) => {
            let opened = ctx.decrypt.get().map_err(anyhow::Error::msg).and_then(|d| {
                let mut plain = Vec::new();
                d.decrypt(Box::new(std::io::Cursor::new(sealed)))?
                    .read_to_end(&mut plain)?;
                Ok(plain)
            });
            match opened {
                Ok(plain) if plain == sample => CheckResult {
                    name: "encryption".into(),
                    ok: true,
                    hint: Some(format!(
                        "gpg to {}; the secret key opens it",
                        names.join(", ")
                    )),
                },
                Ok(_) => fail(
                    "encryption",
                    "a test encryption decrypts to other bytes".into(),
                ),
                Err(e) => fail(
                    "encryption",
                    format!("the configured secret key cannot open what is encrypted now: {e:#}"),
                ),
            }
        }
    }];
    let scanned = super::reencrypt::current_keys(ctx)
        .and_then(|current| super::reencrypt::scan(ctx, &current, ctx.cfg.jobs.unwrap_or(4)));
    checks.push(match scanned {
        Err(e) => fail("encryption keys", format!("{e:#}")),
        Ok(scan) if scan.stale.is_empty() => CheckResult {
            name: "encryption keys".into(),
            ok: true,
            hint: Some(format!(
                "{} encrypted WAL, each readable by a configured key",
                scan.encrypted
            )),
        },
        Ok(scan) => {
            let first = scan.stale.first().map(|s| s.name.to_string()).unwrap_or_default();
            let last = scan.stale.last().map(|s| s.name.to_string()).unwrap_or_default();
            fail(
                "encryption keys",
                format!(
                    "{} of {} encrypted WAL ({first} .. {last}) can only be opened by keys no longer configured: walvault reencrypt {} --to-current-keys",
                    scan.stale.len(),
                    scan.encrypted,
                    ctx.cfg.name
                ),
            )
        }
    });
    checks
}

/// The `permissions` check: the server's directories must not let other users in (archived
/// WAL holds every row of the database). walvault creates them private; an archive made by
/// other tools or by hand may not be.
fn permissions_check(ctx: &ServerCtx<'_>) -> CheckResult {
    let cfg = ctx.cfg;
    let mut dirs: Vec<&Path> = vec![
        &cfg.backup_directory,
        &cfg.incoming,
        &cfg.errors,
        &cfg.xlogdb_directory,
    ];
    if cfg.streaming_archiver {
        dirs.push(&cfg.streaming);
    }
    if let Some(root) = ctx.local_archive_dir() {
        dirs.push(root);
    }
    dirs.sort();
    dirs.dedup();
    let open: Vec<String> = dirs
        .into_iter()
        .filter_map(|dir| {
            let mode = others_mode(dir)?;
            Some(format!("{} ({mode:03o})", dir.display()))
        })
        .collect();
    CheckResult {
        name: "permissions".into(),
        ok: open.is_empty(),
        hint: (!open.is_empty()).then(|| {
            format!(
                "open to other users: {}; chmod o-rwx them (walvault creates them 0700)",
                open.join(", ")
            )
        }),
    }
}

/// The mode of `path` when other users can reach it and it lets them in (any of o+rwx, and
/// every parent directory searchable by others); `None` otherwise or when it cannot be read.
/// A 0755 `incoming/` inside a 0700 server directory is not open.
fn others_mode(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode_of = |p: &Path| fs::metadata(p).ok().map(|m| m.permissions().mode() & 0o777);
    let mode = mode_of(path)?;
    let reachable = path
        .ancestors()
        .skip(1)
        .all(|parent| mode_of(parent).is_some_and(|m| m & 0o001 != 0));
    (mode & 0o007 != 0 && reachable).then_some(mode)
}

/// The `configuration file` check, when the file holds a secret (a password in a conninfo,
/// an S3 secret key, the serve token: of any server, since whoever reads the file reads
/// them all) and other users can read it. From the configuration as parsed, never read again.
fn config_file_check(config: &Config) -> Option<CheckResult> {
    use std::os::unix::fs::PermissionsExt;
    let secrets = config_secrets(config);
    let mode = fs::metadata(&config.origin).ok()?.permissions().mode() & 0o777;
    (!secrets.is_empty() && mode & 0o004 != 0).then(|| CheckResult {
        name: "configuration file".into(),
        ok: false,
        hint: Some(format!(
            "{} ({mode:03o}) holds secrets ({}) and every user can read it: chmod o-r it",
            config.origin.display(),
            secrets.join(", ")
        )),
    })
}

/// The secrets a configuration holds, by key (`[server] key`, or `serve_token`).
fn config_secrets(config: &Config) -> Vec<String> {
    let has_password = |c: &Option<crate::secret::Conninfo>| {
        c.as_ref()
            .is_some_and(|c| c.split_password().map_or(true, |(_, p)| p.is_some()))
    };
    let mut secrets = Vec::new();
    if config.serve_token.is_some() {
        secrets.push("serve_token".to_owned());
    }
    for cfg in config.servers.values() {
        if has_password(&cfg.conninfo) {
            secrets.push(format!("[{}] conninfo", cfg.name));
        }
        // streaming_conninfo defaults to conninfo: the same secret, named once.
        if has_password(&cfg.streaming_conninfo) && cfg.streaming_conninfo != cfg.conninfo {
            secrets.push(format!("[{}] streaming_conninfo", cfg.name));
        }
        if matches!(&cfg.archive, crate::config::ArchiveLocation::Object(s) if s.secret_access_key.is_some())
        {
            secrets.push(format!("[{}] secret_access_key", cfg.name));
        }
        // It says how to get the passphrase, or holds it (`echo …`).
        if cfg
            .decryption
            .as_ref()
            .is_some_and(|d| d.passphrase_command.is_some())
        {
            secrets.push(format!("[{}] encryption_passphrase_command", cfg.name));
        }
    }
    secrets
}

/// The `hook scripts` check, when any is configured: each must be an executable program
/// (a retry script that cannot run is retried forever, stalling archiving).
fn hook_check(cfg: &ServerConfig) -> Option<CheckResult> {
    let configured = hooks::configured_scripts(cfg).len();
    if configured == 0 {
        return None;
    }
    let problems = hooks::script_problems(cfg);
    Some(CheckResult {
        name: "hook scripts".into(),
        ok: problems.is_empty(),
        hint: Some(if problems.is_empty() {
            format!("{configured} configured")
        } else {
            problems
                .iter()
                .map(|(key, why)| format!("{key}: {why}"))
                .collect::<Vec<_>>()
                .join("; ")
        }),
    })
}

/// `config check`: prints every server's resolved settings; exits 2 when a hook script
/// cannot run (the file parsed, but `put-wal` would stall on it).
pub fn config_check(config: &Config, ui: &Ui) -> u8 {
    let problems: Vec<(&str, &str, String)> = config
        .servers
        .values()
        .flat_map(|s| {
            hooks::script_problems(s)
                .into_iter()
                .map(|(key, why)| (s.name.as_str(), key, why))
        })
        .collect();
    if problems.is_empty() {
        println!("{}: OK", config.origin.display());
    } else {
        println!(
            "{}: FAILED ({} hook script(s) cannot run)",
            config.origin.display(),
            problems.len()
        );
    }
    for s in config.servers.values() {
        println!("[{}]{}", s.name, if s.active { "" } else { " (inactive)" });
        println!(
            "\tarchive: {}",
            ServerCtx::open(s, config)
                .map(|c| c.archive_location())
                .unwrap_or_else(|e| format!("{e:#}"))
        );
        println!("\tincoming: {}", s.incoming.display());
        println!("\terrors: {}", s.errors.display());
        println!(
            "\tcompression: {} ({})",
            s.compression.map_or("none", |c| c.name()),
            s.compression_level
        );
        println!(
            "\twal_segment_size: {}",
            s.wal_segment_size
                .map_or_else(|| "detected".to_owned(), |z| z.to_string())
        );
        if let Some(conninfo) = &s.conninfo {
            println!("\tconninfo: {conninfo}");
        }
        let mut archivers = Vec::new();
        if s.archiver {
            archivers.push("archive_command (incoming)".to_owned());
        }
        if s.streaming_archiver {
            archivers.push(match &s.slot_name {
                Some(slot) => format!(
                    "streaming (slot {slot}, created {})",
                    match s.create_slot {
                        crate::config::CreateSlot::Auto => "by walvault",
                        crate::config::CreateSlot::Manual => "manually",
                    }
                ),
                None => "streaming (no slot)".to_owned(),
            });
            println!("\tstreaming: {}", s.streaming.display());
        }
        println!("\tarchivers: {}", archivers.join(", "));
        if let Some(enc) = &s.encryption {
            let keys: Vec<String> = enc
                .key_files
                .iter()
                .map(|p| p.display().to_string())
                .chain(enc.key_ids.iter().cloned())
                .collect();
            println!("\tencryption: gpg to {}", keys.join(", "));
        }
        if let Some(dec) = &s.decryption {
            println!("\tsecret key: {}", dec.secret_key_file.display());
        }
    }
    for (server, key, why) in &problems {
        ui.error(format_args!("[{server}] {key}: {why}"));
    }
    if problems.is_empty() { 0 } else { 2 }
}

/// What `status` shows about streaming.
#[derive(Debug, Serialize)]
pub struct StreamingStatus {
    /// The receive-wal process holding the lock, if one runs.
    pub receive_wal_pid: Option<u32>,
    /// Whether receive-wal runs (its lock is held).
    pub receive_wal_running: bool,
    /// `pg_receivewal --version`, or why it is unusable.
    pub pg_receivewal: String,
    /// The server's view, when reachable.
    pub postgresql: Option<pg::StreamingFacts>,
    /// Why the server's view is missing.
    pub postgresql_error: Option<String>,
}

/// Gathers the streaming state: the local lock and tool, and the server's slot and receiver.
pub fn streaming_status(ctx: &ServerCtx<'_>) -> StreamingStatus {
    let holder = receive_wal::holder(ctx.cfg);
    let (postgresql, postgresql_error) = match receive_wal::facts(ctx.cfg) {
        Ok(f) => (Some(f), None),
        Err(e) => (None, Some(format!("{e:#}"))),
    };
    let pg_receivewal = match receive_wal::pg_receivewal(ctx.cfg) {
        Err(e) => format!("{e:#}"),
        Ok(tool) => match postgresql.as_ref().map(|f| {
            walvault_core::streaming::receivewal_compatible(
                tool.major,
                u32::try_from(f.version_num).unwrap_or(0),
            )
        }) {
            Some(Err(e)) => e,
            _ => tool.version,
        },
    };
    StreamingStatus {
        receive_wal_pid: holder.flatten(),
        receive_wal_running: holder.is_some(),
        pg_receivewal,
        postgresql,
        postgresql_error,
    }
}

fn streaming_checks(ctx: &ServerCtx<'_>) -> Vec<CheckResult> {
    let cfg = ctx.cfg;
    let st = streaming_status(ctx);
    let check = |name: &str, ok: bool, hint: String| CheckResult {
        name: name.to_owned(),
        ok,
        hint: Some(hint),
    };
    let tool_ok = st.pg_receivewal.starts_with("pg_receivewal");
    let mut checks = vec![
        check("pg_receivewal", tool_ok, st.pg_receivewal.clone()),
        check(
            "receive-wal running",
            st.receive_wal_running,
            match st.receive_wal_pid {
                Some(pid) => format!("process {pid}"),
                None if st.receive_wal_running => "lock held".to_owned(),
                None => format!("not running: start `walvault receive-wal {}`", cfg.name),
            },
        ),
    ];
    let Some(facts) = &st.postgresql else {
        checks.push(check(
            "streaming connection",
            false,
            st.postgresql_error.unwrap_or_default(),
        ));
        return checks;
    };
    if let Some(slot) = &cfg.slot_name {
        checks.push(match &facts.slot {
            None => check(
                "replication slot",
                false,
                format!(
                    "replication slot '{slot}' doesn't exist: run `walvault receive-wal --create-slot {}`",
                    cfg.name
                ),
            ),
            Some(info) if info.restart_lsn.is_none() => check(
                "replication slot",
                false,
                format!("slot '{slot}' not initialised: is receive-wal running?"),
            ),
            Some(info) if !info.active => check(
                "replication slot",
                false,
                format!("slot '{slot}' not active: is receive-wal running?"),
            ),
            Some(info) => check(
                "replication slot",
                true,
                format!(
                    "'{slot}' active, restart_lsn {}",
                    info.restart_lsn.as_deref().unwrap_or("-")
                ),
            ),
        });
    }
    if let Some(receiver) = &facts.receiver {
        checks.push(check(
            "streaming lag",
            true,
            match receiver.lag_bytes {
                Some(lag) => format!(
                    "{lag} bytes ({}), {} {}",
                    human_bytes(u64::try_from(lag).unwrap_or(0)),
                    receiver.state,
                    receiver.sync_state
                ),
                None => format!("{} {}", receiver.state, receiver.sync_state),
            },
        ));
    }
    checks
}

fn pg_checks(ctx: &ServerCtx<'_>, facts: &PgFacts) -> Vec<CheckResult> {
    let mut checks = vec![CheckResult {
        name: "PostgreSQL".into(),
        ok: true,
        hint: Some(format!("version {}", facts.version_num)),
    }];
    // A streaming-only server needs no archive_command.
    if ctx.cfg.archiver {
        checks.push(status::check_archive_mode(&facts.archive_mode));
        let command = status::check_archive_command(
            Some(&facts.archive_command),
            Some(&facts.archive_library),
        );
        let command_ok = command.ok;
        checks.push(command);
        if command_ok {
            checks.push(status::check_continuous_archiving(
                &facts.archive_mode,
                &facts.archiver,
            ));
        }
    }
    if let Some(size) = ctx.cfg.wal_segment_size
        && size.bytes() != facts.wal_segment_size
    {
        checks.push(CheckResult {
            name: "wal_segment_size".into(),
            ok: false,
            hint: Some(format!(
                "PostgreSQL uses {} bytes, configured {}",
                facts.wal_segment_size,
                size.bytes()
            )),
        });
    }
    if let Some(expected) = ctx.cfg.system_identifier {
        checks.push(CheckResult {
            name: "system identifier".into(),
            ok: expected == facts.system_identifier,
            hint: Some(format!(
                "PostgreSQL {}, configured {expected}",
                facts.system_identifier
            )),
        });
    }
    checks
}

/// Records a run durably; a failure to record is a warning, never a failed check.
fn record_check(ctx: &ServerCtx<'_>, report: &CheckReport, at: f64, ui: &Ui) {
    let run = CheckRun {
        at,
        ok: report.ok,
        checks: report.checks.clone(),
    };
    let path = ctx.last_check_path();
    let result = path
        .parent()
        .map_or(Ok(false), |dir| ctx.fs.create_dir_durable(dir))
        .and_then(|_| {
            ctx.fs.write_durable(&path, false, |w| {
                serde_json::to_writer(&mut *w, &run).map_err(std::io::Error::other)?;
                w.write_all(b"\n")
            })
        });
    if let Err(e) = result {
        ui.warn(format_args!(
            "cannot record the check results in {}: {e}",
            path.display()
        ));
    }
}

/// `check`: prints and returns the exit code (1 if anything failed). Each server's results
/// are also recorded for `serve`.
pub fn check(
    ctxs: &[ServerCtx<'_>],
    config: &Config,
    format: Format,
    nagios: bool,
    ui: &Ui,
) -> anyhow::Result<u8> {
    let reports: Vec<CheckReport> = ctxs.iter().map(|ctx| run_checks(ctx, config)).collect();
    let at = now();
    for (ctx, report) in ctxs.iter().zip(&reports) {
        record_check(ctx, report, at, ui);
    }
    let all_ok = reports.iter().all(|r| r.ok);
    if nagios {
        let failed: Vec<String> = reports
            .iter()
            .flat_map(|r| {
                r.checks
                    .iter()
                    .filter(|c| !c.ok)
                    .map(move |c| format!("{}: {}", r.server, c.name))
            })
            .collect();
        if failed.is_empty() {
            println!("WALVAULT OK - {} server(s) checked", reports.len());
            return Ok(0);
        }
        println!("WALVAULT CRITICAL - {}", failed.join(", "));
        return Ok(2);
    }
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&reports)?),
        Format::Text => {
            for r in &reports {
                println!("Server {}:", r.server);
                for c in &r.checks {
                    println!("{}", c.line());
                }
            }
        }
    }
    Ok(if all_ok { 0 } else { 1 })
}

/// JSON form of `status`.
#[derive(Debug, Serialize)]
pub struct StatusReport {
    /// The server.
    pub server: String,
    /// Description from the configuration.
    pub description: Option<String>,
    /// Where WAL is archived.
    pub archive: String,
    /// Compression for new WAL.
    pub compression: Option<String>,
    /// Files in the catalogue.
    pub catalogue_entries: usize,
    /// Bytes stored, from the catalogue.
    pub stored_bytes: u64,
    /// The newest archived WAL.
    pub last_archived_wal: Option<String>,
    /// Its source mtime, ISO 8601.
    pub last_archived_time: Option<String>,
    /// Files waiting in incoming/.
    pub incoming_waiting: usize,
    /// Files waiting in streaming/.
    pub streaming_waiting: usize,
    /// errors/ by kind.
    pub errors: ErrorSummary,
    /// Segments `archive_queue_max` acknowledged without archiving (known gaps).
    pub dropped_segments: Vec<walvault_core::queue_limit::DroppedSegment>,
    /// PostgreSQL facts, when reachable.
    pub postgresql: Option<PgFacts>,
    /// Why PostgreSQL facts are missing.
    pub postgresql_error: Option<String>,
    /// Streaming state, when the streaming archiver is on.
    pub streaming: Option<StreamingStatus>,
}

/// `status`.
pub fn status(ctxs: &[ServerCtx<'_>], format: Format) -> anyhow::Result<u8> {
    let mut reports = Vec::new();
    for ctx in ctxs {
        let local = gather(ctx);
        let last = last_wal(&local.catalogue);
        let (postgresql, postgresql_error) = match &ctx.cfg.conninfo {
            None => (None, Some("no conninfo configured".to_owned())),
            Some(conninfo) => match pg::connect(conninfo).and_then(|mut c| pg::facts(&mut c)) {
                Ok(f) => (Some(f), None),
                Err(e) => (None, Some(format!("{e:#}"))),
            },
        };
        reports.push(StatusReport {
            server: ctx.cfg.name.clone(),
            description: ctx.cfg.description.clone(),
            archive: ctx.archive_location(),
            compression: ctx.cfg.compression.map(|c| c.name().to_owned()),
            catalogue_entries: local.catalogue.len(),
            stored_bytes: local.catalogue.iter().map(|e| e.size).sum(),
            last_archived_wal: last.map(|e| e.name.clone()),
            last_archived_time: last.map(|e| utc_iso8601(e.time as i64)),
            incoming_waiting: local.incoming_waiting,
            streaming_waiting: local.streaming_waiting,
            errors: local.errors,
            dropped_segments: crate::dropped::read_dropped(ctx.cfg),
            postgresql,
            postgresql_error,
            streaming: ctx.cfg.streaming_archiver.then(|| streaming_status(ctx)),
        });
    }
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&reports)?),
        Format::Text => {
            for r in &reports {
                println!("Server {}:", r.server);
                if let Some(d) = &r.description {
                    println!("\tDescription: {d}");
                }
                println!("\tArchive: {}", r.archive);
                println!(
                    "\tCompression: {}",
                    r.compression.as_deref().unwrap_or("none")
                );
                println!(
                    "\tArchived WAL files: {} ({})",
                    r.catalogue_entries,
                    human_bytes(r.stored_bytes)
                );
                match (&r.last_archived_wal, &r.last_archived_time) {
                    (Some(w), Some(t)) => println!("\tLast archived WAL: {w}, at {t}"),
                    _ => println!("\tLast archived WAL: No WAL segment shipped yet"),
                }
                println!("\tWaiting in incoming: {}", r.incoming_waiting);
                if r.streaming_waiting > 0 {
                    println!("\tWaiting in streaming: {}", r.streaming_waiting);
                }
                println!(
                    "\tErrors: {}",
                    if r.errors.total() == 0 {
                        "none".to_owned()
                    } else {
                        r.errors.hint()
                    }
                );
                if let Some(text) =
                    walvault_core::queue_limit::describe_dropped(&r.dropped_segments)
                {
                    println!("\tDropped segments: {text}");
                }
                match (&r.postgresql, &r.postgresql_error) {
                    (Some(pg), _) => {
                        println!(
                            "\tPostgreSQL 'archive_command' setting: {}",
                            pg.archive_command
                        );
                        let failures =
                            match (&pg.archiver.last_failed_wal, pg.archiver.last_failed_time) {
                                (Some(w), Some(t)) => format!(
                                    "{} ({w} at {})",
                                    pg.archiver.failed_count,
                                    utc_iso8601(t as i64)
                                ),
                                _ => pg.archiver.failed_count.to_string(),
                            };
                        println!("\tFailures of WAL archiver: {failures}");
                        if let Some(rate) = pg.archiver.archived_per_hour(now()) {
                            println!("\tServer WAL archiving rate: {rate:.2}/hour");
                        }
                        if let Some(current) = &pg.current_wal {
                            println!("\tCurrent WAL segment: {current}");
                        }
                    }
                    (None, Some(e)) => println!("\tPostgreSQL: {e}"),
                    (None, None) => {}
                }
                if let Some(st) = &r.streaming {
                    println!(
                        "\treceive-wal: {}",
                        match (st.receive_wal_running, st.receive_wal_pid) {
                            (true, Some(pid)) => format!("running (process {pid})"),
                            (true, None) => "running".to_owned(),
                            (false, _) => "not running".to_owned(),
                        }
                    );
                    println!("\tpg_receivewal: {}", st.pg_receivewal);
                    if let Some(f) = &st.postgresql {
                        if let Some(slot) = &f.slot {
                            println!(
                                "\tReplication slot: {}, restart_lsn {}",
                                if slot.active { "active" } else { "inactive" },
                                slot.restart_lsn.as_deref().unwrap_or("-")
                            );
                        }
                        if let Some(lag) = f.receiver.as_ref().and_then(|r| r.lag_bytes) {
                            println!(
                                "\tStreaming lag: {}",
                                human_bytes(u64::try_from(lag).unwrap_or(0))
                            );
                        }
                    }
                }
            }
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_s_secrets_are_found_in_every_server_and_the_token() {
        let text = "[walvault]\nserve_token = \"a-long-enough-token-1234\"\n\
            [pg]\nwals_directory = \"/srv/pg/wals\"\nconninfo = \"host=db password=x\"\n\
            [other]\nwals_directory = \"s3://b/p\"\nendpoint_url = \"http://127.0.0.1:9000\"\n\
            access_key_id = \"k\"\nsecret_access_key = \"s\"\n\
            [plain]\nwals_directory = \"/srv/plain/wals\"\nconninfo = \"host=db user=u\"\n\
            [sealed]\nencryption_secret_key_file = \"/k/s.asc\"\n\
            encryption_passphrase_command = \"echo the-passphrase\"\n";
        let config = Config::parse(text, Path::new("/etc/walvault.toml")).expect("config");
        assert_eq!(
            config_secrets(&config),
            [
                "serve_token",
                "[other] secret_access_key",
                "[pg] conninfo",
                "[sealed] encryption_passphrase_command"
            ]
        );
        let none = Config::parse(
            "[plain]\nwals_directory = \"/srv/plain/wals\"\n",
            Path::new("/etc/walvault.toml"),
        )
        .expect("config");
        assert!(config_secrets(&none).is_empty());
    }
}
