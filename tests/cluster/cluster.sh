#!/bin/sh
# A test cluster of N "hosts" on this machine: each host is a network namespace with its own
# hostname (UTS namespace) and its own /etc/hosts (mount namespace), joined by veth links to a
# bridge that lives in a "switch" namespace of its own, addresses 10.77.0.<i>/24. The machine's own
# network is never touched: every interface, address and qdisc is inside the cluster's namespaces.
# Needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN), iproute2 and util-linux (nsenter, unshare).
#
#   cluster.sh up DIR N OWNER   bring up hosts h1..hN; DIR is the cluster's own scratch folder (it
#                               gets hosts, inhost, agent, prefix); OWNER is the pid whose death
#                               makes the cluster stale (a later `up` or `reap` removes it)
#   cluster.sh down DIR         kill every process on the cluster's hosts, remove its namespaces
#   cluster.sh reap             remove clusters whose OWNER is gone (after a test was killed)
#   cluster.sh shape DIR RATE BURST   tbf-shape every host's link (e.g. 1gbit 1mb); no RATE: unshape
#   cluster.sh link DIR hN up|down    take host hN's link down or bring it back
#
#   DIR/inhost hN CMD...        run CMD "on" host hN (its network, hostname and /etc/hosts; binds
#                               listed in DIR/binds.hN as "SOURCE TARGET" lines are mounted first)
#   DIR/agent                   OpenMPI's plm_rsh_agent: `agent [ssh options] hN 'command'`
#
# inhost uses nsenter rather than `ip netns exec`: the latter remounts /sys without /sys/fs/cgroup,
# and slurmd 22.05 then fails to start ("Unable to initialize cgroup plugin").
set -eu

die() { echo "cluster.sh: $*" >&2; exit 1; }

netns_del() {  # kill whatever still runs in namespace $1, then remove it
  for pid in $(ip netns pids "$1" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
  ip netns del "$1" 2>/dev/null || true
}

remove_prefix() {
  for ns in $(ip netns list | awk -v p="$1" 'index($1, p) == 1 {print $1}'); do netns_del "$ns"; done
}

reap() {
  for p in $(ip netns list | awk '/^tdc[0-9]+-sw/ {sub(/sw.*/, "", $1); print $1}' | sort -u); do
    o=${p#tdc}; o=${o%-}  # not $owner: up's own variable
    kill -0 "$o" 2>/dev/null || remove_prefix "$p"
  done
}

cmd=${1:-}; [ $# -gt 0 ] && shift
# Clusters come up and go down one at a time: a reap while another cluster is half built would see
# a switch namespace without its hosts.
case "$cmd" in
up | down | reap) mkdir -p /run/lock; exec 9> /run/lock/tandem-cluster.lock; flock -w 120 9 || die "cannot lock /run/lock/tandem-cluster.lock" ;;
esac
case "$cmd" in
up)
  [ $# -eq 3 ] || die "usage: cluster.sh up DIR N OWNER"
  dir=$1; n=$2; owner=$3
  [ "$(id -u)" -eq 0 ] || die "needs root to create network namespaces"
  reap
  mkdir -p "$dir"; dir=$(cd "$dir" && pwd)
  prefix="tdc${owner}-"
  echo "$prefix" > "$dir/prefix"
  remove_prefix "$prefix"
  ip netns add "${prefix}sw" || die "cannot create a network namespace (ip netns add failed)"
  trap 'remove_prefix "$prefix"' EXIT
  ip netns exec "${prefix}sw" ip link set lo up
  ip netns exec "${prefix}sw" ip link add br0 type bridge
  ip netns exec "${prefix}sw" ip link set br0 up
  printf '127.0.0.1 localhost\n' > "$dir/hosts"
  i=1
  while [ "$i" -le "$n" ]; do
    ns="${prefix}h$i"
    ip netns add "$ns"
    ip netns exec "${prefix}sw" ip link add "vh$i" type veth peer name eth0 netns "$ns"
    ip netns exec "${prefix}sw" ip link set "vh$i" master br0 up
    ip netns exec "$ns" ip link set lo up
    ip netns exec "$ns" ip addr add "10.77.0.$i/24" dev eth0
    ip netns exec "$ns" ip link set eth0 up
    # TCP gives up on a dead peer after ~6 s of retransmissions instead of the default ~15 min
    # (tcp_retries2 15): mpirun waits for its remote daemons' connections to fail before it ends a
    # job cut by a partition, so this decides how soon a job on the cut hosts ends.
    ip netns exec "$ns" sysctl -q -w net.ipv4.tcp_retries2=5
    printf '10.77.0.%s h%s\n' "$i" "$i" >> "$dir/hosts"
    : > "$dir/binds.h$i"
    i=$((i + 1))
  done
  cat > "$dir/inhost" <<EOF
#!/bin/sh
# run a command on host hN of the cluster in $dir
h=\$1; shift
[ -e /run/netns/${prefix}\$h ] || { echo "inhost: no host \$h in this cluster" >&2; exit 1; }
exec nsenter --net=/run/netns/${prefix}\$h unshare --uts --mount sh -c '
  h=\$1; shift
  hostname "\$h"; mount --bind "$dir/hosts" /etc/hosts
  while read -r src dst; do [ -n "\$src" ] && mount --bind "\$src" "\$dst"; done < "$dir/binds.\$h"
  exec "\$@"' sh "\$h" "\$@"
EOF
  cat > "$dir/agent" <<EOF
#!/bin/sh
# OpenMPI's rsh agent for the cluster in $dir: skips ssh options, then runs the command on the host
while [ \$# -gt 0 ]; do case "\$1" in -*) shift;; *) break;; esac; done
h=\$1; shift
exec "$dir/inhost" "\$h" sh -c "\$*"
EOF
  chmod +x "$dir/inhost" "$dir/agent"
  # Every host answers the others before the cluster is declared up.
  i=2
  while [ "$i" -le "$n" ]; do
    ip netns exec "${prefix}h1" ping -c 1 -W 2 "10.77.0.$i" > /dev/null || die "h1 cannot reach h$i"
    i=$((i + 1))
  done
  trap - EXIT
  ;;
down)
  [ $# -eq 1 ] || die "usage: cluster.sh down DIR"
  [ -f "$1/prefix" ] || exit 0
  remove_prefix "$(cat "$1/prefix")"
  ;;
reap)
  reap
  ;;
shape)
  [ $# -ge 1 ] || die "usage: cluster.sh shape DIR [RATE BURST]"
  prefix=$(cat "$1/prefix")
  for ns in $(ip netns list | awk -v p="${prefix}h" 'index($1, p) == 1 {print $1}'); do
    if [ $# -eq 3 ]; then
      ip netns exec "$ns" tc qdisc replace dev eth0 root tbf rate "$2" burst "$3" latency 100ms
    else
      ip netns exec "$ns" tc qdisc del dev eth0 root 2>/dev/null || true
    fi
  done
  ;;
link)
  [ $# -eq 3 ] || die "usage: cluster.sh link DIR hN up|down"
  ip netns exec "$(cat "$1/prefix")$2" ip link set eth0 "$3"
  ;;
*)
  die "usage: cluster.sh up|down|reap|shape|link ..."
  ;;
esac
