#!/usr/bin/env bash
# On a machine with an NVIDIA GPU (docs/cuda.md): builds the nvcc targets, runs the kernel and
# backend tests against the CPU ops on the device, runs compute-sanitizer's memcheck and racecheck
# over the kernel tests, and runs the benchmark, appending its row with the device, date and
# commit to bench/RESULTS.md, and PyTorch eager's row on the same recipe and batch beside it
# (bench/cuda/torch_eager.py; skipped, with a message, when $PYTHON has no CUDA-enabled torch).
#   scripts/gpu-check.sh                 # everything
#   STEPS=5 CUDA_ARCHS=90 PYTHON=~/venv/bin/python scripts/gpu-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build-gpu}
SAN=${COMPUTE_SANITIZER:-$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)}

if ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu-check: no NVIDIA GPU here (nvidia-smi -L failed); the emulator tests in 'make test' are what runs without one" >&2
  exit 2
fi
nvidia-smi -L

cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release ${CUDA_ARCHS:+-DCMAKE_CUDA_ARCHITECTURES=$CUDA_ARCHS}
cmake --build "$BUILD" -j "$(nproc)" --target sy_cuda_gpu_tests bench_cuda

echo "== kernel and backend tests on the device, against the CPU backend"
"$BUILD/sy_cuda_gpu_tests"

# The sanitizers slow kernels down 10-100x: the kernel tests only, not the whole-model ones.
KERNELS='Cuda*:-CudaBackendTest.TinyRecipe*'
echo "== compute-sanitizer memcheck"
"$SAN" --tool memcheck --leak-check full --error-exitcode 1 "$BUILD/sy_cuda_gpu_tests" --gtest_filter="$KERNELS"
echo "== compute-sanitizer racecheck (shared memory hazards)"
"$SAN" --tool racecheck --racecheck-report hazard --error-exitcode 1 "$BUILD/sy_cuda_gpu_tests" --gtest_filter="$KERNELS"

# The trainer on NCCL needs two GPUs (NCCL refuses two ranks on one device): dp 2 over NCCL
# against one GPU with the same global batch (two micro-batches), 5 steps, float32, every loss
# within 1e-5 relative, and the NCCL communicator's own multi-rank tests.
NGPU=$(nvidia-smi -L | wc -l)
if [ "$NGPU" -ge 2 ] && command -v mpirun >/dev/null; then
  echo "== the NCCL communicator and the trainer on it, $NGPU GPUs"
  cmake --build "$BUILD" -j "$(nproc)" --target switchyard sy_mpi_nccl_gpu_tests
  MPI="mpirun --oversubscribe -np"
  $MPI "$NGPU" "$BUILD/sy_mpi_nccl_gpu_tests"
  out=$(mktemp -d)
  test -f data/fortunes.train.tok || "$BUILD/switchyard" data prepare --fortunes --out data/fortunes
  run=(train recipes/tiny-moe.toml --set engine.device=cuda --set train.steps=5 --set train.log_every=1
       --set train.eval_every=0 --set checkpoint.every_steps=0 --set train.max_minutes=0)
  "$BUILD/switchyard" "${run[@]}" --set train.grad_accum=2 --set train.out_dir="$out/one"
  $MPI 2 "$BUILD/switchyard" "${run[@]}" --set parallel.comm=nccl --set train.out_dir="$out/nccl"
  python3 - "$out/one/metrics.jsonl" "$out/nccl/metrics.jsonl" <<'PY'
import json, sys
a, b = ([json.loads(l)["loss"] for l in open(f)] for f in sys.argv[1:])
bad = [(i + 1, x, y) for i, (x, y) in enumerate(zip(a, b)) if abs(x - y) > 1e-5 * abs(x)]
assert len(a) == len(b) == 5 and not bad, f"dp 2 over NCCL differs from one GPU: {bad or (len(a), len(b))}"
print("gpu-check: dp 2 over NCCL matches one GPU:", ", ".join(f"{x:.6f}/{y:.6f}" for x, y in zip(a, b)))
PY
else
  echo "gpu-check: $NGPU GPU(s) or no mpirun: the trainer on NCCL is not run (it needs two GPUs)"
fi
echo "== benchmark"
RECIPE=${RECIPE:-bench/cuda/moe-1b.toml}
row=$("$BUILD/bench/bench_cuda" "$RECIPE" --steps "${STEPS:-10}")
echo "$row"
if ! grep -q "^## GPU benchmark" bench/RESULTS.md; then
  cat >> bench/RESULTS.md <<'HDR'

## GPU benchmark (`scripts/gpu-check.sh`: random tokens; rows whose recipe names no engine are Switchyard's CUDA backend in float32, PyTorch eager's rows say so)

| date | device | commit | recipe | params | tokens/step | tokens/s | MFU vs 989 TF/s | MFU vs measured cuBLAS peak | peak device memory |
|---|---|---|---|---|---|---|---|---|---|
HDR
fi
echo "$row" >> bench/RESULTS.md

# The baseline: the same [model], micro-batch and step count in PyTorch eager (bf16 autocast).
echo "== PyTorch eager on the same recipe and batch"
PYTHON=${PYTHON:-python3}
if "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  trow=$("$PYTHON" bench/cuda/torch_eager.py "$RECIPE" --steps "${STEPS:-10}")
  echo "$trow"
  echo "$trow" >> bench/RESULTS.md
  echo "gpu-check: all passed; the benchmark rows (Switchyard, PyTorch eager) are in bench/RESULTS.md"
else
  echo "gpu-check: $PYTHON has no CUDA-enabled torch: no PyTorch eager row (set PYTHON=...)" >&2
  echo "gpu-check: all passed; the benchmark row is in bench/RESULTS.md"
fi
