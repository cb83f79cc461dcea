#!/usr/bin/env bash
# The real-network results of docs/results/real/: SAEs on SmolLM2-135M's residual stream after
# block 15, judged spliced into the model. Needs `scripts/fetch-assets smollm2 sotu moby-dick`.
#   scripts/real-results.sh [OUT]       (default docs/results/real; about 50 minutes on 2 cores)
# Steps: harvest the State of the Union addresses and Moby-Dick; TopK SAEs over k and ReLU SAEs
# over the L1 coefficient on the addresses, each scored spliced in (CE loss score, KL score) and
# by explained variance, L0 and the L2 ratio on contexts drawn with another seed; the stability
# experiment on the same activations; the shift: the addresses' SAE and one trained on Moby-Dick,
# both spliced in on Moby-Dick, and each one's encoder against ITO on its decoder there. scripts/real_results.py gathers the records into spliced.md and spliced.json.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root/docs/results/real}"
work="${SPARSECODE_WORK:-$root/target/real-results}"
bin="${SPARSECODE_BIN:-$root/target/release/sparsecode}"
threads="${THREADS:-2}"
S="$bin --threads $threads"
layer=15
tokens="${TOKENS:-131072}"
latents="${LATENTS:-2048}"
steps="${STEPS:-2000}"
eval_tokens="${EVAL_TOKENS:-4096}"
sotu="$root/assets/text/sotu"
moby="$root/assets/text/moby-dick"
mkdir -p "$work" "$out"

harvest() { # name corpus
  [ -f "$work/$1/manifest.json" ] || $S harvest --model smollm2 --corpus "$2" --layer $layer \
    --context 128 --max-tokens "$tokens" --out "$work/$1"
}
train() { # name store extra...
  local name=$1 store=$2; shift 2
  [ -f "$work/sae-$name/cfg.json" ] || $S train --store "$work/$store" --latents "$latents" \
    --steps "$steps" --batch 1024 --out "$work/sae-$name" "$@"
}
spliced() { # name corpus
  [ -f "$work/eval-$1.json" ] || $S eval --sae "$work/sae-${1%%@*}" --model smollm2 --corpus "$2" \
    --tokens "$eval_tokens" --seed 1 --json > "$work/eval-$1.json"
}

harvest sotu "$sotu"
harvest moby "$moby"
for k in 8 16 32 64 128; do
  train "topk-k$k" sotu --arch topk --k $k
  spliced "topk-k$k" "$sotu"
done
for l1 in 1 3 10; do
  train "relu-l1-$l1" sotu --arch relu --l1 $l1
  spliced "relu-l1-$l1" "$sotu"
done
train moby-topk-k32 moby --arch topk --k 32
spliced "topk-k32@moby" "$moby"
spliced "moby-topk-k32@moby" "$moby"
# SAE codes against ITO on the same decoder under the shift (1,024 Moby-Dick tokens drawn with another seed).
[ -f "$work/moby-ito/manifest.json" ] || $S harvest --model smollm2 --corpus "$moby" --layer $layer \
  --context 128 --max-tokens 1024 --seed 7 --out "$work/moby-ito"
for sae in topk-k32 moby-topk-k32; do
  [ -f "$work/codes-$sae-sae.json" ] || $S eval --sae "$work/sae-$sae" \
    --data "$work/moby-ito/shard-00000.npy" --json > "$work/codes-$sae-sae.json"
  [ -f "$work/codes-$sae-ito.json" ] || $S eval --sae "$work/sae-$sae" \
    --data "$work/moby-ito/shard-00000.npy" --ito-lambda 1 --json > "$work/codes-$sae-ito.json"
done
[ -f "$work/stability/results.json" ] || $S experiment stability --data "$work/sotu/shard-00000.npy" \
  --arch topk --value 32 --latents "$latents" --steps "$steps" --batch 1024 --runs 3 \
  --out "$work/stability"
python3 "$root/scripts/real_results.py" "$work" "$out"
