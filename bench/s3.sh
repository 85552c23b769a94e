#!/usr/bin/env bash
# s3.sh — archiving 64 real WAL segments to an S3 server on loopback (s3s-fs 0.14.1), walvault
# against barman-cloud-wal-archive 3.20.1 (one process per WAL, as PostgreSQL calls an
# archive_command), at zstd and lz4; then restoring the same 64 segments one get-wal call at a
# time (as PostgreSQL's restore_command), without and with --prefetch: directly on loopback,
# and through bench/latency_proxy.py adding ${LATENCY_MS:-20} ms to every request, the
# first-byte latency of a real object store, which is what prefetching hides.
#
# pgBackRest 2.45 (Debian) archive-push, one process per WAL, to the same server at the same
# compression level as walvault's "medium" (zstd 4, lz4 6). pgBackRest speaks only HTTPS to
# S3, so it reaches s3s-fs through a TLS front (stunnel, Debian; a self-signed certificate made
# here); walvault put-wal is timed through the same front too, so the two compare TLS to TLS.
# Its stanza is created offline (--no-online) from the stopped cluster make-wal.sh keeps next
# to the corpus ($PGDATA): pgBackRest checks every WAL's system identifier against it.
#
# Needs .ci/setup (s3s-fs, and the Python venv with Barman's cloud tools), and the Debian
# packages pgbackrest and stunnel4 (installed here when missing). Every figure is the fastest
# of $REPEAT runs.
# Env: CORPUS (/tmp/peerbench/corpus)  PGDATA ($CORPUS/../pgdata)  OUT (/tmp/walvault-s3-bench)
#      REPEAT (3)  CODECS ("zstd lz4")  WALVAULT (a binary to measure instead of this tree's
#      release build, to compare two versions on the same machine and corpus)
set -euo pipefail
shopt -s inherit_errexit  # a failing run inside $(best_of …) stops the benchmark

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CORPUS=${CORPUS:-/tmp/peerbench/corpus}
OUT=${OUT:-/tmp/walvault-s3-bench}
REPEAT=${REPEAT:-3}
CODECS=${CODECS:-zstd lz4}
VENV=${WALVAULT_PY_VENV:-$HOME/.cache/walvault/py-venv}
S3S_FS=${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs
log() { printf '[s3 %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

[[ -d $CORPUS ]] || CORPUS=$CORPUS bash "$ROOT/bench/make-wal.sh"
PGDATA=${PGDATA:-$(dirname "$CORPUS")/pgdata}
[[ -f $PGDATA/global/pg_control ]] || { log "no cluster at $PGDATA (make-wal.sh keeps it): pgBackRest needs it"; exit 1; }
# shellcheck source=bench/peers.sh
source "$ROOT/bench/peers.sh"  # pgbackrest_install, pgbackrest_config, pgbackrest_run, tls_front
pgbackrest_install
command -v stunnel >/dev/null \
  || apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends stunnel4 >/dev/null
[[ -x $S3S_FS && -x $VENV/bin/barman-cloud-wal-archive ]] || { log "run .ci/setup first"; exit 1; }
if [[ -z ${WALVAULT:-} ]]; then
  (cd "$ROOT" && cargo build --release --locked -p walvault -q)
  WALVAULT=$ROOT/target/release/walvault
fi
NFILES=$(ls "$CORPUS" | wc -l)

rm -rf "$OUT"; mkdir -p "$OUT/s3/bench"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret AWS_DEFAULT_REGION=us-east-1
"$S3S_FS" --host 127.0.0.1 --port "$PORT" --access-key bench --secret-key bench-secret "$OUT/s3" >/dev/null 2>&1 &
S3_PID=$!
trap 'kill $S3_PID 2>/dev/null' EXIT
ENDPOINT=http://127.0.0.1:$PORT
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$PORT") 2>/dev/null && break; sleep 0.1; done
LATENCY_MS=${LATENCY_MS:-20}
PROXY_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
python3 "$ROOT/bench/latency_proxy.py" "$PROXY_PORT" "$PORT" "$LATENCY_MS" &
PROXY_PID=$!
trap 'kill $S3_PID $PROXY_PID 2>/dev/null' EXIT
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$PROXY_PORT") 2>/dev/null && break; sleep 0.1; done

# The TLS front pgBackRest needs (and walvault put-wal is timed through as well).
tls_front "$PORT"
trap 'kill $S3_PID $PROXY_PID $TLS_PID 2>/dev/null' EXIT

s3_repo() {  # REPO_PATH: the repo1-* lines for the TLS front, for pgbackrest_config
  cat <<CONF
repo1-type=s3
repo1-path=$1
repo1-s3-bucket=bench
repo1-s3-endpoint=127.0.0.1
repo1-s3-region=us-east-1
repo1-s3-key=bench
repo1-s3-key-secret=bench-secret
repo1-s3-uri-style=path
repo1-storage-port=$TLS_PORT
repo1-storage-verify-tls=n
CONF
}

now() { date +%s.%N; }
fastest() { sort -g | head -1; }

config() {  # CODEC PREFIX [ENDPOINT]
  cat > "$OUT/walvault.toml" <<TOML
[walvault]
home = "$OUT/home"
[pg]
compression = "$1"
compression_level = "medium"
wal_segment_size = "16MB"
wals_directory = "s3://bench/$2"
endpoint_url = "${3:-$ENDPOINT}"
region = "us-east-1"
TOML
}

# best_of PREPARE RUN [ARGS...]: $REPEAT times, PREPARE (not timed) then RUN ARGS; prints the
# fastest wall time of RUN.
best_of() {
  local best="" t0 t1 i
  for ((i = 0; i < REPEAT; i++)); do
    "$1"; t0=$(now); "${@:2}" >&2; t1=$(now)
    best=$(printf '%s\n%s\n' "$best" "$(echo "$t1 - $t0" | bc)" | grep . | fastest)
  done
  echo "$best"
}
each_wal() { local f; for f in "$CORPUS"/*; do "$@" "$f"; done; }  # CMD...: CMD PATH per WAL

ROWS=()
for codec in $CODECS; do
  # walvault archive-wal from incoming (default jobs: 8 for object storage)
  fill_incoming() {
    rm -rf "$OUT/s3/bench/wv-$codec" "$OUT/home"; config "$codec" "wv-$codec"
    mkdir -p "$OUT/home/pg/incoming"; cp "$CORPUS"/* "$OUT/home/pg/incoming/"; sync
  }
  archive_wal() {
    "$WALVAULT" -c "$OUT/walvault.toml" archive-wal pg
    [[ -z $(ls "$OUT/home/pg/incoming") ]] || { log "walvault left files"; return 1; }
  }
  WV=$(best_of fill_incoming archive_wal)
  log "walvault $codec: ${WV}s"
  # walvault put-wal, one process per WAL (the archive_command form)
  fresh_put() { rm -rf "$OUT/s3/bench/pw-$codec" "$OUT/home"; config "$codec" "pw-$codec"; }
  PW=$(best_of fresh_put each_wal "$WALVAULT" -c "$OUT/walvault.toml" put-wal pg)
  log "walvault put-wal $codec: ${PW}s"
  # barman-cloud-wal-archive, one process per WAL
  fresh_barman() { rm -rf "$OUT/s3/bench/bm-$codec"; }
  BM=$(best_of fresh_barman each_wal "$VENV/bin/barman-cloud-wal-archive" --endpoint-url "$ENDPOINT" "--$codec" "s3://bench/bm-$codec" pg)
  log "barman-cloud-wal-archive $codec: ${BM}s"
  # Through the TLS front: walvault put-wal, then pgBackRest archive-push, one process per WAL.
  fresh_put_tls() {
    rm -rf "$OUT/s3/bench/pt-$codec" "$OUT/home"; config "$codec" "pt-$codec" "https://127.0.0.1:$TLS_PORT"
  }
  PWT=$(export SSL_CERT_FILE=$OUT/tls-ca.pem; best_of fresh_put_tls each_wal "$WALVAULT" -c "$OUT/walvault.toml" put-wal pg)
  log "walvault put-wal $codec over TLS: ${PWT}s"
  fresh_pgbackrest() {
    rm -rf "$OUT/s3/bench/pgbackrest-$codec"; s3_repo "/pgbackrest-$codec" | pgbackrest_config "$codec" "$PGDATA"
    pgbackrest_run --no-online stanza-create
  }
  PB=$(best_of fresh_pgbackrest each_wal pgbackrest_run archive-push)
  log "pgbackrest archive-push $codec: ${PB}s"
  # pgBackRest archive-get of every segment (from its last push), as PostgreSQL calls it.
  pgbackrest_get_all() {
    local f
    for f in "$CORPUS"/*; do
      rm -f "$OUT/restore/RECOVERYXLOG"  # PostgreSQL removes it before each call
      pgbackrest_run archive-get "$(basename "$f")" "$OUT/restore/RECOVERYXLOG"
    done
  }

  # Restore all segments one call at a time, as PostgreSQL does (from the archive-wal copy).
  fresh_restore() { rm -rf "$OUT/restore" "$OUT/home/pg/spool"; mkdir -p "$OUT/restore"; }
  get_all() {  # PREFETCH
    local f
    for f in "$CORPUS"/*; do
      # PostgreSQL removes RECOVERYXLOG before each restore_command call (replacing a file by
      # rename makes ext4 write the new one out at once, a cost recovery never pays).
      rm -f "$OUT/restore/RECOVERYXLOG"
      "$WALVAULT" -c "$OUT/walvault.toml" get-wal pg "$(basename "$f")" "$OUT/restore/RECOVERYXLOG" --prefetch "$1"
    done
  }
  config "$codec" "wv-$codec"
  PBG=$(best_of fresh_restore pgbackrest_get_all)
  log "pgbackrest archive-get $codec: ${PBG}s"
  R0=$(best_of fresh_restore get_all 0); R8=$(best_of fresh_restore get_all 8)
  log "get-wal $codec: ${R0}s without prefetch, ${R8}s with --prefetch 8"
  config "$codec" "wv-$codec" "http://127.0.0.1:$PROXY_PORT"
  L0=$(best_of fresh_restore get_all 0); L8=$(best_of fresh_restore get_all 8)
  log "get-wal $codec +${LATENCY_MS} ms: ${L0}s without prefetch, ${L8}s with --prefetch 8"
  ROWS+=("$codec $WV $PW $BM $R0 $R8 $L0 $L8 $PWT $PB $PBG")
done

{
  echo "Corpus: $NFILES segments ($CORPUS) to s3s-fs 0.14.1 on 127.0.0.1. Fastest of $REPEAT runs each."
  echo
  echo "Archiving, one process per WAL except archive-wal (plain HTTP unless marked TLS):"
  echo
  echo "| codec (medium) | walvault archive-wal s | walvault put-wal ×$NFILES s | barman-cloud-wal-archive ×$NFILES s | walvault vs Barman (archive-wal / put-wal) | walvault put-wal ×$NFILES, TLS s | pgBackRest archive-push ×$NFILES, TLS s | walvault put-wal vs pgBackRest |"
  echo "|---|---|---|---|---|---|---|---|"
  for row in "${ROWS[@]}"; do
    # shellcheck disable=SC2086
    set -- $row
    awk -v c="$1" -v wv="$2" -v pw="$3" -v bm="$4" -v pwt="$9" -v pb="${10}" 'BEGIN {
      printf "| %s | %.2f | %.2f | %.2f | %.1f%% / %.1f%% of Barman'"'"'s time | %.2f | %.2f | %.0f%% of pgBackRest'"'"'s time |\n", c, wv, pw, bm, 100 * wv / bm, 100 * pw / bm, pwt, pb, 100 * pwt / pb }'
  done
  echo
  echo "Restoring every segment, one restore_command call at a time:"
  echo
  echo "| codec | pgBackRest archive-get ×$NFILES s (TLS) | get-wal ×$NFILES s (loopback) | --prefetch 8 s (loopback) | speed-up | get-wal ×$NFILES s (+$LATENCY_MS ms) | --prefetch 8 s (+$LATENCY_MS ms) | speed-up |"
  echo "|---|---|---|---|---|---|---|---|"
  for row in "${ROWS[@]}"; do
    # shellcheck disable=SC2086
    set -- $row
    awk -v c="$1" -v r0="$5" -v r8="$6" -v l0="$7" -v l8="$8" -v pbg="${11}" 'BEGIN {
      printf "| %s | %.2f | %.2f | %.2f | %.1f× | %.2f | %.2f | %.1f× |\n", c, pbg, r0, r8, r0 / r8, l0, l8, l0 / l8 }'
  done
} | tee "$OUT/s3-table.md"
