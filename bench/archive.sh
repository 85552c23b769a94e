#!/usr/bin/env bash
# archive.sh — `walvault archive-wal` against Barman 3.20.1 `archive-wal` and `cp`+fsync, on
# the same real PostgreSQL WAL, in one run.
#
# For each compression (none, gzip, bzip2, xz, zstd, lz4, snappy; level "medium", Barman's
# default, for both tools): copy the corpus into the incoming directory (not timed), then time
# the archiver draining it (wall clock and peak RSS from GNU time). walvault runs with --jobs 1
# and with --jobs 2 (this machine's cores). The baseline copies every file of a freshly
# filled queue with `cp` and fsyncs it and the directory (coreutils `sync FILE`).
#
# Barman is the one .ci/setup installs (bench/peers.sh); without it the Barman column says
# "n/a".
#
# Every measurement is the fastest of $REPEAT runs (default 3; peak RSS is the largest seen):
# this VM shares its host, and single runs vary by up to 30%.
#
# Env: CORPUS (/tmp/peerbench/corpus)  OUT (/tmp/walvault-archive-bench)  CODECS (all)  REPEAT (3)
#      WALVAULT (this tree's release build)
# Usage: bash bench/archive.sh          (root: make-wal.sh needs it to create the corpus)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CORPUS=${CORPUS:-/tmp/peerbench/corpus}
OUT=${OUT:-/tmp/walvault-archive-bench}
CODECS=${CODECS:-none gzip bzip2 xz zstd lz4 snappy}
REPEAT=${REPEAT:-3}
log() { printf '[archive %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

[[ -d $CORPUS ]] || CORPUS=$CORPUS bash "$ROOT/bench/make-wal.sh"
mkdir -p "$OUT"
# WALVAULT: a walvault binary to measure instead of this tree's release build (to compare two
# versions on the same corpus and machine).
if [[ -z ${WALVAULT:-} ]]; then
  log "building walvault (release)"
  (cd "$ROOT" && cargo build --release --locked -p walvault -q)
  WALVAULT=$ROOT/target/release/walvault
fi
RAW=$(du -cb "$CORPUS"/* | tail -1 | cut -f1)
NFILES=$(ls "$CORPUS" | wc -l)

# shellcheck source=bench/peers.sh
source "$ROOT/bench/peers.sh"  # barman_find, barman_config
barman_find
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"  # fill, timed, best_of, stored

# --- baseline: cp + fsync ------------------------------------------------------------------------
# It copies from a freshly filled queue, as the archivers do: files just written copy at a
# different speed than the long-cached corpus.
B=$OUT/cp; rm -rf "$B"; mkdir -p "$B/dst"
cat > "$B/cp.sh" <<SH
for f in "$B/src"/*; do cp "\$f" "$B/dst/"; sync "$B/dst/\$(basename "\$f")"; done; sync "$B/dst"
SH
CP_WALL=""
for ((i = 0; i < REPEAT; i++)); do
  rm -rf "$B/dst"; mkdir -p "$B/dst"; fill "$B/src"
  read -r wall _ < <(timed cp bash "$B/cp.sh")
  [[ -z $CP_WALL ]] || awk -v a="$wall" -v b="$CP_WALL" 'BEGIN{exit !(a < b)}' && CP_WALL=$wall
done
log "cp+fsync: ${CP_WALL}s"

ROWS=()
for codec in $CODECS; do
  # walvault, one job and two
  for jobs in 1 2; do
    W=$OUT/wv-$codec-$jobs; rm -rf "$W"; mkdir -p "$W"
    cat > "$W/walvault.toml" <<TOML
[walvault]
home = "$W/home"
[pg]
compression = "$codec"
compression_level = "medium"
wal_segment_size = "16MB"
TOML
    read -r wall rss < <(best_of "$W/home/pg/incoming" "$W/home/pg/wals" "wv-$codec-$jobs" "$WALVAULT" -c "$W/walvault.toml" archive-wal pg --jobs "$jobs")
    size=$(stored "$W/home/pg/wals")
    eval "WV_${jobs}=\"$wall $rss $size\""
    rm -rf "$W/home/pg/wals"
    log "walvault $codec --jobs $jobs: ${wall}s, ${rss} KiB, ratio $(awk -v r="$RAW" -v s="$size" 'BEGIN{printf "%.2f", r/s}')"
  done
  # Barman
  BM="n/a n/a n/a"
  if [[ -n $BARMAN ]]; then
    Bd=$OUT/barman-$codec; rm -rf "$Bd"; barman_config "$Bd" "$codec"
    read -r wall rss < <(best_of "$Bd/home/pg/incoming" "$Bd/home/pg/wals" "barman-$codec" "$BARMAN" -c "$Bd/barman.conf" -q archive-wal pg)
    size=$(stored "$Bd/home/pg/wals")
    BM="$wall $rss $size"
    rm -rf "$Bd/home/pg/wals"
    log "barman $codec: ${wall}s, ${rss} KiB"
  fi
  ROWS+=("$codec $WV_1 $WV_2 $BM")
done

{
  echo "Corpus: $NFILES segments, $RAW bytes ($CORPUS). cp+fsync: ${CP_WALL} s. Fastest of $REPEAT runs each."
  echo
  echo "| compression (medium) | walvault --jobs 1 s | walvault --jobs 2 s | Barman 3.20.1 s | speed-up vs Barman (jobs 1 / 2) | vs cp+fsync (jobs 1) | walvault ratio | Barman ratio | walvault peak RSS MiB (jobs 1 / 2) | Barman peak RSS MiB |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
  for row in "${ROWS[@]}"; do
    # shellcheck disable=SC2086
    set -- $row
    awk -v c="$1" -v w1="$2" -v r1="$3" -v s1="$4" -v w2="$5" -v r2="$6" -v s2="$7" -v bw="$8" -v br="$9" -v bs="${10}" -v raw="$RAW" -v cp="$CP_WALL" 'BEGIN {
      bwn = (bw == "n/a") ? "n/a" : sprintf("%.2f", bw)
      sp = (bw == "n/a") ? "n/a" : sprintf("%.1f× / %.1f×", bw / w1, bw / w2)
      brat = (bs == "n/a") ? "n/a" : sprintf("%.2f", raw / bs)
      brss = (br == "n/a") ? "n/a" : sprintf("%.0f", br / 1024)
      printf "| %s | %.2f | %.2f | %s | %s | %.2f× | %.2f | %s | %.0f / %.0f | %s |\n", c, w1, w2, bwn, sp, w1 / cp, raw / s1, brat, r1 / 1024, r2 / 1024, brss }'
  done
} | tee "$OUT/archive-table.md"
