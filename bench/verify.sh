#!/usr/bin/env bash
# verify.sh — `walvault verify` against `pg_waldump`, on the same real PostgreSQL WAL, in one
# run.
#
# The corpus is archived once with zstd (not timed). Then, caches warm for both:
#   - walvault verify --jobs 1 and --jobs 2 over the zstd archive: every file decompressed,
#     every page header and record CRC-32C checked, the record chain joined;
#   - pg_waldump over the same segments uncompressed (it also checks every record's CRC while
#     decoding), with its output to /dev/null, and with --stats (no per-record output).
# Wall clock and peak RSS from GNU time; each figure is the fastest of $REPEAT runs (peak RSS:
# the largest seen). The issue's targets: verify --jobs 2 at least 1.5× faster than pg_waldump,
# memory under 64 MiB + 32 MiB per job. Records and bytes are compared too: both must agree.
#
# Env: CORPUS (/tmp/peerbench/corpus)  OUT (/tmp/walvault-verify-bench)  REPEAT (5)
#      WALVAULT (this tree's release build)  PG_BIN (/usr/lib/postgresql/15/bin)
# Usage: bash bench/verify.sh   (prints a markdown table; run it on a quiet machine)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CORPUS=${CORPUS:-/tmp/peerbench/corpus}
OUT=${OUT:-/tmp/walvault-verify-bench}
REPEAT=${REPEAT:-5}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
log() { printf '[verify %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

rm -rf "$OUT"; mkdir -p "$OUT"
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"  # corpus_and_walvault, fill, timed
corpus_and_walvault

NFILES=$(ls "$CORPUS" | wc -l)
RAW=$(du -cb "$CORPUS"/* | tail -1 | cut -f1)
FIRST=$(ls "$CORPUS" | head -1)
LAST=$(ls "$CORPUS" | tail -1)

log "archiving $NFILES segments with zstd (not timed)"
cat > "$OUT/walvault.toml" <<TOML
[walvault]
home = "$OUT/home"

[pg]
compression = "zstd"
TOML
fill "$OUT/home/pg/incoming"
"$WALVAULT" -c "$OUT/walvault.toml" -q archive-wal pg
STORED=$(stored "$OUT/home/pg/wals")

fastest() {  # LABEL CMD...: "best_wall max_rss" over $REPEAT runs (one warm-up run first)
  local best="" rss=0 wall r i
  timed "$1" "${@:2}" >/dev/null
  for ((i = 0; i < REPEAT; i++)); do
    read -r wall r < <(timed "$@")
    [[ -z $best ]] || awk -v a="$wall" -v b="$best" 'BEGIN{exit !(a < b)}' && best=$wall
    (( r > rss )) && rss=$r
  done
  echo "$best $rss"
}

read -r V1 V1M < <(fastest verify1 "$WALVAULT" -c "$OUT/walvault.toml" verify pg --jobs 1 --format json)
read -r V2 V2M < <(fastest verify2 "$WALVAULT" -c "$OUT/walvault.toml" verify pg --jobs 2 --format json)
read -r W W_M < <(fastest waldump sh -c '"$1" -p "$2" "$3" "$4" >/dev/null' sh \
  "$PG_BIN/pg_waldump" "$CORPUS" "$FIRST" "$LAST")
read -r WS WSM < <(fastest waldump-stats "$PG_BIN/pg_waldump" --stats -p "$CORPUS" "$FIRST" "$LAST")

# Both read every record: the counts must agree.
OURS=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))[0]; print(r["stats"]["records"], r["stats"]["bytes"], r["findings"] == [])' "$OUT/verify2.out")
THEIRS=$(awk '$1 == "Total" {n = $2; c = $(NF-1)} END {print n, c}' "$OUT/waldump-stats.out")
log "walvault: records bytes clean = $OURS; pg_waldump: records combined = $THEIRS"

ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.1f", a / b}'; }
mib() { awk -v k="$1" 'BEGIN{printf "%.0f", k / 1024}'; }
gbps() { awk -v b="$RAW" -v s="$1" 'BEGIN{printf "%.2f", b / s / 1e9}'; }
cat <<MD
$(date -u +%F), $(uname -m), $(nproc) cores, $NFILES real PostgreSQL 15 segments ($(awk -v b="$RAW" 'BEGIN{printf "%.0f", b/1048576}') MiB; zstd archive $(awk -v b="$STORED" 'BEGIN{printf "%.0f", b/1048576}') MiB), fastest of $REPEAT warm runs.
Records and bytes (walvault / pg_waldump --stats): $OURS / $THEIRS.

| contender | reads | wall s | GB/s of WAL | peak RSS MiB | vs pg_waldump |
|---|---|---|---|---|---|
| walvault verify --jobs 1 | zstd archive, every CRC and link | $V1 | $(gbps "$V1") | $(mib "$V1M") | $(ratio "$W" "$V1")× faster |
| walvault verify --jobs 2 | zstd archive, every CRC and link | $V2 | $(gbps "$V2") | $(mib "$V2M") | $(ratio "$W" "$V2")× faster |
| pg_waldump | plain segments, every CRC, output to /dev/null | $W | $(gbps "$W") | $(mib "$W_M") | 1 |
| pg_waldump --stats | plain segments, every CRC, totals only | $WS | $(gbps "$WS") | $(mib "$WSM") | $(ratio "$W" "$WS")× faster |
MD
