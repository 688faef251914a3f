#!/usr/bin/env bash
# PostgreSQL 15 as a primary and two synchronous standbys under Patroni,
# with one etcd, on this machine beside its own PostgreSQL (which stays as
# it is on 5432):
#
#   scripts/pg-cluster.sh up          `make pg-cluster`: start etcd and pg-a,
#                                     pg-b, pg-c (PostgreSQL on 5441-5443,
#                                     Patroni's REST API on 8441-8443), wait
#                                     for a leader and two streaming
#                                     replicas, print the two database URLs
#   scripts/pg-cluster.sh down        `make pg-cluster-down`: stop what `up`
#                                     started and remove its folders
#   scripts/pg-cluster.sh url DB      the multi-host URL of database DB
#   scripts/pg-cluster.sh status      one line a node: name, role, state, lag
#   scripts/pg-cluster.sh leader      the node that is primary now (a, b or c)
#   scripts/pg-cluster.sh kill NODE   SIGKILL every process of node a, b or c:
#                                     its Patroni agent, postmaster, backends
#   scripts/pg-cluster.sh start NODE  start one node's Patroni again
#   scripts/pg-cluster.sh replicas    the nodes that are not primary now
#   scripts/pg-cluster.sh hold-wal NODE  SIGSTOP the WAL senders of node
#                                     (the primary): its commits wait for
#                                     standbys that receive nothing more
#   scripts/pg-cluster.sh release-wal NODE  SIGCONT them
#   scripts/pg-cluster.sh healthy     exit 0 when one leader and two
#                                     streaming replicas answer
#
# Failover timing (Patroni's dynamic configuration, set at bootstrap):
# ttl 8 s (the leader key's lease), loop_wait 1 s, retry_timeout 3 s
# (Patroni wants loop_wait + 2 x retry_timeout <= ttl). A primary that
# dies is replaced once its lease runs out: within ttl + loop_wait, about
# 9 s. synchronous_mode with synchronous_mode_strict: a commit is
# acknowledged only once a standby has flushed it, and with no standby
# left the primary waits rather than falling back to asynchronous
# replication, so a failover loses no acknowledged commit.
#
# Every node runs as the postgres user (as the machine's PostgreSQL does),
# its data, configuration and log under .state/pg-cluster (ignored by git;
# /var/tmp/pg-cluster-<checksum> when the postgres user cannot reach the
# checkout). etcd listens on 2479 (clients) and 2480 (peers), its v3 API
# being the one Patroni's etcd3 section speaks.
set -euo pipefail
cd "$(dirname "$0")/.."

STATE=${PG_CLUSTER_STATE:-$PWD/.state/pg-cluster}
if [ -z "${PG_CLUSTER_STATE:-}" ] && [ "$(id -u)" = 0 ] && ! runuser -u postgres -- test -x "$PWD" 2>/dev/null; then
  STATE=/var/tmp/pg-cluster-$(echo "$PWD" | cksum | cut -d' ' -f1)
fi
NODES=(a b c)
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
ETCD_CLIENT=127.0.0.1:2479
ETCD_PEER=127.0.0.1:2480

say() { echo "pg-cluster: $*" >&2; }
port_of() { case $1 in a) echo 5441 ;; b) echo 5442 ;; c) echo 5443 ;; *) say "no node $1 (a, b or c)"; exit 2 ;; esac; }
api_of() { echo $(($(port_of "$1") + 3000)); }

# Runs a command as the user the nodes run as: postgres when we are root.
as_owner() {
  if [ "$(id -u)" = 0 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}

url() {
  local hosts=() n
  for n in "${NODES[@]}"; do hosts+=("127.0.0.1:$(port_of "$n")"); done
  echo "postgres://postgres@$(IFS=,; echo "${hosts[*]}")/$1?target_session_attrs=read-write"
}

# GET on a node's REST API: the body, and the HTTP status on the last line.
api() { curl -s -m 2 -w '\n%{http_code}' "http://127.0.0.1:$(api_of "$1")$2" 2>/dev/null || echo 000; }
role_of() { api "$1" /patroni | sed '$d' | python3 -c 'import json, sys; d = json.load(sys.stdin); print(d.get("role", "?"), d.get("state", "?"))' 2>/dev/null || echo "down -"; }

leader() {
  local n
  for n in "${NODES[@]}"; do
    [ "$(api "$n" /primary | tail -n1)" = 200 ] && { echo "$n"; return 0; }
  done
  return 1
}

healthy() {
  local n leaders=0 lead streaming
  for n in "${NODES[@]}"; do
    [ "$(api "$n" /primary | tail -n1)" = 200 ] && leaders=$((leaders + 1))
  done
  [ "$leaders" = 1 ] || return 1
  # The replicas stream when the leader lists them in pg_stat_replication.
  lead=$(leader) || return 1
  streaming=$(psql -h 127.0.0.1 -p "$(port_of "$lead")" -U postgres -d postgres -qAtc \
    "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'" 2>/dev/null || echo 0)
  [ "$streaming" = 2 ]
}

status() {
  local n
  for n in "${NODES[@]}"; do
    echo "pg-$n :$(port_of "$n") $(role_of "$n")"
  done
}

etcd_up() { curl -fs -m 2 "http://$ETCD_CLIENT/health" 2>/dev/null | grep -q '"health":"true"'; }

start_etcd() {
  etcd_up && return 0
  command -v etcd >/dev/null || { say "etcd is not installed (apt-get install etcd-server)"; exit 1; }
  mkdir -p "$STATE/etcd"
  say "starting etcd on $ETCD_CLIENT"
  (
    cd "$STATE"
    setsid etcd --name pg-cluster-etcd --data-dir "$STATE/etcd/data" \
      --listen-client-urls "http://$ETCD_CLIENT" --advertise-client-urls "http://$ETCD_CLIENT" \
      --listen-peer-urls "http://$ETCD_PEER" --initial-advertise-peer-urls "http://$ETCD_PEER" \
      --initial-cluster "pg-cluster-etcd=http://$ETCD_PEER" \
      >>"$STATE/etcd/etcd.log" 2>&1 </dev/null &
    echo $! >"$STATE/etcd/pid"
  )
  local _
  for _ in $(seq 100); do etcd_up && return 0; sleep 0.2; done
  say "etcd did not start; see $STATE/etcd/etcd.log"
  exit 1
}

node_config() {
  local n=$1 dir=$STATE/$1
  cat <<EOF
scope: pipeline
namespace: /pg-cluster/
name: pg-$n
log:
  dir: $dir/log
  level: INFO
restapi:
  listen: 127.0.0.1:$(api_of "$n")
  connect_address: 127.0.0.1:$(api_of "$n")
etcd3:
  hosts: $ETCD_CLIENT
bootstrap:
  dcs:
    ttl: 8
    loop_wait: 1
    retry_timeout: 3
    maximum_lag_on_failover: 1048576
    synchronous_mode: true
    synchronous_mode_strict: true
    postgresql:
      use_pg_rewind: true
      use_slots: true
      parameters:
        wal_level: replica
        hot_standby: "on"
        wal_log_hints: "on"
        max_wal_senders: 10
        max_replication_slots: 10
        max_connections: 200
        # The outbox's tests of prepared transactions (the local server
        # allows none).
        max_prepared_transactions: 16
        wal_keep_size: 256MB
  initdb:
    - encoding: UTF8
    - locale: C.UTF-8
    - data-checksums
  pg_hba:
    - local all all trust
    - host all all 127.0.0.1/32 trust
    - host replication all 127.0.0.1/32 trust
postgresql:
  listen: 127.0.0.1:$(port_of "$n")
  connect_address: 127.0.0.1:$(port_of "$n")
  data_dir: $dir/data
  bin_dir: $PG_BIN
  pgpass: $dir/pgpass
  # A node that was primary and lost its place is rewound to the new
  # leader's timeline, or copied again when that fails.
  remove_data_directory_on_rewind_failure: true
  remove_data_directory_on_diverged_timelines: true
  authentication:
    superuser:
      username: postgres
    replication:
      username: replicator
  parameters:
    unix_socket_directories: $dir
    logging_collector: "off"
EOF
}

patroni_pid() { pgrep -u postgres -f "python.*patroni $STATE/$1/patroni.yml" | head -n1 || true; }
patroni_running() { local pid; pid=$(patroni_pid "$1"); [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; }

start_node() {
  local n=$1
  patroni_running "$n" && return 0
  command -v patroni >/dev/null || { say "patroni is not installed (apt-get install patroni)"; exit 1; }
  mkdir -p "$STATE/$n/log"
  node_config "$n" >"$STATE/$n/patroni.yml"
  [ "$(id -u)" = 0 ] && chown -R postgres:postgres "$STATE/$n"
  say "starting pg-$n (PostgreSQL :$(port_of "$n"), Patroni :$(api_of "$n"))"
  (
    as_owner setsid patroni "$STATE/$n/patroni.yml" >>"$STATE/$n/log/patroni.out" 2>&1 </dev/null &
  )
}

up() {
  mkdir -p "$STATE"
  [ "$(id -u)" = 0 ] && chown postgres:postgres "$STATE"
  start_etcd
  local n _
  for n in "${NODES[@]}"; do start_node "$n"; done
  for _ in $(seq 180); do
    if healthy; then
      say "leader pg-$(leader), two streaming replicas:"
      status >&2
      # The settings for a stack on the cluster: each service's runtime
      # and owner roles (made by `outbox provision postgres` as the
      # administrator, which `make up` runs), and the administrator.
      local service base role
      for service in order product; do
        base=$(url "${service}s")
        for role in runtime owner; do
          local setting="${service^^}_DATABASE_URL"
          [ "$role" = owner ] && setting="${service^^}_DATABASE_OWNER_URL"
          echo "$setting=${base/postgres@/${service}_${role}@}"
        done
      done
      echo "DATABASE_ADMIN_URL=$(url postgres)"
      return 0
    fi
    sleep 1
  done
  status >&2
  say "no leader with two streaming replicas after 180 s; logs in $STATE/*/log"
  exit 1
}

# Node $1's PostgreSQL: the postmaster (from its pid file) and its
# children.
postgres_pids() {
  local postmaster
  postmaster=$(head -n1 "$STATE/$1/data/postmaster.pid" 2>/dev/null || true)
  if [ -n "$postmaster" ] && kill -0 "$postmaster" 2>/dev/null; then
    echo "$postmaster"
    pgrep -P "$postmaster" || true
  fi
}

# Every process of node $1: its Patroni agent (and the runuser that
# started it as postgres, which would otherwise stop itself when its child
# is stopped and never reap it), and its PostgreSQL.
node_pids() {
  local pid parent
  pid=$(patroni_pid "$1")
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    echo "$pid"
    parent=$(ps -o ppid= -p "$pid" | tr -d ' ')
    [ -n "$parent" ] && [ "$(ps -o comm= -p "$parent")" = runuser ] && echo "$parent"
  fi
  postgres_pids "$1"
}

# Signals node $2's WAL senders (the processes that stream to standbys).
signal_wal_senders() {
  local pid pids=()
  for pid in $(postgres_pids "$2"); do
    grep -q 'walsender' "/proc/$pid/cmdline" 2>/dev/null && pids+=("$pid")
  done
  [ ${#pids[@]} -gt 0 ] || { say "pg-$2 runs no WAL sender"; return 1; }
  kill "-$1" "${pids[@]}"
}

kill_node() {
  local pids
  pids=$(node_pids "$1" | sort -u | tr '\n' ' ')
  [ -n "${pids// /}" ] || { say "pg-$1 runs nothing"; return 0; }
  # shellcheck disable=SC2086
  kill -STOP $pids 2>/dev/null || true
  # shellcheck disable=SC2086
  kill -KILL $pids 2>/dev/null || true
  say "killed pg-$1 (processes $pids)"
}

down() {
  local n pid
  for n in "${NODES[@]}"; do
    pid=$(patroni_pid "$n")
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
      say "stopping pg-$n"
      kill -TERM "$pid" 2>/dev/null || true
    fi
  done
  for n in "${NODES[@]}"; do
    for _ in $(seq 100); do patroni_running "$n" || break; sleep 0.2; done
    kill_node "$n" >/dev/null 2>&1 || true
  done
  pid=$(cat "$STATE/etcd/pid" 2>/dev/null || true)
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -rf "$STATE"
  say "stopped; $STATE removed"
}

case ${1:-} in
  up) up ;;
  down) down ;;
  url) url "${2:?which database}" ;;
  status) status ;;
  leader) leader || { say "no node is primary"; exit 1; } ;;
  healthy) healthy ;;
  kill) port_of "${2:?which node}" >/dev/null; kill_node "$2" ;;
  start) port_of "${2:?which node}" >/dev/null; start_node "$2" ;;
  replicas)
    lead=$(leader || true)
    for n in "${NODES[@]}"; do [ "$n" = "$lead" ] || echo "$n"; done
    ;;
  hold-wal) port_of "${2:?which node}" >/dev/null; signal_wal_senders STOP "$2" ;;
  release-wal) port_of "${2:?which node}" >/dev/null; signal_wal_senders CONT "$2" ;;
  *)
    echo "usage: $0 up|down|url DB|status|leader|healthy|replicas|kill NODE|start NODE|hold-wal NODE|release-wal NODE" >&2
    exit 2
    ;;
esac
