//! `walvault`: the native command-line host of walvault-core.
//!
//! `main` parses arguments, `run` dispatches, and one error edge prints the cause chain and
//! picks the exit code: configuration and usage problems exit 2, other failures 1; commands
//! that PostgreSQL calls choose their own codes (see `cli::EXIT_CODES`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use walvault::barman_config::Translation;
use walvault::cli::{Cli, Command, ConfigCommand, ServerSelection};
use walvault::cmd;
use walvault::config::{self, Config, DEFAULT_CONFIG_PATH};
use walvault::server::ServerCtx;
use walvault::ui::Ui;

fn main() -> ExitCode {
    let matches = <Cli as clap::CommandFactory>::command().get_matches();
    // The log file names the command of every line.
    let name = matches.subcommand_name().unwrap_or("walvault").to_owned();
    let cli =
        <Cli as clap::FromArgMatches>::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // Private until the configuration says otherwise (see fsutil::restrict_umask). The demo
    // sets the modes of the directories its PostgreSQL user shares with it by itself, and
    // its walvault commands run as their own processes.
    if !matches!(cli.command, Command::Demo { .. }) {
        walvault::fsutil::restrict_umask(false);
    }
    let ui = Ui::new(cli.verbose, cli.quiet);
    ExitCode::from(walvault::cli::exit_code(run(cli, &name, &ui), &ui))
}

fn load_config(cli: &Cli, ui: &Ui) -> anyhow::Result<(Config, Option<Translation>)> {
    let (mut config, translation) = if let Some(path) = &cli.barman_config {
        let (config, translation) = Config::load_barman(path)?;
        for i in &translation.ignored {
            ui.verbose(format_args!("{i}"));
        }
        (config, Some(translation))
    } else {
        (Config::load(&config_path(cli))?, None)
    };
    if let Some(origin) = &cli.config_origin {
        config.origin.clone_from(origin);
    }
    Ok((config, translation))
}

fn config_path(cli: &Cli) -> PathBuf {
    cli.config
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH))
}

fn selected<'c>(
    config: &'c Config,
    selection: &ServerSelection,
) -> anyhow::Result<Vec<ServerCtx<'c>>> {
    let servers: Vec<&config::ServerConfig> = match &selection.server {
        Some(name) => vec![config.server(name)?],
        None => config.servers.values().filter(|s| s.active).collect(),
    };
    servers
        .into_iter()
        .map(|s| ServerCtx::open(s, config))
        .collect()
}

fn one<'c>(config: &'c Config, name: &str) -> anyhow::Result<ServerCtx<'c>> {
    ServerCtx::open(config.server(name)?, config)
}

/// Jobs when neither the command line nor the configuration sets them: one per core for a
/// local archive; object storage is latency-bound, so more requests in flight than cores.
fn default_jobs(local: bool) -> usize {
    if local {
        std::thread::available_parallelism().map_or(1, usize::from)
    } else {
        8
    }
}

fn run(cli: Cli, name: &str, ui: &Ui) -> anyhow::Result<u8> {
    // Needs no configuration: packages run it at build time.
    if let Command::Generate { what, dir } = &cli.command {
        let cli = <Cli as clap::CommandFactory>::command();
        let written = match what {
            walvault::cli::Generated::Man => cmd::generate::man(cli, dir)?,
            walvault::cli::Generated::Completions => cmd::generate::completions(cli, dir)?,
        };
        for path in written {
            ui.verbose(format_args!("{}", path.display()));
        }
        return Ok(0);
    }
    if let Command::Demo {
        dir,
        pg_bin,
        os_user,
        compression,
    } = &cli.command
    {
        return cmd::demo::run(dir.clone(), pg_bin, os_user, compression, ui);
    }
    let (config, translation) = load_config(&cli, ui)?;
    walvault::log::init(&config, name, ui);
    if config.group_access {
        walvault::fsutil::restrict_umask(true);
    }
    match &cli.command {
        Command::ArchiveWal { servers, jobs } => {
            let mut ok = true;
            for ctx in selected(&config, servers)? {
                let jobs = jobs
                    .or(ctx.cfg.jobs)
                    .unwrap_or_else(|| default_jobs(ctx.local_archive_dir().is_some()));
                match cmd::archive_wal::run(&ctx, jobs, ui) {
                    Ok(server_ok) => ok &= server_ok,
                    Err(e) => {
                        ok = false;
                        ui.error(format_args!(
                            "archive-wal for server {}: {e:#}",
                            ctx.cfg.name
                        ));
                    }
                }
            }
            Ok(if ok { 0 } else { 1 })
        }
        Command::ReceiveWal {
            server,
            create_slot,
            if_not_exists,
            drop_slot,
            reset,
            no_restart,
        } => {
            walvault::log::reopen_on_sighup();
            cmd::daemon::follow_daemon();
            cmd::receive_wal::run(
                &one(&config, server)?,
                cmd::receive_wal::Options {
                    create_slot: *create_slot,
                    if_not_exists: *if_not_exists,
                    drop_slot: *drop_slot,
                    reset: *reset,
                    no_restart: *no_restart,
                },
                ui,
            )
        }
        Command::PutWal {
            server,
            path,
            push_ahead_worker,
        } => {
            let ctx = one(&config, server)?;
            if *push_ahead_worker {
                let jobs = ctx
                    .cfg
                    .jobs
                    .unwrap_or_else(|| default_jobs(ctx.local_archive_dir().is_some()));
                cmd::push_ahead::worker(&ctx, path, jobs, ui)
            } else {
                cmd::wal_io::put_wal(&ctx, path, ui)
            }
        }
        Command::GetWal {
            server,
            wal,
            dest,
            partial,
            prefetch,
            prefetch_worker,
        } => {
            if *prefetch_worker {
                cmd::wal_io::prefetch_worker(&one(&config, server)?, usize::from(*prefetch), dest)
            } else {
                // Opening the storage can fail too: that must stop recovery, not end it.
                match one(&config, server) {
                    Ok(ctx) => {
                        cmd::wal_io::get_wal(&ctx, wal, dest, *partial, usize::from(*prefetch), ui)
                    }
                    Err(e) => cmd::wal_io::get_wal_failing_closed(Err(e), ui),
                }
            }
        }
        Command::ListWals { server, format } => {
            cmd::reports::list_wals(&one(&config, server)?, *format)
        }
        Command::ShowErrors { server, format } => {
            cmd::reports::show_errors(&one(&config, server)?, *format)
        }
        Command::RebuildXlogdb { servers } => {
            let mut code = 0;
            for ctx in selected(&config, servers)? {
                code = code
                    .max(cmd::maintenance::rebuild(&ctx, ui).with_context(|| {
                        format!("rebuilding the catalogue of {}", ctx.cfg.name)
                    })?);
            }
            Ok(code)
        }
        Command::DeleteWals {
            server,
            before,
            dry_run,
        } => cmd::maintenance::delete_wals(&one(&config, server)?, before, *dry_run, ui),
        Command::KeyAgent { server } => {
            walvault::key_agent::serve(config.server(server)?)?;
            Ok(0)
        }
        Command::Reencrypt {
            server,
            to_current_keys: _,
            dry_run,
            jobs,
        } => {
            let ctx = one(&config, server)?;
            let jobs = jobs
                .or(ctx.cfg.jobs)
                .unwrap_or_else(|| default_jobs(ctx.local_archive_dir().is_some()));
            cmd::reencrypt::reencrypt(&ctx, *dry_run, jobs, ui)
        }
        Command::Check {
            servers,
            format,
            nagios,
        } => cmd::check::check(&selected(&config, servers)?, &config, *format, *nagios, ui),
        Command::Verify {
            servers,
            from,
            from_backup,
            jobs,
            format,
            nagios,
        } => {
            let ctxs = selected(&config, servers)?;
            let jobs = jobs
                .or_else(|| ctxs.first().and_then(|c| c.cfg.jobs))
                .unwrap_or_else(|| {
                    default_jobs(ctxs.iter().all(|c| c.local_archive_dir().is_some()))
                });
            let opts = cmd::verify::Options {
                from: from.clone(),
                from_backup: from_backup.clone(),
                jobs,
            };
            cmd::verify::verify(&ctxs, &opts, *format, *nagios, ui)
        }
        Command::Status { servers, format } => {
            cmd::check::status(&selected(&config, servers)?, *format)
        }
        Command::Config {
            command: ConfigCommand::Check,
        } => {
            if let Some(t) = &translation {
                for i in &t.ignored {
                    ui.warn(format_args!("{i}"));
                }
            }
            Ok(cmd::check::config_check(&config, ui))
        }
        Command::Config {
            command: ConfigCommand::Convert,
        } => {
            match &translation {
                Some(t) => print!("{}{}", walvault::barman_config::header(t), t.toml),
                None => print!("{}", std::fs::read_to_string(&config.path)?),
            }
            Ok(0)
        }
        Command::Serve { listen, refresh } => {
            let opts = cmd::serve::Options {
                listen: *listen,
                token: cmd::serve::token(&config)?,
                refresh: std::time::Duration::from_secs(*refresh),
            };
            walvault::log::reopen_on_sighup();
            cmd::daemon::follow_daemon();
            // The server runs until the process ends; its threads borrow the configuration.
            cmd::serve::run(Box::leak(Box::new(config)), opts, ui)
        }
        Command::Daemon {
            serve,
            sweep,
            check_interval,
        } => {
            let opts = cmd::daemon::Options {
                serve: *serve,
                sweep: std::time::Duration::from_secs(*sweep),
                check: (*check_interval > 0)
                    .then(|| std::time::Duration::from_secs(*check_interval)),
                // Quiet children unless asked: their files are in the log, and a terminal
                // gets no progress bars from runs it did not start.
                child_args: vec![if cli.verbose > 0 { "-v" } else { "-q" }.into()],
            };
            drop(config);
            let load = || -> anyhow::Result<cmd::daemon::Loaded> {
                if let Some(origin) = &cli.barman_config {
                    let (config, translation) = load_config(&cli, ui)?;
                    let text = translation.map(|t| t.toml).unwrap_or_default();
                    let origin = origin.clone();
                    return Ok(cmd::daemon::Loaded {
                        config,
                        text,
                        origin,
                    });
                }
                // Read once: the children's copy is the text that was checked.
                let origin = config_path(&cli);
                let text = std::fs::read_to_string(&origin)
                    .with_context(|| format!("cannot read {}", origin.display()))?;
                let config = Config::parse(&text, &origin)?;
                Ok(cmd::daemon::Loaded {
                    config,
                    text,
                    origin,
                })
            };
            cmd::daemon::run(&load, opts, ui)
        }
        Command::Demo { .. } | Command::Generate { .. } => unreachable!("handled above"),
    }
}
