# Sourced by scripts that run the services on their own databases
# (fuzz.sh, scale.sh, doc-commands.sh): `fresh_state` drops ORDER_DATABASE_URL's and
# PRODUCT_DATABASE_URL's databases (start_services provisions them again) and
# deletes the Redis keys under REDIS_KEY_PREFIX. Both go together: counters
# and fences left from an earlier run would be newer than the rows of the
# new databases, whose ids and versions start again at 1.

. "$(dirname "${BASH_SOURCE[0]}")/dburl.sh"
. "$(dirname "${BASH_SOURCE[0]}")/auth.sh"

fresh_state() {
  local db
  for db in "$ORDER_DATABASE_URL" "$PRODUCT_DATABASE_URL"; do
    psql "$(admin_url postgres)" -qc "DROP DATABASE IF EXISTS \"$(db_name "$db")\" WITH (FORCE)" >/dev/null
  done
  redis-cli -u "${REDIS_URL:-redis://127.0.0.1:6379}" --scan --pattern "${REDIS_KEY_PREFIX:?}*" |
    xargs -r -n 500 redis-cli -u "${REDIS_URL:-redis://127.0.0.1:6379}" del >/dev/null
}

# start_services BIN DIR: the product and order services from BIN on
# PRODUCT_PORT and ORDER_PORT (admin listeners on PRODUCT_ADMIN_PORT and
# ORDER_ADMIN_PORT), their logs in DIR, stopped when the script exits;
# returns once both answer /readyz, fails if one does not in 30 s.
# The tokens of scripts/auth.sh are exported first, and both services'
# roles and databases provisioned (dburl.sh's provision).
start_services() {
  local bin=$1 dir=$2 port
  local_tokens "$bin" "$dir"
  provision "$bin" product order
  "$bin/product" >"$dir/product.log" 2>&1 &
  service_pids=($!)
  "$bin/order" >"$dir/order.log" 2>&1 &
  service_pids+=($!)
  trap 'kill "${service_pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true' EXIT
  for port in "${PRODUCT_ADMIN_PORT:-9330}" "${ORDER_ADMIN_PORT:-9380}"; do
    for _ in $(seq 300); do curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
    curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 ||
      { echo "the service on :$port is not ready (logs in $dir)" >&2; return 1; }
  done
}
