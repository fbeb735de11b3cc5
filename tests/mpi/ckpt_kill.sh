#!/usr/bin/env bash
# ctest wrapper: SIGKILL one rank at one phase of a save (SY_FAULT_CKPT_KILL/RANK) and check that
# the job does not hang, that `latest` then names a checkpoint that verifies (the old one, or the
# new one once rank 0 got past the rename), and that a restarted job resumes and saves again.
# Usage: ckpt_kill.sh PHASE CKPT_RANKS_TEST SWITCHYARD MPIRUN [MPIRUN_ARGS...]
set -u
phase=$1 bin=$2 sy=$3
shift 3
fail=0
for rank in 0 1; do
  dir=$(mktemp -d)
  echo "== phase $phase, killed rank $rank, dir $dir"
  "$@" -np 2 "$bin" save "$dir" 1 || { echo "FAIL: the first save failed"; fail=1; }
  start=$(date +%s%N)
  out=$(SY_FAULT_CKPT_KILL=$phase SY_FAULT_CKPT_RANK=$rank timeout 60 "$@" -x SY_FAULT_CKPT_KILL -x SY_FAULT_CKPT_RANK \
        -np 2 "$bin" save "$dir" 2 2>&1)
  rc=$?
  ms=$(( ($(date +%s%N) - start) / 1000000 ))
  echo "$out" | grep -v '^ *$' | head -20
  echo "mpirun exit status $rc after $ms ms"
  if [ "$rc" -eq 0 ]; then echo "FAIL: expected a non-zero exit"; fail=1; fi
  if [ "$rc" -eq 124 ]; then echo "FAIL: mpirun hung"; fail=1; fi
  if [ "$ms" -gt 20000 ]; then echo "FAIL: took $ms ms, expected under 20 s"; fail=1; fi
  grep -q "SY_FAULT_CKPT_KILL=$phase: killing this rank" <<<"$out" || { echo "FAIL: the fault did not fire"; fail=1; }
  latest=$(cat "$dir/checkpoints/latest" 2>/dev/null)
  echo "latest: $latest; left: $(ls "$dir/checkpoints" | tr '\n' ' ')"
  # Rank 0 dying before `latest` is replaced must leave the old one; a rank other than 0 dying
  # after the agreement races with rank 0's commit, so either checkpoint is right.
  case "$phase:$rank" in
    writing:*|*:0) want=step_00000001 ;;
    *) want="" ;;
  esac
  if [ -n "$want" ] && [ "$latest" != "$want" ]; then echo "FAIL: latest is '$latest', expected $want"; fail=1; fi
  if [ "$latest" != step_00000001 ] && [ "$latest" != step_00000002 ]; then echo "FAIL: latest '$latest'"; fail=1; fi
  "$sy" ckpt verify "$dir/checkpoints/$latest" || { echo "FAIL: latest does not verify"; fail=1; }
  # A fresh job: stale tmp gone, resumes from a verified checkpoint, saves step 3.
  out=$("$@" -np 2 "$bin" resume "$dir" 3 2>&1) || { echo "$out"; echo "FAIL: resume-and-save failed"; fail=1; }
  echo "$out" | grep '^resume: ' || { echo "FAIL: no resume line"; fail=1; }
  ls "$dir/checkpoints" | grep -q '\.tmp$' && { echo "FAIL: a .tmp survived"; fail=1; }
  [ "$(cat "$dir/checkpoints/latest")" = step_00000003 ] || { echo "FAIL: step 3 not latest"; fail=1; }
  rm -rf "$dir"
done
[ "$fail" -eq 0 ] && echo "PASS"
exit "$fail"
