#!/usr/bin/env bash
# ctest wrapper for stall_test.cpp: a rank stopped with SIGSTOP must make the other two fail with a
# CommTimeout within seconds, not hang the job.
# Usage: expect_stall.sh STALL_BINARY MPIRUN [MPIRUN_ARGS...]
set -u
bin=$1
shift
pids=$(mktemp -d)
trap 'rm -rf "$pids"' EXIT

start=$(date +%s%N)
out=$(timeout 60 "$@" -np 3 "$bin" "$pids" 2>&1)
rc=$?
ms=$(( ($(date +%s%N) - start) / 1000000 ))
elapsed=$(printf "%d.%03d" $((ms / 1000)) $((ms % 1000)))
echo "$out"
echo "mpirun exit status $rc after ${elapsed} s"

# mpirun should have ended the stopped rank when the others failed; kill any survivor by its pid,
# checking that the pid still belongs to this program.
for f in "$pids"/rank*.pid; do
  [ -e "$f" ] || continue
  pid=$(cat "$f")
  if [ -e "/proc/$pid" ] && grep -qF "$(basename "$bin")" "/proc/$pid/cmdline" 2>/dev/null; then
    echo "note: $(basename "$f" .pid) (pid $pid) outlived mpirun; killing it"
    kill -KILL "$pid" 2>/dev/null
  fi
done

fail=0
if [ "$rc" -eq 0 ]; then echo "FAIL: expected a non-zero exit"; fail=1; fi
if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then echo "FAIL: mpirun hung until the 60 s timeout"; fail=1; fi
if [ "$ms" -gt 15000 ]; then echo "FAIL: took ${elapsed} s, expected under 15 s"; fail=1; fi
for r in 0 1; do
  want="rank $r: all_reduce on group dp (world ranks 0,1,2) timed out after 3.0 s: world rank(s) 2 did not arrive"
  if ! grep -qxF "$want" <<<"$out"; then echo "FAIL: missing line: $want"; fail=1; fi
done
[ "$fail" -eq 0 ] && echo "PASS"
exit "$fail"
