#!/usr/bin/env bash
# Stop the test cluster that scripts/slurm/start_cluster.sh started: cancel its jobs,
# then stop every slurmd, slurmctld and (unless --keep-munge) munged, each by the pid it recorded.
# Safe to run when nothing is running.
set -uo pipefail

STATE=${SLURM_TEST_STATE:-/var/lib/llava-more-slurm}
KEEP_MUNGE=0
[ "${1:-}" = "--keep-munge" ] && KEEP_MUNGE=1

stop_pidfile() {  # pidfile name
  local pidfile=$1 name=$2 pid i
  [ -s "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for ((i = 0; i < 100; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      echo "stop_cluster: $name ($pid) ignored SIGTERM for 10 s; killing it" >&2
      kill -KILL "$pid" 2>/dev/null
    fi
  fi
  rm -f "$pidfile"
}

# Cancel the jobs first, so their slurmstepd processes end with them.
if [ -s "$STATE/slurmctld.pid" ] && kill -0 "$(cat "$STATE/slurmctld.pid")" 2>/dev/null; then
  jobs=$(timeout -s KILL 10 squeue -h -o %A 2>/dev/null | tr '\n' ' ')
  if [ -n "${jobs// /}" ]; then
    # shellcheck disable=SC2086
    timeout -s KILL 10 scancel $jobs 2>/dev/null
    for ((i = 0; i < 40; i++)); do
      [ -z "$(timeout -s KILL 5 squeue -h -t PD,R,CG,CF,S -o %A 2>/dev/null)" ] && break
      sleep 0.25
    done
  fi
fi

for pidfile in "$STATE"/slurmd-*.pid "$STATE"/slurmd.pid; do
  [ -e "$pidfile" ] && stop_pidfile "$pidfile" "slurmd ($(basename "$pidfile" .pid))"
done
stop_pidfile "$STATE/slurmctld.pid" slurmctld
[ "$KEEP_MUNGE" = 1 ] || stop_pidfile /run/munge/munged.pid munged
exit 0
