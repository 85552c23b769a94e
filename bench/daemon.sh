#!/usr/bin/env bash
# daemon.sh — how long a segment waits in incoming/ before its catalogue line is durable:
# `walvault daemon` (inotify) against a cron tick (`walvault archive-wal --all` or
# `barman cron` + `barman archive-wal` once a minute, as Barman's packages install them).
#
# The daemon: each of $COUNT real segments is dropped into incoming/ as an archive_command
# does it (a copy under a hidden name, then a rename), one at a time on an idle machine, and
# the time from the rename to its line in the catalogue is measured (a 1 ms poll). The daemon
# sweeps only once an hour here, so every figure is the inotify path.
#
# Cron: a segment waits for the next tick, on average half the period and at worst the whole
# period, then for one run. The run's own time is measured here (walvault archive-wal and
# barman archive-wal on one segment, fastest of $REPEAT); the wait is the period's.
#
# Env: CORPUS (/tmp/peerbench/corpus)  OUT (/tmp/walvault-daemon-bench)  COUNT (20)
#      REPEAT (3)  WALVAULT (this tree's release build)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CORPUS=${CORPUS:-/tmp/peerbench/corpus}
OUT=${OUT:-/tmp/walvault-daemon-bench}
COUNT=${COUNT:-20}
REPEAT=${REPEAT:-3}
log() { printf '[daemon %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

rm -rf "$OUT"; mkdir -p "$OUT"
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"  # corpus_and_walvault, fill, timed
corpus_and_walvault
# shellcheck source=bench/peers.sh
source "$ROOT/bench/peers.sh"  # barman_find, barman_config
barman_find
mapfile -t SEGMENTS < <(ls "$CORPUS" | head -n "$COUNT")

cat > "$OUT/walvault.toml" <<EOF
[walvault]
home = "$OUT/home"

[pg]
compression = "zstd"
EOF
mkdir -p "$OUT/home/pg/incoming"

log "walvault daemon: $COUNT segments, one at a time"
"$WALVAULT" -c "$OUT/walvault.toml" daemon --sweep 3600 --check-interval 0 \
  >"$OUT/daemon.out" 2>&1 &
DAEMON=$!
trap 'kill $DAEMON 2>/dev/null || true' EXIT
sleep 1
python3 - "$OUT/home/pg" "$CORPUS" "${SEGMENTS[@]}" > "$OUT/daemon-latency.txt" <<'EOF'
import os, shutil, sys, time
server, corpus, names = sys.argv[1], sys.argv[2], sys.argv[3:]
incoming = os.path.join(server, "incoming")
catalogue = os.path.join(server, "wals", "pg-xlog.db")
def catalogued(name):
    try:
        with open(catalogue) as f:
            return any(line.startswith(name + "\t") for line in f)
    except FileNotFoundError:
        return False
for name in names:
    tmp = os.path.join(incoming, "." + name + ".tmp")
    shutil.copyfile(os.path.join(corpus, name), tmp)
    os.sync()
    time.sleep(0.5)  # idle before each drop
    t0 = time.monotonic()
    os.rename(tmp, os.path.join(incoming, name))
    while not catalogued(name):
        time.sleep(0.001)
    print(f"{name} {(time.monotonic() - t0) * 1000:.1f}")
EOF
kill -TERM $DAEMON; wait $DAEMON || true
trap - EXIT
read -r MIN MED P95 MAX < <(awk '{print $2}' "$OUT/daemon-latency.txt" | sort -n | awk '
  { v[NR] = $1 } END { i = int(NR * 0.95 + 0.999); if (i > NR) i = NR; print v[1], v[int((NR + 1) / 2)], v[i], v[NR] }')
log "daemon latency ms: min $MIN median $MED p95 $P95 max $MAX"

# One run of archive-wal on one segment: what a cron tick adds to its wait.
one_run() {  # LABEL CMD...: fastest wall seconds of $REPEAT runs over one queued segment
  local best="" wall r i
  for ((i = 0; i < REPEAT; i++)); do
    rm -rf "$OUT/home/pg/wals" "$OUT/b/home/pg/wals"
    cp "$CORPUS/${SEGMENTS[0]}" "$QUEUE/"; sync
    read -r wall r < <(timed "$@")
    [[ -z $best ]] || awk -v a="$wall" -v b="$best" 'BEGIN{exit !(a < b)}' && best=$wall
  done
  echo "$best"
}
QUEUE=$OUT/home/pg/incoming
WV_RUN=$(one_run walvault-run "$WALVAULT" -c "$OUT/walvault.toml" archive-wal --all)
log "walvault archive-wal, one segment: ${WV_RUN}s"
BM_RUN=n/a
if [[ -n $BARMAN ]]; then
  barman_config "$OUT/b" zstd
  mkdir -p "$OUT/b/home/pg/incoming"
  QUEUE=$OUT/b/home/pg/incoming
  BM_RUN=$(one_run barman-run "$BARMAN" -c "$OUT/b/barman.conf" -q archive-wal pg)
  log "barman archive-wal, one segment: ${BM_RUN}s"
fi

{
  echo "| how | median | p95 | worst | measured |"
  echo "|---|---|---|---|---|"
  echo "| walvault daemon (inotify) | ${MED} ms | ${P95} ms | ${MAX} ms | $COUNT drops, rename to catalogue line |"
  awk -v r="$WV_RUN" 'BEGIN { printf "| walvault archive-wal from cron, 1 min | %.1f s | %.1f s | %.1f s | the run %.3f s, plus the wait for the tick |\n", 30 + r, 57 + r, 60 + r, r }'
  if [[ $BM_RUN != n/a ]]; then
    awk -v r="$BM_RUN" 'BEGIN { printf "| barman cron (Barman 3.20.1), 1 min | %.1f s | %.1f s | %.1f s | the run %.3f s, plus the wait for the tick |\n", 30 + r, 57 + r, 60 + r, r }'
  fi
} | tee "$OUT/table.md"
