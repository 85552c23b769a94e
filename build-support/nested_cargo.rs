//! Shared by the build scripts that build a wasm module of this workspace and embed it
//! (`host-wasi/build.rs`: the WASI guest; `host-native/build.rs`: the dashboard), through
//! `#[path]`.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

/// A target directory named `name` next to the outer build's, so the nested cargo never waits
/// on the outer one's lock. `out` is the build script's `OUT_DIR`,
/// `<target>[/<triple>]/<profile>/build/<pkg>-<hash>/out`.
pub fn sibling_target_dir(out: &Path, name: &str) -> PathBuf {
    out.ancestors()
        .nth(4)
        .expect("OUT_DIR has the usual depth")
        .join(name)
}

/// `cargo build --locked --profile PROFILE --target TARGET -p PACKAGE --target-dir DIR`, with
/// what the outer cargo set for its own compilation removed (clippy's wrapper, host
/// rustflags, the jobserver of a finished step).
pub fn build(
    workspace: &Path,
    target_dir: &Path,
    profile: &str,
    target: &str,
    package: &str,
) -> ExitStatus {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace)
        .args(["build", "--locked", "--profile", profile])
        .args(["--target", target, "-p", package, "--target-dir"])
        .arg(target_dir);
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
    // CI lints the nested crates while building them (clippy-driver as the workspace
    // wrapper lints and compiles in one pass) instead of a separate `cargo clippy` for the
    // wasm target, which would compile every dependency a second time.
    println!("cargo:rerun-if-env-changed=WALVAULT_LINT_NESTED");
    if std::env::var_os("WALVAULT_LINT_NESTED").is_some_and(|v| v == "1") {
        cmd.env("RUSTC_WORKSPACE_WRAPPER", "clippy-driver").env(
            "CLIPPY_ARGS",
            "-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__",
        );
    }
    cmd.status()
        .unwrap_or_else(|e| panic!("run cargo to build {package}: {e}"))
}
