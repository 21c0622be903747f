#!/usr/bin/env bash
# A real multi-node Ray cluster on one machine: a head plus N worker nodes, each a separate `ray start`.
#
#   cluster/local_cluster.sh start [WORKERS]     # head + WORKERS extra nodes (default 1)
#   cluster/local_cluster.sh status
#   cluster/local_cluster.sh stop                # stops only the nodes this script started
#
#   ray job submit --address http://127.0.0.1:8265 --working-dir . -- python -m jobs.pretrain --config configs/tiny.yaml
#
# Env: RAY_HEAD_PORT (6379), RAY_DASHBOARD_PORT (8265), RAY_LOCAL_TEMP_DIR (/tmp/usray-<port>), RAY_NODE_CPUS (logical CPUs per node, default 4: more
# than the cores so train workers cannot starve Ray Data), RAY_LOCAL_CLUSTER_DIR (pid/log dir), RAY (ray binary).
# The dashboard (= the Jobs API, which runs arbitrary code) binds to 127.0.0.1 only, and token auth is on.
# Nodes run with `ray start --block` in the background and are stopped by their own pids, never `ray stop`
# (which would kill every Ray process on the machine, other users' included).
set -euo pipefail

HEAD_PORT=${RAY_HEAD_PORT:-6379}
DASH_PORT=${RAY_DASHBOARD_PORT:-8265}
NODE_CPUS=${RAY_NODE_CPUS:-4}
STATE=${RAY_LOCAL_CLUSTER_DIR:-/tmp/unispeech-ray-$HEAD_PORT}
# A private Ray temp dir (short: it holds Unix sockets): `ray start --head` writes <temp>/ray_current_cluster,
# and in the shared /tmp/ray a bare ray.init() by anyone on this machine would join our cluster.
RAY_TMP=${RAY_LOCAL_TEMP_DIR:-/tmp/usray-$HEAD_PORT}
RAY=${RAY:-$(dirname "$0")/../.venv/bin/ray}
[ -x "$RAY" ] || RAY=ray
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-token}
export RAY_USAGE_STATS_ENABLED=0

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_for_nodes() {  # $1 = expected alive nodes
  for _ in $(seq 1 120); do
    n=$(RAY_ADDRESS=127.0.0.1:$HEAD_PORT "$RAY" status 2>/dev/null | grep -c '^ [0-9]* node_' || true)
    [ "$n" -ge "$1" ] && return 0
    sleep 1
  done
  echo "timed out waiting for $1 nodes" >&2; return 1
}

start_node() {  # $1 = name, rest = ray start args
  local name=$1; shift
  # Each node gets its own agent/metrics ports so several nodes can share one host.
  nohup "$RAY" start --block --num-cpus "$NODE_CPUS" --disable-usage-stats \
    --dashboard-agent-listen-port "$(free_port)" --dashboard-agent-grpc-port "$(free_port)" \
    --runtime-env-agent-port "$(free_port)" --metrics-export-port "$(free_port)" \
    "$@" >"$STATE/$name.log" 2>&1 &
  echo $! >"$STATE/$name.pid"
}

case "${1:-}" in
  start)
    workers=${2:-1}
    mkdir -p "$STATE"
    if ls "$STATE"/*.pid >/dev/null 2>&1; then echo "already started (state in $STATE); stop first" >&2; exit 1; fi
    start_node head --head --port "$HEAD_PORT" --node-ip-address 127.0.0.1 --temp-dir "$RAY_TMP" \
      --include-dashboard true --dashboard-host 127.0.0.1 --dashboard-port "$DASH_PORT"
    wait_for_nodes 1
    for i in $(seq 1 "$workers"); do
      start_node "worker$i" --address "127.0.0.1:$HEAD_PORT" --node-ip-address 127.0.0.1
    done
    wait_for_nodes $((workers + 1))
    echo "Ray cluster up: $((workers + 1)) nodes; dashboard/jobs at http://127.0.0.1:$DASH_PORT (state: $STATE)"
    ;;
  stop)
    for pidfile in "$STATE"/worker*.pid "$STATE"/head.pid; do
      [ -f "$pidfile" ] || continue
      pid=$(cat "$pidfile")
      kill -TERM "$pid" 2>/dev/null || true   # `ray start --block` tears its node down on SIGTERM
      for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
      kill -KILL "$pid" 2>/dev/null || true
      rm -f "$pidfile"
    done
    rm -f "$RAY_TMP/ray_current_cluster"
    echo "stopped nodes started from $STATE"
    ;;
  status)
    RAY_ADDRESS=127.0.0.1:$HEAD_PORT exec "$RAY" status
    ;;
  *)
    sed -n 2,16p "$0"; exit 2
    ;;
esac
