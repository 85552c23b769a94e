#!/usr/bin/env bash
# wasi.sh — `walvault-wasi archive-wal` (the archiver as a wasm32-wasip1 guest under wasmtime)
# against native `walvault archive-wal --jobs 1`, on the same real PostgreSQL WAL, in one run.
#
# For each compression (level "medium"): fill the incoming directory with the corpus (not
# timed), then time each host draining it (wall clock and peak RSS from GNU time); the guest
# is single-threaded, hence one native job. Also: the runner's start-up with the compiled guest
# cached (archive-wal on an empty queue: start, load, instantiate, read the configuration,
# list the queues), its first run with an empty cache (Cranelift compiles the module), and
# `get-wal` of every segment, one process per WAL as PostgreSQL calls it, in both hosts.
#
# Every figure is the fastest of $REPEAT runs (peak RSS the largest seen).
#
# Env: CORPUS (/tmp/peerbench/corpus)  OUT (/tmp/walvault-wasi-bench)  CODECS (all)  REPEAT (3)
# Usage: bash bench/wasi.sh
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CORPUS=${CORPUS:-/tmp/peerbench/corpus}
OUT=${OUT:-/tmp/walvault-wasi-bench}
CODECS=${CODECS:-none gzip bzip2 xz zstd lz4 snappy}
REPEAT=${REPEAT:-3}
log() { printf '[wasi %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

[[ -d $CORPUS ]] || CORPUS=$CORPUS bash "$ROOT/bench/make-wal.sh"
mkdir -p "$OUT"
log "building walvault and walvault-wasi (release)"
(cd "$ROOT" && cargo build --release --locked -p walvault -p walvault-wasi -q)
WALVAULT=$ROOT/target/release/walvault
WASI=$ROOT/target/release/walvault-wasi
CACHE=$OUT/wasi-cache
RAW=$(du -cb "$CORPUS"/* | tail -1 | cut -f1)
NFILES=$(ls "$CORPUS" | wc -l)
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"  # fill, timed, best_of, stored

config() {  # DIR CODEC: a one-server configuration with its home under DIR
  cat > "$1/walvault.toml" <<TOML
[walvault]
home = "$1/home"
[pg]
compression = "$2"
compression_level = "medium"
wal_segment_size = "16MB"
TOML
}

ms() { date +%s%N; }
# fastest_ms N CMD...: the fastest of N runs of CMD, in milliseconds
fastest_ms() {
  local n=$1 best="" t0 t
  shift
  for ((i = 0; i < n; i++)); do
    t0=$(ms); "$@" >/dev/null 2>&1 || { log "failed: $*"; "$@"; exit 1; }; t=$(( ($(ms) - t0) / 1000 ))
    [[ -n $best ]] && (( t >= best )) || best=$t
  done
  awk -v us="$best" 'BEGIN{printf "%.1f", us / 1000}'
}

# --- start-up ------------------------------------------------------------------------------
S=$OUT/startup; rm -rf "$S"; mkdir -p "$S/home/pg/incoming"; config "$S" zstd
rm -rf "$CACHE"
t0=$(ms); "$WASI" -c "$S/walvault.toml" --cache-dir "$CACHE" archive-wal pg; COLD=$(awk -v us="$(( ($(ms) - t0) / 1000 ))" 'BEGIN{printf "%.0f", us / 1000}')
WARM=$(fastest_ms 20 "$WASI" -c "$S/walvault.toml" --cache-dir "$CACHE" archive-wal pg)
NATIVE_START=$(fastest_ms 20 "$WALVAULT" -c "$S/walvault.toml" archive-wal pg --jobs 1)
log "start-up: walvault-wasi ${WARM} ms cached, ${COLD} ms compiling; walvault ${NATIVE_START} ms"

# --- archive-wal per codec ----------------------------------------------------------------
ROWS=()
for codec in $CODECS; do
  for host in native wasi; do
    W=$OUT/$host-$codec; rm -rf "$W"; mkdir -p "$W"; config "$W" "$codec"
    if [[ $host == native ]]; then
      cmd=("$WALVAULT" -c "$W/walvault.toml" archive-wal pg --jobs 1)
    else
      cmd=("$WASI" -c "$W/walvault.toml" --cache-dir "$CACHE" archive-wal pg)
    fi
    read -r wall rss < <(best_of "$W/home/pg/incoming" "$W/home/pg/wals" "$host-$codec" "${cmd[@]}")
    # Leave the last run's archive for the restore timing and the size check.
    printf -v "RES_$host" '%s' "$wall $rss $(stored "$W/home/pg/wals")"
    log "$host $codec: ${wall}s, ${rss} KiB"
  done
  # get-wal of every segment, one process per WAL (from the native archive; same bytes)
  W=$OUT/native-$codec
  for host in native wasi; do
    D=$OUT/restore-$host; rm -rf "$D"; mkdir -p "$D"
    if [[ $host == native ]]; then
      get=("$WALVAULT" -c "$W/walvault.toml" get-wal pg)
    else
      get=("$WASI" -c "$W/walvault.toml" --cache-dir "$CACHE" get-wal pg)
    fi
    each() { for f in "$CORPUS"/*; do "${get[@]}" "$(basename "$f")" "$D/RECOVERYXLOG" || exit 1; done; }
    best=""
    for ((i = 0; i < REPEAT; i++)); do
      t0=$(ms); each; t=$(( ($(ms) - t0) / 1000 ))
      [[ -n $best ]] && (( t >= best )) || best=$t
    done
    printf -v "GET_$host" '%s' "$(awk -v us="$best" 'BEGIN{printf "%.2f", us / 1e6}')"
  done
  ROWS+=("$codec $RES_native $RES_wasi $GET_native $GET_wasi")
done

{
  echo "Corpus: $NFILES segments, $RAW bytes ($CORPUS). Fastest of $REPEAT runs each. Level medium."
  echo
  echo "walvault-wasi start-up, module cached: **${WARM} ms** (empty queue: start, load the compiled guest, instantiate, read the configuration, list the queues; native walvault: ${NATIVE_START} ms). First run, compiling the guest: ${COLD} ms."
  echo
  echo "| compression | walvault --jobs 1 s | walvault-wasi s | wasi / native | same stored bytes | peak RSS MiB native / wasi | get-wal ×$NFILES native s | get-wal ×$NFILES wasi s |"
  echo "|---|---|---|---|---|---|---|---|"
  for row in "${ROWS[@]}"; do
    # shellcheck disable=SC2086
    set -- $row
    awk -v c="$1" -v nw="$2" -v nr="$3" -v ns="$4" -v ww="$5" -v wr="$6" -v ws="$7" -v gn="$8" -v gw="$9" 'BEGIN {
      printf "| %s | %.2f | %.2f | %.2f× | %s | %.0f / %.0f | %.2f | %.2f |\n", c, nw, ww, ww / nw, (ns == ws) ? "yes" : "NO", nr / 1024, wr / 1024, gn, gw }'
  done
} | tee "$OUT/wasi-table.md"
