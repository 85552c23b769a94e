//! `walvault-wasi`: walvault's `archive-wal`, `get-wal` and `rebuild-xlogdb` run as a
//! WebAssembly guest under wasmtime, with access to one server's directories and nothing else.
//!
//! The runner does on the host only what a sandbox cannot: it reads the configuration, takes
//! the server's locks, creates missing directories, and picks what to preopen. The guest
//! (`host-wasi/guest`, embedded in this binary) does the archiving with the native host's
//! own code, so both write the same archive.

mod module_cache;
mod removal;
mod sandbox;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use walvault::config::{
    ArchiveLocation, Config, ConfigError, DEFAULT_CONFIG_PATH, HookScripts, ServerConfig,
};
use walvault::fsutil::Fs;
use walvault::lock::{LockFile, lock_path};
use walvault::server::ServerCtx;
use walvault::ui::Ui;

use sandbox::{Dir, Guest, Limits};

/// walvault in a WebAssembly sandbox: the server's directories are all it can reach.
#[derive(Debug, Parser)]
#[command(name = "walvault-wasi", version, about, long_about = None, after_help = walvault::cli::EXIT_CODES)]
struct Cli {
    /// Configuration file (default: $WALVAULT_CONFIG, else /etc/walvault.toml).
    #[arg(short, long, global = true, env = "WALVAULT_CONFIG")]
    config: Option<PathBuf>,
    /// More detail (-v: per file, -vv: debugging).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Errors only.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    /// Stop the guest after this many seconds (default: 600 for get-wal, 3600 otherwise).
    #[arg(long, global = true, value_name = "SECONDS")]
    timeout: Option<u64>,
    /// The guest's memory limit in MiB.
    #[arg(long, global = true, value_name = "MIB", default_value_t = 512)]
    memory_limit: u64,
    /// Where compiled guest code is cached (default: $WALVAULT_WASI_CACHE, else
    /// $XDG_CACHE_HOME/walvault-wasi, else ~/.cache/walvault-wasi).
    #[arg(long, global = true, env = "WALVAULT_WASI_CACHE", value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Run this module instead of the embedded guest (tests).
    #[arg(long, global = true, hide = true)]
    guest_module: Option<PathBuf>,
    /// The wall-clock time the guest sees, in seconds since the epoch (tests).
    #[arg(long, global = true, hide = true)]
    clock: Option<u64>,
    /// Seed the guest's random numbers (tests).
    #[arg(long, global = true, hide = true)]
    random_seed: Option<u64>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Archive what is waiting in the server's streaming and incoming directories (one job).
    ArchiveWal {
        /// The server.
        server: String,
    },
    /// Restore one WAL file (PostgreSQL's restore_command), as `walvault get-wal`.
    GetWal {
        /// The server.
        server: String,
        /// The WAL file name PostgreSQL asks for (%f).
        wal: String,
        /// Where to write it (%p).
        dest: PathBuf,
        /// Also look for a `.partial` of the segment (end of a streamed archive).
        #[arg(long)]
        partial: bool,
    },
    /// Rebuild the server's catalogue from its archive directory.
    RebuildXlogdb {
        /// The server.
        server: String,
    },
}

fn main() -> ExitCode {
    // The guest's files are created by this process: private, as the native CLI's.
    walvault::fsutil::restrict_umask(false);
    let cli = Cli::parse();
    let ui = Ui::new(cli.verbose, cli.quiet);
    let mut result = run(&cli, &ui);
    // In get-wal any failure of the runner or the sandbox must stop recovery (exit 255),
    // never look like the end of the archive (1), as in the native CLI.
    if matches!(cli.command, Command::GetWal { .. }) {
        result = walvault::cmd::wal_io::get_wal_failing_closed(result, &ui);
    }
    ExitCode::from(walvault::cli::exit_code(result, &ui))
}

fn run(cli: &Cli, ui: &Ui) -> anyhow::Result<u8> {
    let config_path = cli
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH));
    let text = std::fs::read_to_string(&config_path).map_err(|e| ConfigError {
        section: None,
        key: None,
        message: format!("cannot read {}: {e}", config_path.display()),
    })?;
    let config = Config::parse(&text, &config_path)?;
    if config.group_access {
        walvault::fsutil::restrict_umask(true);
    }
    let (server, command) = match &cli.command {
        Command::ArchiveWal { server } => (server, "archive-wal"),
        Command::GetWal { server, .. } => (server, "get-wal"),
        Command::RebuildXlogdb { server } => (server, "rebuild-xlogdb"),
    };
    let cfg = config.server(server)?;
    let ArchiveLocation::Local(archive) = &cfg.archive else {
        return Err(unsupported(
            cfg,
            "wals_directory",
            "object storage needs the network, which the WASI sandbox does not have: use walvault",
        ));
    };
    let mut guest_args = vec!["-c".to_owned(), config_path.display().to_string()];
    match (cli.quiet, cli.verbose) {
        (true, _) => guest_args.push("-q".into()),
        (false, 0) => {}
        (false, n) => guest_args.push(format!("-{}", "v".repeat(usize::from(n)))),
    }
    guest_args.push(command.into());
    guest_args.push(server.clone());
    // Locks live as long as the guest runs (released on drop, after it exits).
    let mut locks = Vec::new();
    let dirs = match &cli.command {
        Command::ArchiveWal { .. } => {
            if cfg.archive_hooks != HookScripts::default() {
                return Err(unsupported(
                    cfg,
                    "pre_archive_script",
                    "hook scripts are programs the WASI sandbox cannot start: use walvault, or remove the archive hooks",
                ));
            }
            let Some(lock) = walvault::cmd::archive_wal::take_lock(Fs::native(), cfg, ui)? else {
                return Ok(0);
            };
            locks.push((archive_wal_lock(cfg), lock));
            let ctx = ServerCtx::open(cfg, &config)?;
            ctx.ensure_dirs()?;
            let reasons = ctx.error_reasons_path();
            let meta = reasons.parent().unwrap_or(&cfg.backup_directory);
            Fs::native()
                .create_dir_durable(meta)
                .with_context(|| format!("creating {}", meta.display()))?;
            let mut dirs = vec![
                Dir::read_write(&cfg.errors),
                Dir::read_write(archive),
                Dir::read_write(&cfg.xlogdb_directory),
                Dir::read_write(meta),
            ];
            if cfg.archiver {
                dirs.push(Dir::read_write(&cfg.incoming));
            }
            if cfg.streaming_archiver {
                dirs.push(Dir::read_write(&cfg.streaming));
            }
            // encryption = "gpg": the public key files, read-only.
            if let Some(enc) = &cfg.encryption {
                for file in enc.key_files.iter().chain(&enc.keyring) {
                    dirs.push(Dir::read_only(file.parent().unwrap_or(Path::new("/"))));
                }
            }
            locks.push(catalogue_lock(cfg)?);
            dirs
        }
        Command::GetWal {
            wal, dest, partial, ..
        } => {
            let dest = std::path::absolute(dest)
                .with_context(|| format!("resolving {}", dest.display()))?;
            let dest_dir = dest.parent().unwrap_or(Path::new("/")).to_owned();
            // What the native CLI says when it cannot create its temporary file there.
            std::fs::read_dir(&dest_dir)
                .with_context(|| format!("cannot write in {}", dest_dir.display()))?;
            guest_args.extend([wal.clone(), dest.display().to_string()]);
            if *partial {
                guest_args.push("--partial".into());
            }
            let mut dirs = vec![Dir::read_only(archive), Dir::read_write(&dest_dir)];
            // An encrypted archive: the secret key, read-only (one without a passphrase: the
            // sandbox cannot run encryption_passphrase_command).
            if let Some(dec) = &cfg.decryption {
                dirs.push(Dir::read_only(
                    dec.secret_key_file.parent().unwrap_or(Path::new("/")),
                ));
            }
            dirs
        }
        Command::RebuildXlogdb { .. } => {
            // Archiving is excluded while the catalogue is rebuilt, as natively.
            let path = archive_wal_lock(cfg);
            let archiving = LockFile::flock(&path, true).context("taking the archive-wal lock")?;
            locks.push((path, archiving));
            locks.push(catalogue_lock(cfg)?);
            vec![
                Dir::read_write(archive),
                Dir::read_write(&cfg.xlogdb_directory),
            ]
        }
    };
    for dir in &dirs {
        if !dir.path.is_absolute() {
            return Err(unsupported(
                cfg,
                "backup_directory",
                &format!(
                    "{} is relative; the sandbox needs absolute directories",
                    dir.path.display()
                ),
            ));
        }
    }
    let timeout = cli.timeout.unwrap_or(match cli.command {
        Command::GetWal { .. } => 600,
        _ => 3600,
    });
    let guest = Guest {
        module: cli.guest_module.clone(),
        cache_dir: match &cli.cache_dir {
            // Absolute, as the default: the runner's working directory is no part of it.
            Some(dir) => Some(std::path::absolute(dir).context("resolving --cache-dir")?),
            None => default_cache_dir(),
        },
        args: guest_args,
        stdin: text,
        dirs,
        limits: Limits {
            timeout: Duration::from_secs(timeout),
            memory_bytes: cli.memory_limit.saturating_mul(1 << 20),
        },
        clock: cli.clock.map(Duration::from_secs),
        random_seed: cli.random_seed,
        locks: std::sync::Arc::new(locks),
    };
    let code = sandbox::run(&guest)?;
    // The locks go only now, after the guest and its removals have ended.
    drop(guest);
    Ok(code)
}

/// The catalogue lock, held for the guest's whole run (it has no `flock` of its own).
fn catalogue_lock(cfg: &ServerConfig) -> anyhow::Result<(PathBuf, LockFile)> {
    let path = lock_path(&cfg.lock_directory, &cfg.name, "xlogdb");
    let lock = LockFile::flock(&path, true).context("taking the catalogue lock")?;
    Ok((path, lock))
}

/// The archive-wal lock's path (taken by [`walvault::cmd::archive_wal::take_lock`]).
fn archive_wal_lock(cfg: &ServerConfig) -> PathBuf {
    lock_path(&cfg.lock_directory, &cfg.name, "archive-wal")
}

fn unsupported(cfg: &ServerConfig, key: &str, message: &str) -> anyhow::Error {
    ConfigError {
        section: Some(cfg.name.clone()),
        key: Some(key.into()),
        message: message.into(),
    }
    .into()
}

fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("walvault-wasi"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }
}
