#!/usr/bin/env bash
# make-wal.sh — generate a corpus of REAL PostgreSQL 15 WAL segments for the peer benchmark.
# Origin: copied unchanged from /work/shared/bench/make-wal.sh (the shared peer-benchmark corpus generator).
#
# Creates a throw-away cluster under $BASE/pgdata (port 55433, 127.0.0.1 + unix socket in $BASE/sock),
# archives every completed segment via archive_command into $BASE/walarchive, loads pgbench
# (init, then TPC-B-like OLTP until enough segments exist) and copies the first N *completed*
# OLTP segments (never the current one, never init/bulk-load WAL) into $CORPUS.
# MORE="128 256" additionally writes the first 128/256 segments of the SAME stream to ${CORPUS}128...
# Each corpus gets a ${CORPUS}-info.txt (system-id + compressibility), read by peers.sh.
# The cluster is left STOPPED but kept: pgBackRest (peers.sh) needs its pg_control/system-id.
# Checkpoints are WAL-volume driven (max_wal_size), not time driven, so the FPI share — and thus
# compressibility — does not depend on how fast this machine runs pgbench.
#
# Env: N (64)  MORE ()  CORPUS ($BASE/corpus)  SCALE (20)  CLIENTS (2)  SEED (42)  BASE (/tmp/peerbench)
# Usage: bash make-wal.sh   as root (PG itself runs as the OS user $PGUSER_OS); ~3 min per 64 segments
set -euo pipefail

N=${N:-64}
BASE=${BASE:-/tmp/peerbench}
CORPUS=${CORPUS:-$BASE/corpus}
SCALE=${SCALE:-20}
CLIENTS=${CLIENTS:-2}
SEED=${SEED:-42}
MORE=${MORE:-}
MAXN=$N; for k in $MORE; do (( k > MAXN )) && MAXN=$k; done
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PGPORT=55433
PGUSER_OS=${PGUSER_OS:-pbench}          # dedicated OS user (PG refuses to run as root)
PGDATA=$BASE/pgdata
SOCK=$BASE/sock
WALARCH=$BASE/walarchive
LOG=$BASE/pg.log

log() { printf '[make-wal %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
as_pg() { runuser -u "$PGUSER_OS" -- "$@"; }
psqlc() { as_pg "$PGBIN/psql" -h "$SOCK" -p "$PGPORT" -d postgres -XAtqc "$1"; }

# --- prerequisites ---------------------------------------------------------------------------
[[ $EUID -eq 0 ]] || { echo "run as root" >&2; exit 1; }
if [[ ! -x $PGBIN/initdb ]] || ! command -v zstd >/dev/null; then
  apt-get -o DPkg::Lock::Timeout=300 update -qq
  apt-get -o DPkg::Lock::Timeout=300 install -y -qq postgresql-15 zstd gzip >/dev/null
fi
id "$PGUSER_OS" >/dev/null 2>&1 || useradd --system --home-dir "$BASE/home" --shell /bin/bash "$PGUSER_OS"
mkdir -p "$BASE" "$BASE/home" && chmod 755 "$BASE" && chown "$PGUSER_OS": "$BASE/home"

# --- clean previous run (only our own cluster) -------------------------------------------------
if [[ -f $PGDATA/postmaster.pid ]]; then
  log "stopping previous cluster in $PGDATA"
  as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w stop || true
fi
rm -rf "$PGDATA" "$WALARCH" "$CORPUS" "$SOCK" "$LOG"
for k in $MORE; do rm -rf "${CORPUS%/}$k"; done
mkdir -p "$WALARCH" "$SOCK" "$PGDATA"
chown "$PGUSER_OS": "$WALARCH" "$SOCK" "$PGDATA" && chmod 700 "$PGDATA"
touch "$LOG" && chown "$PGUSER_OS": "$LOG"

# --- cluster ---------------------------------------------------------------------------------
log "initdb $PGDATA"
as_pg "$PGBIN/initdb" -D "$PGDATA" -A trust -E UTF8 --locale=C -U "$PGUSER_OS" >/dev/null
cat >> "$PGDATA/postgresql.conf" <<CONF
# --- peerbench ---
port = $PGPORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$SOCK'
wal_level = replica
archive_mode = on
# atomic copy of each *completed* segment (cp to .tmp then rename)
archive_command = 'test ! -f $WALARCH/%f && cp %p $WALARCH/%f.tmp && mv $WALARCH/%f.tmp $WALARCH/%f'
# realism: full_page_writes on + frequent checkpoints => FPIs as on a busy server; wal_compression off (PG default)
full_page_writes = on
wal_compression = off
checkpoint_timeout = 1h          # => checkpoints every ~max_wal_size/1.9 of WAL (~270 MB)
max_wal_size = 512MB
# speed of generation only (does not change WAL content)
fsync = off
synchronous_commit = off
shared_buffers = 256MB
CONF
stop_pg() { [[ -f $PGDATA/postmaster.pid ]] && as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null || true; }
trap stop_pg EXIT          # never leave our server running, even on failure
as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$LOG" -w start >/dev/null
log "PG up on port $PGPORT (pid $(head -1 "$PGDATA/postmaster.pid"))"

# --- workload --------------------------------------------------------------------------------
log "pgbench -i -s $SCALE"
as_pg "$PGBIN/pgbench" -h "$SOCK" -p "$PGPORT" -i -s "$SCALE" -q postgres 2>&1 | tail -1 >&2
psqlc "CHECKPOINT"
START_SEG=$(psqlc "SELECT pg_walfile_name(pg_current_wal_lsn())")   # segments > START_SEG are pure OLTP
log "OLTP phase starts after segment $START_SEG; need $MAXN completed segments"

count_oltp() {  # completed+archived segments strictly after START_SEG
  find "$WALARCH" -maxdepth 1 -regextype posix-extended -regex '.*/[0-9A-F]{24}' -printf '%f\n' \
    | awk -v s="$START_SEG" '$1 > s' | wc -l
}
while (( $(count_oltp) < MAXN )); do
  as_pg "$PGBIN/pgbench" -h "$SOCK" -p "$PGPORT" -n -c "$CLIENTS" -j "$CLIENTS" -T 20 --random-seed="$SEED" postgres 2>&1 \
    | grep -E '^tps' | sed 's/^/  /' >&2 || true
  log "  archived OLTP segments: $(count_oltp)/$MAXN"
  SEED=$((SEED + 1))
done

log "stopping PG"
stop_pg; trap - EXIT

# --- corpus: first COUNT completed OLTP segments + info file (system-id, compressibility) -----
make_corpus() {  # DIR COUNT
  local dir=$1 cnt=$2 first last raw z c info=${1%/}-info.txt
  mkdir -p "$dir"
  find "$WALARCH" -maxdepth 1 -regextype posix-extended -regex '.*/[0-9A-F]{24}' -printf '%f\n' | sort \
    | awk -v s="$START_SEG" '$1 > s' | head -n "$cnt" | while read -r f; do cp "$WALARCH/$f" "$dir/$f"; done
  chmod 644 "$dir"/*; chmod 755 "$dir"
  first=$(ls "$dir" | head -1); last=$(ls "$dir" | tail -1)
  raw=$(du -cb "$dir"/* | tail -1 | cut -f1)
  {
    echo "corpus: $dir  segments: $(ls "$dir" | wc -l)  ($first .. $last)  bytes: $raw"
    echo "system identifier: $("$PGBIN/pg_controldata" "$PGDATA" | awk -F: '/system identifier/{gsub(/ /,"",$2);print $2}')"
    for c in "zstd -1" "gzip -1"; do
      z=$(cat "$dir"/* | $c -c | wc -c)
      awk -v c="$c" -v r="$raw" -v z="$z" 'BEGIN{printf "whole-corpus %s ratio %.2fx (%.0f -> %.0f bytes)\n", c, r/z, r, z}'
    done
    # share of full-page images (FPIs compress far better than plain records)
    "$PGBIN/pg_waldump" --stats -p "$dir" "$first" "$last" 2>/dev/null | awk '/^Total/{
        gsub(/[\[\]]/,""); printf "pg_waldump: %s records, record bytes %s (%s), full-page-image bytes %s (%s)\n", $2,$3,$4,$5,$6}' \
      || echo "pg_waldump unavailable"
  } | tee "$info"
  log "wrote $cnt segments to $dir (+ $info)"
}
make_corpus "$CORPUS" "$N"
for k in $MORE; do make_corpus "${CORPUS%/}$k" "$k"; done
rm -rf "$WALARCH"          # only the corpora are kept (plus the stopped cluster for pgBackRest)
log "done; cluster stopped, data dir kept at $PGDATA"
