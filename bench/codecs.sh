#!/usr/bin/env bash
# codecs.sh — walvault's codecs against the C command-line tools, on real PostgreSQL WAL.
#
# 1. builds walvault-bench (release, native-codecs) and generates the WAL corpus if missing
#    (bench/make-wal.sh, needs root);
# 2. runs `walvault-bench codecs`: every file compressed and decompressed in memory, one
#    stream per file, single-threaded; speed = raw MB (10^6 bytes) per CPU second;
# 3. runs the C tools on the same files at the same levels, one process per file
#    (`tool -N -c file > /dev/shm/...`, then `tool -d -c`), timed with /usr/bin/time over the
#    whole per-file loop, fastest of >= 2 loops like ours: speed = raw MB per CPU second
#    (user + sys, so it includes process start-up and the tools' own file I/O, ~1 ms per
#    file; files are in the page cache, outputs in /dev/shm). xz runs with -T1 (single
#    thread, one block, like ours). Snappy is python-snappy's framed stream
#    (`snappy.stream_compress`), timed in-process with time.process_time() (its RSS
#    holds the whole corpus, so it is not comparable);
# 4. peak RSS: `walvault-bench mem` streams one segment file→encoder→file→decoder; the C
#    figure is the largest max-RSS of the per-file tool processes (GNU time %M);
# 5. prints one table and writes it to $OUT/table.md.
#
# Env: CORPUS (/tmp/peerbench/corpus)  OUT (/tmp/walvault-codecs)  FILES (all)  ONLY (all codecs)
# Usage: bash bench/codecs.sh
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CORPUS=${CORPUS:-/tmp/peerbench/corpus}
OUT=${OUT:-/tmp/walvault-codecs}
FILES=${FILES:-}
ONLY=${ONLY:-}
SCRATCH=/dev/shm/walvault-codecs.$$
log() { printf '[codecs %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
trap 'rm -rf "$SCRATCH"' EXIT

for tool in gzip bzip2 xz zstd lz4 python3 /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install gzip bzip2 xz-utils zstd lz4 time)" >&2; exit 1; }
done
python3 -c 'import snappy' 2>/dev/null || { echo "missing python-snappy (pip install python-snappy)" >&2; exit 1; }

if [[ ! -d $CORPUS ]] || [[ -z $(ls -A "$CORPUS") ]]; then
  log "no corpus in $CORPUS: generating it with make-wal.sh"
  BASE=$(dirname "$CORPUS") CORPUS=$CORPUS N=${N:-64} bash "$ROOT/bench/make-wal.sh"
fi
mkdir -p "$OUT" "$SCRATCH"

log "building walvault-bench (release)"
(cd "$ROOT" && cargo build --release -p walvault-bench --quiet)
BENCH=$ROOT/target/release/walvault-bench

mapfile -t ALL_FILES < <(find "$CORPUS" -maxdepth 1 -type f | sort)
[[ -n $FILES ]] && ALL_FILES=("${ALL_FILES[@]:0:$FILES}")
RAW=$(cat "${ALL_FILES[@]}" | wc -c)
log "corpus: ${#ALL_FILES[@]} files, $RAW bytes"

log "walvault: compress + decompress every file per configuration"
BENCH_ARGS=(codecs --corpus "$CORPUS")
[[ -n $FILES ]] && BENCH_ARGS+=(--files "$FILES")
[[ -n $ONLY ]] && BENCH_ARGS+=(--only "$ONLY")
"$BENCH" "${BENCH_ARGS[@]}" | tee "$OUT/walvault.tsv" >&2

log "walvault: peak RSS streaming one segment"
: > "$OUT/walvault-mem.tsv"
tail -n +2 "$OUT/walvault.tsv" | while IFS=$'\t' read -r codec label level _; do
  lv=$level; [[ $lv == - ]] && lv=medium
  printf '%s\t%s\t' "$codec" "$label" >> "$OUT/walvault-mem.tsv"
  "$BENCH" mem --codec "$codec" --level "$lv" --file "${ALL_FILES[0]}" | cut -f5 >> "$OUT/walvault-mem.tsv"
done

# cpu_of FILE: user+sys seconds and max RSS (KiB) written by /usr/bin/time -f '%U %S %M'.
cpu_of() { awk '{printf "%.3f %d\n", $1 + $2, $3}' "$1"; }

# best_of OUT CMD...: runs CMD under GNU time like walvault-bench runs its passes (again
# until 2 CPU seconds were spent, and twice unless a run took 20 s) and keeps the fastest
# run's line in OUT.
best_of() {
  local out=$1; shift
  local spent=0 reps=0 t
  : > "$out"
  while (( reps == 0 )) || awk -v s="$spent" -v r="$reps" 'BEGIN{exit !(s < 2 || (r < 2 && s < 20))}'; do
    /usr/bin/time -f '%U %S %M' -o "$SCRATCH/run" "$@"
    t=$(awk '{print $1 + $2}' "$SCRATCH/run")
    spent=$(awk -v a="$spent" -v b="$t" 'BEGIN{print a + b}')
    if [[ ! -s $out ]] || awk -v a="$t" '{exit !(a < $1 + $2)}' "$out"; then cp "$SCRATCH/run" "$out"; fi
    reps=$((reps + 1))
  done
}

log "C tools"
echo -e "codec\tlabel\tlevel\traw_bytes\tcompressed_bytes\tcomp_cpu_s\tdecomp_cpu_s\tpeak_rss_kib" > "$OUT/c.tsv"
tail -n +2 "$OUT/walvault.tsv" | while IFS=$'\t' read -r codec label level _; do
  dir=$SCRATCH/$codec-$label; mkdir -p "$dir"
  if [[ $codec == snappy ]]; then
    python3 - "$dir" "${ALL_FILES[@]}" >> "$OUT/c.tsv" <<'PY'
import io, resource, sys, time, snappy
out_dir, files = sys.argv[1], sys.argv[2:]
corpus = [open(f, "rb").read() for f in files]
raw = sum(map(len, corpus)); best_c = best_d = float("inf")
for _ in range(2):  # fastest of two passes, as for the other tools
    blobs = []; ct = dt = 0.0
    for data in corpus:
        dst = io.BytesIO(); t = time.process_time()
        snappy.stream_compress(io.BytesIO(data), dst); ct += time.process_time() - t
        blobs.append(dst.getvalue())
    for data, blob in zip(corpus, blobs):
        back = io.BytesIO(); t = time.process_time()
        snappy.stream_decompress(io.BytesIO(blob), back); dt += time.process_time() - t
        assert back.getvalue() == data
    best_c, best_d = min(best_c, ct), min(best_d, dt)
packed = sum(map(len, blobs))
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(f"snappy\t-\t-\t{raw}\t{packed}\t{best_c:.3f}\t{best_d:.3f}\t{rss}")
PY
    continue
  fi
  case $codec in
    gzip|bzip2) c=("$codec" "-$level" -c); d=("$codec" -d -c) ;;
    xz) c=(xz "-$level" -T1 -c); d=(xz -d -T1 -c) ;;
    zstd|lz4) c=("$codec" "-$level" -q -c); d=("$codec" -d -q -c) ;;
  esac
  best_of "$SCRATCH/t.c" bash -c '
    dir=$1; shift; n=$1; shift; cmd=("${@:1:$n}"); shift "$n"
    for f; do "${cmd[@]}" "$f" > "$dir/${f##*/}"; done' _ "$dir" "${#c[@]}" "${c[@]}" "${ALL_FILES[@]}"
  packed=$(cat "$dir"/* | wc -c)
  best_of "$SCRATCH/t.d" bash -c '
    dir=$1; shift
    for f in "$dir"/*; do "$@" "$f" > /dev/null; done' _ "$dir" "${d[@]}"
  # Correctness spot check outside the timing: the first file must come back intact.
  "${d[@]}" "$dir/${ALL_FILES[0]##*/}" | cmp -s - "${ALL_FILES[0]}" || { echo "$codec -$level: C round trip failed" >&2; exit 1; }
  read -r ccpu crss < <(cpu_of "$SCRATCH/t.c")
  read -r dcpu drss < <(cpu_of "$SCRATCH/t.d")
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$codec" "$label" "$level" "$RAW" "$packed" "$ccpu" "$dcpu" \
    "$(( crss > drss ? crss : drss ))" >> "$OUT/c.tsv"
  rm -rf "$dir"
  log "  $codec -$level done"
done

python3 - "$OUT" <<'PY' | tee "$OUT/table.md"
import csv, sys
out = sys.argv[1]
def rows(name):
    with open(f"{out}/{name}") as f:
        return list(csv.DictReader(f, delimiter="\t"))
ours = rows("walvault.tsv"); c = {(r["codec"], r["label"]): r for r in rows("c.tsv")}
mem = {}
for line in open(f"{out}/walvault-mem.tsv"):
    codec, label, kib = line.split()
    mem[(codec, label)] = int(kib)
print("| codec | level | walvault ratio | C ratio | ratio diff % | walvault comp MB/s | C comp MB/s "
      "| walvault decomp MB/s | C decomp MB/s | walvault peak RSS MiB | C peak RSS MiB |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for r in ours:
    k = (r["codec"], r["label"]); cr = c[k]
    raw = int(r["raw_bytes"]); mb = raw / 1e6
    c_ratio = raw / int(cr["compressed_bytes"]); w_ratio = float(r["ratio"])
    level = r["level"] if r["label"] in ("-",) else f'{r["label"]} ({r["level"]})'
    # python-snappy's process holds the whole corpus: its RSS says nothing about the codec.
    c_rss = "n/a" if r["codec"] == "snappy" else f'{int(cr["peak_rss_kib"]) / 1024:.1f}'
    print(f'| {r["codec"]} | {level} | {w_ratio:.2f} | {c_ratio:.2f} | {100 * (w_ratio / c_ratio - 1):+.1f} '
          f'| {float(r["comp_mb_s_cpu"]):.0f} | {mb / float(cr["comp_cpu_s"]):.0f} '
          f'| {float(r["decomp_mb_s_cpu"]):.0f} | {mb / float(cr["decomp_cpu_s"]):.0f} '
          f'| {mem[k] / 1024:.1f} | {c_rss} |')
PY
