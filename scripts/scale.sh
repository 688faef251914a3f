#!/usr/bin/env bash
# `make scale`: the same load against 1 and then 2 instances of everything
# (product and order services on their own ports, standalone relays on both
# outboxes, consumers competing on every queue), each on its own databases,
# Redis prefix and broker namespace. After each: the invariants, and a check
# that a product changed 200 times in a row ends in the order service's
# replica at its last version (events of one product applied in order).
#
# Settings: RATE (2000), DURATION (30s), INSTANCES ("1 2").
set -euo pipefail
. "$(dirname "$0")/fresh-state.sh"

RATE=${RATE:-2000}
DURATION=${DURATION:-30s}
INSTANCES=${INSTANCES:-1 2}
bin=${BIN_DIR:-target/release}
export RUST_LOG=${RUST_LOG:-warn}
dir="$PWD/reports/$(date +%Y%m%d-%H%M%S)-scale"
mkdir -p "$dir"
local_tokens "$bin" "$dir"
base_db=$ORDER_DATABASE_URL
pids=()

stop_all() {
  [ ${#pids[@]} -eq 0 ] && return
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  pids=()
}
trap stop_all EXIT

ready() { curl -fsS "$1/readyz" 2>/dev/null | grep -q '"rabbitmq":"up"'; }

rows=()
for n in $INSTANCES; do
  service_urls order "$(db_url "$base_db" "orders_scale_$n")"
  service_urls product "$(db_url "$base_db" "products_scale_$n")"
  export AMQP_NAMESPACE="scale$n." REDIS_KEY_PREFIX="scale$n:" RELAY_ENABLED=false
  fresh_state
  provision "$bin" product order
  order_urls=() product_urls=() admin_urls=()
  for i in $(seq 0 $((n - 1))); do
    PRODUCT_PORT=$((3000 + i)) PRODUCT_ADMIN_PORT=$((9330 + i)) "$bin/product" >>"$dir/product-$n-$i.log" 2>&1 & pids+=($!)
    product_urls+=("http://127.0.0.1:$((3000 + i))")
    admin_urls+=("http://127.0.0.1:$((9330 + i))")
  done
  # Order instances look products up at the first product instance.
  for i in $(seq 0 $((n - 1))); do
    ORDER_PORT=$((8080 + i)) ORDER_ADMIN_PORT=$((9380 + i)) PRODUCT_URL="${product_urls[0]}" "$bin/order" >>"$dir/order-$n-$i.log" 2>&1 & pids+=($!)
    order_urls+=("http://127.0.0.1:$((8080 + i))")
    admin_urls+=("http://127.0.0.1:$((9380 + i))")
  done
  for service in order product; do
    for i in $(seq 1 "$n"); do
      RELAY_CLAIM_PARTITIONS=$((16 / n)) "$bin/outbox" relay --service "$service" >>"$dir/relay-$service-$n-$i.log" 2>&1 & pids+=($!)
    done
  done
  for url in "${admin_urls[@]}"; do
    for _ in $(seq 600); do ready "$url" && break; sleep 0.1; done
  done
  PRODUCT_URL="${product_urls[0]}" "$bin/perf" seed --out "$dir/seed-$n.json" >/dev/null
  ORDER_URL=$(IFS=,; echo "${order_urls[*]}") PRODUCT_URL=$(IFS=,; echo "${product_urls[*]}") \
    SCENARIO=orders RATE=$RATE DURATION=$DURATION SEED_FILE="$dir/seed-$n.json" SUMMARY_FILE="$dir/k6-$n.json" \
    k6 run --quiet --no-color k6/pipeline.js >/dev/null 2>&1 || true
  held=yes
  "$bin/perf" check --seed "$dir/seed-$n.json" >"$dir/check-$n.txt" 2>&1 || held=no

  # Events of one product in order: 200 price changes spread over the
  # product instances, then the replica must hold the last one.
  product=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['hot'])" "$dir/seed-$n.json")
  # Each change by one of many catalog subjects: 200 in a few seconds are
  # more than one subject's rate (AUTH_SUBJECT_RATE).
  mapfile -t catalog_tokens < <(python3 -c "import json,sys; print('\n'.join(json.load(open(sys.argv[1]))))" "$CATALOG_TOKENS_FILE")
  for k in $(seq 1 200); do
    url=${product_urls[$((k % n))]}
    curl -fsS -X PATCH "$url/products/$product" -H 'content-type: application/json' \
      -H "Authorization: Bearer ${catalog_tokens[$((k % ${#catalog_tokens[@]}))]}" -d "{\"price\": $k}" >/dev/null
  done
  want=$(curl -fsS "${product_urls[0]}/products/$product" | python3 -c "import json,sys; p=json.load(sys.stdin); print(p['version'], p['price'])")
  in_order=no
  for _ in $(seq 100); do
    got=$(psql "$ORDER_DATABASE_URL" -qAt -F' ' -c "SELECT version, price FROM product_replica WHERE id = $product")
    [ "$got" = "$want" ] && { in_order=yes; break; }
    sleep 0.1
  done
  [ "$in_order" = yes ] || held=no
  read -r rate p99 failed < <(python3 -c "
import json, sys
m = json.load(open(sys.argv[1]))['metrics']
print(round(m['http_reqs']['values']['rate'], 1), round(m['http_req_duration']['values']['p(99)'], 2), round(100 * m['http_req_failed']['values']['rate'], 3))
" "$dir/k6-$n.json")
  rows+=("$(printf '%-10s %10s %10s %9s %10s %9s' "$n of each" "$RATE" "$rate" "$p99" "$failed%" "$held")")
  echo "${rows[-1]}" >&2
  stop_all
done

{
  printf '%-10s %10s %10s %9s %10s %9s\n' instances target achieved p99_ms errors invariants
  printf '%s\n' "${rows[@]}"
} | tee "$dir/scale.txt"
grep -q " no$" "$dir/scale.txt" && { echo "FAIL: see $dir" >&2; exit 1; }
echo "PASS ($dir)"
