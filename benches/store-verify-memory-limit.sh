#!/usr/bin/env bash
# The cost of checking a store's chunk hashes while training reads it, on a store three times
# larger than a memory cgroup (so every page comes from disk, and hashing whole shards up front
# would read the store twice): `train --store` with the check (default) and with --no-verify,
# page cache dropped before each run, three runs each. Linux only; needs root (cgroup v2 or v1
# memory limit, drop_caches). Prints a Markdown table.
# Usage: benches/store-verify-memory-limit.sh [LIMIT_MIB (default 1024)] [WORKDIR] [BINARY]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
limit_mib="${1:-1024}"
work="${2:-$root/target/verify-bench}"
S="${3:-$root/target/release/sparsecode}"
mkdir -p "$work"
dims=768; latents=512; k=16; batch=4096
rows=$(( 3 * limit_mib * 1024 * 1024 / (dims * 4) ))       # an f32 store 3x the limit
steps=$(( rows / batch ))                                   # one pass over the store
[ -f "$work/store/manifest.json" ] || "$S" bench random-data --rows "$rows" --dims $dims --out "$work/store" --seed 1 --force

if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
  cg="/sys/fs/cgroup$(grep '^0::' /proc/self/cgroup | cut -d: -f3)/sparsecode-verify"; mkdir -p "$cg"
  echo $(( limit_mib * 1024 * 1024 )) > "$cg/memory.max"
elif [ -d /sys/fs/cgroup/memory ]; then
  cg="/sys/fs/cgroup/memory$(grep ':memory:' /proc/self/cgroup | cut -d: -f3)/sparsecode-verify"; mkdir -p "$cg"
  echo $(( limit_mib * 1024 * 1024 )) > "$cg/memory.limit_in_bytes"
else
  echo "no memory cgroup available: cannot enforce the limit" >&2; exit 1
fi

run() { # run NAME [EXTRA...] -> seconds of the whole run
  local name="$1"; shift
  rm -rf "$work/run-$name" "$work/run-$name.partial"
  sync; echo 3 > /proc/sys/vm/drop_caches
  local t0; t0=$(date +%s%N)
  sh -c 'echo $$ > "$0"/cgroup.procs && exec "$@"' "$cg" "$S" --threads 2 train --store "$work/store" \
    --shuffle-rows 32768 --arch topk --k $k --latents $latents --steps $steps --batch $batch \
    --checkpoint-every 0 --out "$work/run-$name" "$@" 2>/dev/null >/dev/null
  awk -v e="$(( ($(date +%s%N) - t0) / 1000000 ))" 'BEGIN {printf "%.2f\n", e / 1000}'
}

on=(); off=()
for rep in 1 2 3; do
  on+=("$(run on)")
  off+=("$(run off --no-verify)")
done
med() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
a=$(med "${on[@]}"); b=$(med "${off[@]}")
echo "| store | limit | steps x batch | checked s (3 runs) | --no-verify s (3 runs) | median ratio |"
echo "|---|---|---|---|---|---|"
echo "| $(du -sm "$work/store" | cut -f1) MiB | ${limit_mib} MiB | $steps x $batch | ${on[*]} | ${off[*]} | $(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.3f", a / b}') |"
