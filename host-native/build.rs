//! Builds the dashboard (`web-ui/`, leptos) for wasm32-unknown-unknown and runs wasm-bindgen
//! on it, leaving the bundle in `OUT_DIR/dashboard` for `include_bytes!`: `walvault serve`
//! ships it inside the binary, so nothing is fetched at run time.
//!
//! Only the `native` feature serves HTTP; the WASI guest's build of this crate skips it. The
//! nested cargo uses its own target directory next to this build's, so it never waits on the
//! outer one's lock. wasm-bindgen must be the exact version Cargo.lock pins (installed by
//! .ci/setup from crates.io); a mismatch is a clear error, never a download.

use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "../build-support/nested_cargo.rs"]
mod nested_cargo;

fn main() {
    println!("cargo:rerun-if-env-changed=WASM_BINDGEN");
    if std::env::var_os("CARGO_FEATURE_NATIVE").is_none() {
        return;
    }
    let manifest = PathBuf::from(env("CARGO_MANIFEST_DIR"));
    let workspace = manifest
        .parent()
        .expect("host-native sits in the workspace");
    for path in [
        "web-ui/src",
        "web-ui/static",
        "web-ui/Cargo.toml",
        "core/src",
        "core/Cargo.toml",
        "Cargo.lock",
        "Cargo.toml",
        "build-support",
    ] {
        println!("cargo:rerun-if-changed={}", workspace.join(path).display());
    }
    let out = PathBuf::from(env("OUT_DIR"));
    let target_dir = nested_cargo::sibling_target_dir(&out, "web-ui");
    let wasm = build_web_ui(workspace, &target_dir);
    let bindgen = wasm_bindgen(workspace);
    let bundle = out.join("dashboard");
    let status = Command::new(&bindgen)
        .args(["--target", "web", "--no-typescript", "--out-dir"])
        .arg(&bundle)
        .arg(&wasm)
        .status()
        .unwrap_or_else(|e| panic!("running {}: {e}", bindgen.display()));
    assert!(status.success(), "wasm-bindgen failed ({status})");
}

/// The dashboard's wasm, built with profile `web-ui`.
fn build_web_ui(workspace: &Path, target_dir: &Path) -> PathBuf {
    let status = nested_cargo::build(
        workspace,
        target_dir,
        "web-ui",
        "wasm32-unknown-unknown",
        "walvault-web-ui",
    );
    assert!(
        status.success(),
        "building the dashboard failed ({status}); it needs `rustup target add wasm32-unknown-unknown` (.ci/setup)"
    );
    target_dir.join("wasm32-unknown-unknown/web-ui/walvault_web_ui.wasm")
}

/// The wasm-bindgen CLI, checked against the version Cargo.lock pins.
fn wasm_bindgen(workspace: &Path) -> PathBuf {
    let lock = std::fs::read_to_string(workspace.join("Cargo.lock")).expect("read Cargo.lock");
    let pinned = lock
        .split("[[package]]")
        .find(|p| p.contains("\nname = \"wasm-bindgen\"\n"))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = \"")))
        .map(|v| v.trim_end_matches('"').to_owned())
        .expect("Cargo.lock pins wasm-bindgen");
    let install = format!("cargo install wasm-bindgen-cli --version {pinned}");
    let candidates: Vec<PathBuf> = match std::env::var_os("WASM_BINDGEN") {
        Some(path) => vec![path.into()],
        None => {
            let home = std::env::var_os("CARGO_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")));
            let mut c = vec![PathBuf::from("wasm-bindgen")];
            c.extend(home.map(|h| h.join("bin/wasm-bindgen")));
            c
        }
    };
    let mut found = Vec::new();
    for candidate in candidates {
        let Ok(output) = Command::new(&candidate).arg("--version").output() else {
            continue;
        };
        let version = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        if version == format!("wasm-bindgen {pinned}") {
            return candidate;
        }
        found.push(format!("{} is '{version}'", candidate.display()));
    }
    panic!(
        "the dashboard needs wasm-bindgen {pinned} (the version Cargo.lock pins){}: run `{install}` (or .ci/setup), or point WASM_BINDGEN at it",
        if found.is_empty() {
            String::new()
        } else {
            format!("; found {}", found.join(", "))
        }
    );
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("cargo sets {name}"))
}
