#!/usr/bin/env bash
# Start a real SLURM cluster on this one machine, for the tests of profiles/slurm.
#
# Nodes node1..nodeN are slurmd daemons on 127.0.0.1 (one port each), so a job can span several
# "nodes". Each stands in for a GPU node: partitions `cpu` (default) and `gpu`, fake GPUs (character
# devices SLURM hands out as gres, so jobs get CUDA_VISIBLE_DEVICES), no accounting database.
# Idempotent: packages are installed once, and a cluster already running with the same
# configuration is left alone (about a second then). Needs root. Stop it with stop_cluster.sh.
#
# Settings (environment):
#   SLURM_TEST_NODES      nodes                             (default 2)
#   SLURM_TEST_GPUS       fake GPUs per node                (default 8, as on an 8-GPU A100/H100 node)
#   SLURM_TEST_CPUS       CPUs each node declares           (default 64)
#   SLURM_TEST_MEM_MB     memory each node declares in MB   (default 512000)
#   SLURM_TEST_STATE      state, spool and log folder       (default /var/lib/llava-more-slurm)
# A node declares what the profile asks of a real GPU node rather than what this machine has: with
# task/none nothing is enforced, and `config_overrides` keeps slurmd from draining the node. One node
# is big enough for train, init_model and evaluate of profiles/slurm side by side.
# The last line on stdout is `started` or `already-running`.
set -euo pipefail

NODES=${SLURM_TEST_NODES:-2}
GPUS=${SLURM_TEST_GPUS:-8}
CPUS=${SLURM_TEST_CPUS:-64}
MEM_MB=${SLURM_TEST_MEM_MB:-512000}
STATE=${SLURM_TEST_STATE:-/var/lib/llava-more-slurm}
CONF=/etc/slurm/slurm.conf
GRES_CONF=/etc/slurm/gres.conf
MARK="# Written by llava-more scripts/slurm/start_cluster.sh (test cluster on one machine)."
HOST=$(hostname -s)
NODE_NAMES="node[1-$NODES]"
FIRST_PORT=17001
APT_LOG="${TMPDIR:-/tmp}/llava-more-slurm-apt.log"

die() { echo "start_cluster: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (it installs Debian packages and starts slurmctld, slurmd and munged)"

install_packages() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
     && command -v munged >/dev/null; then
    return
  fi
  command -v apt-get >/dev/null || die "no apt-get: install slurmctld slurmd slurm-client munge by hand"
  # shellcheck source=scripts/apt_lock.sh
  source "$(dirname "$0")/../apt_lock.sh"
  take_apt_lock
  echo "start_cluster: installing slurmctld slurmd slurm-client munge" >&2
  # Keep apt from starting the daemons with Debian's default (empty) configuration.
  local policy=/usr/sbin/policy-rc.d created_policy=0 rc=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    created_policy=1
  fi
  {
    apt-get update -qq \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        slurmctld slurmd slurm-client munge
  } >"$APT_LOG" 2>&1 || rc=$?
  [ "$created_policy" = 1 ] && rm -f "$policy"
  release_apt_lock
  [ "$rc" = 0 ] || die "apt-get failed (rc $rc): $(tail -n 3 "$APT_LOG" | tr '\n' ' ') (full log: $APT_LOG)"
}

write_config() {  # sets NEW_CONF and NEW_GRES
  mkdir -p "$STATE/dev" "$STATE/ctld" "$STATE/log"
  # Fake GPUs: gres File= must be character devices (plain files are refused); 1,3 is /dev/null's.
  local gres_conf="" gres_line="" n i first
  for ((n = 1; n <= NODES; n++)); do
    first=$(((n - 1) * GPUS))
    for ((i = first; i < first + GPUS; i++)); do
      [ -c "$STATE/dev/gpu$i" ] || mknod "$STATE/dev/gpu$i" c 1 3
    done
    if [ "$GPUS" -gt 0 ]; then
      gres_conf+="NodeName=node$n Name=gpu File=$STATE/dev/gpu[$first-$((first + GPUS - 1))]"$'\n'
    fi
  done
  [ "$GPUS" -gt 0 ] && gres_line=" Gres=gpu:$GPUS"

  NEW_CONF=$(cat <<CONF
$MARK
ClusterName=llavamore
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
# One slurmd per node on this host: %n is the node's name.
SlurmdSpoolDir=$STATE/spool-%n
SlurmdPidFile=$STATE/slurmd-%n.pid
SlurmdLogFile=$STATE/log/slurmd-%n.log
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
NodeName=$NODE_NAMES NodeHostname=$HOST NodeAddr=127.0.0.1 Port=[$FIRST_PORT-$((FIRST_PORT + NODES - 1))] CPUs=$CPUS RealMemory=$MEM_MB$gres_line State=UNKNOWN
PartitionName=cpu Nodes=$NODE_NAMES Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$NODE_NAMES MaxTime=INFINITE State=UP
CONF
)
  NEW_GRES=$(printf 'AutoDetect=off\n%s' "$gres_conf")
}

daemon_alive() {  # pidfile
  [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

all_slurmd_alive() {
  local n
  for ((n = 1; n <= NODES; n++)); do
    daemon_alive "$STATE/slurmd-node$n.pid" || return 1
  done
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

wait_nodes_idle() {
  local i states="" ready
  for ((i = 0; i < 120; i++)); do
    states=$(sinfo -h -N -p cpu -o '%N %T' 2>/dev/null || true)
    ready=$(grep -cE ' (idle|mixed|allocated)$' <<<"$states" || true)
    [ "$ready" = "$NODES" ] && return
    if grep -qE ' (down|drain)' <<<"$states"; then
      scontrol update NodeName="$NODE_NAMES" State=RESUME >/dev/null 2>&1 || true
    fi
    sleep 0.5
  done
  die "nodes are not idle after 60 s (sinfo: ${states:-no answer}); logs in $STATE/log"
}

install_packages
write_config

if [ -e "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
  die "$CONF exists and was not written by this script: this machine has a SLURM setup of its own; refusing to overwrite it"
fi

same_config=0
if [ -e "$CONF" ] && [ "$(cat "$CONF")" = "$NEW_CONF" ] && [ -e "$GRES_CONF" ] \
   && [ "$(cat "$GRES_CONF")" = "$NEW_GRES" ]; then
  same_config=1
fi

start_munge

if [ "$same_config" = 1 ] && daemon_alive "$STATE/slurmctld.pid" && all_slurmd_alive; then
  wait_nodes_idle
  echo "start_cluster: already running ($NODES nodes, $GPUS fake GPUs each)" >&2
  echo already-running
  exit 0
fi

# A different configuration (or a half-started cluster): start again from a clean state.
"$(dirname "$0")/stop_cluster.sh" --keep-munge
mkdir -p /etc/slurm
# The plugin's in-job srun drops SLURM_CONF, so the configuration must live at the default path.
printf '%s\n' "$NEW_CONF" >"$CONF"
printf '%s\n' "$NEW_GRES" >"$GRES_CONF"
rm -rf "${STATE:?}/ctld"/* "${STATE:?}"/spool-*

slurmctld || die "slurmctld did not start; see $STATE/log/slurmctld.log"
for ((n = 1; n <= NODES; n++)); do
  slurmd -N "node$n" || die "slurmd for node$n did not start; see $STATE/log/slurmd-node$n.log"
done
wait_nodes_idle
echo "start_cluster: running ($NODES nodes, partitions cpu and gpu, $GPUS fake GPUs each)" >&2
echo started
