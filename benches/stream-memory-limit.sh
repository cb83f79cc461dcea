#!/usr/bin/env bash
# Streams an activation store three times larger than a memory limit and compares training
# throughput with the same model trained on in-memory data. Linux only; needs root for a
# cgroup-v1 (or v2) memory limit and to drop the page cache. Appends its table to BENCHMARKS.md.
# Usage: benches/stream-memory-limit.sh [LIMIT_MIB (default 1024)] [WORKDIR]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
limit_mib="${1:-1024}"
work="${2:-$root/target/stream-bench}"
S="$root/target/release/sparsecode"
cargo build --release --manifest-path "$root/Cargo.toml" >/dev/null 2>&1
mkdir -p "$work"
dims=768; latents=4096; k=32; batch=4096; steps=60
rows=$(( 3 * limit_mib * 1024 * 1024 / (dims * 4) ))       # an f32 store 3x the limit
mem_rows=$(( 256 * 1024 * 1024 / (dims * 4) ))              # in-memory baseline: 256 MiB

if [ ! -f "$work/store/manifest.json" ]; then
  "$S" bench random-data --rows "$rows" --dims $dims --out "$work/store" --seed 1 --force
fi
[ -f "$work/small.npy" ] || "$S" bench random-data --rows "$mem_rows" --dims $dims --out "$work/small.npy" --seed 2

# A memory cgroup for the streamed run.
cg=""
if [ -d /sys/fs/cgroup/memory ]; then
  base="/sys/fs/cgroup/memory$(grep ':memory:' /proc/self/cgroup | cut -d: -f3)"
  cg="$base/sparsecode-bench"; mkdir -p "$cg"
  echo $(( limit_mib * 1024 * 1024 )) > "$cg/memory.limit_in_bytes"
  limit_file="$cg/memory.max_usage_in_bytes"
elif [ -f /sys/fs/cgroup/cgroup.controllers ]; then
  base="/sys/fs/cgroup$(grep '^0::' /proc/self/cgroup | cut -d: -f3)"
  cg="$base/sparsecode-bench"; mkdir -p "$cg"
  echo $(( limit_mib * 1024 * 1024 )) > "$cg/memory.max"
  limit_file="$cg/memory.peak"
else
  echo "no memory cgroup available: cannot enforce the limit" >&2; exit 1
fi

run() { # run NAME [in-cgroup] DATA-ARGS... -> prints samples/s
  local name="$1"; shift
  local prefix=()
  if [ "$1" = in-cgroup ]; then
    prefix=(sh -c 'echo $$ > "$0"/cgroup.procs && exec "$@"' "$cg"); shift
  fi
  rm -rf "$work/run-$name" "$work/run-$name.partial"
  sync; echo 3 > /proc/sys/vm/drop_caches
  "${prefix[@]}" "$S" --threads 2 train "$@" --arch topk --k $k --latents $latents --steps $steps \
      --batch $batch --checkpoint-every 0 --out "$work/run-$name" 2>/dev/null
  python3 -c "import json; print(round(json.load(open('$work/run-$name/run.json'))['timings']['samples_per_s']))"
}

mem=(); str=()
for rep in 1 2 3; do
  mem+=("$(run mem --data "$work/small.npy")")
  str+=("$(run str in-cgroup --store "$work/store" --shuffle-rows 32768)")
done
peak=$(cat "$limit_file")
med() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
m=$(med "${mem[@]}"); s=$(med "${str[@]}")
store_mib=$(du -sm "$work/store" | cut -f1)
table=$(cat <<MD

## Streaming a store larger than memory ($(date +%F))

TopK SAE (d_in $dims, $latents latents, k $k, batch $batch, $steps steps, 2 threads), page cache
dropped before each run. The streamed run is confined to a ${limit_mib} MiB memory cgroup and reads a
${store_mib} MiB f32 store ($rows rows); the baseline trains on 256 MiB of rows held in memory.
Medians of 3 alternating runs. Reproduce with \`benches/stream-memory-limit.sh $limit_mib\`.

| data | samples/s (median) | runs | peak memory of the cgroup |
|---|---|---|---|
| in memory (.npy) | $(printf '%.0f' "$m") | ${mem[*]} | - |
| streamed store, ${limit_mib} MiB limit | $(printf '%.0f' "$s") | ${str[*]} | $(( peak / 1024 / 1024 )) MiB |

Streaming keeps **$(python3 -c "print(f'{100*$s/$m:.0f}')")%** of the in-memory throughput.
MD
)
echo "$table"
# Replace an older streaming section, keep everything else.
if [ -f "$root/BENCHMARKS.md" ]; then
  python3 - "$root/BENCHMARKS.md" <<'PY'
import sys
p = sys.argv[1]
s = open(p).read()
at = s.find("\n## Streaming a store")
open(p, "w").write(s[:at] if at >= 0 else s)
PY
fi
echo "$table" >> "$root/BENCHMARKS.md"
rmdir "$cg" 2>/dev/null || true
