#!/usr/bin/env bash
# Switch SAE against TopK at equal latents and L0 (BENCHMARKS.md "Switch SAE against TopK"):
#  1. step time at 768 x 16384, batch 4096 (TopK, Switch with 4 / 16 / 64 experts);
#  2. step time against the number of latents at batch 1024, up to 2^19 (the widest this
#     24 GiB machine holds for TopK), and Switch at 2^18 with batch 4096 (the per-row cost);
#  3. held-out reconstruction on real activations: MiniLM block 3 over Moby-Dick (258k
#     tokens), the last store shard held out, 8192 latents, k 32, 3000 steps of 1024.
# Needs the fetched assets (scripts/fetch-assets minilm moby-dick) and python3 with numpy (for
# the train/test split; a venv under target/ is made when numpy is missing).
# Usage: benches/switch-vs-topk.sh [--threads T]   (outputs under target/switch-vs-topk/)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
threads=2
[ "${1:-}" = "--threads" ] && threads="$2"
cargo build --release --manifest-path "$root/Cargo.toml"
B="$root/target/release/sparsecode"
out="$root/target/switch-vs-topk"
mkdir -p "$out"
py=python3
if ! $py -c "import numpy" 2>/dev/null; then
  [ -x "$root/target/numpy-venv/bin/python" ] || { python3 -m venv "$root/target/numpy-venv"; "$root/target/numpy-venv/bin/pip" install -q numpy; }
  py="$root/target/numpy-venv/bin/python"
fi
bench() { "$B" --threads "$threads" bench train --dims 768 --k 32 --json "$@" | tail -1; }

echo "# 1. 768 x 16384, batch 4096"
for a in "topk" "switch --experts 4" "switch --experts 16" "switch --experts 64"; do
  echo "$a: $(bench --arch $a --latents 16384 --batch 4096 --steps 5 --warmup 2)"
done
echo "# 2. latents, batch 1024"
for n in 16384 65536 262144 524288; do
  for a in "topk" "switch --experts 16" "switch --experts 64"; do
    echo "N=$n $a: $(bench --arch $a --latents $n --batch 1024 --steps 3 --warmup 1)"
  done
done
echo "N=262144 switch --experts 64, batch 4096: $(bench --arch switch --experts 64 --latents 262144 --batch 4096 --steps 3 --warmup 1)"

echo "# 3. held-out reconstruction, MiniLM block 3 over Moby-Dick"
store="$out/moby-minilm-3"
[ -f "$store/manifest.json" ] || "$B" --threads "$threads" harvest --model minilm --layer 3 \
  --corpus "$root/assets/text/moby-dick" --max-tokens 260000 --exclude-positions 1 --out "$store"
$py - "$store" "$out" <<'PY'
import glob, sys, numpy as np
store, out = sys.argv[1:3]
shards = [np.load(f) for f in sorted(glob.glob(f"{store}/shard-*.npy")) if "tokens" not in f]
np.save(f"{out}/train.npy", np.concatenate(shards[:-1]))
np.save(f"{out}/test.npy", shards[-1])
PY
for a in "topk" "switch --experts 4" "switch --experts 16" "switch --experts 64"; do
  name=$(echo "$a" | tr -d ' -')
  start=$(date +%s.%N)
  "$B" --threads "$threads" train --data "$out/train.npy" --arch $a --k 32 --latents 8192 \
    --batch 1024 --steps 3000 --lr-decay 600 --checkpoint-every 0 --log-every 500 --seed 0 \
    --out "$out/$name" --force 2>/dev/null
  end=$(date +%s.%N)
  echo "$a: train $(echo "$end - $start" | bc) s, held-out $("$B" --threads "$threads" eval --sae "$out/$name" --data "$out/test.npy" --json)"
done
