#!/usr/bin/env bash
# encryption.sh — what `encryption = "gpg"` costs: `walvault archive-wal` with zstd (level
# medium) on the 64-segment corpus with and without encryption (--jobs 1 and 2), and
# `get-wal` of every segment of each archive, one call per segment as PostgreSQL makes them
# (and with --prefetch 8); side by side with Barman 3.20.1 doing the same with
# `encryption = gpg` (its gpg 2.2 process per file, gpg-agent keeping the key unlocked), in
# one run.
#
# The keys are fresh RSA 3072 keys (gpg's default), made here in a throw-away GNUPGHOME: one
# with a passphrase (gpg protects it with 65 million bytes of iterated SHA-1, about 45 ms to
# unlock with SHA instructions), one without. With the passphrase, get-wal runs with the key
# agent (started by the first call of each run: no agent is left between runs) and without
# it (encryption_key_cache_ttl = 0: every call unlocks the key). Encrypted WAL goes to both; walvault reads the exported keys,
# Barman the keyring.
# Plain and encrypted runs alternate (the machine's speed drifts); every figure is the fastest
# of $REPEAT rounds.
#
# Env: CORPUS (/tmp/peerbench/corpus)  OUT (/tmp/walvault-encryption-bench)  REPEAT (3)
#      WALVAULT (this tree's release build)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CORPUS=${CORPUS:-/tmp/peerbench/corpus}
OUT=${OUT:-/tmp/walvault-encryption-bench}
REPEAT=${REPEAT:-3}
log() { printf '[encryption %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

[[ -d $CORPUS ]] || CORPUS=$CORPUS bash "$ROOT/bench/make-wal.sh"
command -v gpg >/dev/null || { log "gpg missing: run .ci/setup"; exit 1; }
rm -rf "$OUT"; mkdir -p "$OUT"
if [[ -z ${WALVAULT:-} ]]; then
  log "building walvault (release)"
  (cd "$ROOT" && cargo build --release --locked -p walvault -q)
  WALVAULT=$ROOT/target/release/walvault
fi
NFILES=$(ls "$CORPUS" | wc -l)
# shellcheck source=bench/peers.sh
source "$ROOT/bench/peers.sh"  # barman_find, barman_config
barman_find
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"  # fill, timed, best_of

export GNUPGHOME=$OUT/gnupg
mkdir -p -m 700 "$GNUPGHOME" "$OUT/keys"
trap 'gpgconf --kill gpg-agent 2>/dev/null || true' EXIT
PASS=walvault-bench-pass
gpg --batch -q --pinentry-mode loopback --passphrase "$PASS" \
  --quick-gen-key 'walvault bench <bench@example.invalid>' default default never
gpg --armor --export bench@example.invalid > "$OUT/keys/bench.pub.asc"
gpg --batch -q --pinentry-mode loopback --passphrase "$PASS" --armor \
  --export-secret-keys bench@example.invalid > "$OUT/keys/bench.sec.asc"
chmod 600 "$OUT/keys/bench.sec.asc"
printf '%s\n' "$PASS" > "$OUT/keys/pass"; chmod 600 "$OUT/keys/pass"
gpg --batch -q --pinentry-mode loopback --passphrase '' \
  --quick-gen-key 'walvault bench open <open@example.invalid>' default default never
gpg --armor --export open@example.invalid > "$OUT/keys/open.pub.asc"
gpg --batch -q --pinentry-mode loopback --passphrase '' --armor \
  --export-secret-keys open@example.invalid > "$OUT/keys/open.sec.asc"
chmod 600 "$OUT/keys/open.sec.asc"

wv_config() {  # DIR ENCRYPTED [SECRET_KEY [KEY_CACHE_TTL]]
  local secret=${3:-bench}
  mkdir -p "$1"
  {
    echo "[walvault]"; echo "home = \"$1/home\""
    echo "[pg]"; echo "compression = \"zstd\""; echo "compression_level = \"medium\""
    echo "wal_segment_size = \"16MB\""
    if [[ $2 == yes ]]; then
      echo "encryption = \"gpg\""
      echo "encryption_key_file = [\"$OUT/keys/bench.pub.asc\", \"$OUT/keys/open.pub.asc\"]"
      echo "encryption_secret_key_file = \"$OUT/keys/$secret.sec.asc\""
      echo "encryption_passphrase_command = \"cat $OUT/keys/pass\""
      [[ -z ${4:-} ]] || echo "encryption_key_cache_ttl = $4"
    fi
  } > "$1/walvault.toml"
}

# get-wal of every corpus segment, one call each, into a scratch file (scripts: /usr/bin/time
# runs programs, not shell functions). Argument: the configuration file.
cat > "$OUT/get-walvault.sh" <<SH
set -e
for f in "$CORPUS"/*; do "$WALVAULT" -c "\$1" get-wal \${2:-} pg "\$(basename "\$f")" "$OUT/restored"; done
SH
cat > "$OUT/get-barman.sh" <<SH
set -e
for f in "$CORPUS"/*; do "$BARMAN" -c "\$1" -q get-wal pg "\$(basename "\$f")" > "$OUT/restored"; done
SH

min() { if [[ -z $1 ]] || awk -v a="$2" -v b="$1" 'BEGIN{exit !(a < b)}'; then echo "$2"; else echo "$1"; fi; }
# The machine's speed drifts over minutes, so plain and encrypted runs alternate within each
# round and each figure is the fastest of its $REPEAT rounds.
declare -A A G
for enc in no yes; do
  for jobs in 1 2; do wv_config "$OUT/wv-$enc-$jobs" "$enc"; done
  if [[ -n $BARMAN ]]; then
    Bd=$OUT/barman-$enc; barman_config "$Bd" zstd
    if [[ $enc == yes ]]; then
      { echo "encryption = gpg"; echo "encryption_key_id = bench@example.invalid"
        echo "encryption_passphrase_command = cat $OUT/keys/pass"; } >> "$Bd/barman.conf"
    fi
  fi
done
wv_config "$OUT/wv-yes-2/open" yes open
wv_config "$OUT/wv-yes-2/no-agent" yes bench 0
sed -i "s|home = .*|home = \"$OUT/wv-yes-2/home\"|" "$OUT/wv-yes-2/open/walvault.toml" \
  "$OUT/wv-yes-2/no-agent/walvault.toml"
# Stops the key agent a run left, so each run starts as a recovery does: locked.
stop_agent() {
  local lock=$OUT/wv-yes-2/home/pg/key-agent/lock
  [[ -f $lock ]] && kill "$(cat "$lock")" 2>/dev/null || true
  while [[ -e $OUT/wv-yes-2/home/pg/key-agent/S ]]; do sleep 0.05; done
}
trap 'stop_agent; gpgconf --kill gpg-agent 2>/dev/null || true' EXIT
for ((round = 1; round <= REPEAT; round++)); do
  for jobs in 1 2; do
    for enc in no yes; do
      W=$OUT/wv-$enc-$jobs
      read -r wall _ < <(REPEAT=1 best_of "$W/home/pg/incoming" "$W/home/pg/wals" "wv-$enc-$jobs" \
        "$WALVAULT" -c "$W/walvault.toml" archive-wal pg --jobs "$jobs")
      A[wv-$enc-$jobs]=$(min "${A[wv-$enc-$jobs]:-}" "$wall")
      log "round $round: walvault archive-wal, encryption $enc, --jobs $jobs: ${wall}s"
    done
  done
  for enc in no yes; do
    [[ -n $BARMAN ]] || { A[bm-$enc]=n/a; continue; }
    Bd=$OUT/barman-$enc
    read -r wall _ < <(REPEAT=1 best_of "$Bd/home/pg/incoming" "$Bd/home/pg/wals" "barman-$enc" \
      "$BARMAN" -c "$Bd/barman.conf" -q archive-wal pg)
    A[bm-$enc]=$(min "${A[bm-$enc]:-}" "$wall")
    log "round $round: Barman archive-wal, encryption $enc: ${wall}s"
  done
done
# get-wal from the archives the last round left (walvault's --jobs 2 ones).
for ((round = 1; round <= REPEAT; round++)); do
  for variant in no yes no-agent open no-prefetch yes-prefetch; do
    stop_agent
    case $variant in
      no | yes) args=("$OUT/wv-$variant-2/walvault.toml") ;;
      open | no-agent) args=("$OUT/wv-yes-2/$variant/walvault.toml") ;;
      *) args=("$OUT/wv-${variant%-prefetch}-2/walvault.toml" "--prefetch 8") ;;
    esac
    read -r wall _ < <(timed "get-wv-$variant" bash "$OUT/get-walvault.sh" "${args[@]}")
    G[wv-$variant]=$(min "${G[wv-$variant]:-}" "$wall")
    log "round $round: walvault get-wal x$NFILES ($variant): ${wall}s"
  done
  for enc in no yes; do
    [[ -n $BARMAN ]] || { G[bm-$enc]=n/a; continue; }
    read -r wall _ < <(timed "get-bm-$enc" bash "$OUT/get-barman.sh" "$OUT/barman-$enc/barman.conf")
    G[bm-$enc]=$(min "${G[bm-$enc]:-}" "$wall")
    log "round $round: Barman get-wal x$NFILES (encryption $enc): ${wall}s"
  done
done

{
  echo "Corpus: $NFILES segments ($CORPUS), zstd level medium, encrypted to two RSA 3072 keys."
  echo "get-wal: one call per segment, every segment, as PostgreSQL restores; decrypted with the key"
  echo "that has a passphrase unless the row says otherwise. Plain and encrypted runs alternate;"
  echo "each figure is the fastest of $REPEAT rounds."
  echo
  echo "| tool | step | plain s | encrypted s | encryption adds |"
  echo "|---|---|---|---|---|"
  row() {  # TOOL STEP PLAIN ENCRYPTED
    awk -v t="$1" -v s="$2" -v p="$3" -v e="$4" 'BEGIN {
      if (p == "n/a") { printf "| %s | %s | n/a | n/a | n/a |\n", t, s; exit }
      printf "| %s | %s | %.2f | %.2f | %+.0f%% |\n", t, s, p, e, 100 * (e - p) / p }'
  }
  row walvault "archive-wal --jobs 1" "${A[wv-no-1]}" "${A[wv-yes-1]}"
  row walvault "archive-wal --jobs 2" "${A[wv-no-2]}" "${A[wv-yes-2]}"
  row "Barman 3.20.1" "archive-wal" "${A[bm-no]}" "${A[bm-yes]}"
  row walvault "get-wal x$NFILES (the key agent)" "${G[wv-no]}" "${G[wv-yes]}"
  row walvault "get-wal x$NFILES, encryption_key_cache_ttl = 0" "${G[wv-no]}" "${G[wv-no-agent]}"
  row walvault "get-wal x$NFILES, a secret key without passphrase" "${G[wv-no]}" "${G[wv-open]}"
  row walvault "get-wal --prefetch 8 x$NFILES" "${G[wv-no-prefetch]}" "${G[wv-yes-prefetch]}"
  row "Barman 3.20.1" "get-wal x$NFILES" "${G[bm-no]}" "${G[bm-yes]}"
} | tee "$OUT/encryption-table.md"
