#!/usr/bin/env bash
# A one-node Slurm cluster for the tests, entirely under one directory: its own munge key and
# socket, slurm.conf (loopback only, this machine's cores, oversubscription allowed), state and
# logs. Source it, then:
#   cluster_start DIR    installs slurm-wlm and munge if missing, starts munged, slurmctld and
#                        slurmd, waits until the node is idle; returns non-zero with the reason
#   cluster_stop         ends the jobs and stops the daemons it started, by their process ids
# The clients (sbatch, scontrol, ...) find the cluster through SLURM_CONF, which cluster_start exports.

CLUSTER_PIDS=()

cluster_fail() { echo "FAIL: Slurm cluster: $*" >&2; return 1; }

cluster_install() {
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null && return 0
  [ "$(id -u)" = 0 ] || { cluster_fail "slurm-wlm and munge are missing; as root run: apt-get install -y slurm-wlm munge"; return 1; }
  echo "installing slurm-wlm and munge"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge) \
    >"$CLUSTER_DIR/apt.log" 2>&1 || { cluster_fail "apt-get install slurm-wlm munge failed: $(tail -3 "$CLUSTER_DIR/apt.log")"; return 1; }
}

cluster_start() {
  CLUSTER_DIR=$1
  rm -rf "$CLUSTER_DIR"
  mkdir -p "$CLUSTER_DIR"/{munge,state,spool,log}
  chmod 700 "$CLUSTER_DIR/munge"
  cluster_install || return 1
  local host cpus
  host=$(hostname -s)
  cpus=$(nproc)
  dd if=/dev/urandom of="$CLUSTER_DIR/munge/munge.key" bs=1024 count=1 status=none
  chmod 400 "$CLUSTER_DIR/munge/munge.key"
  local sock=$CLUSTER_DIR/munge/munge.sock
  munged --force -F -S "$sock" --key-file="$CLUSTER_DIR/munge/munge.key" --log-file="$CLUSTER_DIR/log/munged.log" \
    --pid-file="$CLUSTER_DIR/munge/munged.pid" --seed-file="$CLUSTER_DIR/munge/munged.seed" >/dev/null 2>&1 &
  CLUSTER_PIDS+=($!)
  for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
  [ -S "$sock" ] || { cluster_fail "munged did not start: $(tail -3 "$CLUSTER_DIR/log/munged.log" 2>/dev/null)"; return 1; }

  export SLURM_CONF=$CLUSTER_DIR/slurm.conf
  cat >"$SLURM_CONF" <<CONF
ClusterName=sytest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=16817
SlurmdPort=16818
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$sock
CredType=cred/munge
StateSaveLocation=$CLUSTER_DIR/state
SlurmdSpoolDir=$CLUSTER_DIR/spool
SlurmctldPidFile=$CLUSTER_DIR/slurmctld.pid
SlurmdPidFile=$CLUSTER_DIR/slurmd.pid
SlurmctldLogFile=$CLUSTER_DIR/log/slurmctld.log
SlurmdLogFile=$CLUSTER_DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
JobRequeue=1
KillWait=10
MinJobAge=3600
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
InactiveLimit=0
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=sytest Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
CONF
  slurmctld -D -i -f "$SLURM_CONF" >"$CLUSTER_DIR/log/slurmctld.out" 2>&1 &
  CLUSTER_PIDS+=($!)
  slurmd -D -f "$SLURM_CONF" -N "$host" >"$CLUSTER_DIR/log/slurmd.out" 2>&1 &
  CLUSTER_PIDS+=($!)
  local state=""
  for _ in $(seq 60); do
    state=$(scontrol show node "$host" 2>/dev/null | grep -o 'State=[A-Z+_]*' | head -1)
    case "$state" in State=IDLE*|State=MIXED*|State=ALLOCATED*) echo "Slurm cluster up: node $host, $cpus CPUs"; return 0 ;; esac
    sleep 0.5
  done
  cluster_fail "the node did not come up (${state:-no answer from slurmctld}); slurmctld: $(tail -2 "$CLUSTER_DIR/log/slurmctld.log" "$CLUSTER_DIR/log/slurmctld.out" 2>/dev/null | tr '\n' ' '); slurmd: $(tail -2 "$CLUSTER_DIR/log/slurmd.log" "$CLUSTER_DIR/log/slurmd.out" 2>/dev/null | tr '\n' ' ')"
}

cluster_stop() {
  [ -n "${SLURM_CONF:-}" ] && scancel --quiet --user="$(id -un)" >/dev/null 2>&1
  local p
  for p in "${CLUSTER_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for _ in $(seq 50); do
    local alive=0
    for p in "${CLUSTER_PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.2
  done
  for p in "${CLUSTER_PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
  CLUSTER_PIDS=()
}
