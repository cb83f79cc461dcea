#!/usr/bin/env bash
# Reproduces the numbers quoted for the core issue:
#  1. arXiv 2411.13117's known-dictionary setting (REFERENCE E2), 5 seeds: a bias-free linear+ReLU
#     encoder trained against the fixed true dictionary (loss MSE + 0.01 mean|z|, i.e. l1 = 0.01*M/N
#     in sparsecode's per-sample convention), ITO on it, and FISTA with the true dictionary.
#  2. A larger planted problem (N=512, M=128, K=5, 50k samples) with a TopK SAE.
# Usage: scripts/reproduce-core.sh [WORKDIR]   (about 4 minutes on 2 cores)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="${1:-$(mktemp -d)}"
mkdir -p "$work"
cargo build --release --manifest-path "$root/Cargo.toml" >/dev/null 2>&1
S="$root/target/release/sparsecode --threads 2"
mcc() { python3 -c "import json,sys; d=json.load(sys.stdin); print(' '.join(f'{d[k]:.4f}' if isinstance(d.get(k), float) else str(d.get(k)) for k in sys.argv[1:]))" "$@"; }

echo "E2 (N=16, M=8, K=3, 1024 train / 1024 test): code MCC on the test split"
echo "seed  SAE     SAE+ITO FISTA(true D)"
for seed in 0 1 2 3 4; do
  d="$work/e2-$seed"; r="$work/e2-run-$seed"
  $S synth --preset e2 --seed "$seed" --out "$d" --force 2>/dev/null
  $S train --data "$d/activations.npy" --arch relu --l1 0.005 --latents 16 --dictionary "$d/dictionary.npy" \
    --freeze-decoder --no-bias --encoder-init fan-in-uniform --batch 1024 --steps 20000 --lr 1e-3 \
    --checkpoint-every 0 --seed "$seed" --out "$r" --force 2>/dev/null
  sae=$($S eval --sae "$r" --data "$d/test_activations.npy" --truth "$d" --json | mcc code_mcc)
  $S encode --sae "$r" --method ito --lambda 0.001 --max-iter 5000 --tol 1e-7 --data "$d/test_activations.npy" --out "$work/ito-$seed.npy" --force 2>/dev/null
  ito=$($S eval --codes "$work/ito-$seed.npy" --dictionary "$d/dictionary.npy" --data "$d/test_activations.npy" --truth "$d" --json | mcc code_mcc)
  $S encode --dictionary "$d/dictionary.npy" --method fista --nonneg --lambda 0.001 --max-iter 5000 --tol 1e-7 --data "$d/test_activations.npy" --out "$work/fista-$seed.npy" --force 2>/dev/null
  fis=$($S eval --codes "$work/fista-$seed.npy" --dictionary "$d/dictionary.npy" --data "$d/test_activations.npy" --truth "$d" --json | mcc code_mcc)
  echo "$seed     $sae  $ito  $fis"
done

echo
echo "Planted N=512, M=128, K=5, 50k train / 10k test; TopK SAE k=5, 512 latents"
d="$work/big"; r="$work/big-run"
$S synth --latents 512 --dims 128 --active 5 --samples 50000 --test-samples 10000 --seed 0 --out "$d" --force 2>/dev/null
$S train --data "$d/activations.npy" --arch topk --k 5 --latents 512 --epochs 400 --batch 512 --lr 1e-3 \
  --lr-decay 20000 --dead-window 100000 --seed 0 --out "$r" --force 2>/dev/null
echo "split  code_mcc dict_mcc recovered@0.9 recovered@0.99 fvu l0"
for split in activations test_activations; do
  echo "$split $($S eval --sae "$r" --data "$d/$split.npy" --truth "$d" --json | mcc code_mcc dict_mcc dict_recovered_090 dict_recovered_099 fvu l0)"
done
