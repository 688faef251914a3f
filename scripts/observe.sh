#!/usr/bin/env bash
# Prometheus and Alertmanager on this machine, watching the services of
# `make up` with the project's rules (deploy/prometheus, deploy/alertmanager):
#
#   scripts/observe.sh up      `make observe`: start both (Debian's
#                              `prometheus` and `prometheus-alertmanager`),
#                              wait until they answer, print their URLs
#   scripts/observe.sh down    `make observe-down`: stop both, remove their
#                              data (.state/observe)
#   scripts/observe.sh status  whether each answers
#
# Prometheus on 127.0.0.1:9090 scrapes order (:8080), product (:3000) and
# the standalone relays listed in deploy/prometheus/targets/outbox-relay*.json (none by
# default); Alertmanager on 127.0.0.1:9093 sends every alert to a webhook on
# 127.0.0.1:9099 (what `make alert-drill` listens on; nothing else needs
# it). Both run in the background with their data and logs under
# .state/observe (ignored by git); a second `up` finds them running.
set -euo pipefail
cd "$(dirname "$0")/.."

STATE=${OBSERVE_STATE:-$PWD/.state/observe}
PROMETHEUS_ADDR=127.0.0.1:9090
ALERTMANAGER_ADDR=127.0.0.1:9093

say() { echo "observe: $*" >&2; }

# Debian names Alertmanager's binary prometheus-alertmanager.
alertmanager_bin() {
  command -v prometheus-alertmanager 2>/dev/null || command -v alertmanager 2>/dev/null || true
}

answers() { curl -fsS -o /dev/null --max-time 2 "http://$1/-/ready" 2>/dev/null; }
# Whether `name` runs as this script started it (its pid file names a live process).
ours() { [ -f "$STATE/$1.pid" ] && kill -0 "$(cat "$STATE/$1.pid")" 2>/dev/null; }

# Starts `name` in the background (its pid in STATE/name.pid) unless its
# pid file names a live process.
start() {
  local name=$1; shift
  local pid_file="$STATE/$name.pid"
  if ours "$name"; then
    say "$name already runs (pid $(cat "$pid_file"))"
    return
  fi
  mkdir -p "$STATE/$name"
  nohup "$@" >"$STATE/$name.log" 2>&1 &
  echo $! >"$pid_file"
}

wait_ready() {
  local name=$1 addr=$2
  for _ in $(seq 1 60); do
    if answers "$addr"; then return 0; fi
    if ! kill -0 "$(cat "$STATE/$name.pid")" 2>/dev/null; then
      say "$name exited; its log ($STATE/$name.log) ends:"
      tail -n 20 "$STATE/$name.log" >&2
      exit 1
    fi
    sleep 0.5
  done
  say "$name did not answer on $addr within 30 s (log: $STATE/$name.log)"
  exit 1
}

up() {
  command -v prometheus >/dev/null || { say "prometheus is not installed: apt-get install prometheus"; exit 1; }
  local alertmanager
  alertmanager=$(alertmanager_bin)
  [ -n "$alertmanager" ] || { say "Alertmanager is not installed: apt-get install prometheus-alertmanager"; exit 1; }
  for pair in "prometheus $PROMETHEUS_ADDR" "alertmanager $ALERTMANAGER_ADDR"; do
    set -- $pair
    if answers "$2" && ! ours "$1"; then
      say "something else already answers on $2 (a packaged service? stop it first)"
      exit 1
    fi
  done
  mkdir -p "$STATE"
  # --cluster.listen-address= turns Alertmanager's gossip off (one node).
  start alertmanager "$alertmanager" \
    --config.file=deploy/alertmanager/alertmanager.yml \
    --storage.path="$STATE/alertmanager" \
    --web.listen-address="$ALERTMANAGER_ADDR" \
    --cluster.listen-address=
  # 4 days kept: the slow latency burn-rate alert looks back 3.
  # --web.enable-lifecycle: `curl -X POST :9090/-/reload` after editing a rule.
  start prometheus prometheus \
    --config.file=deploy/prometheus/prometheus.yml \
    --storage.tsdb.path="$STATE/prometheus" \
    --storage.tsdb.retention.time=4d \
    --web.listen-address="$PROMETHEUS_ADDR" \
    --web.enable-lifecycle
  wait_ready alertmanager "$ALERTMANAGER_ADDR"
  wait_ready prometheus "$PROMETHEUS_ADDR"
  # Debian's Prometheus (2.42) serves its alerts page at /classic/alerts
  # (its /alerts is 404); compose's 2.53 at /alerts.
  echo "Prometheus:   http://$PROMETHEUS_ADDR (alerts: http://$PROMETHEUS_ADDR/classic/alerts)"
  echo "Alertmanager: http://$ALERTMANAGER_ADDR"
  echo "data and logs: $STATE; stop with: make observe-down"
}

down() {
  for name in prometheus alertmanager; do
    local pid_file="$STATE/$name.pid"
    [ -f "$pid_file" ] || continue
    local pid
    pid=$(cat "$pid_file")
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid"
      for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  rm -rf "$STATE"
  say "stopped; $STATE removed"
}

status() {
  local status=0
  for pair in "prometheus $PROMETHEUS_ADDR" "alertmanager $ALERTMANAGER_ADDR"; do
    set -- $pair
    if answers "$2"; then echo "$1: up on $2"; else echo "$1: down"; status=1; fi
  done
  return $status
}

case ${1:-} in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
