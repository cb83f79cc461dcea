#!/usr/bin/env bash
# The language-model half of docs/results/absorption/: TopK, BatchTopK and Matryoshka BatchTopK
# SAEs of one size (2048 latents, k 32) on SmolLM2-135M's residual after block 15 (the State of
# the Union harvest of scripts/real-results.sh, which it shares its work folder with), each
# spliced into the model (CE loss score on contexts drawn with another seed) and put through the
# first-letter absorption task. Needs `scripts/fetch-assets smollm2 sotu`.
#   scripts/absorption-results.sh [OUT]   (default docs/results/absorption; about 45 minutes on 2 cores)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root/docs/results/absorption}"
work="${SPARSECODE_WORK:-$root/target/real-results}"
bin="${SPARSECODE_BIN:-$root/target/release/sparsecode}"
S="$bin --threads ${THREADS:-2}"
latents="${LATENTS:-2048}"
steps="${STEPS:-2000}"
words="${WORDS:-5000}"
sotu="$root/assets/text/sotu"
mkdir -p "$work" "$out"
[ -f "$work/sotu/manifest.json" ] || $S harvest --model smollm2 --corpus "$sotu" --layer 15 \
  --context 128 --max-tokens "${TOKENS:-131072}" --out "$work/sotu"
for arch in topk batchtopk matryoshka; do
  name="$arch-k32"
  [ -f "$work/sae-$name/cfg.json" ] || $S train --store "$work/sotu" --latents "$latents" \
    --steps "$steps" --batch 1024 --arch "$arch" --k 32 --out "$work/sae-$name"
  # Written under another name first, so that a killed run leaves no record to skip on.
  [ -f "$work/eval-$name.json" ] || { $S eval --sae "$work/sae-$name" --model smollm2 \
    --corpus "$sotu" --tokens 4096 --seed 1 --json > "$work/eval-$name.json.part" \
    && mv "$work/eval-$name.json.part" "$work/eval-$name.json"; }
  [ -f "$work/letters-$name.json" ] || { $S eval --sae "$work/sae-$name" --model smollm2 \
    --first-letter --words "$words" --json > "$work/letters-$name.json.part" \
    && mv "$work/letters-$name.json.part" "$work/letters-$name.json"; }
done
python3 "$root/scripts/absorption_results.py" "$work" "$out"
