# Sourced by scripts that run the services on their own databases
# (fuzz.sh, scale.sh): `fresh_state` drops ORDER_DATABASE_URL's and
# PRODUCT_DATABASE_URL's databases (the services recreate them) and
# deletes the Redis keys under REDIS_KEY_PREFIX. Both go together: counters
# and fences left from an earlier run would be newer than the rows of the
# new databases, whose ids and versions start again at 1.

. "$(dirname "${BASH_SOURCE[0]}")/dburl.sh"

fresh_state() {
  local db
  for db in "$ORDER_DATABASE_URL" "$PRODUCT_DATABASE_URL"; do
    psql "$(db_url "$db" postgres)" -qc "DROP DATABASE IF EXISTS \"$(db_name "$db")\" WITH (FORCE)" >/dev/null
  done
  redis-cli -u "${REDIS_URL:-redis://127.0.0.1:6379}" --scan --pattern "${REDIS_KEY_PREFIX:?}*" |
    xargs -r -n 500 redis-cli -u "${REDIS_URL:-redis://127.0.0.1:6379}" del >/dev/null
}
