#!/usr/bin/env bash
# Crash consistency, the SQLite way: kill -9 `train`, `learn`, `store create` and `harvest` (when
# scripts/fetch-assets has fetched SmolLM2 and the texts) at random moments,
# run the same command again (`train --resume` when an unfinished run is there), and compare the
# finished bytes with those of an uninterrupted run. Also checks that nothing temporary is left
# beside an output once the rerun finished (the rerun's lock removes what the killed run left).
#   scripts/crash-consistency.sh [KILLS_PER_COMMAND] [BINARY] [COMMANDS]
# (defaults: 5, target/release/sparsecode, "train learn store harvest")
# Prints one line per kill and a summary; exits 1 on the first difference.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
kills="${1:-5}"
bin="${2:-$root/target/release/sparsecode}"
S="$bin --threads 2"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
RANDOM=7

$S synth --latents 128 --dims 32 --active 4 --samples 20000 --seed 0 --out "$work/planted" 2>/dev/null
$S synth --latents 256 --dims 64 --active 4 --samples 200000 --seed 1 --out "$work/wide" 2>/dev/null
data="$work/planted/activations.npy"
wide="$work/wide/activations.npy"

# name | command writing OUT (OUT is replaced by the output path) | files whose bytes must match
train_cmd="train --data $data --arch topk --k 4 --latents 256 --steps 12000 --batch 256 --checkpoint-every 500 --seed 0 --out OUT"
learn_cmd="learn --data $data --atoms 128 --max-iter 6 --restarts 1 --seed 0 --out OUT"
store_cmd="store create --from $wide --shard-rows 5000 --out OUT"
# A rerun of the same harvest continues it from its last whole shard.
harvest_cmd="harvest --model smollm2 --corpus $root/assets/text/moby-dick --layer 3 --context 32 --batch 8 --shard-contexts 16 --max-tokens 8192 --out OUT"
commands="${3:-train learn store harvest}"
if [ ! -e "$root/assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" ] || [ ! -e "$root/assets/text/moby-dick" ]; then
  echo "harvest: skipped (run scripts/fetch-assets for SmolLM2 and the texts)"
  commands="${commands//harvest/}"
fi

hash_of() { (cd "$1" && find . -type f ! -name '*.json' ! -name 'metrics.jsonl' -print0 | sort -z | xargs -0 sha256sum) | sha256sum | cut -c1-16; }
weights_of() {
  case "$1" in
    train) (cd "$2" && sha256sum sae_weights.safetensors cfg.json | sha256sum | cut -c1-16) ;;
    *) hash_of "$2" ;;
  esac
}

total=0
for name in $commands; do
  cmd_var="${name}_cmd"; cmd="${!cmd_var}"
  ref="$work/$name-ref"
  start=$(date +%s%N)
  $S ${cmd//OUT/$ref} >/dev/null 2>&1
  ms=$(( ($(date +%s%N) - start) / 1000000 ))
  want=$(weights_of "$name" "$ref")
  echo "$name: uninterrupted in ${ms} ms, $want"
  for i in $(seq 1 "$kills"); do
    out="$work/$name-$i"
    # A random moment within the run's length (bash arithmetic only: no bc on a bare machine).
    at_ms=$(( (RANDOM % 1000) * ms / 1000 ))
    at=$(printf '%d.%03d' $((at_ms / 1000)) $((at_ms % 1000)))
    $S ${cmd//OUT/$out} >/dev/null 2>&1 &
    pid=$!
    sleep "$at"
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    if [ -d "$out.partial" ]; then
      $S train --resume "$out" >/dev/null 2>&1
      how="resumed"
    elif [ -e "$out" ] && { [ "$name" != harvest ] || [ -e "$out/manifest.json" ]; }; then
      # (a harvest's folder exists from its start; its manifest is written last)
      how="finished before the kill"
    else
      $S ${cmd//OUT/$out} >/dev/null 2>&1
      how="rerun"
    fi
    got=$(weights_of "$name" "$out")
    left=$(find "$work" -maxdepth 1 -name ".$name-$i.*" | wc -l)
    echo "  kill $i at ${at}s: $how, $got, leftovers $left"
    total=$((total + 1))
    if [ "$got" != "$want" ] || [ "$left" != 0 ]; then
      echo "MISMATCH: $name kill $i" >&2
      exit 1
    fi
  done
done
echo "$total kills, $total identical results"
