//! A guest that tries to leave its sandbox, for host-wasi's sandbox test (`sandbox-probe`
//! feature; never part of the embedded module). Run with a server's command line, it:
//! - `archive-wal`: tries every way out it knows and prints one line per attempt, exiting 0
//!   when all were refused and 3 when one got through;
//! - `rebuild-xlogdb`: loops forever (the runner's time limit must stop it);
//! - `get-wal`: allocates until the runner's memory limit stops it.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use walvault::cli::{Cli, Command};
use walvault::config::Config;
use walvault::fsutil::Fs;

/// Runs the probe the command line asks for; returns the exit code.
pub fn run(fs: Fs, cli: &Cli) -> u8 {
    match &cli.command {
        Command::RebuildXlogdb { .. } => {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        Command::GetWal { .. } => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 8 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        Command::ArchiveWal { servers, .. } => escape(fs, servers.server.as_deref().unwrap_or("")),
        _ => 2,
    }
}

fn escape(fs: Fs, server: &str) -> u8 {
    let mut text = String::new();
    if std::io::stdin().read_to_string(&mut text).is_err() {
        return 2;
    }
    let Ok(config) = Config::parse(&text, Path::new("walvault.toml")) else {
        return 2;
    };
    let Ok(me) = config.server(server) else {
        return 2;
    };
    let others: Vec<PathBuf> = config
        .servers
        .values()
        .filter(|s| s.name != me.name)
        .map(|s| s.incoming.clone())
        .collect();
    let inside = &me.incoming;
    let mut attempts: Vec<(String, std::io::Result<()>)> = vec![
        ("read /etc/passwd".into(), read(Path::new("/etc/passwd"))),
        ("list /".into(), fs::read_dir("/").map(drop)),
        (
            "read through ..".into(),
            read(&inside.join("../../../../../../etc/passwd")),
        ),
        (
            "create through ..".into(),
            create(&inside.join("../probe-was-here")),
        ),
        (
            "read a symlink to outside".into(),
            read(&inside.join("escape-link")),
        ),
        (
            "write a symlink to outside".into(),
            create(&inside.join("escape-link")),
        ),
        (
            "create a symlink to outside".into(),
            // The one stable way to make a symlink on WASI.
            #[allow(deprecated)]
            fs::soft_link("/etc/passwd", inside.join("new-link"))
                .and_then(|()| read(&inside.join("new-link"))),
        ),
        (
            "create in the server's parent directory".into(),
            create(&me.backup_directory.join("../probe-was-here")),
        ),
    ];
    // The runner holds this server's archive-wal and catalogue locks, not its receive-wal
    // lock: the guest's platform must not pretend to take it.
    let not_held = walvault::lock::lock_path(&me.lock_directory, &me.name, "receive-wal");
    attempts.push((
        "take a lock the runner does not hold".into(),
        fs.lock(&not_held, false)
            .map(drop)
            .map_err(std::io::Error::other),
    ));
    #[cfg(target_os = "wasi")]
    attempts.push((
        "record progress in a lock the runner does not hold".into(),
        crate::host::touch_lock(&not_held),
    ));
    #[cfg(target_os = "wasi")]
    attempts.extend(runner_removals(inside, &others));
    for dir in others {
        attempts.push((
            format!("create in another server's {}", dir.display()),
            create(&dir.join("probe-was-here")),
        ));
        attempts.push((
            format!("list another server's {}", dir.display()),
            fs::read_dir(&dir).map(drop),
        ));
    }
    let mut escaped = false;
    for (what, result) in attempts {
        match result {
            Ok(()) => {
                escaped = true;
                println!("ESCAPED: {what}");
            }
            Err(e) => println!("refused: {what}: {e}"),
        }
    }
    if escaped { 3 } else { 0 }
}

/// The runner's background removal (`walvault.remove_later`) asked for files it must not
/// touch: refused at once, or failing beneath the directory when a symlink leads out.
#[cfg(target_os = "wasi")]
fn runner_removals(inside: &Path, others: &[PathBuf]) -> Vec<(String, std::io::Result<()>)> {
    use crate::host::{finish_removals, queue_removal};
    let refused_at_once = |path: &Path| queue_removal(path);
    let refused_beneath = |path: &Path| {
        queue_removal(path)?;
        match finish_removals().as_slice() {
            [] => Ok(()),
            failures => Err(std::io::Error::other(failures.join("; "))),
        }
    };
    let mut attempts = vec![
        (
            "remove /etc/passwd by the runner".into(),
            refused_at_once(Path::new("/etc/passwd")),
        ),
        (
            "remove through .. by the runner".into(),
            refused_at_once(&inside.join("../../outside/secret")),
        ),
        (
            "remove through a symlinked directory by the runner".into(),
            refused_beneath(&inside.join("escape-dir/secret")),
        ),
    ];
    for dir in others {
        attempts.push((
            format!("remove in another server's {} by the runner", dir.display()),
            refused_at_once(&dir.join("keep-me")),
        ));
    }
    attempts
}

fn read(path: &Path) -> std::io::Result<()> {
    fs::File::open(path)?.read(&mut [0u8; 16]).map(drop)
}

fn create(path: &Path) -> std::io::Result<()> {
    fs::write(path, b"probe").map(drop)
}
