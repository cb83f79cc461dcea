#!/usr/bin/env bash
# Times `bench train` at the three standard shapes with two builds, alternating, and prints the
# median samples/s of each: "is this build slower than that one?" on the same machine, same run.
# Usage: benches/compare-builds.sh OLD_BINARY NEW_BINARY [ROUNDS] [ARCHS]
set -euo pipefail
old="$1"; new="$2"; rounds="${3:-3}"; archs="${4:-topk relu}"
shapes=("768 16384 32 4096" "384 6144 32 4096" "576 36864 64 2048")
median() { python3 -c "import statistics,sys; print(f'{statistics.median(map(float, sys.argv[1:])):.0f}')" "$@"; }
echo "| arch | M | N | k | batch | old samples/s | new samples/s | new/old |"
echo "|---|---|---|---|---|---|---|---|"
for arch in $archs; do
  for shape in "${shapes[@]}"; do
    set -- $shape
    a=(); b=()
    for _ in $(seq "$rounds"); do
      for which in old new; do
        bin=$old; [ "$which" = new ] && bin=$new
        v=$($bin --threads 2 bench train --arch "$arch" --dims "$1" --latents "$2" --k "$3" --batch "$4" --steps 5 --warmup 2 --json \
          | python3 -c "import json,sys; print(json.load(sys.stdin)['samples_per_s'])")
        if [ "$which" = old ]; then a+=("$v"); else b+=("$v"); fi
      done
    done
    mo=$(median "${a[@]}"); mn=$(median "${b[@]}")
    echo "| $arch | $1 | $2 | $3 | $4 | $mo (${a[*]%.*}) | $mn (${b[*]%.*}) | $(python3 -c "print(f'{$mn/$mo:.3f}')") |"
  done
done
