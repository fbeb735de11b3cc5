#!/usr/bin/env bash
# Throughput benchmarks on this machine (run on an otherwise idle machine: timings are wall clock).
# Prints tokens/s, MFU against the sgemm peak measured in the same run, and peak RSS for the
# tiny and ~20M recipes, then the per-op timings of the CPU backend.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
for recipe in recipes/tiny-moe.toml recipes/tiny-dense.toml recipes/moe-20m.toml; do
  "$BUILD/bench/bench_train" "$recipe" --steps "${STEPS:-20}"
done
"$BUILD/bench/bench_ops"
