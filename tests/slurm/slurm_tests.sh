#!/usr/bin/env bash
# ctest: `switchyard sbatch` on a real one-node Slurm cluster (tests/slurm/cluster.sh), started for
# the test and stopped (by process id) however it ends. If the cluster cannot start, the test fails
# with the reason. Three jobs, each compared bit for bit with an uninterrupted mpirun run:
#   1. a 2-rank job submitted with --submit
#   2. a job whose --time is too short: warned (USR1) before the limit, it saves, is requeued,
#      resumes and finishes
#   3. a job sent `scancel --signal=USR1` mid-run: likewise
# Usage: slurm_tests.sh WORK_DIR SWITCHYARD SOURCE_DIR MPIRUN [MPIRUN_ARGS...]
set -u
work=$1 sy=$2 src=$3
shift 3
here=$(cd "$(dirname "$0")" && pwd)
source "$here/cluster.sh"
trap cluster_stop EXIT
rm -rf "$work"
mkdir -p "$work"
cluster_start "$work/cluster" || exit 1
cd "$work" || exit 1
"$sy" data prepare --fortunes --out "$work/fortunes" >/dev/null || { echo "FAIL: data prepare"; exit 1; }
recipe=$src/tests/recipes/tiny-test.toml
data="--set data.train=$work/fortunes.train.tok --set data.val=$work/fortunes.val.tok"
fail=0

losses() { grep -o '"loss":[^,]*' "$1/metrics.jsonl" 2>/dev/null; }

# The uninterrupted reference under mpirun.
mpirun_ref() {  # NAME STEPS
  "${MPIRUN[@]}" -np 2 "$sy" train "$recipe" $data --set train.steps=$2 --set train.out_dir="$work/$1" \
    >"$work/$1.log" 2>&1 || { echo "FAIL: reference run $1: $(tail -3 "$work/$1.log")"; fail=1; }
}
MPIRUN=("$@")

job_field() { scontrol show job "$1" 2>/dev/null | grep -o "$2=[^ ]*" | head -1 | cut -d= -f2; }

# Waits for job $1 to end (at most $2 s), moving a requeued job's start to now instead of the two
# minutes Slurm makes it wait -- once the previous run's slurmstepd processes are gone: a new run
# started while they still clean up collides with them (its step fails to launch). Prints the
# final state.
wait_job() {
  local id=$1 limit=$2 start=$SECONDS state reason
  while [ $((SECONDS - start)) -lt "$limit" ]; do
    state=$(job_field "$id" JobState)
    reason=$(job_field "$id" Reason)
    case "$state" in
      COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY|BOOT_FAIL|DEADLINE) echo "$state"; return ;;
      PENDING)
        if [ "$reason" = BeginTime ] && ! pgrep -f "^slurmstepd: \\[$id\\." >/dev/null; then
          sleep 2
          scontrol update JobId="$id" StartTime=now >/dev/null 2>&1
        fi ;;
    esac
    sleep 1
  done
  echo "TIMED_OUT_WAITING($state)"
}

submit() {  # NAME TIME [ENV...] -- [SBATCH ARGS...]; prints the job id
  local name=$1 time=$2
  shift 2
  local env=()
  while [ "$1" != -- ]; do env+=("$1"); shift; done
  shift
  local out
  out=$(env "${env[@]}" "$sy" sbatch "$recipe" --tasks-per-node 2 --time "$time" --job-name "$name" --submit $data "$@" 2>&1)
  echo "$out" >&2
  grep -o 'Submitted batch job [0-9]*' <<<"$out" | awk '{print $4}'
}

check_same() {  # TEST JOB_DIR REF_DIR STEPS
  local n
  n=$(losses "$2" | wc -l)
  if [ "$n" -ne "$4" ]; then echo "FAIL: $1: $n loss records in $2, expected $4"; fail=1; return; fi
  if ! diff <(losses "$2") <(losses "$3") >/dev/null; then echo "FAIL: $1: losses differ from the mpirun run"; fail=1; return; fi
  echo "ok: $1: $4 losses equal the uninterrupted mpirun -np 2 run bit for bit"
}

# 1. sbatch --submit, 2 ranks, against mpirun -np 2.
mpirun_ref ref20 20
t0=$SECONDS
id=$(submit sb2 00:05:00 -- --set train.steps=20)
if [ -z "$id" ]; then echo "FAIL: 1: sbatch did not submit"; fail=1; else
  state=$(wait_job "$id" 120)
  echo "1: job $id ended $state after $((SECONDS - t0)) s"
  [ "$state" = COMPLETED ] || { echo "FAIL: 1: job state $state"; cat "$work/runs/sb2/slurm-sb2.out"; fail=1; }
  check_same "1 sbatch --submit" "$work/runs/sb2" "$work/ref20" 20
fi

# 2. Time limit: 300 steps of >= 0.25 s cannot finish in --time 1:00, so only the USR1 warning
#    (launch.preempt_grace_s=40 before the limit), a save, a requeue and a resume get it through.
mpirun_ref ref300 300
t0=$SECONDS
id=$(submit tl 00:01:00 SY_TEST_STEP_DELAY_MS=250 -- --set train.steps=300 --set launch.preempt_grace_s=40)
if [ -z "$id" ]; then echo "FAIL: 2: sbatch did not submit"; fail=1; else
  state=$(wait_job "$id" 420)
  log=$work/runs/tl/slurm-tl.out
  echo "2: job $id ended $state after $((SECONDS - t0)) s, restarts $(job_field "$id" Restarts)"
  grep -E '^switchyard (sbatch|run)|preempted|resumed from' "$log" | cut -c1-160
  [ "$state" = COMPLETED ] || { echo "FAIL: 2: job state $state"; fail=1; }
  grep -q "switchyard sbatch: preempted with a checkpoint saved; requeueing job $id" "$log" || { echo "FAIL: 2: no requeue"; fail=1; }
  grep -q "resumed from" "$log" || { echo "FAIL: 2: the requeued job did not resume"; fail=1; }
  [ "$(job_field "$id" Restarts)" -ge 1 ] 2>/dev/null || { echo "FAIL: 2: Slurm counted no restart"; fail=1; }
  check_same "2 time limit, requeue" "$work/runs/tl" "$work/ref300" 300
fi

# 3. scancel --signal=USR1 in the middle of a run.
t0=$SECONDS
id=$(submit us 00:10:00 SY_TEST_STEP_DELAY_MS=100 -- --set train.steps=300)
if [ -z "$id" ]; then echo "FAIL: 3: sbatch did not submit"; fail=1; else
  for _ in $(seq 300); do [ "$(losses "$work/runs/us" | wc -l)" -ge 60 ] && break; sleep 0.5; done
  scancel --signal=USR1 "$id"
  echo "3: sent USR1 to job $id at step $(losses "$work/runs/us" | wc -l)"
  state=$(wait_job "$id" 300)
  log=$work/runs/us/slurm-us.out
  echo "3: job $id ended $state after $((SECONDS - t0)) s, restarts $(job_field "$id" Restarts)"
  grep -E '^switchyard (sbatch|run)|preempted|resumed from' "$log" | cut -c1-160
  [ "$state" = COMPLETED ] || { echo "FAIL: 3: job state $state"; fail=1; }
  grep -q "requeueing job $id" "$log" || { echo "FAIL: 3: no requeue"; fail=1; }
  grep -q "resumed from" "$log" || { echo "FAIL: 3: the requeued job did not resume"; fail=1; }
  check_same "3 scancel --signal=USR1, requeue" "$work/runs/us" "$work/ref300" 300
fi

[ $fail = 0 ] && echo PASS
exit $fail
