#!/bin/bash
# Train across the nodes of a hostfile with mpirun (ssh to each node; Tandem and the data set at
# the same paths everywhere, the output directory on a shared file system).
#
#   examples/mpirun/train.sh HOSTFILE NP [tandem train arguments...]
#   examples/mpirun/train.sh examples/mpirun/hostfile 4 --model cnn --epochs 10 --output /shared/run1
#
# Environment: TANDEM (default: tandem on PATH), IFACE (the network between the nodes, e.g. eth0 or
# 10.0.0.0/24; default: let Open MPI choose).
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 HOSTFILE NP [tandem train arguments...]" >&2; exit 2; }
hostfile=$1 np=$2; shift 2
TANDEM=${TANDEM:-tandem}

opts=(--hostfile "$hostfile" -np "$np" --bind-to none
      # a node that drops off the network is noticed in seconds, not after TCP's ~15 min
      --mca oob_tcp_keepalive_time 10 --mca oob_tcp_keepalive_intvl 2 --mca oob_tcp_keepalive_probes 3)
if [ -n "${IFACE:-}" ]; then
  opts+=(--mca btl_tcp_if_include "$IFACE" --mca oob_tcp_if_include "$IFACE")
fi
exec mpirun "${opts[@]}" "$TANDEM" train --strategy multi-worker "$@"
