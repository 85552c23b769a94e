#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (`just fuzz`): the native build's eleven targets
# (C zstd, liblzma and liblz4, as the native and WASI hosts decode), then the six
# decompressors again in the pure-Rust build of the wasm hosts. Installs what it needs from
# the registries only when missing: a nightly toolchain (rustup) and cargo-fuzz (crates.io).
#
# The checked-in seeds (fuzz/corpus/<target>) are only read; what the fuzzer finds goes to
# fuzz/target/work/<target> (kept between runs), crashes to fuzz/artifacts/<target>. Logs are
# in fuzz/target/logs; the table of executions, coverage and findings goes to REPORT.
#
# Usage: fuzz/run.sh [SECONDS_PER_TARGET=60] [REPORT=fuzz/target/logs/summary.md]
# FUZZ_TARGETS="decompress_lz4 config" runs only those targets (in every build that has them).
set -euo pipefail

SECONDS_PER_TARGET=${1:-60}
REPORT=$(realpath -m "${2:-$(dirname "$0")/target/logs/summary.md}")
CARGO_FUZZ_VERSION=0.13.2
cd "$(dirname "$0")"

log() { printf '[fuzz] %s\n' "$*" >&2; }

if ! rustup toolchain list | grep -q '^nightly-'; then
  log "rustup toolchain install nightly --profile minimal"
  rustup toolchain install nightly --profile minimal
fi
if [[ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]]; then
  log "cargo install cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi

CORE_TARGETS=(wal_name catalogue history page_header verify_segment)
DECOMPRESSORS=(decompress_gzip decompress_bzip2 decompress_xz decompress_zstd decompress_lz4 decompress_snappy)
NATIVE=()
PURE=(--no-default-features --target-dir target/pure)

# One build per variant before any run, so build time never eats into fuzzing time.
log "building (native codecs)"
cargo +nightly fuzz build "${NATIVE[@]}"
log "building (pure-Rust codecs)"
cargo +nightly fuzz build "${PURE[@]}"

mkdir -p target/logs "$(dirname "$REPORT")"
rows=()
failed=0

# stat NAME LOG: a libFuzzer final statistic (-print_final_stats=1).
stat() { sed -n "s/^stat::$1: *//p" "$2" | tail -1; }

run() {
  local build=$1 target=$2
  shift 2
  [[ -z ${FUZZ_TARGETS:-} || " $FUZZ_TARGETS " == *" $target "* ]] || return 0
  local work=target/work/$target logfile=target/logs/$build-$target.log
  mkdir -p "$work"
  log "$build $target: ${SECONDS_PER_TARGET}s"
  local result=clean
  # A new corpus directory first: libFuzzer writes what it finds there, never to the seeds.
  if ! cargo +nightly fuzz run "$@" "$target" "$work" "corpus/$target" -- \
    -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 >"$logfile" 2>&1; then
    result="**crash**: $(grep -m1 -oE 'panicked at [^ ]+|ERROR: [^(]+|SUMMARY: .*' "$logfile" || echo "exit status") ($(grep -m1 -oE 'artifacts/[^ ]+' "$logfile" || echo "no artifact"))"
    failed=1
  fi
  # The last status line: "#N DONE cov: C ft: F corp: U/Sb ...".
  local status
  status=$(grep -E '^#[0-9]+' "$logfile" | tail -1)
  local cov ft corp
  cov=$(grep -oE 'cov: [0-9]+' <<<"$status" | cut -d' ' -f2)
  ft=$(grep -oE 'ft: [0-9]+' <<<"$status" | cut -d' ' -f2)
  corp=$(grep -oE 'corp: [0-9]+/[0-9]+[a-zA-Z]*' <<<"$status" | cut -d' ' -f2)
  rows+=("| $build | $target | $(stat number_of_executed_units "$logfile") | $(stat average_exec_per_sec "$logfile") | ${cov:-?} | ${ft:-?} | ${corp:-?} | $(stat new_units_added "$logfile") | $(stat peak_rss_mb "$logfile") | $result |")
}

started=$(date -u '+%Y-%m-%d %H:%M UTC')
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
for target in "${CORE_TARGETS[@]}" "${DECOMPRESSORS[@]}" config; do
  run native "$target" "${NATIVE[@]}"
done
for target in "${DECOMPRESSORS[@]}"; do
  run pure "$target" "${PURE[@]}"
done

{
  echo "# Fuzzing run: ${SECONDS_PER_TARGET} s per target${FUZZ_TARGETS:+ ($FUZZ_TARGETS)}"
  echo
  echo "- started $started, finished $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "- machine: $(nproc) cores, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1); load average before $load_before, after $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "- $(rustup run nightly rustc --version), cargo-fuzz $CARGO_FUZZ_VERSION, AddressSanitizer, debug assertions and overflow checks on, one job per target"
  echo "- native: walvault-core with native-codecs (as the native and WASI hosts); pure: without (as the browser build)"
  echo "- corpus: the checked-in seeds plus what earlier runs found (fuzz/target/work); cov = edges covered, ft = features, corp = corpus units/bytes at the end"
  echo
  echo "| build | target | executions | exec/s | cov | ft | corp | new units | peak RSS MB | result |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
} >"$REPORT"
cat "$REPORT"
exit "$failed"
