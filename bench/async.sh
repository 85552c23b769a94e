#!/usr/bin/env bash
# async.sh — PostgreSQL's archiving rate through put-wal, one call at a time as PostgreSQL's
# archiver makes them, with the corpus's 64 real segments in a pg_wal whose
# archive_status/*.ready marks them all (each call's success turns its .ready into .done, as
# the archiver does): walvault put-wal synchronous and with archive_async (jobs $JOBS), to
# s3s-fs 0.14.1 directly on loopback and through bench/latency_proxy.py adding ${LATENCY_MS:-20}
# ms to every request (an object store's round trip); then, through the TLS front pgBackRest
# needs (stunnel, a throw-away CA) and the same added latency, walvault archive_async against
# pgBackRest 2.45 archive-push with archive-async and process-max $JOBS, the same parallelism,
# both at zstd "medium" (level 4). Every figure is the fastest of $REPEAT runs.
#
# Needs .ci/setup (s3s-fs) and the corpus's stopped cluster ($PGDATA, kept by make-wal.sh):
# pgBackRest checks every WAL's system identifier against it. Installs pgbackrest and
# stunnel4 from Debian when missing.
# Env: CORPUS (/tmp/peerbench/corpus)  PGDATA ($CORPUS/../pgdata)  OUT (/tmp/walvault-async-bench)
#      REPEAT (3)  JOBS (4)  CODECS ("zstd lz4")  LATENCY_MS (20)  WALVAULT (a binary instead of this tree's release build)
set -euo pipefail
shopt -s inherit_errexit

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CORPUS=${CORPUS:-/tmp/peerbench/corpus}
OUT=${OUT:-/tmp/walvault-async-bench}
REPEAT=${REPEAT:-3}
JOBS=${JOBS:-4}
CODECS=${CODECS:-zstd lz4}
LATENCY_MS=${LATENCY_MS:-20}
S3S_FS=${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs
log() { printf '[async %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

[[ -d $CORPUS ]] || CORPUS=$CORPUS bash "$ROOT/bench/make-wal.sh"
PGDATA=${PGDATA:-$(dirname "$CORPUS")/pgdata}
[[ -f $PGDATA/global/pg_control ]] || { log "no cluster at $PGDATA (make-wal.sh keeps it): pgBackRest needs it"; exit 1; }
# shellcheck source=bench/peers.sh
source "$ROOT/bench/peers.sh"  # pgbackrest_*, tls_front
pgbackrest_install
command -v stunnel >/dev/null \
  || apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends stunnel4 >/dev/null
[[ -x $S3S_FS ]] || { log "run .ci/setup first"; exit 1; }
if [[ -z ${WALVAULT:-} ]]; then
  (cd "$ROOT" && cargo build --release --locked -p walvault -q)
  WALVAULT=$ROOT/target/release/walvault
fi
NFILES=$(ls "$CORPUS" | wc -l)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return; sleep 0.1; done; }
rm -rf "$OUT"; mkdir -p "$OUT/s3/bench"
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null' EXIT
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret AWS_DEFAULT_REGION=us-east-1
PORT=$(free_port)
"$S3S_FS" --host 127.0.0.1 --port "$PORT" --access-key bench --secret-key bench-secret "$OUT/s3" >/dev/null 2>&1 &
PIDS+=($!); wait_port "$PORT"
PROXY_PORT=$(free_port)
python3 "$ROOT/bench/latency_proxy.py" "$PROXY_PORT" "$PORT" "$LATENCY_MS" &
PIDS+=($!); wait_port "$PROXY_PORT"

# The TLS front, in front of the latency proxy.
tls_front "$PROXY_PORT"
PIDS+=("$TLS_PID")

# The data directory PostgreSQL's archiver works in (pgBackRest wants pg_wal inside pg1-path,
# and reads the cluster's pg_control there): the corpus cluster's control file and version,
# and a pg_wal with every segment ready.
PGDIR=$OUT/pgdata
mkdir -p "$PGDIR/global"
cp "$PGDATA/global/pg_control" "$PGDIR/global/"; cp "$PGDATA/PG_VERSION" "$PGDIR/"
chmod 700 "$PGDIR"
PGWAL=$PGDIR/pg_wal
mkdir -p "$PGWAL/archive_status"
cp "$CORPUS"/* "$PGWAL/"; sync
reset_ready() {
  rm -f "$PGWAL"/archive_status/*
  for f in "$CORPUS"/*; do : > "$PGWAL/archive_status/$(basename "$f").ready"; done
}
# archiver CMD...: CMD PATH for each segment in order, as PostgreSQL's archiver calls it.
archiver() {
  local f name
  for f in "$CORPUS"/*; do
    name=$(basename "$f")
    "$@" "$PGWAL/$name"
    mv "$PGWAL/archive_status/$name.ready" "$PGWAL/archive_status/$name.done"
  done
}
now() { date +%s.%N; }
best_of() {  # PREPARE RUN [ARGS...]: the fastest wall time of RUN over $REPEAT runs
  local best="" t0 t1 i
  for ((i = 0; i < REPEAT; i++)); do
    "$1"; t0=$(now); "${@:2}" >&2; t1=$(now)
    best=$(printf '%s\n%s\n' "$best" "$(echo "$t1 - $t0" | bc)" | grep . | sort -g | head -1)
  done
  echo "$best"
}
# Waits for background archivers (walvault's worker, pgBackRest's async process) to exit, so
# that no run overlaps the next (not timed).
settle() {
  while pgrep -f "$OUT/walvault.toml" >/dev/null || pgrep -x pgbackrest >/dev/null; do sleep 0.1; done
}

config() {  # PREFIX ENDPOINT ASYNC
  cat > "$OUT/walvault.toml" <<TOML
[walvault]
home = "$OUT/home"
[pg]
compression = "$CODEC"
compression_level = "medium"
wal_segment_size = "16MB"
wals_directory = "s3://bench/$1"
endpoint_url = "$2"
region = "us-east-1"
archive_async = $3
jobs = $JOBS
TOML
}
# Every run starts from an empty bucket under a prefix of its own: a WAL already in the archive
# is not uploaded again (pgBackRest skips it once its checksum matches; walvault compares it),
# so a run that found the previous run's objects would time something else. (A counter would
# not do: best_of runs in a command substitution, whose increments are lost.)
fresh_bucket() { settle; rm -rf "${OUT:?}/s3/bench/"*; RUN=$(date +%s%N); reset_ready; }
fresh_walvault() {  # uses $W_ENDPOINT $W_ASYNC
  fresh_bucket; rm -rf "$OUT/home"
  config "wv-$RUN" "$W_ENDPOINT" "$W_ASYNC"
}
put_wal() { "$WALVAULT" -c "$OUT/walvault.toml" put-wal pg "$1"; }

s3_repo() {
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
fresh_pgbackrest() {  # uses $PGBR_ASYNC
  fresh_bucket; rm -rf "$OUT/pgbackrest/spool"
  s3_repo "/pgbackrest-$RUN" | pgbackrest_config "$CODEC" "$PGDIR"
  pgbackrest_run --no-online stanza-create
}
declare -A T
for CODEC in $CODECS; do
  for where in loopback latency; do
    endpoint=http://127.0.0.1:$PORT
    [[ $where == loopback ]] || endpoint=http://127.0.0.1:$PROXY_PORT
    for mode in false true; do
      W_ENDPOINT=$endpoint W_ASYNC=$mode
      T[$CODEC-$where-$mode]=$(best_of fresh_walvault archiver put_wal)
      log "$CODEC: walvault put-wal, $where, archive_async=$mode: ${T[$CODEC-$where-$mode]}s"
    done
  done
  # Through TLS and the latency: walvault archive_async and pgBackRest archive-async.
  W_ENDPOINT=https://127.0.0.1:$TLS_PORT W_ASYNC=true
  T[$CODEC-tls-true]=$(export SSL_CERT_FILE=$OUT/tls-ca.pem; best_of fresh_walvault archiver put_wal)
  log "$CODEC: walvault put-wal archive_async, TLS +${LATENCY_MS} ms: ${T[$CODEC-tls-true]}s"
  export PGBR_PROCESS_MAX=$JOBS
  T[$CODEC-pgbr-n]=$(PGBR_ASYNC=n; best_of fresh_pgbackrest archiver pgbackrest_run archive-push)
  log "$CODEC: pgBackRest archive-push, TLS +${LATENCY_MS} ms: ${T[$CODEC-pgbr-n]}s"
  T[$CODEC-pgbr-y]=$(PGBR_ASYNC=y; best_of fresh_pgbackrest archiver pgbackrest_run archive-push)
  log "$CODEC: pgBackRest archive-push archive-async, TLS +${LATENCY_MS} ms: ${T[$CODEC-pgbr-y]}s"
  settle
done

{
  echo "Corpus: $NFILES segments ($CORPUS) archived by put-wal one call at a time, as PostgreSQL's"
  echo "archiver calls it, to s3s-fs 0.14.1 on 127.0.0.1 at compression level medium (zstd 4, lz4 6);"
  echo "jobs / process-max $JOBS; +$LATENCY_MS ms: bench/latency_proxy.py delays each request once."
  echo "Fastest of $REPEAT runs each."
  echo
  echo "| codec | path | synchronous s | asynchronous s | speed-up | segments/s asynchronous |"
  echo "|---|---|---|---|---|---|"
  for CODEC in $CODECS; do
    awk -v c="$CODEC" -v s="${T[$CODEC-loopback-false]}" -v a="${T[$CODEC-loopback-true]}" -v n="$NFILES" 'BEGIN {
      printf "| %s | walvault, loopback | %.2f | %.2f | %.1f× | %.0f |\n", c, s, a, s / a, n / a }'
    awk -v c="$CODEC" -v s="${T[$CODEC-latency-false]}" -v a="${T[$CODEC-latency-true]}" -v n="$NFILES" -v l="$LATENCY_MS" 'BEGIN {
      printf "| %s | walvault, +%d ms per request | %.2f | %.2f | %.1f× | %.0f |\n", c, l, s, a, s / a, n / a }'
    awk -v c="$CODEC" -v a="${T[$CODEC-tls-true]}" -v s="${T[$CODEC-pgbr-n]}" -v b="${T[$CODEC-pgbr-y]}" -v n="$NFILES" -v l="$LATENCY_MS" 'BEGIN {
      printf "| %s | pgBackRest 2.45, TLS, +%d ms | %.2f | %.2f | %.1f× | %.0f |\n", c, l, s, b, s / b, n / b
      printf "| %s | walvault, TLS, +%d ms | | %.2f | %.0f%% of pgBackRest archive-async'"'"'s time | %.0f |\n", c, l, a, 100 * a / b, n / a }'
  done
} | tee "$OUT/async-table.md"
