//! `demo`: the whole job on a fresh machine, with nothing but the PostgreSQL binaries.
//!
//! A throw-away primary archives its WAL with `walvault put-wal` as `archive_command` into a
//! local walvault archive; a second cluster is restored from a base backup plus that archive
//! through `walvault get-wal` as `restore_command`; the data of both is compared.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use walvault_core::compression::Codec;

use crate::cmd::check::run_checks;
use crate::config::Config;
use crate::pgcluster::{Cluster, RunAs};
use crate::server::ServerCtx;
use crate::ui::Ui;

const SERVER: &str = "demo";
const CHECKSUM_SQL: &str = "SELECT count(*)::text || ' rows, sum(abalance) = ' || coalesce(sum(abalance), 0)::text FROM pgbench_accounts";

fn step(ui: &Ui, started: Instant, what: std::fmt::Arguments<'_>) {
    ui.info(format_args!(
        "[{:>5.1}s] {what}",
        started.elapsed().as_secs_f64()
    ));
}

/// Runs the demo; returns 0 when the recovered data matches.
pub fn run(
    dir: Option<PathBuf>,
    pg_bin: &Path,
    os_user: &str,
    compression: &str,
    ui: &Ui,
) -> anyhow::Result<u8> {
    let started = Instant::now();
    if !pg_bin.join("initdb").is_file() {
        bail!(
            "no PostgreSQL server binaries in {} (install postgresql-15, or pass --pg-bin)",
            pg_bin.display()
        );
    }
    if compression != "none" && Codec::from_name(compression).is_none() {
        bail!("unknown compression {compression:?} (none, gzip, bzip2, xz, zstd, lz4, snappy)");
    }
    let run_as = RunAs::for_root(os_user)?;
    let work = match dir {
        Some(d) => d,
        None => std::env::temp_dir().join(format!("walvault-demo-{}", std::process::id())),
    };
    if work.exists() && fs::read_dir(&work)?.next().is_some() {
        bail!(
            "{} is not empty; pass --dir with a new directory",
            work.display()
        );
    }
    fs::create_dir_all(work.join("bin"))?;
    fs::set_permissions(&work, fs::Permissions::from_mode(0o755))?;
    let work = work.canonicalize()?;

    // PostgreSQL runs walvault as its own OS user: give it a copy of this binary it can run.
    let walvault = work.join("bin/walvault");
    fs::copy(std::env::current_exe()?, &walvault).context("copying the walvault binary")?;
    fs::set_permissions(&walvault, fs::Permissions::from_mode(0o755))?;
    let config_path = work.join("walvault.toml");
    let socket_dir = work.join("sock");
    fs::create_dir_all(&socket_dir)?;
    fs::write(
        &config_path,
        format!(
            "# Written by `walvault demo`.\n[walvault]\nhome = \"{}\"\n\n[{SERVER}]\ndescription = \"walvault demo cluster\"\ncompression = \"{compression}\"\nconninfo = \"{}\"\n",
            work.join("archive").display(),
            format_args!(
                "host={} user=postgres dbname=postgres port=PORT",
                socket_dir.display()
            ),
        ),
    )?;
    run_as.own(&work)?;
    step(
        ui,
        started,
        format_args!("work directory {}", work.display()),
    );

    let cmd = |args: &str| {
        format!(
            "{} -q -c {} {args}",
            walvault.display(),
            config_path.display()
        )
    };
    let mut primary = Cluster::init(pg_bin, &run_as, &work.join("primary"), &socket_dir, &[])?;
    let config_text =
        fs::read_to_string(&config_path)?.replace("port=PORT", &format!("port={}", primary.port));
    fs::write(&config_path, config_text)?;
    primary.configure(&format!(
        "wal_level = replica\narchive_mode = on\narchive_command = '{}'\nmax_wal_size = 96MB\nmin_wal_size = 32MB\nfsync = on\n",
        cmd(&format!("put-wal {SERVER} %p"))
    ))?;
    primary.start()?;
    step(
        ui,
        started,
        format_args!(
            "primary PostgreSQL started (socket {}, port {}), archive_command = walvault put-wal",
            socket_dir.display(),
            primary.port
        ),
    );

    primary.pgbench(&["-i", "-s", "4", "-q"])?;
    step(
        ui,
        started,
        format_args!("pgbench -i -s 4: 400,000 accounts loaded"),
    );
    primary.base_backup(&work.join("restored"))?;
    step(
        ui,
        started,
        format_args!(
            "base backup taken (pg_basebackup -X none: its WAL must come from the archive)"
        ),
    );
    primary.pgbench(&["-n", "-c", "2", "-t", "2000"])?;
    let expected = primary.query_text(CHECKSUM_SQL)?;
    step(
        ui,
        started,
        format_args!("pgbench: 4,000 transactions; primary has {expected}"),
    );
    let last = primary.query_text("SELECT pg_walfile_name(pg_current_wal_lsn())")?;
    primary.execute("SELECT pg_switch_wal()")?;
    primary.wait_for(
        &format!("{last} to be archived"),
        Duration::from_secs(120),
        |c| {
            let archived =
                c.query_text("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")?;
            Ok(archived.as_str() >= last.as_str())
        },
    )?;
    let failed = primary.query_text("SELECT failed_count::text FROM pg_stat_archiver")?;
    step(
        ui,
        started,
        format_args!(
            "every completed segment up to {last} archived (pg_stat_archiver failed_count = {failed})"
        ),
    );

    let config = Config::load(&config_path)?;
    let ctx = ServerCtx::open(config.server(SERVER)?, &config)?;
    let report = run_checks(&ctx, &config);
    ui.info(format_args!("walvault check {SERVER}:"));
    for c in &report.checks {
        ui.info(format_args!("{}", c.line()));
    }
    primary.stop("fast")?;
    step(ui, started, format_args!("primary stopped"));

    let mut restored = Cluster::existing(pg_bin, &run_as, &work.join("restored"), &socket_dir)?;
    restored.configure(&format!(
        "archive_mode = off\nrestore_command = '{}'\nrecovery_target_timeline = 'latest'\n",
        cmd(&format!("get-wal {SERVER} %f %p"))
    ))?;
    fs::write(restored.data.join("recovery.signal"), b"")?;
    run_as.own(&restored.data)?;
    restored.start()?;
    restored.wait_for("recovery to finish", Duration::from_secs(600), |c| {
        Ok(c.query_text("SELECT pg_is_in_recovery()::text")? == "false")
    })?;
    let actual = restored.query_text(CHECKSUM_SQL)?;
    step(
        ui,
        started,
        format_args!(
            "second cluster recovered from base backup + archive via restore_command = walvault get-wal; it has {actual}"
        ),
    );
    restored.stop("fast")?;

    let entries = ctx.catalogue.read()?.map_err(|e| anyhow::anyhow!("{e}"))?;
    let stored: u64 = entries.iter().map(|e| e.size).sum();
    ui.info(format_args!(
        "\narchive: {} ({} WAL files, {} stored, compression {compression})\ncatalogue: {}\nconfig: {}\ntry: {} -c {} list-wals {SERVER}",
        ctx.archive_root(),
        entries.len(),
        walvault_core::status::human_bytes(stored),
        ctx.catalogue.path().display(),
        config_path.display(),
        walvault.display(),
        config_path.display(),
    ));
    if actual != expected {
        bail!("the recovered cluster differs: primary had {expected}, recovered has {actual}");
    }
    ui.info(format_args!(
        "OK: the recovered data matches the primary ({:.1}s)",
        started.elapsed().as_secs_f64()
    ));
    Ok(0)
}
