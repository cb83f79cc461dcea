#!/usr/bin/env bash
# The real-network pipeline from a fresh clone: fetch the offline assets, harvest the SmolLM2-135M
# residual stream after block 15 on the State of the Union addresses, train a TopK SAE on it,
# score it by word intrusion against raw neurons and random directions, build the dashboard, and
# run the additivity experiment. Work files go to $WORK (default data/real, git-ignored); the
# summaries to docs/results/real/. Every step resumes or is skipped when its output exists.
#   scripts/reproduce-real.sh            # 1M tokens: about 20 min harvest + 10 min SAE on 2 cores
#   TOKENS=100000 scripts/reproduce-real.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="${WORK:-$root/data/real}"
tokens="${TOKENS:-1000000}"
threads="${THREADS:-2}"
"$root/scripts/fetch-assets"
cargo build --release --manifest-path "$root/Cargo.toml" >/dev/null 2>&1
S="$root/target/release/sparsecode --threads $threads"
mkdir -p "$work" "$root/docs/results/real"
store="$work/smollm2-l15"
[ -f "$store/manifest.json" ] || $S harvest --model smollm2 --layer 15 --context 128 \
  --max-tokens "$tokens" --dtype f16 --out "$store"
sae="$work/sae-topk"
[ -f "$sae/cfg.json" ] || $S train --store "$store" --arch topk --k 32 --latents 4096 \
  --batch 4096 --steps "${STEPS:-1500}" --lr 5e-4 --out "$sae"
$S interp --sae "$sae" --store "$store" --features 300 --out "$work/interp" --force
$S dashboard --sae "$sae" --store "$store" --scores "$work/interp/scores.json" \
  --out "$work/dashboard" --force
$S experiment additivity --out "$root/docs/results/additivity" --force
cp "$work/interp/results.md" "$root/docs/results/real/interp.md"
cp "$store/harvest.json" "$root/docs/results/real/harvest.json"
cp "$sae/run.json" "$root/docs/results/real/sae-run.json"
echo "dashboard: $work/dashboard/index.html" >&2
