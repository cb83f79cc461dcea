#!/usr/bin/env bash
# Coverage-guided fuzzing of every parser with libFuzzer (libfuzzer-sys), on the stable toolchain:
# the targets are built with LLVM's SanitizerCoverage passes (`-C passes=sancov-module`, stable
# codegen flags), with debug assertions and overflow checks on, so an unchecked size computation
# is a crash too. No sanitizer runtime is needed (those are nightly-only); a huge allocation made
# without admission shows as an abort or an RSS above -rss_limit_mb.
#
#   scripts/fuzz.sh build                        build the eight fuzz binaries
#   scripts/fuzz.sh run TARGET [ARGS...]         fuzz TARGET (libFuzzer ARGS, e.g. -runs=10000000)
#   scripts/fuzz.sh smoke SECONDS                every target for SECONDS on its committed corpus
#   scripts/fuzz.sh merge TARGET                 fold new finds into fuzz/corpus/TARGET, minimised
#   scripts/fuzz.sh list                         the targets
#
# Corpora: fuzz/corpus/TARGET (committed; `make-seeds` wrote the seed-* files), new finds go to
# target/fuzz/work/TARGET, crashes to target/fuzz/artifacts/TARGET/. A crash, once fixed, is
# copied to fuzz/regressions/TARGET/ where tests/replay.rs runs it in every test run.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGETS=(npy safetensors saelens sparsify store token_shard gguf checkpoint)
TRIPLE=$(rustc -vV | sed -n 's/^host: //p')
OUT=target/fuzz
BIN=$OUT/$TRIPLE/release

build() {
  # Flags for the target only (--target keeps them off build scripts and proc macros).
  RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks --cfg fuzzing" \
    CARGO_TARGET_DIR=$OUT cargo build --release --target "$TRIPLE" -p sparsecode-fuzz \
    --features libfuzzer $(printf -- '--bin fuzz_%s ' "${TARGETS[@]}")
}

run() {
  local t=$1; shift
  local dict=()
  # Targets whose inputs hold JSON get its keys and hostile values as a dictionary.
  case $t in saelens|sparsify|store|checkpoint) dict=(-dict=fuzz/dict/json.dict) ;; esac
  mkdir -p "$OUT/work/$t" "$OUT/artifacts/$t"
  "$BIN/fuzz_$t" "$OUT/work/$t" "fuzz/corpus/$t" -max_len=16384 -rss_limit_mb=2048 -timeout=20 \
    -artifact_prefix="$OUT/artifacts/$t/" "${dict[@]}" "$@"
}

case "${1:-}" in
  build) build ;;
  run) [ $# -ge 2 ] || { echo "usage: $0 run TARGET [ARGS...]" >&2; exit 2; }; shift; run "$@" ;;
  smoke)
    secs=${2:-10}
    build
    for t in "${TARGETS[@]}"; do
      log=$OUT/smoke-$t.log
      if run "$t" -max_total_time="$secs" -print_final_stats=1 >"$log" 2>&1; then
        echo "fuzz smoke: $t: $(sed -n 's/^stat::number_of_executed_units: *//p' "$log") runs in ${secs}s, $(grep -o 'cov: [0-9]*' "$log" | tail -1) edges"
      else
        tail -40 "$log" >&2
        echo "fuzz smoke: $t failed (the input is in $OUT/artifacts/$t)" >&2
        exit 1
      fi
    done ;;
  merge)
    [ $# -eq 2 ] || { echo "usage: $0 merge TARGET" >&2; exit 2; }
    t=$2; tmp=$(mktemp -d)
    "$BIN/fuzz_$t" -merge=1 "$tmp" "fuzz/corpus/$t" "$OUT/work/$t" -max_len=16384 -rss_limit_mb=2048
    # The seeds keep their names; the other files are replaced by the minimised finds.
    find "fuzz/corpus/$t" -type f ! -name 'seed-*' -delete
    for f in "$tmp"/*; do
      dup=0
      for s in fuzz/corpus/"$t"/seed-*; do cmp -s "$f" "$s" && dup=1 && break; done
      [ $dup = 1 ] || cp "$f" "fuzz/corpus/$t/"
    done
    rm -rf "$tmp" ;;
  list) printf '%s\n' "${TARGETS[@]}" ;;
  *) sed -n '2,19p' "$0"; exit 2 ;;
esac
