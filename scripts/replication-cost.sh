#!/usr/bin/env bash
# What synchronous standbys cost per order: `make load`'s measurement (k6,
# RATE for DURATION, the invariants checked after) against the services on
# the single server of the settings and on the Patroni cluster (`make
# pg-cluster`: a synchronous standby in strict mode, a second one
# asynchronous), alternated ROUNDS times, each run on fresh databases and
# Redis keys. The cluster's runs count all three PostgreSQL nodes, the
# Patroni agents and etcd (FAILOVER_PORTS). Prints one line per run; the
# full reports stay under reports/.
#
# Settings: ROUNDS (3), RATE (1000), DURATION (60s), BIN_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/fresh-state.sh

ROUNDS=${ROUNDS:-3}
export RATE=${RATE:-1000} DURATION=${DURATION:-60s} CEILINGS=0 DASHBOARD=0
export RUST_LOG=${RUST_LOG:-warn} REDIS_KEY_PREFIX=${REDIS_KEY_PREFIX:-replication-cost:}
bin=${BIN_DIR:-target/release}
if ! scripts/pg-cluster.sh healthy >/dev/null 2>&1; then
  echo "the Patroni cluster is not up: run \`make pg-cluster\` first" >&2
  exit 1
fi
single_order=$ORDER_DATABASE_URL
single_product=$PRODUCT_DATABASE_URL
single_admin=$(admin_url postgres)
cluster_order=$(scripts/pg-cluster.sh url "$(db_name "$ORDER_DATABASE_URL")")
cluster_product=$(scripts/pg-cluster.sh url "$(db_name "$PRODUCT_DATABASE_URL")")
cluster_admin=$(scripts/pg-cluster.sh url postgres)
logs=$(mktemp -d)

printf '%-8s %-6s %s\n' where round "report (reports/<time>-orders)"
for round in $(seq "$ROUNDS"); do
  for where in single cluster; do
    if [ "$where" = single ]; then
      export DATABASE_ADMIN_URL=$single_admin FAILOVER_PORTS=
      service_urls order "$single_order"
      service_urls product "$single_product"
    else
      export DATABASE_ADMIN_URL=$cluster_admin FAILOVER_PORTS=8441,8442,8443,2479
      service_urls order "$cluster_order"
      service_urls product "$cluster_product"
    fi
    fresh_state
    start_services "$bin" "$logs"
    scripts/load.sh >"$logs/load-$where-$round.txt" 2>&1 || true
    kill -TERM "${service_pids[@]}" 2>/dev/null || true
    wait "${service_pids[@]}" 2>/dev/null || true
    report=$(grep -o 'reports/[0-9-]*-orders' "$logs/load-$where-$round.txt" | tail -1)
    cp "$logs/load-$where-$round.txt" "$report/replication-cost.txt" 2>/dev/null || true
    printf '%-8s %-6s %s\n' "$where" "$round" "$report"
    grep -E 'result|CPU per order|latency|confirm lag|WAL per order' "$logs/load-$where-$round.txt" | sed 's/^/    /' || true
  done
done
rm -rf "$logs"
