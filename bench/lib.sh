# Shared by the benchmarks: sourced, with $ROOT, $CORPUS, $OUT, $REPEAT and log() already set.

corpus_and_walvault() {  # the corpus when missing; WALVAULT: this tree's release build unless set
  [[ -d $CORPUS ]] || CORPUS=$CORPUS bash "$ROOT/bench/make-wal.sh"
  if [[ -z ${WALVAULT:-} ]]; then
    log "building walvault (release)"
    (cd "$ROOT" && cargo build --release --locked -p walvault -q)
    WALVAULT=$ROOT/target/release/walvault
  fi
}

fill() {  # DIR: the corpus into DIR (not timed), caches warm for every contender alike
  rm -rf "$1"; mkdir -p "$1"; cp "$CORPUS"/* "$1"/; sync
}
timed() {  # LABEL CMD...: prints "wall_seconds max_rss_kib", fails loudly
  local t; t=$(mktemp)
  if ! /usr/bin/time -f '%e %M' -o "$t" "${@:2}" >"$OUT/$1.out" 2>"$OUT/$1.err"; then
    log "$1 failed:"; cat "$OUT/$1.err" >&2; cat "$t" >&2; exit 1
  fi
  cat "$t"; rm -f "$t"
}
best_of() {  # QUEUE_DIR ARCHIVE_DIR LABEL CMD...: refills the queue before each of $REPEAT runs
  local queue=$1 archive=$2 best="" rss=0 wall r i
  for ((i = 0; i < REPEAT; i++)); do
    rm -rf "$archive"; fill "$queue"
    read -r wall r < <(timed "${@:3}")
    left=$(ls "$queue" | wc -l); [[ $left -eq 0 ]] || { log "$3 left $left files"; exit 1; }
    [[ -z $best ]] || awk -v a="$wall" -v b="$best" 'BEGIN{exit !(a < b)}' && best=$wall
    (( r > rss )) && rss=$r
  done
  echo "$best $rss"
}
stored() { find "$1" -type f ! -name '*xlog.db' ! -name '.*' -printf '%s\n' | awk '{s+=$1} END {print s+0}'; }
