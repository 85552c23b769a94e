//! The guest `walvault-wasi` runs under wasmtime: `archive-wal`, `get-wal` and
//! `rebuild-xlogdb` for one server, by the native host's own code over the WASI file system.
//!
//! The runner hands it, and nothing else:
//! - argv: its own pid (temp names carry it), a `--held-lock=PATH` for each lock it holds for
//!   the guest, then a `walvault` command line for one server;
//! - stdin: the configuration file's text (the guest cannot open the file itself);
//! - preopens: the server's directories, at the same paths as on the host, so paths and
//!   messages read exactly as the native CLI's;
//! - the locks: already held on the host (WASI has no `flock`).
//!
//! All of it reaches the shared code as the guest's platform (`host::Runner`), passed in the
//! server context.

use std::process::ExitCode;

use clap::Parser;
use walvault::cli::Cli;
use walvault::fsutil::Fs;

fn main() -> ExitCode {
    let mut args = std::env::args();
    let _argv0 = args.next();
    let Some(pid) = args.next().and_then(|p| p.parse().ok()) else {
        eprintln!("error: walvault-guest is run by walvault-wasi, not by hand");
        return ExitCode::from(2);
    };
    let mut args = args.peekable();
    let mut locks = Vec::new();
    while let Some(lock) = args.next_if(|a| a.starts_with(HELD_LOCK)) {
        locks.push(std::path::PathBuf::from(&lock[HELD_LOCK.len()..]));
    }
    let fs = platform(pid, locks);
    let cli = Cli::parse_from(std::iter::once("walvault".to_owned()).chain(args));
    // WASI's proc_exit takes statuses below 126 only: 255 travels as 125, which the runner
    // turns back into 255 (the guest never exits 125 otherwise).
    ExitCode::from(match dispatch(fs, &cli) {
        255 => 125,
        code => code,
    })
}

/// How the runner names a lock it holds for the guest.
const HELD_LOCK: &str = "--held-lock=";

/// The guest's platform: its runner (natively, where this program is only compiled to be
/// checked, the native one).
fn platform(pid: u32, locks: Vec<std::path::PathBuf>) -> Fs {
    #[cfg(target_os = "wasi")]
    return Fs::on(Box::leak(Box::new(host::Runner { pid, locks })));
    #[cfg(not(target_os = "wasi"))]
    {
        let _ = (pid, locks);
        Fs::native()
    }
}

#[cfg(feature = "sandbox-probe")]
fn dispatch(fs: Fs, cli: &Cli) -> u8 {
    probe::run(fs, cli)
}

#[cfg(not(feature = "sandbox-probe"))]
fn dispatch(fs: Fs, cli: &Cli) -> u8 {
    let ui = walvault::ui::Ui::new(cli.verbose, cli.quiet);
    walvault::cli::exit_code(commands::run(fs, cli, &ui), &ui)
}

#[cfg(target_os = "wasi")]
mod host;
#[cfg(feature = "sandbox-probe")]
mod probe;

#[cfg(not(feature = "sandbox-probe"))]
mod commands {
    use std::io::Read;
    use std::path::PathBuf;

    use walvault::cli::{Cli, Command};
    use walvault::cmd;
    use walvault::config::{Config, DEFAULT_CONFIG_PATH};
    use walvault::fsutil::Fs;
    use walvault::server::ServerCtx;
    use walvault::ui::Ui;

    /// Runs the one command the runner asked for.
    pub fn run(fs: Fs, cli: &Cli, ui: &Ui) -> anyhow::Result<u8> {
        let path = cli
            .config
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH));
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        let config = Config::parse(&text, &path)?;
        let one = |name: &str| -> anyhow::Result<ServerCtx<'_>> {
            ServerCtx::open_on(fs, config.server(name)?, &config)
        };
        match &cli.command {
            Command::ArchiveWal { servers, .. } => {
                let ctx = one(servers.server.as_deref().unwrap_or_default())?;
                // One job: a wasm32-wasip1 module has no threads.
                Ok(if cmd::archive_wal::run(&ctx, 1, ui)? {
                    0
                } else {
                    1
                })
            }
            Command::GetWal {
                server,
                wal,
                dest,
                partial,
                ..
            } => cmd::wal_io::get_wal(&one(server)?, wal, dest, *partial, 0, ui),
            Command::RebuildXlogdb { servers } => {
                let ctx = one(servers.server.as_deref().unwrap_or_default())?;
                cmd::maintenance::rebuild(&ctx, ui)
            }
            _ => anyhow::bail!("not a command of the WASI guest"),
        }
    }
}
