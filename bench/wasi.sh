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
# The peers in the same run (bench/peers.sh): Barman 3.20.1 `archive-wal` draining the same
# incoming directory and its `get-wal` of every segment; pgBackRest 2.45 `archive-push` of every
# segment (one process per WAL: it has no incoming directory to drain) into a local repository
# and its `archive-get` of every segment, for the codecs it has (not xz, not snappy), at the
# same levels. pgBackRest checks each WAL against the cluster make-wal.sh keeps ($PGDATA).
#
# Every figure is the fastest of $REPEAT runs (peak RSS the largest seen).
#
# Env: CORPUS (/tmp/peerbench/corpus)  PGDATA ($CORPUS/../pgdata)  OUT (/tmp/walvault-wasi-bench)
#      CODECS (all)  REPEAT (3)  WALVAULT and WASI (binaries to measure instead of this tree's
#      release builds, to compare two versions on the same machine and corpus)
# Usage: bash bench/wasi.sh
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CORPUS=${CORPUS:-/tmp/peerbench/corpus}
OUT=${OUT:-/tmp/walvault-wasi-bench}
CODECS=${CODECS:-none gzip bzip2 xz zstd lz4 snappy}
REPEAT=${REPEAT:-3}
log() { printf '[wasi %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

[[ -d $CORPUS ]] || CORPUS=$CORPUS bash "$ROOT/bench/make-wal.sh"
PGDATA=${PGDATA:-$(dirname "$CORPUS")/pgdata}
mkdir -p "$OUT"
if [[ -z ${WALVAULT:-} || -z ${WASI:-} ]]; then
  log "building walvault and walvault-wasi (release)"
  (cd "$ROOT" && cargo build --release --locked -p walvault -p walvault-wasi -q)
  WALVAULT=$ROOT/target/release/walvault
  WASI=$ROOT/target/release/walvault-wasi
fi
CACHE=$OUT/wasi-cache
RAW=$(du -cb "$CORPUS"/* | tail -1 | cut -f1)
NFILES=$(ls "$CORPUS" | wc -l)
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"  # fill, timed, best_of, stored
# shellcheck source=bench/peers.sh
source "$ROOT/bench/peers.sh"  # barman_*, pgbackrest_*
barman_find
PGBACKREST=""
if [[ -f $PGDATA/global/pg_control ]]; then
  pgbackrest_install && PGBACKREST=yes
else
  log "no cluster at $PGDATA (make-wal.sh keeps it): pgBackRest's columns say n/a"
fi

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
# fastest N UNIT PREPARE CMD...: the fastest of N runs of CMD, in UNIT (ms or s); PREPARE
# (not timed) runs before each
fastest() {
  local n=$1 unit=$2 prepare=$3 best="" t0 t i
  shift 3
  for ((i = 0; i < n; i++)); do
    "$prepare"
    t0=$(ms); "$@" >/dev/null 2>"$OUT/last.err" || { log "failed: $*"; cat "$OUT/last.err" >&2; exit 1; }
    t=$(( ($(ms) - t0) / 1000 ))
    [[ -n $best ]] && (( t >= best )) || best=$t
  done
  case $unit in
    ms) awk -v us="$best" 'BEGIN{printf "%.1f", us / 1000}' ;;
    s) awk -v us="$best" 'BEGIN{printf "%.2f", us / 1e6}' ;;
  esac
}
# each_wal CMD...: CMD SEGMENT DEST per segment of the corpus, as PostgreSQL's restore_command
# (which removes DEST before each call)
each_wal() {
  local f
  for f in "$CORPUS"/*; do
    rm -f "$OUT/restore/RECOVERYXLOG"
    "$@" "$(basename "$f")" "$OUT/restore/RECOVERYXLOG" || return 1
  done
}
fresh_restore() { rm -rf "$OUT/restore"; mkdir -p "$OUT/restore"; }
barman_get() { "$BARMAN" -c "$1" -q get-wal pg "$2" > "$3"; }  # CONF SEGMENT DEST

# --- start-up ------------------------------------------------------------------------------
S=$OUT/startup; rm -rf "$S"; mkdir -p "$S/home/pg/incoming"; config "$S" zstd
rm -rf "$CACHE"
t0=$(ms); "$WASI" -c "$S/walvault.toml" --cache-dir "$CACHE" archive-wal pg; COLD=$(awk -v us="$(( ($(ms) - t0) / 1000 ))" 'BEGIN{printf "%.0f", us / 1000}')
WARM=$(fastest 20 ms true "$WASI" -c "$S/walvault.toml" --cache-dir "$CACHE" archive-wal pg)
NATIVE_START=$(fastest 20 ms true "$WALVAULT" -c "$S/walvault.toml" archive-wal pg --jobs 1)
BARMAN_START=n/a
if [[ -n $BARMAN ]]; then
  barman_config "$S/barman" zstd; mkdir -p "$S/barman/home/pg/incoming"
  BARMAN_START=$(fastest 5 ms true "$BARMAN" -c "$S/barman/barman.conf" -q archive-wal pg)
fi
log "start-up: walvault-wasi ${WARM} ms cached, ${COLD} ms compiling; walvault ${NATIVE_START} ms; Barman ${BARMAN_START} ms"

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
  # Barman archive-wal from its own incoming directory; its get-wal from what it archived.
  BM="n/a n/a n/a"; BMG=n/a
  if [[ -n $BARMAN ]]; then
    B=$OUT/barman-$codec; rm -rf "$B"; barman_config "$B" "$codec"
    read -r wall rss < <(best_of "$B/home/pg/incoming" "$B/home/pg/wals" "barman-$codec" "$BARMAN" -c "$B/barman.conf" -q archive-wal pg)
    BM="$wall $rss $(stored "$B/home/pg/wals")"
    BMG=$(fastest "$REPEAT" s fresh_restore each_wal barman_get "$B/barman.conf")
    log "barman $codec: archive-wal ${wall}s, ${rss} KiB; get-wal x$NFILES ${BMG}s"
  fi
  # pgBackRest archive-push of every segment from a freshly filled queue into a new repository
  # (one process per WAL), then archive-get of every segment.
  PB=n/a; PBG=n/a
  if [[ -n $PGBACKREST ]] && pgbackrest_has "$codec"; then
    P=$OUT/pgbackrest-$codec
    fresh_repo() {
      rm -rf "$P"; fill "$P/queue"
      printf 'repo1-type=posix\nrepo1-path=%s\n' "$P/repo" | pgbackrest_config "$codec" "$PGDATA"
      pgbackrest_run --no-online stanza-create >/dev/null
    }
    push_all() { local f; for f in "$P/queue"/*; do pgbackrest_run archive-push "$f" || return 1; done; }
    PB=$(fastest "$REPEAT" s fresh_repo push_all)
    PBG=$(fastest "$REPEAT" s fresh_restore each_wal pgbackrest_run archive-get)
    log "pgbackrest $codec: archive-push x$NFILES ${PB}s; archive-get x$NFILES ${PBG}s"
  fi
  # get-wal of every segment, one process per WAL (from the native archive; same bytes)
  W=$OUT/native-$codec
  GET_native=$(fastest "$REPEAT" s fresh_restore each_wal "$WALVAULT" -c "$W/walvault.toml" get-wal pg)
  GET_wasi=$(fastest "$REPEAT" s fresh_restore each_wal "$WASI" -c "$W/walvault.toml" --cache-dir "$CACHE" get-wal pg)
  log "get-wal x$NFILES $codec: walvault ${GET_native}s, walvault-wasi ${GET_wasi}s"
  ROWS+=("$codec $RES_native $RES_wasi $GET_native $GET_wasi $BM $BMG $PB $PBG")
done

{
  echo "Corpus: $NFILES segments, $RAW bytes ($CORPUS). Fastest of $REPEAT runs each. Level medium."
  echo
  echo "Start-up, empty queue (start, read the configuration, list the queues): walvault-wasi with the module cached **${WARM} ms**; native walvault ${NATIVE_START} ms; Barman 3.20.1 ${BARMAN_START} ms. walvault-wasi's first run, compiling the guest: ${COLD} ms."
  echo
  echo "Archiving (pgBackRest: one process per WAL, its archive_command form; n/a: it has no such codec):"
  echo
  echo "| compression | walvault --jobs 1 s | walvault-wasi s | wasi / native | same stored bytes | peak RSS MiB native / wasi | Barman 3.20.1 archive-wal s | Barman peak RSS MiB | wasi vs Barman | pgBackRest 2.45 archive-push ×$NFILES s |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
  for row in "${ROWS[@]}"; do
    # shellcheck disable=SC2086
    set -- $row
    awk -v c="$1" -v nw="$2" -v nr="$3" -v ns="$4" -v ww="$5" -v wr="$6" -v ws="$7" -v bw="${10}" -v br="${11}" -v pb="${14}" 'BEGIN {
      bwn = (bw == "n/a") ? "n/a" : sprintf("%.2f", bw)
      brss = (br == "n/a") ? "n/a" : sprintf("%.0f", br / 1024)
      vs = (bw == "n/a") ? "n/a" : sprintf("%.0f%% of its time", 100 * ww / bw)
      printf "| %s | %.2f | %.2f | %.2f× | %s | %.0f / %.0f | %s | %s | %s | %s |\n", c, nw, ww, ww / nw, (ns == ws) ? "yes" : "NO", nr / 1024, wr / 1024, bwn, brss, vs, pb }'
  done
  echo
  echo "Restoring every segment, one process per WAL as PostgreSQL's restore_command calls it:"
  echo
  echo "| compression | walvault get-wal ×$NFILES s | walvault-wasi get-wal ×$NFILES s | Barman 3.20.1 get-wal ×$NFILES s | pgBackRest 2.45 archive-get ×$NFILES s |"
  echo "|---|---|---|---|---|"
  for row in "${ROWS[@]}"; do
    # shellcheck disable=SC2086
    set -- $row
    echo "| $1 | $8 | $9 | ${13} | ${15} |"
  done
} | tee "$OUT/wasi-table.md"
