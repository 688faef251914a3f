#!/usr/bin/env bash
# `make fuzz`: schemathesis (from PyPI) against both services' own OpenAPI
# descriptions: generated and mutated requests, every check on; a 5xx, a
# response that breaks its schema, or an invalid request accepted fails it.
#
# It starts its own product and order services (BIN_DIR, default
# target/release) on fresh `*_fuzz` databases, a `fuzz:` Redis prefix and a
# `fuzz.` broker namespace, so it never touches the data of `make up`.
#
# One check is left out: positive_data_acceptance expects every request
# that fits the schema to succeed, but some fail by design for reasons no
# schema can state (a product that does not exist, stock that ran out, an
# Idempotency-Key already used with another body). Those answers (404,
# 422) are documented and checked by the other checks.
set -euo pipefail
. "$(dirname "$0")/fresh-state.sh"

EXAMPLES=${EXAMPLES:-100}
bin=${BIN_DIR:-target/release}
PRODUCT_PORT=${FUZZ_PRODUCT_PORT:-3100}
ORDER_PORT=${FUZZ_ORDER_PORT:-8180}
dir="$PWD/reports/$(date +%Y%m%d-%H%M%S)-fuzz"
mkdir -p "$dir"

command -v st >/dev/null || pip install --quiet schemathesis

service_urls product "$(db_url "$ORDER_DATABASE_URL" products_fuzz)"
service_urls order "$(db_url "$ORDER_DATABASE_URL" orders_fuzz)"
export AMQP_NAMESPACE="fuzz." REDIS_KEY_PREFIX="fuzz:" PRODUCT_PORT ORDER_PORT
export PRODUCT_URL="http://127.0.0.1:$PRODUCT_PORT" RUST_LOG=${RUST_LOG:-warn}
fresh_state

start_services "$bin" "$dir"
# Schemathesis calls every operation with one token of every scope (the
# refusals without one are the black-box tests' job: order/tests/api/auth.rs).
FUZZ_TOKEN=$("$bin/token" mint --subject fuzzer --scope all)
# A few products, so generated orders sometimes name real ones.
for n in 1 2 3 4 5; do
  curl -fsS -X POST "$PRODUCT_URL/products" -H 'content-type: application/json' \
    -H "Authorization: Bearer $CATALOG_TOKEN" \
    -d "{\"name\":\"fuzz $n\",\"price\":$((n * 100)),\"stock\":1000000}" >/dev/null
done

# One schemathesis run against a service: fuzz <service> <port> <name of the run>.
fuzz() {
  st run "http://127.0.0.1:$2/openapi.json" --checks all --exclude-checks positive_data_acceptance \
    --header "Authorization: Bearer $FUZZ_TOKEN" \
    --max-examples "$EXAMPLES" --workers 2 --report junit --report-junit-path "$dir/$3.xml" \
    >"$dir/$3.txt" 2>&1
}

# Whether a run failed only inside the tool: no check failed, and its errors
# are tracebacks of hypothesis or schemathesis themselves (seen here:
# "AST constructor recursion depth mismatch", from CPython 3.11's ast module
# under hypothesis). A network error or a crashed service has no such
# traceback and is never excused.
tool_error_only() {
  grep -q 'failures="0"' "$dir/$1.xml" 2>/dev/null &&
    grep -q 'site-packages/\(hypothesis\|schemathesis\)/' "$dir/$1.txt" &&
    ! grep -qiE 'network error|connection (refused|reset)' "$dir/$1.txt"
}

status=0
for service in product order; do
  port=$([ "$service" = product ] && echo "$PRODUCT_PORT" || echo "$ORDER_PORT")
  echo "schemathesis: $service service, $EXAMPLES examples per operation" >&2
  run=$service
  if ! fuzz "$service" "$port" "$run"; then
    if tool_error_only "$run"; then
      echo "  schemathesis failed inside itself ($dir/$run.txt); running it again once" >&2
      run=$service-again
      fuzz "$service" "$port" "$run" || status=1
    else
      status=1
    fi
  fi
  grep -E "generated|failure|passed" "$dir/$run.txt" | tail -3 >&2
done
if grep -qi "panicked" "$dir"/*.log; then
  echo "a service panicked during fuzzing: see $dir" >&2
  status=1
fi
[ "$status" = 0 ] && echo "fuzzing found no 5xx and no schema violation ($dir)" || echo "fuzzing FAILED: see $dir" >&2
exit "$status"
