//! Builds the guest (`host-wasi/guest`) for wasm32-wasip1 and leaves it in `OUT_DIR` for
//! `include_bytes!`: the module ships inside the `walvault-wasi` binary.
//!
//! The guest always builds optimised (profile `wasi-guest`: its speed is the product) in its
//! own target directory next to this build's, so a nested cargo never waits on the outer
//! one's lock.

use std::path::{Path, PathBuf};

#[path = "../build-support/nested_cargo.rs"]
mod nested_cargo;

fn main() {
    let manifest = PathBuf::from(env("CARGO_MANIFEST_DIR"));
    let workspace = manifest.parent().expect("host-wasi sits in the workspace");
    for dir in [
        "host-wasi/guest",
        "host-native/src",
        "host-native/Cargo.toml",
        "core/src",
        "build-support",
    ] {
        println!("cargo:rerun-if-changed={}", workspace.join(dir).display());
    }
    for file in [
        "Cargo.lock",
        "Cargo.toml",
        "core/Cargo.toml",
        ".cargo/config.toml",
    ] {
        println!("cargo:rerun-if-changed={}", workspace.join(file).display());
    }
    // What the nested build's C compilers read (.cargo/config.toml sets the first three): a
    // change must rebuild the guest, not only the next outer change.
    for var in [
        "CC_wasm32_wasip1",
        "AR_wasm32_wasip1",
        "CFLAGS_wasm32_wasip1",
        "CC_wasm32-wasip1",
        "CFLAGS_wasm32-wasip1",
        "TARGET_CC",
        "TARGET_CFLAGS",
        "CFLAGS",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let out = PathBuf::from(env("OUT_DIR"));
    let target_dir = nested_cargo::sibling_target_dir(&out, "wasi-guest");
    let wasm = build_guest(workspace, &target_dir);
    std::fs::copy(&wasm, out.join("walvault-guest.wasm")).expect("copy the guest module");
    // Names the compiled guest in the runner's cache (src/module_cache.rs), so a start needs
    // no hashing of the module.
    let bytes = std::fs::read(&wasm).expect("read the guest module");
    let mut hasher = std::hash::DefaultHasher::new();
    std::hash::Hasher::write(&mut hasher, &bytes);
    println!(
        "cargo:rustc-env=WALVAULT_GUEST_HASH={:016x}{:08x}",
        std::hash::Hasher::finish(&hasher),
        bytes.len()
    );
}

/// The guest module, built with profile `wasi-guest`.
fn build_guest(workspace: &Path, target_dir: &Path) -> PathBuf {
    let status = nested_cargo::build(
        workspace,
        target_dir,
        "wasi-guest",
        "wasm32-wasip1",
        "walvault-wasi-guest",
    );
    assert!(
        status.success(),
        "building the WASI guest failed ({status}); it needs `rustup target add wasm32-wasip1`, \
         clang-14 and llvm-14 (installed by .ci/setup)"
    );
    target_dir.join("wasm32-wasip1/wasi-guest/walvault-guest.wasm")
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("cargo sets {name}"))
}
