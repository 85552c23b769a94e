//! Command-line definitions.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// walvault: a PostgreSQL WAL archiver that keeps Barman's layout.
#[derive(Debug, Parser)]
#[command(name = "walvault", version, about, long_about = None, after_help = EXIT_CODES)]
pub struct Cli {
    /// Configuration file (default: $WALVAULT_CONFIG, else /etc/walvault.toml).
    #[arg(short, long, global = true, env = "WALVAULT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Read Barman's configuration instead (its INI file, with its
    /// configuration_files_directory): the servers and keys walvault knows, as Barman reads
    /// them; `config convert` prints the walvault equivalent.
    #[arg(long, global = true, value_name = "FILE", conflicts_with = "config")]
    pub barman_config: Option<PathBuf>,
    /// The operator's configuration file, when `-c` names the daemon's private copy of it:
    /// reported, checked and given to hooks instead of the copy (set by `walvault daemon`).
    #[arg(long, global = true, value_name = "FILE", hide = true)]
    pub config_origin: Option<PathBuf>,
    /// More detail (-v: per file, -vv: debugging).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Errors only.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The most segments `get-wal --prefetch` downloads ahead: more buys nothing (recovery replays
/// one segment at a time) and a huge window would keep the worker busy for ever.
pub const MAX_PREFETCH: i64 = 64;

/// Exit codes, shown under `--help`.
pub const EXIT_CODES: &str = "Exit codes:
  0    success (get-wal: the file was written)
  1    failure; get-wal: the WAL is not in the archive; check: a check failed
  2    usage or configuration error
  255  get-wal only: any failure but 'not in the archive' (a storage fault that persisted after
       retries, a damaged archived copy, DEST cannot be written); above 125 so that PostgreSQL
       stops recovery instead of taking it for the end of the archive";

/// What `generate` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Generated {
    /// Man pages: walvault.1 and walvault-COMMAND.1.
    Man,
    /// Shell completions: walvault (bash), _walvault (zsh), walvault.fish.
    Completions,
}

/// Output format of reporting commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    /// Human-readable text.
    #[default]
    Text,
    /// JSON.
    Json,
}

/// Server selection for commands that can run over every server.
#[derive(Debug, Args)]
pub struct ServerSelection {
    /// The server (a section of the configuration).
    #[arg(required_unless_present = "all")]
    pub server: Option<String>,
    /// Every active server.
    #[arg(long, conflicts_with = "server")]
    pub all: bool,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Archive what is waiting in the streaming and incoming directories.
    ArchiveWal {
        #[command(flatten)]
        servers: ServerSelection,
        /// Parallel compress+write jobs (default: configuration `jobs`, else the number of
        /// cores for a local archive and 8 for object storage).
        #[arg(short, long)]
        jobs: Option<usize>,
    },
    /// Stream WAL with pg_receivewal into the streaming directory, restarting it when it
    /// exits, until SIGTERM or SIGINT.
    ReceiveWal {
        /// The server.
        server: String,
        /// Create the replication slot (slot_name) and exit.
        #[arg(long, conflicts_with_all = ["drop_slot", "reset"])]
        create_slot: bool,
        /// With --create-slot: succeed if the slot already exists.
        #[arg(long, requires = "create_slot")]
        if_not_exists: bool,
        /// Drop the replication slot and exit.
        #[arg(long, conflicts_with = "reset")]
        drop_slot: bool,
        /// Realign the streaming directory with the server (slot restart_lsn, else the
        /// current WAL) and exit; refused when the directory is ahead of the server.
        #[arg(long)]
        reset: bool,
        /// Run pg_receivewal once instead of restarting it (when cron restarts receive-wal).
        #[arg(long)]
        no_restart: bool,
    },
    /// archive_command form: archive one WAL file straight from pg_wal (never deletes it).
    ///
    /// archive_command = 'walvault put-wal SERVER %p'
    PutWal {
        /// The server.
        server: String,
        /// The WAL file (PostgreSQL's %p).
        path: PathBuf,
        /// Internal: run as the background worker of `archive_async`.
        #[arg(long, hide = true)]
        push_ahead_worker: bool,
    },
    /// restore_command form: write a WAL file, decompressed, to a path.
    ///
    /// restore_command = 'walvault get-wal SERVER %f %p'
    GetWal {
        /// The server.
        server: String,
        /// The WAL file name (PostgreSQL's %f).
        wal: String,
        /// Where to write it (PostgreSQL's %p).
        dest: PathBuf,
        /// Also serve a .partial segment (from streaming/ or the archive) when the complete
        /// segment does not exist.
        #[arg(short = 'P', long)]
        partial: bool,
        /// Also download the next N segments in parallel into the server's spool directory;
        /// later calls are served from there (checked before use). At most 64.
        #[arg(long, default_value_t = 0, value_name = "N",
              value_parser = clap::value_parser!(u16).range(0..=MAX_PREFETCH))]
        prefetch: u16,
        /// Internal: run as the background prefetch worker of `--prefetch`.
        #[arg(long, hide = true, requires = "prefetch")]
        prefetch_worker: bool,
    },
    /// Internal: the key agent of `encryption_key_cache_ttl`, started by get-wal (reads the
    /// passphrase from standard input).
    #[command(hide = true)]
    KeyAgent {
        /// The server.
        server: String,
    },
    /// List the archived WAL files from the catalogue.
    ListWals {
        /// The server.
        server: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Show what is in errors/ and why.
    ShowErrors {
        /// The server.
        server: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Rebuild the catalogue from the archive directory.
    RebuildXlogdb {
        #[command(flatten)]
        servers: ServerSelection,
    },
    /// Re-encrypt archived WAL that only keys no longer configured can open, for the current
    /// `encryption_key_file` / `encryption_key_id` recipients (needs the old key's
    /// `encryption_secret_key_file`). Each copy is replaced only after its new copy is stored
    /// and checked.
    Reencrypt {
        /// The server.
        server: String,
        /// Encrypt them to the keys configured now (the only mode; required so that the
        /// command never runs by accident).
        #[arg(long, required = true)]
        to_current_keys: bool,
        /// Only list what would be re-encrypted.
        #[arg(long)]
        dry_run: bool,
        /// Objects read in parallel while looking (default: configuration `jobs`, else the
        /// number of cores for a local archive and 8 for object storage).
        #[arg(short, long)]
        jobs: Option<usize>,
    },
    /// Delete archived WAL older than a segment, file by file (history files are kept).
    DeleteWals {
        /// The server.
        server: String,
        /// Keep this segment and everything after it.
        #[arg(long)]
        before: String,
        /// Only print what would be deleted.
        #[arg(long)]
        dry_run: bool,
    },
    /// Check the server's archiving; exits 1 if a check fails.
    Check {
        #[command(flatten)]
        servers: ServerSelection,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
        /// Nagios plugin output (one line, exit 0/2).
        #[arg(long, conflicts_with = "format")]
        nagios: bool,
    },
    /// Prove the archive replayable: read every archived file in range, decoded, and check
    /// each page header, each record's CRC-32C and the chain of records across segments and
    /// timeline switches, the history files, and which segments are missing (delayed or
    /// lost). Exits 1 if anything would stop a recovery.
    Verify {
        #[command(flatten)]
        servers: ServerSelection,
        /// Start at this segment (default: the oldest archived).
        #[arg(long, value_name = "WAL", conflicts_with = "from_backup")]
        from: Option<String>,
        /// Start at the start of a backup: its backup label file's name
        /// (`<segment>.<offset>.backup`) or the LABEL recorded in it.
        #[arg(long, value_name = "LABEL")]
        from_backup: Option<String>,
        /// Files verified in parallel (default: configuration `jobs`, else the number of
        /// cores for a local archive and 8 for object storage).
        #[arg(short, long)]
        jobs: Option<usize>,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
        /// Nagios plugin output (one line, exit 0/1/2).
        #[arg(long, conflicts_with = "format")]
        nagios: bool,
    },
    /// Show the server's archiving status.
    Status {
        #[command(flatten)]
        servers: ServerSelection,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Configuration commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Serve, read-only, for every configured server: the status API (/api/status,
    /// /api/wals), Prometheus metrics (/metrics) and the dashboard (/).
    Serve {
        /// Address to listen on. Anything but loopback needs a bearer token (serve_token in
        /// [walvault], or $WALVAULT_SERVE_TOKEN), which the API and /metrics then require.
        #[arg(long, default_value = "127.0.0.1:9790")]
        listen: std::net::SocketAddr,
        /// Seconds between questions to PostgreSQL about streaming (slot, lag).
        #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..))]
        refresh: u64,
    },
    /// Run as a service (what `barman cron` does, as it happens): archive each server's
    /// queues as files arrive (inotify, and a periodic sweep), keep `receive-wal` running for
    /// every streaming server, run `check` on a period, and optionally `serve`. SIGTERM or
    /// SIGINT stops it (running archive-wal runs finish); SIGHUP reloads the configuration
    /// and reopens the log file.
    Daemon {
        /// Also serve the status API, metrics and dashboard on this address (as `serve
        /// --listen`).
        #[arg(long, value_name = "ADDR")]
        serve: Option<std::net::SocketAddr>,
        /// Seconds between sweeps of every queue (the safety net for what no event reports).
        #[arg(long, default_value_t = 30, value_name = "SECONDS",
              value_parser = clap::value_parser!(u64).range(1..))]
        sweep: u64,
        /// Seconds between `check --all` runs (their results are what `serve` shows); 0: never.
        #[arg(long, default_value_t = 300, value_name = "SECONDS")]
        check_interval: u64,
    },
    /// Write the man pages or the shell completions (bash, zsh, fish) into a directory, from
    /// this command line's own definition (what packages install).
    Generate {
        /// What to write.
        what: Generated,
        /// The directory (created if missing).
        dir: PathBuf,
    },
    /// Start a throw-away PostgreSQL cluster, archive its WAL with walvault, recover a second
    /// cluster from the archive and compare the data.
    Demo {
        /// Work directory (default: a new directory under the system temp dir).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// PostgreSQL server binaries.
        #[arg(long, default_value = "/usr/lib/postgresql/15/bin")]
        pg_bin: PathBuf,
        /// OS user to run PostgreSQL as when walvault runs as root.
        #[arg(long, default_value = "walvault-demo")]
        os_user: String,
        /// Compression for the demo archive.
        #[arg(long, default_value = "zstd")]
        compression: String,
    },
}

/// `walvault config …`
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration and print each server's resolved settings.
    Check,
    /// Print the configuration in walvault's TOML format: with --barman-config, Barman's files
    /// translated (the keys left out listed in comments, and why).
    Convert,
}

/// The error edge every entry point shares (the native CLI and the WASI guest): prints the
/// cause chain and picks the exit code, 2 for configuration problems and 1 otherwise.
pub fn exit_code(result: anyhow::Result<u8>, ui: &crate::ui::Ui) -> u8 {
    match result {
        Ok(code) => code,
        Err(err) => {
            report_error(&err, ui);
            if err.downcast_ref::<crate::config::ConfigError>().is_some() {
                2
            } else {
                1
            }
        }
    }
}

/// Prints an error with its causes on one line, as `error: what: why: …`.
pub fn report_error(err: &anyhow::Error, ui: &crate::ui::Ui) {
    let chain: Vec<String> = err.chain().map(ToString::to_string).collect();
    ui.error(format_args!("{}", chain.join(": ")));
    // Debug-quoted: a message quoting a hostile file name cannot forge a log line.
    tracing::error!(reason = ?chain.join(": "), "failed");
}
