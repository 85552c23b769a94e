//! The wasmtime side: one guest run with the given preopens, limits, clock and randomness.
//!
//! - WASI preview 1 from `wasmtime-wasi` (maintained; `wasi-common` is frozen upstream and
//!   cannot preopen a directory read-only).
//! - No environment, no sockets, no inherited stdin: the configuration text is the guest's
//!   stdin, stdout and stderr are the runner's.
//! - A wall-clock limit by epoch interruption (a ticker thread advances the epoch) and a memory
//!   limit by a resource limiter; both stop the guest with a trap the runner reports.
//! - The module is compiled by Cranelift once and cached (`module_cache`: wasmtime's
//!   serialization, keyed by the module and the compiler settings), so later runs only map
//!   native code in.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use wasmtime::{Caller, Engine, Extern, Linker, Module, ResourceLimiter, Store, Trap};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{FsPerms, HostWallClock, I32Exit, WasiCtxBuilder};

use walvault::lock::LockFile;

use crate::module_cache;
use crate::removal::Removals;

/// The guest module, built by build.rs.
static GUEST: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/walvault-guest.wasm"));

/// How often the epoch advances: the granularity of the time limit.
const TICK: Duration = Duration::from_millis(50);

/// A directory the guest may use, preopened at the same path as on the host.
#[derive(Debug, Clone)]
pub struct Dir {
    /// Host path, also the guest's.
    pub path: PathBuf,
    /// Whether the guest may write.
    pub writable: bool,
}

impl Dir {
    /// A directory the guest reads and writes.
    pub fn read_write(path: &Path) -> Dir {
        Dir {
            path: path.to_owned(),
            writable: true,
        }
    }

    /// A directory the guest only reads.
    pub fn read_only(path: &Path) -> Dir {
        Dir {
            path: path.to_owned(),
            writable: false,
        }
    }
}

/// Bounds on one run.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Wall-clock time.
    pub timeout: Duration,
    /// Linear memory.
    pub memory_bytes: u64,
}

/// One guest run.
#[derive(Debug)]
pub struct Guest {
    /// Another module than the embedded one (tests).
    pub module: Option<PathBuf>,
    /// Where compiled code is cached; `None`: compile every time.
    pub cache_dir: Option<PathBuf>,
    /// argv after the guest's pid.
    pub args: Vec<String>,
    /// The guest's stdin.
    pub stdin: String,
    /// Its preopens.
    pub dirs: Vec<Dir>,
    /// Its bounds.
    pub limits: Limits,
    /// A fixed wall-clock time (since the epoch) instead of the host's.
    pub clock: Option<Duration>,
    /// A fixed seed instead of the host's randomness.
    pub random_seed: Option<u64>,
    /// The locks held for the guest, by path: the only locks it may use, and where it
    /// records progress (`walvault.lock_progress`).
    pub locks: Arc<Vec<(PathBuf, LockFile)>>,
}

struct State {
    wasi: WasiP1Ctx,
    memory: MemoryLimit,
    /// The preopened directories, canonical: what `walvault.sync_dir` may sync.
    roots: Vec<PathBuf>,
    /// `walvault.remove_later`'s thread and directories.
    removals: Removals,
    /// The locks held for the guest.
    locks: Arc<Vec<(PathBuf, LockFile)>>,
}

struct MemoryLimit {
    max: u64,
    refused: Option<u64>,
}

impl ResourceLimiter for MemoryLimit {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired as u64 > self.max {
            self.refused = Some(desired as u64);
            // Trapping (rather than failing the grow) makes the cause the reported error
            // instead of an allocation failure deep in the guest.
            return Err(wasmtime::Error::msg("memory limit reached"));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1 << 20)
    }
}

struct FixedClock(Duration);

impl HostWallClock for FixedClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }

    fn now(&self) -> Duration {
        self.0
    }
}

/// Compiles (or loads from the cache) and runs the guest; returns its exit status.
pub fn run(guest: &Guest) -> anyhow::Result<u8> {
    let engine = wt(Engine::new(
        wasmtime::Config::new().epoch_interruption(true),
    ))?;
    let module = match &guest.module {
        Some(path) => wt(Module::from_file(&engine, path))
            .with_context(|| format!("loading {}", path.display()))?,
        None => module_cache::load(&engine, guest.cache_dir.as_deref(), GUEST)?,
    };
    let mut wasi = WasiCtxBuilder::new();
    let mut argv = vec!["walvault-guest".to_owned(), std::process::id().to_string()];
    for (path, _) in guest.locks.iter() {
        let path = path
            .to_str()
            .with_context(|| format!("{} is not UTF-8", path.display()))?;
        argv.push(format!("--held-lock={path}"));
    }
    argv.extend(guest.args.iter().cloned());
    wasi.args(&argv)
        .stdin(wasmtime_wasi::p2::pipe::MemoryInputPipe::new(
            guest.stdin.clone().into_bytes(),
        ))
        .inherit_stdout()
        .inherit_stderr()
        // Sync calls from this thread: file I/O blocks here instead of going through a pool.
        .allow_blocking_current_thread(true);
    let mut seen: Vec<PathBuf> = Vec::new();
    for dir in &guest.dirs {
        if seen.contains(&dir.path) {
            continue;
        }
        seen.push(dir.path.clone());
        // A directory both read and written is preopened writable.
        let writable = guest.dirs.iter().any(|d| d.path == dir.path && d.writable);
        let perms = if writable {
            FsPerms::ReadWrite
        } else {
            FsPerms::ReadOnly
        };
        let guest_path = dir
            .path
            .to_str()
            .with_context(|| format!("{} is not UTF-8", dir.path.display()))?;
        wt(wasi.preopened_dir(&dir.path, guest_path, perms).map(drop))
            .with_context(|| format!("opening {} for the sandbox", dir.path.display()))?;
    }
    if let Some(now) = guest.clock {
        wasi.wall_clock(FixedClock(now));
    }
    if let Some(seed) = guest.random_seed {
        let bytes: Vec<u8> = (0..4096u64)
            .flat_map(|i| {
                seed.wrapping_mul(6364136223846793005)
                    .wrapping_add(i)
                    .to_le_bytes()
            })
            .collect();
        wasi.secure_random(wasmtime_wasi::Deterministic::new(bytes.clone()))
            .insecure_random(wasmtime_wasi::Deterministic::new(bytes))
            .insecure_random_seed(u128::from(seed));
    }
    let mut store = Store::new(
        &engine,
        State {
            wasi: wasi.build_p1(),
            memory: MemoryLimit {
                max: guest.limits.memory_bytes,
                refused: None,
            },
            roots: seen.iter().filter_map(|p| p.canonicalize().ok()).collect(),
            removals: Removals::new(&guest.dirs)?,
            locks: Arc::clone(&guest.locks),
        },
    );
    store.limiter(|s| &mut s.memory);
    let ticks = guest.limits.timeout.as_millis() / TICK.as_millis();
    store.set_epoch_deadline(u64::try_from(ticks).unwrap_or(u64::MAX).max(1));
    store.epoch_deadline_trap();
    let ticker = engine.clone();
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(TICK);
            ticker.increment_epoch();
        }
    });
    let mut linker: Linker<State> = Linker::new(&engine);
    wt(wasmtime_wasi::p1::add_to_linker_sync(
        &mut linker,
        |s: &mut State| &mut s.wasi,
    ))?;
    wt(linker.func_wrap("walvault", "sync_dir", sync_dir))?;
    wt(linker.func_wrap("walvault", "remove_later", remove_later))?;
    wt(linker.func_wrap("walvault", "removals_finish", removals_finish))?;
    wt(linker.func_wrap("walvault", "lock_progress", lock_progress))?;
    let instance = wt(linker.instantiate(&mut store, &module)).context("starting the guest")?;
    let start = wt(instance.get_typed_func::<(), ()>(&mut store, "_start"))?;
    let result = start.call(&mut store, ());
    // The guest waits for its removals before it syncs a queue; one that stopped early may
    // not have. Either way nothing is left running when the runner drops the locks.
    for failure in store.data_mut().removals.finish() {
        eprintln!("warning: archived, but could not remove from the queue: {failure}");
    }
    let Err(err) = result else {
        return Ok(0);
    };
    if let Some(exit) = err.downcast_ref::<I32Exit>() {
        // The guest's 255 arrives as 125 (WASI exit statuses stay below 126).
        return Ok(match exit.0 {
            125 => 255,
            code => u8::try_from(code).unwrap_or(1),
        });
    }
    if let Some(bytes) = store.data().memory.refused {
        return Err(anyhow::anyhow!(
            "the guest was stopped: it needed {} MiB of memory, over its limit of {} MiB (--memory-limit)",
            bytes.div_ceil(1 << 20),
            guest.limits.memory_bytes >> 20
        ));
    }
    if err.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
        return Err(anyhow::anyhow!(
            "the guest was stopped after running for {} s (--timeout)",
            guest.limits.timeout.as_secs()
        ));
    }
    Err(anyhow::anyhow!(
        "the guest failed: {:#}",
        anyhow::Error::from(err)
    ))
}

/// `walvault.sync_dir(ptr, len) -> i32`: fsyncs a directory inside a preopen (the guest's
/// paths are the host's). 0 on success, -1 when refused, else the errno.
fn sync_dir(mut caller: Caller<'_, State>, ptr: u32, len: u32) -> i32 {
    let Some(path) = guest_path(&mut caller, ptr, len) else {
        return -1;
    };
    // Resolved (symlinks, `..`) before the check, so only a preopen or a directory inside one
    // can be synced.
    let Ok(path) = path.canonicalize() else {
        return -1;
    };
    if !caller
        .data()
        .roots
        .iter()
        .any(|root| path.starts_with(root))
    {
        return -1;
    }
    match std::fs::File::open(&path).and_then(|dir| dir.sync_all()) {
        Ok(()) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

/// `walvault.remove_later(ptr, len) -> i32`: hands a file to the removal thread. 0 when
/// taken, -1 when refused (see [`Removals::queue`]).
fn remove_later(mut caller: Caller<'_, State>, ptr: u32, len: u32) -> i32 {
    match guest_path(&mut caller, ptr, len) {
        Some(path) if caller.data_mut().removals.queue(&path) => 0,
        _ => -1,
    }
}

/// `walvault.removals_finish(ptr, cap) -> u32`: waits for the removals handed over and writes
/// `path: error` lines for the failed ones at `ptr`, at most `cap` bytes; returns the length
/// of the whole text.
fn removals_finish(mut caller: Caller<'_, State>, ptr: u32, cap: u32) -> u32 {
    let text = caller.data_mut().removals.finish().join("\n");
    let Some(Extern::Memory(memory)) = caller.get_export("memory") else {
        return 0;
    };
    let shown = &text.as_bytes()[..text.len().min(cap as usize)];
    if memory.write(&mut caller, ptr as usize, shown).is_err() {
        return 0;
    }
    u32::try_from(text.len()).unwrap_or(u32::MAX)
}

/// `walvault.lock_progress(ptr, len) -> i32`: records progress in a lock held for the guest
/// (see [`touch_held`]).
fn lock_progress(mut caller: Caller<'_, State>, ptr: u32, len: u32) -> i32 {
    match guest_path(&mut caller, ptr, len) {
        Some(path) => touch_held(&caller.data().locks, &path),
        None => -1,
    }
}

/// Touches the lock at `path` if it is one of `locks`: 0, -1 when it is not, else the errno.
/// The guest names the lock; only the runner's own handle on it is ever touched.
pub fn touch_held(locks: &[(PathBuf, LockFile)], path: &Path) -> i32 {
    match locks.iter().find(|(held, _)| held == path) {
        Some((_, lock)) => match lock.touch() {
            Ok(()) => 0,
            Err(e) => e.raw_os_error().unwrap_or(-1).max(1),
        },
        None => -1,
    }
}

/// The UTF-8 path at `ptr..ptr + len` of the guest's memory; `None` when out of bounds or not
/// UTF-8.
fn guest_path(caller: &mut Caller<'_, State>, ptr: u32, len: u32) -> Option<PathBuf> {
    let Some(Extern::Memory(memory)) = caller.get_export("memory") else {
        return None;
    };
    let (start, len) = (ptr as usize, len as usize);
    let bytes = memory.data(&caller).get(start..start.saturating_add(len))?;
    std::str::from_utf8(bytes).ok().map(PathBuf::from)
}

/// wasmtime's errors as anyhow's.
fn wt<T>(result: wasmtime::Result<T>) -> anyhow::Result<T> {
    result.map_err(anyhow::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guest_records_progress_only_in_locks_held_for_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let held = dir.path().join(".pg-archive-wal.lock");
        let other = dir.path().join(".pg-receive-wal.lock");
        std::fs::write(&other, b"").expect("other");
        let lock = LockFile::flock(&held, false).expect("lock");
        let old = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        for path in [&held, &other] {
            std::fs::File::options()
                .write(true)
                .open(path)
                .and_then(|f| f.set_modified(old))
                .expect("age");
        }
        let locks = vec![(held.clone(), lock)];
        assert_eq!(touch_held(&locks, &held), 0);
        let mtime = |p: &Path| {
            std::fs::metadata(p)
                .and_then(|m| m.modified())
                .expect("mtime")
        };
        assert!(mtime(&held) > old, "progress recorded");
        assert_eq!(touch_held(&locks, &other), -1, "not held: refused");
        assert_eq!(mtime(&other), old, "untouched");
        assert_eq!(touch_held(&locks, &dir.path().join("../x.lock")), -1);
    }
}
