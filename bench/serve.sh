#!/usr/bin/env bash
# serve.sh — how fast `walvault serve` answers /api/status (and /metrics, /api/wals) for an
# archive whose catalogue holds 100,000 lines. Target: /api/status under 100 ms.
#
# The archive: a catalogue of N lines written as Barman writes them (zstd segments on
# timelines 1 and 2 with a few gaps, history files and a backup label, WAL times over the last
# 48 hours), plus 50 files in errors/ and 20 in incoming/. The segment files themselves are not
# needed: serve reads only the catalogue, the queues and errors/.
#
# Measured with curl against the release binary on loopback, in this order:
#   cold    the first /api/status after start (reads and parses the whole catalogue)
#   warm    $REQUESTS more /api/status (catalogue unchanged): median, 95th percentile, max
#   append  /api/status after each of 20 appends of 50 lines (reads only the new lines)
#   metrics /metrics and /api/wals?limit=1000 from the middle: median
# Barman, pgBackRest and WAL-G have no HTTP status API to compare with; `walvault status
# --format json` (the CLI, a new process each time, which reads the whole catalogue) is shown
# for scale.
#
# Env: N (100000)  REQUESTS (100)  OUT (/tmp/walvault-serve-bench)
# Usage: bash bench/serve.sh
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
N=${N:-100000}
REQUESTS=${REQUESTS:-100}
OUT=${OUT:-/tmp/walvault-serve-bench}
log() { printf '[serve %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

log "building walvault (release)"
(cd "$ROOT" && cargo build --release --locked -p walvault -q)
WALVAULT=$ROOT/target/release/walvault

rm -rf "$OUT"; mkdir -p "$OUT/home/pg/wals" "$OUT/home/pg/errors" "$OUT/home/pg/incoming"
cat > "$OUT/walvault.toml" <<TOML
[walvault]
home = "$OUT/home"
compression = "zstd"
[pg]
wal_segment_size = "16MB"
last_wal_maximum_age = "1 hour"
TOML

log "writing a catalogue of $N lines"
python3 - "$OUT/home/pg/wals/pg-xlog.db" "$N" <<'PY'
import sys, time
path, n = sys.argv[1], int(sys.argv[2])
now = time.time()
lines = []
seg = 0
tl = 1
for i in range(n):
    if i == n // 2:  # a promotion: the old timeline's partial, then timeline 2's history
        lines.append(f"{tl:08X}{seg >> 8:08X}{seg & 0xFF:08X}.partial\t1048576\t{now - 86400:.6f}\tzstd\tNone\n")
        tl = 2
        lines.append(f"{tl:08X}.history\t42\t{now - 86400:.6f}\tNone\tNone\n")
    if i % 20000 == 7:
        seg += 3  # a gap of two segments
    t = now - 2 * 86400 + i * (2 * 86400 / n)
    lines.append(f"{tl:08X}{seg >> 8:08X}{seg & 0xFF:08X}\t1200000\t{t:.6f}\tzstd\tNone\n")
    if i == 1000:
        lines.append(f"{tl:08X}{seg >> 8:08X}{seg & 0xFF:08X}.00000028.backup\t300\t{t:.6f}\tNone\tNone\n")
    seg += 1
open(path, "w").writelines(lines)
PY
for i in $(seq 1 50); do : > "$OUT/home/pg/errors/$(printf '%024X' "$i").20261121T120000Z.duplicate"; done
for i in $(seq 1 20); do : > "$OUT/home/pg/incoming/$(printf '0000000300000000%08X' "$i")"; done
LINES=$(wc -l < "$OUT/home/pg/wals/pg-xlog.db")

"$WALVAULT" -c "$OUT/walvault.toml" serve --listen 127.0.0.1:0 > "$OUT/serve.out" 2> "$OUT/serve.err" &
SERVE=$!
trap 'kill $SERVE 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do grep -q listening "$OUT/serve.out" 2>/dev/null && break; sleep 0.05; done
URL=$(grep -o 'http://[^ ]*' "$OUT/serve.out")
RSS_IDLE=$(awk '/VmRSS/ {print $2}' /proc/$SERVE/status)

ms() { curl -s -o /dev/null -w '%{time_total}\n' "$1" | awk '{printf "%.1f\n", $1 * 1000}'; }
stats() {  # reads numbers: prints median p95 max
  sort -n | awk '{a[NR]=$1} END {m=a[int((NR+1)/2)]; p=a[int(NR*0.95+0.5)]; printf "%.1f %.1f %.1f\n", m, p, a[NR]}'
}

COLD=$(ms "${URL}api/status")
read -r W_MED W_P95 W_MAX < <(for _ in $(seq 1 "$REQUESTS"); do ms "${URL}api/status"; done | stats)
read -r A_MED A_P95 A_MAX < <(for r in $(seq 1 20); do
  python3 - "$OUT/home/pg/wals/pg-xlog.db" "$r" <<'PY'
import sys, time
path, r = sys.argv[1], int(sys.argv[2])
now = time.time()
with open(path, "a") as f:
    for i in range(50):
        seg = 0x200000 + r * 50 + i
        f.write(f"00000002{seg >> 8:08X}{seg & 0xFF:08X}\t1200000\t{now:.6f}\tzstd\tNone\n")
PY
  ms "${URL}api/status"
done | stats)
read -r M_MED _ _ < <(for _ in $(seq 1 20); do ms "${URL}metrics"; done | stats)
read -r P_MED _ _ < <(for _ in $(seq 1 20); do ms "${URL}api/wals?limit=1000&after=00000002"; done | stats)
RSS_AFTER=$(awk '/VmRSS/ {print $2}' /proc/$SERVE/status)
BYTES=$(curl -s "${URL}api/status" | wc -c)
GAPS=$(curl -s "${URL}api/status" | python3 -c 'import json,sys; d=json.load(sys.stdin)["servers"][0]["catalogue"]; print(sum(len(t["gaps"]) for t in d["timelines"]))')
read -r CLI_MED _ _ < <(for _ in $(seq 1 5); do
  /usr/bin/time -f '%e' "$WALVAULT" -c "$OUT/walvault.toml" status pg --format json 2>&1 >/dev/null | awk '{printf "%.1f\n", $1 * 1000}'
done | stats)

cat <<MD
### walvault serve, catalogue of $LINES lines ($(date -u +%Y-%m-%d), $(nproc) cores)

| request | median ms | p95 ms | max ms |
|---|---|---|---|
| /api/status, first after start (whole catalogue read) | $COLD | | |
| /api/status, warm ($REQUESTS requests) | $W_MED | $W_P95 | $W_MAX |
| /api/status after appending 50 lines (20 times) | $A_MED | $A_P95 | $A_MAX |
| /metrics (20 requests) | $M_MED | | |
| /api/wals?limit=1000 (20 requests) | $P_MED | | |
| \`walvault status --format json\` (CLI, new process, 5 runs) | $CLI_MED | | |

/api/status is $BYTES bytes and reports $GAPS gaps. Server RSS: $((RSS_IDLE / 1024)) MiB at start,
$((RSS_AFTER / 1024)) MiB after the run.
MD
