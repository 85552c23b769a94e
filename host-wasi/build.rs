//! Builds the guest (`host-wasi/guest`) for wasm32-wasip1 and leaves it in `OUT_DIR` for
//! `include_bytes!`: the module ships inside the `walvault-wasi` binary.
//!
//! The guest always builds optimised (profile `wasi-guest`: its speed is the product) in its
//! own target directory next to this build's, so a nested cargo never waits on the outer
//! one's lock.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(env("CARGO_MANIFEST_DIR"));
    let workspace = manifest.parent().expect("host-wasi sits in the workspace");
    for dir in [
        "host-wasi/guest",
        "host-native/src",
        "host-native/Cargo.toml",
        "core/src",
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
    let out = PathBuf::from(env("OUT_DIR"));
    // OUT_DIR is <target>[/<triple>]/<profile>/build/<pkg>-<hash>/out.
    let target_dir = out
        .ancestors()
        .nth(4)
        .expect("OUT_DIR has the usual depth")
        .join("wasi-guest");
    let wasm = build_guest(workspace, &target_dir);
    std::fs::copy(&wasm, out.join("walvault-guest.wasm")).expect("copy the guest module");
}

/// `cargo build --profile wasi-guest --target wasm32-wasip1 -p walvault-wasi-guest`, returning
/// the module.
fn build_guest(workspace: &Path, target_dir: &Path) -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace)
        .args(["build", "--locked", "--profile", "wasi-guest"])
        .args([
            "--target",
            "wasm32-wasip1",
            "-p",
            "walvault-wasi-guest",
            "--target-dir",
        ])
        .arg(target_dir);
    // What the outer cargo set for its own compilation must not leak into the guest's
    // (clippy's wrapper, host rustflags, the jobserver of a finished step).
    for var in [
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("run cargo for the WASI guest");
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
