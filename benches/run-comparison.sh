#!/usr/bin/env bash
# Benchmarks sparsecode against PyTorch (CPU) and scikit-learn on this machine and writes
# BENCHMARKS.md. Creates its own Python venv under target/bench-venv (torch, scikit-learn,
# threadpoolctl, transformers, gguf and accelerate (transformers' GGUF loading) from PyPI; a few GB because
# PyPI's torch wheel pulls its CUDA runtime libraries).
# Usage: benches/run-comparison.sh [--threads T] [--repeats R] [--quick]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/target/bench-venv"
cargo build --release --manifest-path "$root/Cargo.toml"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q numpy scikit-learn threadpoolctl torch transformers safetensors gguf accelerate
fi
"$venv/bin/python" -c "import transformers, gguf, accelerate" 2>/dev/null || "$venv/bin/pip" install -q transformers safetensors gguf accelerate
exec "$venv/bin/python" "$root/benches/run_comparison.py" "$@"
