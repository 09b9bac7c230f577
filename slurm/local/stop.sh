#!/usr/bin/env bash
# Stop the daemons that slurm/local/start.sh started, by the PIDs it recorded, and nothing else.
set -uo pipefail
DIR=${HARNESS_SLURM_DIR:-/tmp/exaharness-slurm}
for pidfile in "$DIR"/slurmd-n1.pid "$DIR"/slurmd-n2.pid "$DIR"/slurmctld.pid "$DIR"/slurmdbd.pid "$DIR"/mariadb.pid \
               "$DIR"/munged.pid; do
  [ -s "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  # Only a process that is still the daemon we started (its command line names slurm or munge).
  if kill -0 "$pid" 2>/dev/null && grep -qaE 'slurm|munge|mariadb' "/proc/$pid/cmdline"; then
    kill "$pid" && printf 'slurm/local: stopped %s (pid %s)\n' "$(basename "$pidfile" .pid)" "$pid" >&2
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$pidfile"
done
