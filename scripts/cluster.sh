#!/usr/bin/env bash
# A three-node RabbitMQ cluster from the installed rabbitmq-server, beside
# the machine's own broker (which stays as it is on 5672):
#
#   scripts/cluster.sh up          `make cluster`: start rabbit-a, -b, -c on
#                                  AMQP ports 5681-5683, join them, wait for
#                                  three running nodes, print the AMQP_URL
#   scripts/cluster.sh down        `make cluster-down`: stop the three nodes
#                                  by name and remove their folders
#   scripts/cluster.sh url         the AMQP_URL list, if all three run
#   scripts/cluster.sh pid NODE    the OS process of node a, b or c
#   scripts/cluster.sh start NODE  start one node again (after a kill)
#   scripts/cluster.sh leader Q    the node that leads quorum queue Q
#   scripts/cluster.sh members Q   Q's replicas, one line each: node, state
#
# Each node has its own name, configuration file (its listener), Erlang
# distribution port, empty plugin list, and data and log folders under
# .state/rabbitmq-cluster (ignored by git), owned by the rabbitmq user when
# run as root; the three share one Erlang cookie, their own. Nothing of the
# machine's broker is read or changed: its configuration pins 5672 and its
# environment file names the node rabbit@localhost, so both are replaced.
set -euo pipefail
cd "$(dirname "$0")/.."

STATE=${CLUSTER_STATE:-$PWD/.state/rabbitmq-cluster}
# A checkout the rabbitmq user cannot reach (under /root, say) keeps the
# nodes' folders under /var/tmp instead, named after the checkout.
if [ -z "${CLUSTER_STATE:-}" ] && [ "$(id -u)" = 0 ] && ! runuser -u rabbitmq -- test -x "$PWD" 2>/dev/null; then
  STATE=/var/tmp/rabbitmq-cluster-$(echo "$PWD" | cksum | cut -d' ' -f1)
fi
NODES=(a b c)
BIN=/usr/lib/rabbitmq/bin
[ -x "$BIN/rabbitmq-server" ] || BIN=$(dirname "$(command -v rabbitmq-server 2>/dev/null || echo /nonexistent/x)")

say() { echo "cluster: $*" >&2; }
port_of() { case $1 in a) echo 5681 ;; b) echo 5682 ;; c) echo 5683 ;; *) say "no node $1 (a, b or c)"; exit 2 ;; esac; }
node_of() { port_of "$1" >/dev/null; echo "rabbit-$1@localhost"; }

# Runs a command as the user the nodes run as: rabbitmq when we are root.
as_owner() {
  if [ "$(id -u)" = 0 ]; then (cd / && runuser -u rabbitmq -- "$@"); else "$@"; fi
}

node_env() {
  local n=$1
  echo HOME="$STATE" \
    RABBITMQ_NODENAME="$(node_of "$n")" \
    RABBITMQ_CONF_ENV_FILE="$STATE/rabbitmq-env.conf" \
    RABBITMQ_CONFIG_FILE="$STATE/$n/rabbitmq.conf" \
    RABBITMQ_ADVANCED_CONFIG_FILE="$STATE/$n/advanced.config" \
    RABBITMQ_ENABLED_PLUGINS_FILE="$STATE/$n/enabled_plugins" \
    RABBITMQ_MNESIA_BASE="$STATE/$n/mnesia" \
    RABBITMQ_LOG_BASE="$STATE/$n/log" \
    RABBITMQ_PID_FILE="$STATE/$n/pid" \
    RABBITMQ_DIST_PORT="$(($(port_of "$n") + 20000))"
}

ctl() {
  local n=$1
  shift
  # shellcheck disable=SC2046
  as_owner env $(node_env "$n") timeout 60 "$BIN/rabbitmqctl" -q -n "$(node_of "$n")" "$@"
}

queues() {
  local n=$1
  shift
  # shellcheck disable=SC2046
  as_owner env $(node_env "$n") timeout 60 "$BIN/rabbitmq-queues" -q -n "$(node_of "$n")" "$@"
}

running() { ctl "$1" status >/dev/null 2>&1; }

# Nodes the cluster reports running, as seen from node $1.
running_nodes() {
  ctl "$1" cluster_status --formatter json 2>/dev/null |
    python3 -c 'import json, sys; print(" ".join(sorted(json.load(sys.stdin).get("running_nodes", []))))' 2>/dev/null || true
}

url() {
  local urls=() n
  for n in "${NODES[@]}"; do urls+=("amqp://guest:guest@127.0.0.1:$(port_of "$n")/%2f"); done
  (IFS=,; echo "${urls[*]}")
}

prepare() {
  if [ ! -x "$BIN/rabbitmq-server" ]; then
    say "rabbitmq-server is not installed (apt-get install rabbitmq-server)"
    exit 1
  fi
  mkdir -p "$STATE"
  : >"$STATE/rabbitmq-env.conf"
  if [ ! -f "$STATE/.erlang.cookie" ]; then
    python3 -c 'import secrets; print(secrets.token_hex(20).upper(), end="")' >"$STATE/.erlang.cookie"
  fi
  local n
  for n in "${NODES[@]}"; do
    mkdir -p "$STATE/$n/mnesia" "$STATE/$n/log"
    printf 'listeners.tcp.default = 127.0.0.1:%s\n' "$(port_of "$n")" >"$STATE/$n/rabbitmq.conf"
    echo '[].' >"$STATE/$n/enabled_plugins"
  done
  if [ "$(id -u)" = 0 ]; then
    mkdir -p "$(dirname "$STATE")"
    chown -R rabbitmq:rabbitmq "$STATE"
  fi
  chmod 400 "$STATE/.erlang.cookie"
}

start_node() {
  local n=$1
  running "$n" && return 0
  say "starting $(node_of "$n") on :$(port_of "$n")"
  # shellcheck disable=SC2046
  (
    ulimit -n 65536 2>/dev/null || true
    as_owner env $(node_env "$n") setsid "$BIN/rabbitmq-server" >>"$STATE/$n/log/startup.log" 2>&1 </dev/null &
  )
  local _
  for _ in $(seq 120); do
    running "$n" && return 0
    sleep 1
  done
  say "$(node_of "$n") did not start; see $STATE/$n/log"
  exit 1
}

up() {
  prepare
  local n
  for n in "${NODES[@]}"; do start_node "$n"; done
  for n in b c; do
    if ! running_nodes a | grep -q "$(node_of "$n")"; then
      say "joining $(node_of "$n") to $(node_of a)"
      if ! { ctl "$n" stop_app && ctl "$n" reset && ctl "$n" join_cluster "$(node_of a)" &&
        ctl "$n" start_app; } >>"$STATE/$n/log/join.log" 2>&1; then
        cat "$STATE/$n/log/join.log" >&2
        say "$(node_of "$n") could not join"
        exit 1
      fi
    fi
  done
  local _
  for _ in $(seq 60); do
    if [ "$(running_nodes a | wc -w)" = 3 ]; then
      say "three nodes running: $(running_nodes a)"
      url
      return 0
    fi
    sleep 1
  done
  say "the cluster did not report three running nodes: $(running_nodes a)"
  exit 1
}

down() {
  local n pid
  for n in "${NODES[@]}"; do
    pid=$(cat "$STATE/$n/pid" 2>/dev/null || true)
    if running "$n"; then
      say "stopping $(node_of "$n")"
      ctl "$n" stop >/dev/null 2>&1 || true
    fi
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
      kill -9 "$pid" 2>/dev/null || true
    fi
  done
  rm -rf "$STATE"
  say "stopped; $STATE removed"
}

case ${1:-} in
  up) up ;;
  down) down ;;
  url)
    if [ "$(running_nodes a | wc -w)" = 3 ]; then url; else
      say "no three-node cluster runs (make cluster)"
      exit 1
    fi
    ;;
  pid)
    port_of "$2" >/dev/null
    cat "$STATE/$2/pid"
    ;;
  start) start_node "$2" ;;
  leader | members)
    # Asked of the first node that answers: any of them may be the one down.
    pick='import json, sys
members = json.load(sys.stdin)
if sys.argv[1] == "leader":
    print(next(m["Node Name"] for m in members if m.get("Raft State") == "leader"))
else:
    for m in members:
        print(m["Node Name"], m.get("Raft State"))'
    for n in "${NODES[@]}"; do
      running "$n" || continue
      queues "$n" quorum_status "$2" --formatter json | python3 -c "$pick" "$1" && exit 0
    done
    say "no node answered for $2"
    exit 1
    ;;
  *)
    echo "usage: $0 up|down|url|pid NODE|start NODE|leader QUEUE|members QUEUE" >&2
    exit 2
    ;;
esac
