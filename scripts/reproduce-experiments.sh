#!/usr/bin/env bash
# Runs every experiment in its full (published-size) setting and writes the results to
# docs/results/NAME/ (results.md, results.json, SVG figures). Usage:
#   scripts/reproduce-experiments.sh [NAME ...]     (all of them by default; about two and a half hours on 2 cores; natural-images and fashion-mnist need scripts/fetch-assets images fashion-mnist)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cargo build --release --manifest-path "$root/Cargo.toml" >/dev/null 2>&1
S="$root/target/release/sparsecode --threads ${THREADS:-2}"
names=("$@")
[ ${#names[@]} -eq 0 ] && names=(amortisation toy-superposition sweep stability absorption cs-bound phase-transition scaling identifiability natural-images scenes fashion-mnist)
for name in "${names[@]}"; do
  start=$(date +%s)
  $S experiment "$name" --out "$root/docs/results/$name" --force
  echo "$name: $(( $(date +%s) - start )) s" >&2
done
