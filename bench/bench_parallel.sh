#!/usr/bin/env bash
# Expert-parallel throughput on CPU ranks: tokens/s of the tiny and fine-grained recipes at
# ep = 1, 2, 4, 8 (one rank per EP rank, all on this machine's cores), the all-to-all bytes
# exchanged per step and the share of the step spent inside the exchanges.
# Usage: scripts/bench_ep.sh [STEPS]   (run on an otherwise idle machine)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
STEPS=${1:-6}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf '%-18s %3s %10s %14s %12s %10s %14s\n' recipe ep tokens/s "a2a MB/step" "a2a s/step" "a2a share" "params MB/rank"
for recipe in tiny-moe fine-grained-moe; do
  for ep in 1 2 4 8; do
    out="$tmp/$recipe-$ep"
    mpirun --oversubscribe --bind-to none --mca btl self,vader -quiet -np "$ep" "$BUILD/switchyard" train "recipes/$recipe.toml" \
      --set parallel.ep="$ep" --set train.steps="$STEPS" --set train.log_every=1 --set train.eval_every=0 \
      --set train.eval_batches=1 --set train.max_minutes=0 --set train.out_dir="$out" > "$out.log" 2>&1
    tokens_step=$(grep -o '[0-9]* tokens/step' "$out.log" | head -1 | cut -d' ' -f1)
    # Means over the steps after the first (start-up), from metrics.jsonl.
    python3 - "$out/metrics.jsonl" "$recipe" "$ep" "$tokens_step" "$out/memory.rank0.json" <<'PY'
import json, sys
params_mb = json.load(open(sys.argv[5]))["parameter_bytes"] / 1e6
recs = [json.loads(l) for l in open(sys.argv[1])][1:]
n = len(recs)
step_s = sum(int(sys.argv[4]) / r["tokens_per_s"] for r in recs) / n
mb = sum(r.get("a2a_bytes", 0) for r in recs) / n / 1e6
a2a_s = sum(r.get("a2a_seconds", 0.0) for r in recs) / n
print(f"{sys.argv[2]:<18} {sys.argv[3]:>3} {int(sys.argv[4]) / step_s:10.0f} {mb:14.2f} {a2a_s:12.3f} {100 * a2a_s / step_s:9.1f}% {params_mb:14.2f}")
PY
  done
done
