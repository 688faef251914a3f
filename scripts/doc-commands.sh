#!/usr/bin/env bash
# Part of `make test`: every `outbox`, `product`, `perf` and `token` command
# that the README and the operations docs (docs/OPERATIONS.md,
# docs/RELIABILITY.md, docs/SECURITY.md) show in a ```sh block is run as
# written, against the real servers, and must succeed. Commands with placeholders belong in ```text blocks.
#
# It starts its own product and order services (BIN_DIR, default
# target/debug, standing for the docs' target/release) on fresh `*_docs`
# databases, a `docs:` Redis prefix and a `docs.` broker namespace, so it
# never touches the data of `make up`; places an order, and records the
# two dead letters the docs' examples name (ids 12 and 13) as a consumer
# would. A command that runs until stopped (`outbox relay`) must still run
# after RUN_FOR seconds and stop cleanly on SIGTERM. Logs: reports/*-docs.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/fresh-state.sh

DOCS=${DOCS:-README.md docs/OPERATIONS.md docs/RELIABILITY.md docs/SECURITY.md}
bin=${BIN_DIR:-target/debug}
RUN_FOR=${RUN_FOR:-5}
PRODUCT_PORT=${DOCS_PRODUCT_PORT:-3200}
ORDER_PORT=${DOCS_ORDER_PORT:-8280}
dir="$PWD/reports/$(date +%Y%m%d-%H%M%S)-docs"
mkdir -p "$dir"

set -a; . ./.env.example; set +a
service_urls order "$(db_url "$ORDER_DATABASE_URL" orders_docs)"
service_urls product "$(db_url "$PRODUCT_DATABASE_URL" products_docs)"
export PRODUCT_PORT ORDER_PORT
export AMQP_NAMESPACE="docs." REDIS_KEY_PREFIX="docs:" AMQP_QUEUE_EXPIRES_MS=600000
export PRODUCT_URL="http://127.0.0.1:$PRODUCT_PORT" RUST_LOG=warn
fresh_state

for name in product order outbox perf token; do
  [ -x "$bin/$name" ] || { echo "doc commands: $bin/$name is missing (cargo build --bins)" >&2; exit 1; }
done
start_services "$bin" "$dir"

# What the examples act on: a product, an order, and dead letters 12 (an
# event) and 13 (a body that is not one) in the product service's table.
product=$(curl -fsS -X POST "$PRODUCT_URL/products" -H 'content-type: application/json' \
  -H "Authorization: Bearer $CATALOG_TOKEN" \
  -d '{"name":"docs","price":100,"stock":10}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
curl -fsS -X POST "http://127.0.0.1:$ORDER_PORT/orders" -H 'content-type: application/json' \
  -H "Authorization: Bearer $ORDER_TOKEN" \
  -d "{\"product_id\":$product,\"quantity\":1}" >/dev/null
psql "$(admin_url products_docs)" -qAt -v ON_ERROR_STOP=1 >/dev/null <<SQL
INSERT INTO dead_letters (id, queue, message_id, event_type, aggregate_id, body, reason, source)
OVERRIDING SYSTEM VALUE VALUES
  (12, 'docs.product.order-created', '0193a9e0-5c1e-7a6b-8f00-2d1c4b5e6f70', 'order.created',
   '0193a9e0-5c1e-7a6b-8f00-2d1c4b5e6f70',
   '{"id":"0193a9e0-5c1e-7a6b-8f00-2d1c4b5e6f70","type":"order.created","aggregate_id":"0193a9e0-5c1e-7a6b-8f00-2d1c4b5e6f70","occurred_at":"2026-12-01T10:00:00Z","payload":{"order_id":"0193a9e0-5c1e-7a6b-8f00-2d1c4b5e6f70","items":[{"product_id":$product,"quantity":1}]}}',
   'rejected by the store: example', 'consumer'),
  (13, 'docs.product.order-created', NULL, NULL, NULL, '{ not an event', 'not an event envelope', 'consumer');
SQL

# The commands, one per line: file, then the command as written.
python3 - "$DOCS" >"$dir/commands.tsv" <<'PY'
import re, sys
for path in sys.argv[1].split():
    text = open(path).read()
    for block in re.finditer(r"^[ \t]*```sh\n(.*?)^[ \t]*```", text, re.S | re.M):
        for line in block.group(1).splitlines():
            line = line.strip()
            if re.match(r"target/release/(outbox|product|perf|token) ", line + " "):
                print(f"{path}\t{line}")
PY
count=$(wc -l <"$dir/commands.tsv")
[ "$count" -gt 0 ] || { echo "doc commands: no command found in $DOCS" >&2; exit 1; }

failed=0
n=0
while IFS=$'\t' read -r file command; do
  n=$((n + 1))
  run=${command//target\/release\//$bin/}
  log="$dir/command-$n.log"
  echo "$file: $command" >"$log"
  if [[ $command =~ ^target/release/outbox\ +relay ]]; then
    # Runs until stopped: still running after RUN_FOR s, then a clean stop.
    bash -c "exec $run" >>"$log" 2>&1 </dev/null &
    pid=$!
    sleep "$RUN_FOR"
    status=FAILED
    if kill -0 "$pid" 2>/dev/null && kill -TERM "$pid"; then
      # A clean stop within 30 s.
      for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; elif wait "$pid"; then status=ok; fi
    fi
  elif timeout 300 bash -c "$run" >>"$log" 2>&1 </dev/null; then
    status=ok
  else
    status=FAILED
  fi
  printf '%-6s %s: %s\n' "$status" "$file" "$command"
  if [ "$status" != ok ]; then
    failed=$((failed + 1))
    sed 's/^/    /' "$log" | tail -n 15
  fi
done <"$dir/commands.tsv"

if [ "$failed" -gt 0 ]; then
  echo "doc commands: $failed of $count failed as written (logs in $dir)" >&2
  exit 1
fi
echo "doc commands: all $count ran as written"
