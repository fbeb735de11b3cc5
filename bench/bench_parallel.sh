#!/usr/bin/env bash
# Expert- and tensor-parallel throughput on CPU ranks, all on this machine's cores (so a layout's
# tokens/s is bounded by the same 2 cores at every size: the point is the exchange cost).
#   bench/bench_parallel.sh ep [STEPS]  tiny and fine-grained recipes at ep = 1, 2, 4, 8: tokens/s,
#                                       all-to-all bytes per step (all ranks), time in exchanges
#   bench/bench_parallel.sh tp [STEPS]  tiny and ~20M recipes at tp = 1, 2, 4, sp off and on:
#                                       tokens/s, TP bytes per step sent by one rank
#   bench/bench_parallel.sh pp [STEPS]  tiny recipe at pp = 2 and 4, vpp = 1 and 2, m = 8 and 16
#                                       micro-batches: tokens/s, the idle share per stage measured
#                                       from the engine's timestamps (the bubble) against the theory
#                                       (p-1)/(v*m+p-1), micro-batches in flight on stage 0
# Means over the steps after the first (start-up), from metrics.jsonl. Run on an idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
MODE=${1:?usage: bench/bench_parallel.sh ep|tp|pp [STEPS]}
STEPS=${2:-6}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# run_one RECIPE RANKS LABEL --set ...: one run, one table row.
run_one() {
  local recipe=$1 ranks=$2 label=$3
  shift 3
  local out="$tmp/$recipe-${label//\//-}"
  mpirun --oversubscribe --bind-to none --mca btl self,vader -quiet -np "$ranks" "$BUILD/switchyard" train \
    "recipes/$recipe.toml" "$@" --set train.steps="$STEPS" --set train.log_every=1 --set train.eval_every=0 \
    --set train.eval_batches=1 --set train.max_minutes=0 --set train.out_dir="$out" > "$out.log" 2>&1
  local tokens_step
  tokens_step=$(grep -o '[0-9]* tokens/step' "$out.log" | head -1 | cut -d' ' -f1)
  python3 - "$out/metrics.jsonl" "$recipe" "$label" "$tokens_step" "$out/memory.rank0.json" "$MODE" <<'PY'
import json, sys
path, recipe, label, tokens, mem, mode = sys.argv[1:]
tokens = int(tokens)
mem = json.load(open(mem))
recs = [json.loads(l) for l in open(path)][1:]
n = len(recs)
step_s = sum(tokens / r["tokens_per_s"] for r in recs) / n
if mode == "ep":
    mb = sum(r.get("a2a_bytes", 0) for r in recs) / n / 1e6
    a2a_s = sum(r.get("a2a_seconds", 0.0) for r in recs) / n
    print(f"{recipe:<18} {label:>6} {tokens / step_s:10.0f} {mb:14.2f} {a2a_s:12.3f} {100 * a2a_s / step_s:9.1f}% "
          f"{mem['parameter_bytes'] / 1e6:14.2f}")
elif mode == "pp":
    p, v, m = (int(x) for x in label.split("/"))
    idle = [sum(r["pp_idle_by_stage"][s] for r in recs) / n for s in range(p)]
    theory = (p - 1) / (v * m + p - 1)
    flight = max(r["pp_in_flight_by_stage"][0] for r in recs)
    print(f"{recipe:<18} {label:>9} {tokens / step_s:10.0f} {theory:8.3f} "
          f"{' '.join(f'{x:.3f}' for x in idle):>30} {sum(idle) / p:9.3f} {flight:9d}")
else:
    mb = sum(max(r.get("tp_bytes", 0), 0) for r in recs) / n / 1e6
    print(f"{recipe:<18} {label:>9} {tokens / step_s:10.0f} {mb:16.2f} {mem['parameter_bytes'] / 1e6:14.2f} "
          f"{mem['peak_bytes'].get('activations', 0) / 1e6:16.2f}")
PY
}

if [ "$MODE" = ep ]; then
  printf '%-18s %6s %10s %14s %12s %10s %14s\n' recipe ep tokens/s "a2a MB/step" "a2a s/step" "a2a share" "params MB/rank"
  for recipe in tiny-moe fine-grained-moe; do
    for ep in 1 2 4 8; do run_one "$recipe" "$ep" "$ep" --set parallel.ep="$ep"; done
  done
elif [ "$MODE" = tp ]; then
  printf '%-18s %9s %10s %16s %14s %16s\n' recipe tp tokens/s "TP MB/step/rank" "params MB/rank" "act peak MB/rank"
  for recipe in tiny-moe moe-20m; do
    run_one "$recipe" 1 1
    for tp in 2 4; do
      for sp in false true; do
        label="$tp"; [ "$sp" = true ] && label="$tp+sp"
        run_one "$recipe" "$tp" "$label" --set parallel.tp="$tp" --set parallel.sp="$sp"
      done
    done
  done
elif [ "$MODE" = pp ]; then
  # One sequence per micro-batch, so that m micro-batches are m sequences; 8 layers (pp x vpp <= 8).
  printf '%-18s %9s %10s %8s %30s %9s %9s\n' recipe "p/v/m" tokens/s theory "idle share per stage" "mean" "stage0 mb"
  for pp in 2 4; do
    for vpp in 1 2; do
      for m in 8 16; do
        run_one tiny-moe "$pp" "$pp/$vpp/$m" --set parallel.pp="$pp" --set parallel.vpp="$vpp" \
          --set train.grad_accum="$m" --set train.micro_batch=1 --set model.n_layers=8
      done
    done
  done
else
  echo "bench/bench_parallel.sh: unknown mode '$MODE'; use ep, tp or pp" >&2
  exit 2
fi
