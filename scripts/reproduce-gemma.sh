#!/usr/bin/env bash
# The real-network pipeline on Gemma 3 270M (docs/results/gemma3/): harvest the residual stream
# after block 9 of the State of the Union addresses, train a TopK SAE on it (the recipe of
# docs/results/real/ on SmolLM2), score it spliced into Gemma and by word intrusion against raw
# neurons and random directions, build the dashboard and screenshot it with headless Chromium
# (when one is installed). Work files go to $WORK (default data/gemma, git-ignored); the summaries
# to docs/results/gemma3/. Every step resumes or is skipped when its output exists.
#   scripts/reproduce-gemma.sh             # 1M tokens: about 22 min harvest + 10 min SAE on 2 cores
#   TOKENS=100000 STEPS=300 scripts/reproduce-gemma.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="${WORK:-$root/data/gemma}"
out="${OUT:-$root/docs/results/gemma3}"
tokens="${TOKENS:-1000000}"
threads="${THREADS:-2}"
bin="${SPARSECODE_BIN:-$root/target/release/sparsecode}"
layer=9
"$root/scripts/fetch-assets" gemma3 sotu minilm
[ -n "${SPARSECODE_BIN:-}" ] || cargo build --release --manifest-path "$root/Cargo.toml" >/dev/null 2>&1
S="$bin --threads $threads"
mkdir -p "$work" "$out"
store="$work/gemma3-l$layer"
[ -f "$store/manifest.json" ] || $S harvest --model gemma3 --layer $layer --context 128 \
  --max-tokens "$tokens" --dtype f16 --out "$store"
sae="$work/sae-topk"
[ -f "$sae/cfg.json" ] || $S train --store "$store" --arch topk --k 32 --latents 4096 \
  --batch 4096 --steps "${STEPS:-1500}" --lr 5e-4 --out "$sae"
# Spliced into Gemma on 4,064 next-token positions of contexts drawn with another seed.
if [ ! -f "$work/spliced.json" ]; then
  $S eval --sae "$sae" --model gemma3 --corpus "$root/assets/text/sotu" --tokens 4096 --seed 1 \
    --json > "$work/spliced.json.part"
  mv "$work/spliced.json.part" "$work/spliced.json"
fi
[ -f "$work/interp/scores.json" ] || $S interp --sae "$sae" --store "$store" --features 300 \
  --out "$work/interp" --force
[ -f "$work/dashboard/index.html" ] || $S dashboard --sae "$sae" --store "$store" \
  --scores "$work/interp/scores.json" --out "$work/dashboard" --force
cp "$work/interp/results.md" "$out/interp.md"
cp "$store/harvest.json" "$out/harvest.json"
cp "$sae/run.json" "$out/sae-run.json"
cp "$work/spliced.json" "$out/spliced.json"
shot() { # page png
  "$browser" --headless --no-sandbox --disable-gpu --no-first-run --disable-background-networking \
    --user-data-dir="$work/chromium" --window-size=1200,1000 --hide-scrollbars \
    --screenshot="$2" "file://$work/dashboard/$1" 2>/dev/null
}
browser="$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)"
if [ -n "$browser" ]; then
  shot "index.html#sort=score" "$out/dashboard-index.png"
  for f in ${FEATURES:-}; do shot "f/$(printf %05d "$f").html" "$out/dashboard-feature-$f.png"; done
else
  echo "no chromium: screenshots skipped" >&2
fi
echo "dashboard: $work/dashboard/index.html" >&2
