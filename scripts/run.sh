#!/usr/bin/env bash
# `make up`: runs the services in the foreground, each log line prefixed
# with its service, until Ctrl-C (or until one of them exits), then stops
# them all with SIGTERM so each drains its requests and batches.
set -euo pipefail

bin=${BIN_DIR:-target/release}
services=${SERVICES:-product order}
pids=()

stop() {
  trap - INT TERM
  echo "stopping: ${services}" >&2
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
}
trap 'stop; exit 0' INT TERM

# This machine's issuer: its key pair made on first start (never
# committed), its JWKS the file the services read (AUTH_JWKS_FILE).
if [ -n "${AUTH_JWKS_FILE:-}" ] && [ -x "$bin/token" ]; then
  echo "tokens: $bin/token keygen -> $("$bin/token" keygen)" >&2
fi

# Each service's PostgreSQL roles and database, made as the server's
# administrator (DATABASE_ADMIN_URL) before the services connect as them;
# nothing changes when they are there (docs/SECURITY.md).
if [ -n "${DATABASE_ADMIN_URL:-}" ] || [ -n "${DATABASE_ADMIN_URL_FILE:-}" ]; then
  for service in $services; do
    "$bin/outbox" provision postgres --service "$service" | sed "s/^/[provision] /" >&2
  done
fi

for service in $services; do
  if [ ! -x "$bin/$service" ]; then
    echo "$bin/$service is missing: run \`make build\` first" >&2
    exit 1
  fi
  # The prefixer ignores Ctrl-C so the services' shutdown lines still show.
  "$bin/$service" > >(trap '' INT TERM; exec sed -u "s/^/[$service] /") 2>&1 &
  pids+=($!)
done

echo "running: ${services} (product on :${PRODUCT_PORT:-3000}, order on :${ORDER_PORT:-8080}); Ctrl-C stops them" >&2
echo "a token to place and read orders: $bin/token mint --subject alice --scope 'orders.place orders.read'" >&2
status=0
wait -n "${pids[@]}" || status=$?
echo "a service exited (status ${status}); stopping the others" >&2
stop
exit "$status"
