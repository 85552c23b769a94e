#!/usr/bin/env bash
# encryption.sh — what `encryption = "gpg"` costs: `walvault archive-wal` with zstd (level
# medium) on the 64-segment corpus with and without encryption (--jobs 1 and 2), and
# `get-wal` of every segment of each archive, one call per segment as PostgreSQL makes them;
# side by side with Barman 3.20.1 doing the same with `encryption = gpg` (its gpg 2.2
# process per file), in one run.
#
# The key is a fresh RSA 3072 key (gpg's default) with a passphrase, made here in a throw-away
# GNUPGHOME: walvault reads its exported public and secret keys, Barman the keyring.
# Every figure is the fastest of $REPEAT runs.
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

wv_config() {  # DIR ENCRYPTED
  mkdir -p "$1"
  {
    echo "[walvault]"; echo "home = \"$1/home\""
    echo "[pg]"; echo "compression = \"zstd\""; echo "compression_level = \"medium\""
    echo "wal_segment_size = \"16MB\""
    if [[ $2 == yes ]]; then
      echo "encryption = \"gpg\""
      echo "encryption_key_file = \"$OUT/keys/bench.pub.asc\""
      echo "encryption_secret_key_file = \"$OUT/keys/bench.sec.asc\""
      echo "encryption_passphrase_command = \"cat $OUT/keys/pass\""
    fi
  } > "$1/walvault.toml"
}

# get_all CONFIG_ARGS...: get-wal of every corpus segment, one call each, into a scratch file.
get_all_walvault() {
  local f
  for f in "$CORPUS"/*; do
    "$WALVAULT" -c "$1" get-wal pg "$(basename "$f")" "$OUT/restored" || return 1
  done
}
get_all_barman() {
  local f
  for f in "$CORPUS"/*; do
    "$BARMAN" -c "$1" -q get-wal pg "$(basename "$f")" > "$OUT/restored" || return 1
  done
}
best_wall() {  # LABEL CMD...: the fastest wall time of $REPEAT runs
  local best="" wall i
  for ((i = 0; i < REPEAT; i++)); do
    read -r wall _ < <(timed "$@")
    [[ -z $best ]] || awk -v a="$wall" -v b="$best" 'BEGIN{exit !(a < b)}' && best=$wall
  done
  echo "$best"
}

declare -A A G
for enc in no yes; do
  for jobs in 1 2; do
    W=$OUT/wv-$enc-$jobs; rm -rf "$W"; wv_config "$W" "$enc"
    read -r wall _ < <(best_of "$W/home/pg/incoming" "$W/home/pg/wals" "wv-$enc-$jobs" \
      "$WALVAULT" -c "$W/walvault.toml" archive-wal pg --jobs "$jobs")
    A[wv-$enc-$jobs]=$wall
    log "walvault archive-wal, encryption $enc, --jobs $jobs: ${wall}s"
  done
  # The last archive (jobs 2) is left in place for get-wal.
  G[wv-$enc]=$(best_wall "get-wv-$enc" get_all_walvault "$W/walvault.toml")
  log "walvault get-wal x$NFILES, encryption $enc: ${G[wv-$enc]}s"
  if [[ -n $BARMAN ]]; then
    Bd=$OUT/barman-$enc; rm -rf "$Bd"; barman_config "$Bd" zstd
    if [[ $enc == yes ]]; then
      { echo "encryption = gpg"; echo "encryption_key_id = bench@example.invalid"
        echo "encryption_passphrase_command = cat $OUT/keys/pass"; } >> "$Bd/barman.conf"
    fi
    read -r wall _ < <(best_of "$Bd/home/pg/incoming" "$Bd/home/pg/wals" "barman-$enc" \
      "$BARMAN" -c "$Bd/barman.conf" -q archive-wal pg)
    A[bm-$enc]=$wall
    log "Barman archive-wal, encryption $enc: ${wall}s"
    G[bm-$enc]=$(best_wall "get-bm-$enc" get_all_barman "$Bd/barman.conf")
    log "Barman get-wal x$NFILES, encryption $enc: ${G[bm-$enc]}s"
  else
    A[bm-$enc]=n/a; G[bm-$enc]=n/a
  fi
done

{
  echo "Corpus: $NFILES segments ($CORPUS), zstd level medium, RSA 3072 recipient with a passphrase."
  echo "get-wal: one call per segment, every segment, as PostgreSQL restores. Fastest of $REPEAT runs each."
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
  row walvault "get-wal x$NFILES" "${G[wv-no]}" "${G[wv-yes]}"
  row "Barman 3.20.1" "get-wal x$NFILES" "${G[bm-no]}" "${G[bm-yes]}"
} | tee "$OUT/encryption-table.md"
