#!/usr/bin/env bash
# Builds walvault's Debian package: target/debian/walvault_<version>-1_<arch>.deb.
#
#   host-native/debian/build-deb.sh           release build (what is shipped)
#   host-native/debian/build-deb.sh --debug   the test build already made (the package test)
#
# The man pages and completions come from the binary's own command-line definition
# (`walvault generate`), written where the [package.metadata.deb] assets expect them.
# cargo-deb is installed from crates.io at the pinned version when missing.
set -euo pipefail
cd "$(dirname "$0")/../.."

CARGO_DEB_VERSION=3.7.0
if [[ "$(cargo deb --version 2>/dev/null)" != *"$CARGO_DEB_VERSION"* ]]; then
  echo "[build-deb] cargo install cargo-deb $CARGO_DEB_VERSION" >&2
  cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked --quiet
fi

profile=release
if [[ ${1:-} == --debug ]]; then
  profile=debug
  [[ -x target/debug/walvault ]] || { echo "[build-deb] build walvault first (cargo build -p walvault)" >&2; exit 1; }
  extra=(--profile dev)
else
  cargo build --locked --release -p walvault -q
  extra=()
fi
target=${CARGO_TARGET_DIR:-target}/$profile
rm -rf "$target/deb-assets"
"$target/walvault" generate man "$target/deb-assets/man"
gzip -9n "$target"/deb-assets/man/*.1    # Debian policy: man pages compressed
"$target/walvault" generate completions "$target/deb-assets/completions"
cargo deb -p walvault --no-build --locked "${extra[@]}" "${@:2}"
