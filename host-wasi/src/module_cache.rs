//! The compiled guest, kept on disk between runs and mapped in, not read and unpacked.
//!
//! wasmtime's own cache stores modules zstd-compressed under a SHA-256 of the module, so each
//! start hashed the 2.5 MB guest and decompressed 7 MB: about 15 of a cached start's 21 ms,
//! paid again by every `get-wal` call PostgreSQL makes. Here the entry is the plain
//! serialized module (`Module::serialize`), named by a hash of the guest taken at build time
//! and by the engine's compatibility hash, and loaded with `Module::deserialize_file`, which
//! maps the file.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::Path;

use anyhow::Context;
use wasmtime::{Engine, Module};

/// The guest's hash, from build.rs.
const GUEST_HASH: &str = env!("WALVAULT_GUEST_HASH");

/// The cache entry's name for this guest and this engine's settings.
fn entry_name(engine: &Engine) -> String {
    let mut hasher = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    format!("guest-{GUEST_HASH}-{:016x}.cwasm", hasher.finish())
}

/// The guest compiled for `engine`: from `dir` when an entry there loads, else compiled by
/// Cranelift and stored in `dir` for the next run (failing to store only costs that).
pub fn load(engine: &Engine, dir: Option<&Path>, wasm: &[u8]) -> anyhow::Result<Module> {
    let Some(dir) = dir else {
        return compile(engine, wasm);
    };
    let entry = dir.join(entry_name(engine));
    if entry.is_file() {
        // SAFETY: wasmtime runs the machine code in a serialized module as is, so the file
        // must be one it wrote. This one is: `store` below writes it, complete and synced,
        // into the user's own cache directory before giving it its final name, which names
        // this guest and this engine's settings (wasmtime checks its version and settings
        // again on load). wasmtime's own cache loads its entries in the same way and with the
        // same trust in that directory.
        #[allow(unsafe_code)]
        let loaded = unsafe { Module::deserialize_file(engine, &entry) };
        if let Ok(module) = loaded {
            return Ok(module);
        }
    }
    let module = compile(engine, wasm)?;
    if let Ok(bytes) = module.serialize() {
        // A cache that cannot be written only costs a compile per run.
        let _ = store(dir, &entry, &bytes);
    }
    Ok(module)
}

fn compile(engine: &Engine, wasm: &[u8]) -> anyhow::Result<Module> {
    Module::new(engine, wasm)
        .map_err(anyhow::Error::from)
        .context("compiling the guest module")
}

/// Writes `bytes` to `entry` durably (a synced temporary file renamed into place), then
/// removes the entries of other guests and settings (earlier builds) from `dir`.
fn store(dir: &Path, entry: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    walvault::fsutil::Fs::native().write_durable(entry, false, |file| file.write_all(bytes))?;
    for old in std::fs::read_dir(dir)?.filter_map(Result::ok) {
        let name = old.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("guest-")
            && name.ends_with(".cwasm")
            && Some(old.path().as_path()) != Some(entry)
        {
            let _ = std::fs::remove_file(old.path());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODULE: &[u8] = b"\0asm\x01\0\0\0";

    #[test]
    fn compiles_once_then_loads_and_recovers_from_a_damaged_entry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = Engine::default();
        std::fs::create_dir_all(dir.path()).expect("dir");
        std::fs::write(dir.path().join("guest-old-build.cwasm"), b"old").expect("old entry");
        load(&engine, Some(dir.path()), MODULE).expect("compiled");
        let entry = dir.path().join(entry_name(&engine));
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").path())
            .collect();
        assert_eq!(
            names,
            std::slice::from_ref(&entry),
            "one entry, the old one removed"
        );
        let inode =
            |path: &Path| std::os::unix::fs::MetadataExt::ino(&path.metadata().expect("stat"));
        let stored = inode(&entry);
        load(&engine, Some(dir.path()), MODULE).expect("loaded");
        assert_eq!(
            inode(&entry),
            stored,
            "loaded, not compiled and stored again"
        );
        // A damaged entry is not loaded but compiled again and replaced.
        std::fs::write(&entry, b"garbage").expect("damage");
        load(&engine, Some(dir.path()), MODULE).expect("compiled again");
        assert_ne!(std::fs::read(&entry).expect("entry"), b"garbage");
        load(&engine, Some(dir.path()), MODULE).expect("loaded");
    }
}
