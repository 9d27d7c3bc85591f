#!/usr/bin/env bash
# Start a real single-node SLURM cluster on this machine, for the tests of profiles/slurm.
#
# One node on 127.0.0.1 stands in for a GPU node: partitions `cpu` (default) and `gpu`, fake GPUs
# (character devices SLURM hands out as gres, so jobs get CUDA_VISIBLE_DEVICES), no accounting
# database. Idempotent: packages are installed once, and a cluster already running with the same
# configuration is left alone (a run with this script's defaults takes about a second then).
# Needs root. Stop it with scripts/slurm/stop_cluster.sh.
#
# Settings (environment):
#   SLURM_TEST_GPUS       fake GPUs on the node            (default 8, as on an 8-GPU A100/H100 node)
#   SLURM_TEST_CPUS       CPUs the node declares           (default 64)
#   SLURM_TEST_MEM_MB     memory the node declares in MB   (default 512000)
#   SLURM_TEST_STATE      state, spool and log folder      (default /var/lib/llava-more-slurm)
# The node declares what the profile asks of a real GPU node rather than what this machine has:
# with task/none nothing is enforced, and `config_overrides` keeps slurmd from draining the node.
# It is big enough for train, init_model and evaluate of profiles/slurm to run side by side.
# The last line on stdout is `started` or `already-running`.
set -euo pipefail

GPUS=${SLURM_TEST_GPUS:-8}
CPUS=${SLURM_TEST_CPUS:-64}
MEM_MB=${SLURM_TEST_MEM_MB:-512000}
STATE=${SLURM_TEST_STATE:-/var/lib/llava-more-slurm}
CONF=/etc/slurm/slurm.conf
GRES_CONF=/etc/slurm/gres.conf
MARK="# Written by llava-more scripts/slurm/start_cluster.sh (single-node test cluster)."
NODE=$(hostname -s)

die() { echo "start_cluster: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (it installs Debian packages and starts slurmctld, slurmd and munged)"
command -v apt-get >/dev/null || command -v slurmctld >/dev/null \
  || die "no apt-get and no slurmctld: install slurmctld slurmd slurm-client munge by hand"

install_packages() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
     && command -v munged >/dev/null; then
    return
  fi
  echo "start_cluster: installing slurmctld slurmd slurm-client munge" >&2
  # Keep apt from starting the daemons with Debian's default (empty) configuration.
  local policy=/usr/sbin/policy-rc.d created_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    created_policy=1
  fi
  local rc=0
  {
    apt-get update -qq \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        slurmctld slurmd slurm-client munge
  } >"${TMPDIR:-/tmp}/llava-more-slurm-apt.log" 2>&1 || rc=$?
  [ "$created_policy" = 1 ] && rm -f "$policy"
  [ "$rc" = 0 ] || die "apt-get failed (rc $rc); see ${TMPDIR:-/tmp}/llava-more-slurm-apt.log: $(tail -n 3 "${TMPDIR:-/tmp}/llava-more-slurm-apt.log" | tr '\n' ' ')"
}

write_config() {
  # Fake GPUs: gres File= must be character devices; major 1 minor 3 is /dev/null's.
  mkdir -p "$STATE/dev" "$STATE/ctld" "$STATE/spool" "$STATE/log"
  local files="" i
  for ((i = 0; i < GPUS; i++)); do
    [ -c "$STATE/dev/gpu$i" ] || mknod "$STATE/dev/gpu$i" c 1 3
  done
  [ "$GPUS" -gt 0 ] && files="$STATE/dev/gpu[0-$((GPUS - 1))]"

  local gres_line="" gres_conf=""
  if [ "$GPUS" -gt 0 ]; then
    gres_line=" Gres=gpu:$GPUS"
    gres_conf="NodeName=$NODE Name=gpu File=$files"
  fi

  NEW_CONF=$(cat <<EOF
$MARK
ClusterName=llavamore
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
SlurmdParameters=config_overrides
ReturnToService=2
# Without slurmdbd the plugin polls squeue, which forgets a job MinJobAge seconds after it ends;
# the plugin's poll interval grows to 180 s, so keep finished jobs well beyond that.
MinJobAge=600
# scontrol requeue, preemption and node failures put jobs back in the queue.
JobRequeue=1
# Seconds between SIGTERM and SIGKILL at a time limit, cancel or requeue (the trainer checkpoints).
KillWait=30
GresTypes=gpu
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB$gres_line State=UNKNOWN
PartitionName=cpu Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$NODE MaxTime=INFINITE State=UP
EOF
)
  NEW_GRES=$(printf 'AutoDetect=off\n%s\n' "$gres_conf")
}

daemon_alive() {  # pidfile
  [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

start_munge() {
  # munged refuses a socket folder that others cannot traverse: it must be 755.
  mkdir -p /run/munge
  chown munge:munge /run/munge
  chmod 755 /run/munge
  if ! daemon_alive /run/munge/munged.pid; then
    [ -s /etc/munge/munge.key ] || die "/etc/munge/munge.key is missing (reinstall munge)"
    runuser -u munge -- /usr/sbin/munged
  fi
  local i
  for ((i = 0; i < 50; i++)); do
    munge -n </dev/null | unmunge >/dev/null 2>&1 && return
    sleep 0.1
  done
  die "munged does not answer (munge -n | unmunge fails)"
}

wait_node_idle() {
  local i state
  for ((i = 0; i < 120; i++)); do
    state=$(sinfo -h -N -n "$NODE" -o '%T' 2>/dev/null | head -n 1 || true)
    case "$state" in
      idle | mixed | allocated) return ;;
      down* | drain* | drained*) scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    sleep 0.5
  done
  die "node $NODE is not idle after 60 s (state '${state:-none}'); logs: $STATE/log/slurmctld.log, $STATE/log/slurmd.log"
}

install_packages
write_config

if [ -e "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
  die "$CONF exists and was not written by this script: this machine already has a SLURM cluster; refusing to overwrite it"
fi

same_config=0
if [ -e "$CONF" ] && [ "$(cat "$CONF")" = "$NEW_CONF" ] && [ -e "$GRES_CONF" ] \
   && [ "$(cat "$GRES_CONF")" = "$NEW_GRES" ]; then
  same_config=1
fi

start_munge

if [ "$same_config" = 1 ] && daemon_alive "$STATE/slurmctld.pid" && daemon_alive "$STATE/slurmd.pid"; then
  wait_node_idle
  echo "start_cluster: already running (node $NODE, $GPUS fake GPUs)" >&2
  echo already-running
  exit 0
fi

# A different configuration (or a half-started cluster): start again from a clean state.
"$(dirname "$0")/stop_cluster.sh" --keep-munge
mkdir -p /etc/slurm
# The plugin's in-job srun drops SLURM_CONF, so the configuration must live at the default path.
printf '%s\n' "$NEW_CONF" >"$CONF"
printf '%s\n' "$NEW_GRES" >"$GRES_CONF"
rm -rf "${STATE:?}/ctld"/* "${STATE:?}/spool"/*

slurmctld || die "slurmctld did not start; see $STATE/log/slurmctld.log"
slurmd || die "slurmd did not start; see $STATE/log/slurmd.log"
wait_node_idle
echo "start_cluster: running (node $NODE, partitions cpu and gpu, $GPUS fake GPUs)" >&2
echo started
