#!/usr/bin/env bash
# A real multi-node Ray cluster on one machine: a head plus N worker nodes, each a separate `ray start`.
#
#   cluster/local_cluster.sh start [WORKERS]     # head + WORKERS extra nodes (0-64, default 1)
#   cluster/local_cluster.sh status
#   cluster/local_cluster.sh stop                # stops only the nodes this script started
#
#   export RAY_AUTH_MODE=token                   # clients need it (start prints the exact line)
#   ray job submit --address http://127.0.0.1:8265 --working-dir . -- python -m jobs.pretrain --config configs/tiny.yaml
#
# Env: RAY_HEAD_PORT (6379), RAY_DASHBOARD_PORT (8265), RAY_NODE_CPUS (logical CPUs per node, default 4: more than
# the cores so train workers cannot starve Ray Data), RAY_AUTH_TOKEN_PATH (token file, default ~/.ray/auth_token;
# created with mode 0600 if missing) or RAY_AUTH_TOKEN (the token itself), RAY_LOCAL_CLUSTER_DIR (pids and logs;
# default a fresh `mktemp -d`), RAY_LOCAL_TEMP_DIR (Ray's temp dir; default a fresh `mktemp -d`), RAY (ray binary).
# Security (docs/cluster.md): token auth is always on and every node gets the same token; the dashboard (= the Jobs
# API, which runs arbitrary code) binds to 127.0.0.1. The GCS, raylets and Ray Client server still listen on every
# interface (seen with `ss -ltnp`): the token is what protects them. Nodes run with `ray start --block`
# in the background and are stopped by their own pids, never `ray stop` (which kills every Ray process on the machine).
# Exit codes: 2 usage (bad command or number), 3 environment (token, state, a node that did not come up).
set -euo pipefail

ME=${0##*/}
usage() { sed -n 2,20p "$0" >&2; exit 2; }
usage_error() { echo "$ME: $*" >&2; echo "usage: $ME start [WORKERS] | status | stop  (see the header of $0)" >&2; exit 2; }
env_error() { echo "$ME: $*" >&2; exit 3; }

# A decimal whole number in [min, max]. Matched by a regular expression before any comparison, never given to bash
# arithmetic: `$(( ))` and `[[ -lt ]]` evaluate their operands, so a value like 'a[$(cmd)]' would run cmd.
whole_number() {  # $1 = what (for the message), $2 = value, $3 = min, $4 = max
  if ! [[ $2 =~ ^(0|[1-9][0-9]{0,5})$ ]]; then usage_error "$1 must be a whole number, got '$2'"; fi
  if [ "$2" -lt "$3" ] || [ "$2" -gt "$4" ]; then usage_error "$1 must be between $3 and $4, got $2"; fi
}

HEAD_PORT=${RAY_HEAD_PORT:-6379}
DASH_PORT=${RAY_DASHBOARD_PORT:-8265}
NODE_CPUS=${RAY_NODE_CPUS:-4}
whole_number RAY_HEAD_PORT "$HEAD_PORT" 1 65535
whole_number RAY_DASHBOARD_PORT "$DASH_PORT" 1 65535
whole_number RAY_NODE_CPUS "$NODE_CPUS" 1 4096
[ "$HEAD_PORT" != "$DASH_PORT" ] || usage_error "RAY_HEAD_PORT and RAY_DASHBOARD_PORT are both $HEAD_PORT"

HERE=$(cd "$(dirname "$0")" && pwd)
RAY=${RAY:-$HERE/../.venv/bin/ray}
[ -x "$RAY" ] || RAY=$(command -v ray) || env_error "no ray binary: set RAY or create .venv (make setup)"
PY=$(dirname "$RAY")/python
[ -x "$PY" ] || PY=python3
: "${HOME:?HOME is not set}"
TMP_ROOT=${TMPDIR:-/tmp}
TMP_ROOT=${TMP_ROOT%/}
# Where `start` records the state dir of the cluster on this head port, so `status`/`stop` find it (user-owned).
REGISTRY=${XDG_STATE_HOME:-$HOME/.local/state}/unispeech-ray
POINTER=$REGISTRY/head-$HEAD_PORT
# Every process of the cluster inherits this variable, so `stop` also finds what `ray start` left behind.
MARKER=UNISPEECH_LOCAL_CLUSTER

export RAY_USAGE_STATS_ENABLED=0
unset RAY_ADDRESS

# Token auth on every node with one token (docs/architecture.md#ray-token-auth-and-security): Ray reads
# RAY_AUTH_TOKEN, else the file RAY_AUTH_TOKEN_PATH, else ~/.ray/auth_token. The file is exported by absolute path
# so every node (and every client started from the printed line) reads the same one.
setup_token() {  # $1 = create (make the file if missing) | check
  case ${RAY_AUTH_MODE:-token} in
    token) export RAY_AUTH_MODE=token ;;
    *) usage_error "RAY_AUTH_MODE=$RAY_AUTH_MODE: this script always runs with token auth (unset it or set token)" ;;
  esac
  if [ -n "${RAY_AUTH_TOKEN:-}" ]; then
    export RAY_AUTH_TOKEN; unset RAY_AUTH_TOKEN_PATH; TOKEN_SOURCE="RAY_AUTH_TOKEN (environment)"; return
  fi
  unset RAY_AUTH_TOKEN
  local file=${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}
  case $file in /*) ;; *) file=$PWD/$file ;; esac
  if [ ! -e "$file" ] && [ ! -L "$file" ] && [ "$1" = create ]; then create_token "$file"; fi
  [ -f "$file" ] || env_error "no Ray auth token at $file (\`$ME start\` creates it)"
  [ -s "$file" ] || env_error "the Ray auth token $file is empty"
  [ -O "$file" ] || env_error "the Ray auth token $file is not owned by you"
  if [ -n "$(find "$file" -prune \( -perm -g+r -o -perm -o+r \) 2>/dev/null)" ]; then
    echo "$ME: warning: $file is readable by other users, who can then run code on this cluster: chmod 600 $file" >&2
  fi
  export RAY_AUTH_TOKEN_PATH=$file
  TOKEN_SOURCE=$file
}

# 256 random bits as 64 hex digits (what `ray get-auth-token --generate` writes), created with O_EXCL (noclobber)
# under umask 077: mode 0600 from the first byte, never through a planted symlink, never over a concurrent creator.
# Hand-written because `ray get-auth-token --generate` writes only ~/.ray/auth_token and keeps the umask's mode.
create_token() {  # $1 = absolute path
  local token
  token=$(od -An -vtx1 -N32 /dev/urandom | tr -d ' \n')
  [ ${#token} -eq 64 ] || env_error "could not read 32 random bytes from /dev/urandom"
  (umask 077 && mkdir -p "$(dirname "$1")") || env_error "cannot create $(dirname "$1")"
  if (umask 077 && set -o noclobber && printf '%s' "$token" >"$1") 2>/dev/null; then
    echo "$ME: created the Ray auth token $1 (mode 0600)" >&2
  elif [ ! -s "$1" ]; then
    env_error "cannot create the Ray auth token $1"
  fi  # else: created by a concurrent start, use it
}

state_dir() {  # the state dir of the cluster on this head port, or nothing
  if [ -n "${RAY_LOCAL_CLUSTER_DIR:-}" ]; then echo "$RAY_LOCAL_CLUSTER_DIR"
  elif [ -f "$POINTER" ]; then cat "$POINTER"
  fi
}

cluster_pids() {  # $1 = state dir: pids of every live process that inherited this cluster's marker
  [ -d /proc ] || return 0
  local environ pid
  for environ in /proc/[0-9]*/environ; do
    pid=${environ#/proc/}; pid=${pid%/environ}
    [ "$pid" != "$$" ] || continue
    grep -qzxF "$MARKER=$1" "$environ" 2>/dev/null && echo "$pid"
  done
  return 0
}

is_ours() {  # $1 = pid, $2 = state dir: the pid (from a pid file) is still one of our nodes, not a reused pid
  kill -0 "$1" 2>/dev/null || return 1
  if [ -d /proc ]; then grep -qzxF "$MARKER=$2" "/proc/$1/environ" 2>/dev/null
  else ps -p "$1" -o command= 2>/dev/null | grep -q ray
  fi
}

# $1 (default 1) distinct free ports, one per line: the sockets are held open until all are bound, so the OS
# cannot hand out one port twice (it did: two agents of one node got 60151 and `ray start` refused).
free_ports() {
  "$PY" -c 'import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks: s.bind(("127.0.0.1", 0))
print("\n".join(str(s.getsockname()[1]) for s in socks))' "${1:-1}"
}
free_port() { free_ports 1; }

start_node() {  # $1 = name, rest = ray start args
  local name=$1; shift
  # Each node gets its own agent/metrics ports so several nodes can share one host.
  local ports; mapfile -t ports < <(free_ports 4)
  nohup "$RAY" start --block --num-cpus "$NODE_CPUS" --disable-usage-stats \
    --dashboard-agent-listen-port "${ports[0]}" --dashboard-agent-grpc-port "${ports[1]}" \
    --runtime-env-agent-port "${ports[2]}" --metrics-export-port "${ports[3]}" \
    "$@" >"$STATE/$name.log" 2>&1 &
  echo $! >"$STATE/$name.pid"
}

wait_for_nodes() {  # $1 = expected alive nodes
  local n pidfile
  for _ in $(seq 1 120); do
    for pidfile in "$STATE"/*.pid; do
      if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        tail -n 15 "${pidfile%.pid}.log" >&2 || true
        env_error "node $(basename "${pidfile%.pid}") exited while starting (log: ${pidfile%.pid}.log)"
      fi
    done
    n=$(RAY_ADDRESS=127.0.0.1:$HEAD_PORT "$RAY" status 2>/dev/null | grep -c '^ [0-9]* node_' || true)
    [ "$n" -ge "$1" ] && return 0
    sleep 1
  done
  env_error "timed out waiting for $1 nodes (logs in $STATE)"
}

stop_cluster() {  # $1 = state dir
  local pidfile pid leftovers
  unset "$MARKER"  # (when start failed) so the subshells below do not carry the marker and find themselves
  for pidfile in "$1"/worker*.pid "$1"/head.pid; do
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    if is_ours "$pid" "$1"; then
      kill -TERM "$pid" 2>/dev/null || true   # `ray start --block` tears its node down on SIGTERM
      for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
      kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
  done
  # Anything the nodes left behind (workers, agents, a job's driver): found by the marker, so never other users'
  # or other clusters' processes.
  leftovers=$(cluster_pids "$1")
  if [ -n "$leftovers" ]; then
    # shellcheck disable=SC2086  # one pid per word
    kill -TERM $leftovers 2>/dev/null || true
    for _ in $(seq 1 20); do leftovers=$(cluster_pids "$1"); [ -n "$leftovers" ] || break; sleep 0.5; done
    # shellcheck disable=SC2086
    [ -z "$leftovers" ] || kill -KILL $leftovers 2>/dev/null || true
  fi
  if [ -f "$1/ray_temp_dir" ]; then rm -f "$(cat "$1/ray_temp_dir")/ray_current_cluster"; fi
}

cmd=${1:-}
case $cmd in
  start)
    [ $# -le 2 ] || usage_error "start takes one argument (WORKERS), got $(($# - 1))"
    workers=${2-1}
    whole_number WORKERS "$workers" 0 64
    setup_token create
    STATE=$(state_dir)
    if [ -n "$STATE" ] && [ -d "$STATE" ]; then
      for pidfile in "$STATE"/*.pid; do
        [ -f "$pidfile" ] || continue
        is_ours "$(cat "$pidfile")" "$STATE" && env_error "already started (state in $STATE): \`$ME stop\` first"
        rm -f "$pidfile"   # a node of an earlier cluster that is gone (reboot, kill): stale
      done
    fi
    if [ -n "${RAY_LOCAL_CLUSTER_DIR:-}" ]; then
      STATE=$RAY_LOCAL_CLUSTER_DIR
      (umask 077 && mkdir -p "$STATE") || env_error "cannot create RAY_LOCAL_CLUSTER_DIR=$STATE"
      [ -O "$STATE" ] || env_error "RAY_LOCAL_CLUSTER_DIR=$STATE is not owned by you"
    else
      STATE=$(mktemp -d "$TMP_ROOT/unispeech-ray.XXXXXXXX") || env_error "mktemp -d in $TMP_ROOT failed"
      (umask 077 && mkdir -p "$REGISTRY" && printf '%s\n' "$STATE" >"$POINTER.tmp" && mv -f "$POINTER.tmp" "$POINTER") \
        || env_error "cannot record the cluster in $POINTER"
    fi
    # A private Ray temp dir (short: it holds Unix sockets): `ray start --head` writes <temp>/ray_current_cluster,
    # and in the shared /tmp/ray a bare ray.init() by anyone on this machine would join our cluster.
    if [ -n "${RAY_LOCAL_TEMP_DIR:-}" ]; then RAY_TMP=$RAY_LOCAL_TEMP_DIR
    else RAY_TMP=$(mktemp -d "$TMP_ROOT/usray.XXXXXXXX") || env_error "mktemp -d in $TMP_ROOT failed"
    fi
    printf '%s\n' "$RAY_TMP" >"$STATE/ray_temp_dir"
    export "$MARKER=$STATE"
    trap 'echo "$ME: start failed; stopping the nodes it started" >&2; stop_cluster "$STATE"' EXIT
    start_node head --head --port "$HEAD_PORT" --node-ip-address 127.0.0.1 --temp-dir "$RAY_TMP" \
      --include-dashboard true --dashboard-host 127.0.0.1 --dashboard-port "$DASH_PORT" \
      --ray-client-server-port "$(free_port)"   # not the fixed 10001: two clusters on one machine would collide
    wait_for_nodes 1
    for i in $(seq 1 "$workers"); do
      start_node "worker$i" --address "127.0.0.1:$HEAD_PORT" --node-ip-address 127.0.0.1
    done
    wait_for_nodes $((workers + 1))
    trap - EXIT
    echo "Ray cluster up: $((workers + 1)) nodes; dashboard/jobs at http://127.0.0.1:$DASH_PORT (state: $STATE)"
    if [ -n "${RAY_AUTH_TOKEN_PATH:-}" ]; then
      echo "clients: export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=$RAY_AUTH_TOKEN_PATH"
    else
      echo "clients: export RAY_AUTH_MODE=token RAY_AUTH_TOKEN=<the token in $TOKEN_SOURCE>"
    fi
    ;;
  stop)
    [ $# -eq 1 ] || usage_error "stop takes no arguments"
    STATE=$(state_dir)
    if [ -z "$STATE" ] || [ ! -d "$STATE" ]; then echo "no cluster started by $ME on port $HEAD_PORT"; exit 0; fi
    stop_cluster "$STATE"
    [ -n "${RAY_LOCAL_CLUSTER_DIR:-}" ] || rm -f "$POINTER"
    echo "stopped the nodes started from $STATE (logs kept there)"
    ;;
  status)
    [ $# -eq 1 ] || usage_error "status takes no arguments"
    setup_token check
    RAY_ADDRESS=127.0.0.1:$HEAD_PORT exec "$RAY" status
    ;;
  -h|--help|help) usage ;;
  "") usage ;;
  *) usage_error "unknown command '$cmd'" ;;
esac
