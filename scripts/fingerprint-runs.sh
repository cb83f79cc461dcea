#!/usr/bin/env bash
# Prints the SHA-256 of the weights of a TopK, ReLU, JumpReLU, BatchTopK, gated and MLP training run and of a
# `learn` run, each with every setting spelled out (no defaults that may change), so that two
# builds can be compared byte for byte: same seed, same threads, same bytes.
# Usage: scripts/fingerprint-runs.sh [BINARY] [WORKDIR]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${1:-$root/target/release/sparsecode}"
work="${2:-$(mktemp -d)}"
S="$bin --threads 2"
$S synth --latents 256 --dims 64 --active 4 --samples 8192 --test-samples 1024 --seed 0 --out "$work/planted" --force 2>/dev/null
# The old settings: no input normalisation, an explicit budget and learning rate.
if $S train --help | grep -q -- '--normalize'; then norm="--normalize none"; else norm=""; fi
common="--data $work/planted/activations.npy --latents 256 --steps 300 --batch 512 --lr 1e-3 --seed 0 --checkpoint-every 0 --dead-window 100000 --force $norm"
$S train $common --arch topk --k 4 --aux-k 32 --out "$work/topk" 2>/dev/null
$S train $common --arch relu --l1 0.3 --out "$work/relu" 2>/dev/null
$S train $common --arch jumprelu --l0 0.05 --out "$work/jumprelu" 2>/dev/null
$S train $common --arch batchtopk --k 4 --aux-k 32 --out "$work/batchtopk" 2>/dev/null
$S train $common --arch gated --l1 0.3 --out "$work/gated" 2>/dev/null
$S train $common --arch mlp --l1 0.3 --hidden 128 --out "$work/mlp" 2>/dev/null
$S learn --data "$work/planted/activations.npy" --atoms 256 --lambda 0.05 --max-iter 30 --restarts 1 --seed 0 --out "$work/learn" --force 2>/dev/null
for r in topk relu jumprelu batchtopk gated mlp; do
  echo "$r $(sha256sum "$work/$r/sae_weights.safetensors" | cut -c1-16)"
done
echo "learn-dictionary $(sha256sum "$work/learn/dictionary.npy" | cut -c1-16)"
echo "learn-codes $(sha256sum "$work/learn/codes.npy" | cut -c1-16)"
